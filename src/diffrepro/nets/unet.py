"""The DDPM U-Net of Ho et al. 2020 (after the official diffusion_tf/models/unet.py), with presets."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from diffrepro.nets.embeddings import timestep_embedding

GROUP_NORM_EPS = 1e-6  # tf.contrib.layers.group_norm's default, used by the official code

# Named architectures. Each lists every architecture keyword, so a preset alone rebuilds its net.
PRESETS = {
    # The paper's CIFAR-10 model: 35,746,307 parameters at data_shape (3, 32, 32).
    "ddpm-cifar10": dict(base_channels=128, channel_mult=(1, 2, 2, 2), num_res_blocks=2,
                         attn_resolutions=(16,), dropout=0.1, num_groups=32, resample_with_conv=True),
    # The CIFAR-10 recipe scaled to (1, 28, 28) (6,469,889 parameters): half the width, three
    # levels (28, 14, 7) because 28 halves only twice, attention at 14 (one level below full
    # resolution, as 16 is for 32).
    "ddpm-mnist": dict(base_channels=64, channel_mult=(1, 2, 2), num_res_blocks=2,
                       attn_resolutions=(14,), dropout=0.1, num_groups=32, resample_with_conv=True),
    # (1, 8, 8) digits on one CPU thread (284,513 parameters): two levels (8, 4) of 32 channels,
    # attention at 4, no dropout; 8 groups keep 4 channels per group, as 128/32 does on CIFAR-10.
    "digits-cpu": dict(base_channels=32, channel_mult=(1, 1), num_res_blocks=1,
                       attn_resolutions=(4,), dropout=0.0, num_groups=8, resample_with_conv=True),
    # (1, 28, 28) on CPU (686,769 parameters): levels 28, 14, 7 with 16, 32, 64 channels (thin
    # where the maps are large, which is where CPU time goes), one block per level, attention at 7.
    "mnist-cpu": dict(base_channels=16, channel_mult=(1, 2, 4), num_res_blocks=1,
                      attn_resolutions=(7,), dropout=0.0, num_groups=4, resample_with_conv=True),
}
DEFAULT_PRESET = "ddpm-cifar10"


def unet_preset(name: str) -> dict:
    """The architecture keywords of a named preset (a fresh dict)."""
    if name not in PRESETS:
        raise ValueError(f"unknown UNet preset {name!r}; allowed: {', '.join(sorted(PRESETS))}")
    return dict(PRESETS[name])


def group_norm(channels: int, num_groups: int) -> nn.GroupNorm:
    """GroupNorm with min(num_groups, channels) groups, which must divide `channels`."""
    groups = min(num_groups, channels)
    if groups < 1 or channels % groups != 0:
        raise ValueError(f"num_groups={num_groups} does not fit a GroupNorm over {channels} channels: "
                         f"min(num_groups, channels) = {groups} must be >= 1 and divide {channels}")
    return nn.GroupNorm(groups, channels, eps=GROUP_NORM_EPS)


class ResBlock(nn.Module):
    """Wide-ResNet block: GN, SiLU, conv3x3, + temb projection, GN, SiLU, dropout, conv3x3 (zero
    init), plus the input (through a 1x1 conv when the channel count changes). [N x C_in x H x W] ->
    [N x C_out x H x W]."""

    def __init__(self, in_channels: int, out_channels: int, temb_channels: int, dropout: float,
                 num_groups: int):
        super().__init__()
        self.norm1 = group_norm(in_channels, num_groups)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.temb_proj = nn.Linear(temb_channels, out_channels)
        self.norm2 = group_norm(out_channels, num_groups)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.skip = (nn.Identity() if in_channels == out_channels
                     else nn.Conv2d(in_channels, out_channels, 1))

    def forward(self, x: torch.Tensor, temb_act: torch.Tensor) -> torch.Tensor:
        """x: [N x C_in x H x W]; temb_act: SiLU of the time embedding, [N x temb_channels]."""
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.temb_proj(temb_act)[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.skip(x) + h


class AttnBlock(nn.Module):
    """Single-head self-attention over all H*W positions, residual, output projection zero-init.
    [N x C x H x W] -> [N x C x H x W]."""

    def __init__(self, channels: int, num_groups: int):
        super().__init__()
        self.norm = group_norm(channels, num_groups)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, height, width = x.shape
        qkv = self.qkv(self.norm(x)).reshape(n, 3, c, height * width).transpose(-1, -2)
        q, k, v = qkv.unbind(dim=1)  # each [N x HW x C]; the default scale is C^-1/2 as in DDPM
        h = F.scaled_dot_product_attention(q[:, None], k[:, None], v[:, None])[:, 0]
        return x + self.proj_out(h.transpose(-1, -2).reshape(n, c, height, width))


class ResAttn(nn.Module):
    """A ResBlock, followed by an AttnBlock when this level's resolution is listed."""

    def __init__(self, in_channels: int, out_channels: int, temb_channels: int, dropout: float,
                 num_groups: int, with_attn: bool):
        super().__init__()
        self.res = ResBlock(in_channels, out_channels, temb_channels, dropout, num_groups)
        self.attn = AttnBlock(out_channels, num_groups) if with_attn else None

    def forward(self, x: torch.Tensor, temb_act: torch.Tensor) -> torch.Tensor:
        h = self.res(x, temb_act)
        return h if self.attn is None else self.attn(h)


