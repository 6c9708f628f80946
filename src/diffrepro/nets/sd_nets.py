"""SD-2015's networks: time enters only through J fixed Gaussian bump functions of t that mix J readouts.

`SDBumpMLP` (vectors: the toy-data MLP, optionally with the swiss roll's normalised radial-basis
hidden layer) and `SDMultiScaleConv` (images: the paper code's `MLP_conv_dense`, multi-scale).
Both map (x_t [N x ...], t [N] 0-based) -> [N x out_mult*C x ...]: the body never sees t; its last
layer emits J values per output and the bumps of t weight them (the paper code's
`temporal_readout`). The last layer starts at zero, so an untrained SD-Gaussian reverse kernel is
the forward kernel's form and an untrained binomial x_0 prediction is 1/2.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from diffrepro.choices import Choice
from diffrepro.nets.activations import make_activation


# activation name -> module factory (the paper: sigmoid for the toy nets, softplus / leaky ReLU
# with slope 0.05 in the image code)
class HiddenKind(Choice):
    """The first hidden layer of `SDBumpMLP`."""

    DENSE = "dense"  # affine map then the activation
    RBF = "rbf"      # normalised radial basis functions (the paper's swiss-roll net)



def gaussian_bumps(num_timesteps: int, num_bumps: int) -> torch.Tensor:
    """`[T x J]` weights of J Gaussian bumps of t (the paper code's `generate_temporal_basis`):
    centres evenly spread over the trajectory, width half their spacing, each row summing to 1."""
    if num_bumps < 1:
        raise ValueError(f"num_bumps must be >= 1, got {num_bumps}")
    if num_bumps == 1:
        return torch.ones(num_timesteps, 1)
    tt = torch.linspace(-1.0, 1.0, num_timesteps, dtype=torch.float64)[:, None]
    centres = torch.linspace(-1.0, 1.0, num_bumps, dtype=torch.float64)[None, :]
    width = (centres[0, 1] - centres[0, 0]) / 2.0
    bumps = torch.exp(-(tt - centres) ** 2 / (2 * width ** 2))
    return (bumps / bumps.sum(dim=1, keepdim=True)).float()


class TemporalReadout(nn.Module):
    """Mixes J readouts by the bumps of t: z `[N x K*J x ...]` -> `[N x K x ...]`."""

    def __init__(self, num_timesteps: int, num_bumps: int):
        super().__init__()
        self.num_bumps = num_bumps
        self.register_buffer("bumps", gaussian_bumps(num_timesteps, num_bumps))

    def forward(self, z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        n, kj = z.shape[:2]
        z = z.reshape(n, kj // self.num_bumps, self.num_bumps, *z.shape[2:])
        w = self.bumps[t].to(z.dtype).reshape(n, 1, self.num_bumps, *([1] * (z.ndim - 3)))
        return (z * w).sum(dim=2)

    def of_layer(self, layer: nn.Module, h: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """`forward(layer(h), t)` for the last layer (nn.Linear, or an nn.Conv2d with a 1x1 kernel).
        Where the whole batch shares one t (every reverse step, every term of the bound) the bumps
        are mixed into the layer's weights first: one layer of K outputs instead of K*J outputs and
        their readout (J = 40: the heartbeat sampler 5x faster). The same sums in another order."""
        if t.numel() == 0 or not bool((t == t[0]).all()):
            return self.forward(layer(h), t)
        weight, bias = layer.weight, layer.bias
        k = weight.shape[0] // self.num_bumps
        w = self.bumps[t[0]].to(weight.dtype)
        mixed = (weight.reshape(k, self.num_bumps, -1) * w[None, :, None]).sum(dim=1)
        mixed_bias = (bias.reshape(k, self.num_bumps) * w).sum(dim=1)
        if isinstance(layer, nn.Conv2d):
            return F.conv2d(h, mixed.reshape(k, *weight.shape[1:]), mixed_bias)
        return F.linear(h, mixed, mixed_bias)


class NormalizedRBF(nn.Module):
    """h_k = exp(-‖x - c_k‖² / (2 s_k²)) / Σ_k' (same), learned centres c_k and widths s_k: `[N x D] -> [N x K]`."""

    def __init__(self, in_dim: int, units: int):
        super().__init__()
        self.centres = nn.Parameter(torch.randn(units, in_dim))
        self.log_width = nn.Parameter(torch.zeros(units))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        sq = torch.cdist(x, self.centres) ** 2
        return torch.softmax(-sq / (2 * torch.exp(2 * self.log_width)), dim=1)


def _zero_(layer: nn.Module) -> nn.Module:
    nn.init.zeros_(layer.weight)
    nn.init.zeros_(layer.bias)
    return layer


class SDBumpMLP(nn.Module):
    """The paper's toy network for vectors `[N x D]` -> `[N x out_mult*D]`:

        h = act(... act(first(x)))         hidden sizes `hidden`; first = dense or normalised RBF
        z = W h                            [N x out_mult*D*J]
        out[:, k] = Σ_j bump_j(t) z[:, k, j]

    Paper settings: swiss roll hidden=(16,), hidden_kind="rbf", num_bumps=T (a readout per step);
    heartbeat hidden=(50, 50, 50), activation="sigmoid".
    """

    def __init__(self, data_shape=(2,), out_mult: int = 2, num_timesteps: int = 40, hidden=(64, 64),
                 num_bumps: int = 10, activation: str = "sigmoid", hidden_kind: str = "dense"):
        super().__init__()
        self.data_shape = tuple(data_shape)
        if len(self.data_shape) != 1:
            raise ValueError(f"SDBumpMLP takes vector data, got data_shape {self.data_shape}")
        dim = self.data_shape[0]
        hidden = [int(h) for h in ([hidden] if isinstance(hidden, int) else hidden)]
        if not hidden:
            raise ValueError("SDBumpMLP needs at least one hidden layer")
        kind = HiddenKind.from_str(hidden_kind)
        layers: list[nn.Module] = []
        if kind is HiddenKind.RBF:
            layers.append(NormalizedRBF(dim, hidden[0]))
        else:
            layers += [nn.Linear(dim, hidden[0]), make_activation(activation)]
        for a, b in zip(hidden[:-1], hidden[1:]):
            layers += [nn.Linear(a, b), make_activation(activation)]
        self.body = nn.Sequential(*layers)
        self.out = _zero_(nn.Linear(hidden[-1], out_mult * dim * num_bumps))
        self.readout = TemporalReadout(num_timesteps, num_bumps)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.readout.of_layer(self.out, self.body(x), t)


class MultiScaleConv(nn.Module):
    """One multi-scale convolution: for s = 0..S-1 mean-pool by 2^s, convolve, upsample (nearest)
    back, sum over scales, then the activation. `[N x C_in x H x W] -> [N x C_out x H x W]`.

    Computed as a pyramid: pooling by 2^s is s poolings by 2, and the sum is gathered from the
    coarsest scale up (upsample by 2, add the next finer map), so every pooling and upsampling works
    on a map a quarter the size of the one before (dead leaves, S = 3: the net 8% faster)."""

    def __init__(self, in_ch: int, out_ch: int, num_scales: int, kernel_size: int, activation: str):
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv2d(in_ch, out_ch, kernel_size, padding=kernel_size // 2)
                                   for _ in range(num_scales))
        self.act = make_activation(activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pyramid = [x]
        for _ in self.convs[1:]:
            pyramid.append(F.avg_pool2d(pyramid[-1], 2))
        total = None
        for conv, level in zip(reversed(self.convs), reversed(pyramid)):
            y = conv(level)
            total = y if total is None else y + F.interpolate(total, scale_factor=2, mode="nearest")
        return self.act(total)


class SDMultiScaleConv(nn.Module):
    """The paper's image network `[N x C x H x W]` -> `[N x out_mult*C x H x W]`:

        lower: conv_layers multi-scale convolutions (conv_channels features), optionally beside a
               dense MLP on the whole image giving `global_dense_out` extra features per pixel
               (the paper code's `n_hidden_dense_lower`; 0 = off)
        upper: per-pixel dense layers (1x1 convolutions), dense_layers of them, the last emitting
               out_mult*C*J values, mixed by the J bumps of t.
    H and W must be divisible by 2^(num_scales-1).
    """

    def __init__(self, data_shape=(1, 28, 28), out_mult: int = 2, num_timesteps: int = 1000,
                 num_scales: int = 3, conv_channels: int = 20, conv_layers: int = 4, kernel_size: int = 3,
                 dense_hidden: int = 20, dense_layers: int = 2, num_bumps: int = 10,
                 activation: str = "softplus", global_dense_hidden: int = 0, global_dense_out: int = 2):
        super().__init__()
        c, h, w = self.data_shape = tuple(data_shape)
        f = 2 ** (num_scales - 1)
        if num_scales < 1 or h % f or w % f:
            raise ValueError(f"num_scales={num_scales} needs H and W divisible by {f}; got {h}x{w}")
        if kernel_size % 2 == 0 or conv_layers < 1 or dense_layers < 1:
            raise ValueError("kernel_size must be odd and conv_layers, dense_layers >= 1; got "
                             f"{kernel_size}, {conv_layers}, {dense_layers}")
        self.convs = nn.Sequential(*[
            MultiScaleConv(c if i == 0 else conv_channels, conv_channels, num_scales, kernel_size, activation)
            for i in range(conv_layers)])
        self.global_dense = None
        features = conv_channels
        if global_dense_hidden > 0:
            self.global_dense = nn.Sequential(
                nn.Flatten(), nn.Linear(c * h * w, global_dense_hidden), make_activation(activation),
                nn.Linear(global_dense_hidden, global_dense_out * h * w), make_activation(activation),
                nn.Unflatten(1, (global_dense_out, h, w)))
            features += global_dense_out
        upper: list[nn.Module] = []
        for _ in range(dense_layers - 1):
            upper += [nn.Conv2d(features, dense_hidden, 1), make_activation(activation)]
            features = dense_hidden
        self.upper = nn.Sequential(*upper)
        self.out = _zero_(nn.Conv2d(features, out_mult * c * num_bumps, 1))
        self.readout = TemporalReadout(num_timesteps, num_bumps)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        y = self.convs(x)
        if self.global_dense is not None:
            y = torch.cat([y, self.global_dense(x)], dim=1)
        return self.readout.of_layer(self.out, self.upper(y), t)