class Downsample(nn.Module):
    """Halve H and W: strided 3x3 conv, or 2x2 average pooling."""

    def __init__(self, channels: int, with_conv: bool):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1) if with_conv else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(x, 2) if self.conv is None else self.conv(x)


class Upsample(nn.Module):
    """Double H and W: nearest neighbour, then (optionally) a 3x3 conv."""

    def __init__(self, channels: int, with_conv: bool):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1) if with_conv else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        return x if self.conv is None else self.conv(x)


class Level(nn.Module):
    """One resolution of the down or up path: its blocks, then an optional resampling."""

    def __init__(self, blocks: list[ResAttn], resample: nn.Module | None):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.resample = resample


class UNet(nn.Module):
    """The DDPM U-Net: (x_t [N x C x H x W], t [N]) -> [N x out_mult*C x H x W].

    Architecture keywords left as None come from `preset` (default "ddpm-cifar10"); explicit
    keywords override the preset. The resolved keywords are kept in `self.config` (without
    `preset`) so a checkpoint can rebuild the net.

    data_shape: (C, H, W); H and W must be divisible by 2^(len(channel_mult) - 1).
    out_mult: output channels are out_mult*C (1 for ε, 2 for ε and a variance).
    attn_resolutions: feature-map heights at which an AttnBlock follows each ResBlock; each must
        be one of this net's heights (H, H/2, ...).
    num_groups: GroupNorm groups, min(num_groups, channels) per layer, which must divide the
        channels of every normalised layer.
    t is the raw 0-based step index, as in the DDPM code; num_timesteps is kept for the record.
    """

    def __init__(self, data_shape=(3, 32, 32), out_mult: int = 1, num_timesteps: int = 1000,
                 preset: str | None = None, base_channels: int | None = None,
                 channel_mult: tuple[int, ...] | None = None, num_res_blocks: int | None = None,
                 attn_resolutions: tuple[int, ...] | None = None, dropout: float | None = None,
                 num_groups: int | None = None, resample_with_conv: bool | None = None):
        super().__init__()
        explicit = dict(base_channels=base_channels, channel_mult=channel_mult,
                        num_res_blocks=num_res_blocks, attn_resolutions=attn_resolutions,
                        dropout=dropout, num_groups=num_groups, resample_with_conv=resample_with_conv)
        cfg = unet_preset(preset or DEFAULT_PRESET)
        cfg.update({k: v for k, v in explicit.items() if v is not None})
        cfg["channel_mult"] = tuple(cfg["channel_mult"])
        cfg["attn_resolutions"] = tuple(cfg["attn_resolutions"])
        self.config = cfg
        self.data_shape = tuple(data_shape)
        self.out_mult = out_mult
        self.num_timesteps = num_timesteps
        self._build(**cfg)
        self._init_weights()

    def _build(self, base_channels, channel_mult, num_res_blocks, attn_resolutions, dropout,
               num_groups, resample_with_conv):
        if len(self.data_shape) != 3:
            raise ValueError(f"UNet needs image data, data_shape (C, H, W); got {self.data_shape}")
        in_channels, height, width = self.data_shape
        factor = 2 ** (len(channel_mult) - 1)
        if height % factor or width % factor:
            raise ValueError(f"UNet with channel_mult={channel_mult} halves the image "
                             f"{len(channel_mult) - 1} times, so H and W must be divisible by "
                             f"{factor}; got data_shape {self.data_shape}")
        heights = [height // 2 ** i for i in range(len(channel_mult))]
        unknown = sorted(set(attn_resolutions) - set(heights))
        if unknown:
            raise ValueError(f"attn_resolutions {unknown} are not feature-map heights of this net; "
                             f"allowed: {heights}")
        ch, temb_ch = base_channels, 4 * base_channels
        self.temb = nn.Sequential(nn.Linear(ch, temb_ch), nn.SiLU(), nn.Linear(temb_ch, temb_ch))
        self.conv_in = nn.Conv2d(in_channels, ch, 3, padding=1)

        def res_attn(c_in, c_out, res):
            return ResAttn(c_in, c_out, temb_ch, dropout, num_groups, with_attn=res in attn_resolutions)

        skip_channels, c_now = [ch], ch
        self.down = nn.ModuleList()
        for i, (mult, res) in enumerate(zip(channel_mult, heights)):
            blocks = []
            for _ in range(num_res_blocks):
                blocks.append(res_attn(c_now, ch * mult, res))
                c_now = ch * mult
                skip_channels.append(c_now)
            last = i == len(channel_mult) - 1
            self.down.append(Level(blocks, None if last else Downsample(c_now, resample_with_conv)))
            if not last:
                skip_channels.append(c_now)

        self.mid_res_attn = ResAttn(c_now, c_now, temb_ch, dropout, num_groups, with_attn=True)
        self.mid_res = ResBlock(c_now, c_now, temb_ch, dropout, num_groups)

        self.up = nn.ModuleList()
        for i, (mult, res) in reversed(list(enumerate(zip(channel_mult, heights)))):
            blocks = []
            for _ in range(num_res_blocks + 1):
                blocks.append(res_attn(c_now + skip_channels.pop(), ch * mult, res))
                c_now = ch * mult
            self.up.append(Level(blocks, None if i == 0 else Upsample(c_now, resample_with_conv)))

        self.norm_out = group_norm(c_now, num_groups)
        self.conv_out = nn.Conv2d(c_now, self.out_mult * in_channels, 3, padding=1)

    def _init_weights(self):
        # Official init: variance scaling (fan_avg, uniform) = Xavier uniform, zero biases, and
        # zero ("init_scale=0") for the last conv of each ResBlock, AttnBlock and the net.
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        last_convs = ([m.conv2 for m in self.modules() if isinstance(m, ResBlock)]
                      + [m.proj_out for m in self.modules() if isinstance(m, AttnBlock)]
                      + [self.conv_out])
        for conv in last_convs:
            nn.init.zeros_(conv.weight)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x_t: [N x C x H x W]; t: [N] steps. Returns [N x out_mult*C x H x W]."""
        temb = self.temb(timestep_embedding(t, self.config["base_channels"]).to(x_t.dtype))
        temb_act = F.silu(temb)  # every ResBlock projects SiLU(temb)
        hs = [self.conv_in(x_t)]
        for level in self.down:
            for block in level.blocks:
                hs.append(block(hs[-1], temb_act))
            if level.resample is not None:
                hs.append(level.resample(hs[-1]))
        h = self.mid_res(self.mid_res_attn(hs[-1], temb_act), temb_act)
        for level in self.up:
            for block in level.blocks:
                h = block(torch.cat([h, hs.pop()], dim=1), temb_act)
            if level.resample is not None:
                h = level.resample(h)
        return self.conv_out(F.silu(self.norm_out(h)))
