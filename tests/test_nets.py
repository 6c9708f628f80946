"""Tests for the DDPM networks: timestep embedding, TimeMLP, U-Net (shapes, presets, parameter count)."""
from __future__ import annotations

import collections
import math

import numpy as np
import pytest
import torch

from diffrepro.nets import build_net, count_parameters
from diffrepro.nets.embeddings import timestep_embedding
from diffrepro.nets.mlp import TimeMLP
from diffrepro.nets.unet import PRESETS, AttnBlock, ResBlock, UNet, unet_preset

OFFICIAL_CIFAR10_PARAMS = 35_746_307  # diffusion_tf's CIFAR-10 model (paper: 35.7M)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny convolutions run far faster on one thread than on a shared, busy machine's two."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def seeded():
    """Weight initialisation draws from torch's global generator; fix it per test."""
    torch.manual_seed(0)


def tiny_unet(**kw) -> UNet:
    args = dict(data_shape=(1, 8, 8), num_timesteps=50, base_channels=8, channel_mult=(1, 2),
                num_res_blocks=1, attn_resolutions=(4,), dropout=0.0, num_groups=4)
    args.update(kw)
    return UNet(**args)


def perturb_(net: torch.nn.Module, seed: int = 0, scale: float = 0.1) -> None:
    """Add noise to every parameter, so zero-initialised output layers no longer hide the input."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))


# --- embedding -----------------------------------------------------------------------------------

@pytest.mark.parametrize("dim", [16, 7, 2])
def test_timestep_embedding_matches_numpy(dim):
    t = np.array([0, 1, 17, 250, 999])
    half = dim // 2
    freqs = np.exp(-math.log(10000.0) * np.arange(half) / max(half - 1, 1))
    args = t[:, None].astype(np.float64) * freqs[None, :]
    expected = np.concatenate([np.sin(args), np.cos(args), np.zeros((len(t), dim % 2))], axis=1)
    got = timestep_embedding(torch.tensor(t), dim)
    assert got.shape == (len(t), dim) and got.dtype == torch.float32
    # float32 arguments up to 999 carry ~1e-4 absolute rounding error.
    np.testing.assert_allclose(got.numpy(), expected, atol=2e-4, rtol=0)


def test_timestep_embedding_frequency_range_and_float_input():
    t = torch.tensor([3, 40])
    emb = timestep_embedding(t, 10)
    # First frequency is 1, the last is exactly 1/10000 (DDPM's (half - 1) denominator).
    np.testing.assert_allclose(emb[:, 0].numpy(), np.sin([3.0, 40.0]), atol=1e-6)
    np.testing.assert_allclose(emb[:, 4].numpy(), np.sin([3e-4, 4e-3]), atol=1e-7)
    torch.testing.assert_close(timestep_embedding(t.float(), 10), emb)


# --- MLP -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("dim,out_mult", [(2, 1), (2, 2), (20, 1), (20, 3)])
def test_mlp_output_shape(dim, out_mult):
    net = build_net("mlp", data_shape=(dim,), out_mult=out_mult, num_timesteps=40, hidden=32)
    out = net(torch.randn(5, dim), torch.randint(0, 40, (5,)))
    assert out.shape == (5, out_mult * dim)


def test_mlp_starts_at_zero_and_depends_on_t():
    net = TimeMLP(data_shape=(2,), num_timesteps=40, hidden=32, layers=2, time_embed_dim=16)
    x = torch.randn(4, 2)
    assert torch.all(net(x, torch.zeros(4, dtype=torch.long)) == 0)  # zero-init output layer
    perturb_(net)
    same_t = net(x, torch.full((4,), 3))
    assert torch.equal(same_t, net(x, torch.full((4,), 3)))
    assert (same_t - net(x, torch.full((4,), 30))).abs().amax(dim=1).min() > 1e-4


def test_mlp_rejects_bad_activation_and_image_data():
    with pytest.raises(ValueError, match="allowed: .*silu"):
        TimeMLP(data_shape=(2,), activation="swish9")
    with pytest.raises(ValueError, match="data_shape"):
        TimeMLP(data_shape=(1, 8, 8))


# --- U-Net ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("out_mult", [1, 2])
def test_unet_output_shape(out_mult):
    net = tiny_unet(data_shape=(3, 16, 16), channel_mult=(1, 2, 2), num_res_blocks=2,
                    attn_resolutions=(8,), out_mult=out_mult)
    out = net(torch.randn(2, 3, 16, 16), torch.tensor([0, 49]))
    assert out.shape == (2, out_mult * 3, 16, 16)


def test_unet_registry_and_zero_output_at_init():
    net = build_net("unet", data_shape=(1, 8, 8), out_mult=2, num_timesteps=200, preset="digits-cpu")
    out = net(torch.randn(3, 1, 8, 8), torch.tensor([0, 7, 199]))
    assert out.shape == (3, 2, 8, 8)
    assert torch.all(out == 0)  # conv_out is zero-initialised, as in the official code


def test_ddpm_cifar10_preset_parameter_count():
    net = UNet(data_shape=(3, 32, 32), num_timesteps=1000, preset="ddpm-cifar10")
    n = count_parameters(net)
    assert abs(n - OFFICIAL_CIFAR10_PARAMS) / OFFICIAL_CIFAR10_PARAMS < 0.01
    # 4 levels: 2 ResBlocks down and 3 up per level, 2 in the middle; attention after each
    # block at 16x16 (2 down, 3 up) and once in the middle.
    kinds = collections.Counter(type(m).__name__ for m in net.modules())
    assert kinds["ResBlock"] == 4 * 2 + 4 * 3 + 2
    assert kinds["AttnBlock"] == 2 + 3 + 1
    # The default architecture is the paper's.
    assert UNet(data_shape=(3, 32, 32)).config == unet_preset("ddpm-cifar10")


def test_unet_output_depends_on_t():
    net = tiny_unet()
    perturb_(net)
    x = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    a = net(x, torch.tensor([5, 5, 5]))
    assert torch.equal(a, net(x, torch.tensor([5, 5, 5])))
    b = net(x, torch.tensor([40, 40, 40]))
    assert (a - b).abs().amax(dim=(1, 2, 3)).min() > 1e-3


@pytest.mark.parametrize("attn_resolutions", [(8,), (16, 8), ()])
def test_attention_only_at_listed_resolutions(attn_resolutions):
    nrb = 2
    net = tiny_unet(data_shape=(1, 16, 16), channel_mult=(1, 1, 1), num_res_blocks=nrb,
                    attn_resolutions=attn_resolutions)
    seen = []
    for m in net.modules():
        if isinstance(m, AttnBlock):
            m.register_forward_hook(lambda mod, inp, out: seen.append(inp[0].shape[-1]))
    net(torch.randn(1, 1, 16, 16), torch.tensor([3]))
    expected = collections.Counter({4: 1})  # the middle block always attends, at the lowest size
    for res in attn_resolutions:
        expected[res] += nrb + (nrb + 1)  # after every down block and every up block at `res`
    assert collections.Counter(seen) == expected


def test_attention_resolution_must_exist():
    with pytest.raises(ValueError, match="attn_resolutions"):
        tiny_unet(attn_resolutions=(16,))


def test_unknown_preset_names_allowed_ones():
    with pytest.raises(ValueError) as err:
        unet_preset("ddpm-imagenet")
    for name in PRESETS:
        assert name in str(err.value)
    with pytest.raises(ValueError, match="ddpm-cifar10"):
        UNet(data_shape=(1, 8, 8), preset="nope")


def test_preset_explicit_kwargs_override_and_config_rebuilds():
    net = UNet(data_shape=(1, 8, 8), preset="digits-cpu", dropout=0.3, num_res_blocks=2)
    expected = {**PRESETS["digits-cpu"], "dropout": 0.3, "num_res_blocks": 2}
    assert net.config == expected
    rebuilt = UNet(data_shape=(1, 8, 8), **net.config)
    assert count_parameters(rebuilt) == count_parameters(net)


def test_num_groups_adapts_and_bad_values_raise():
    net = tiny_unet(base_channels=4, channel_mult=(1, 1), num_groups=32)
    assert {m.num_groups for m in net.modules() if isinstance(m, torch.nn.GroupNorm)} == {4, 8}
    with pytest.raises(ValueError, match="num_groups=8"):
        tiny_unet(base_channels=12, num_groups=8)  # 8 does not divide 12
    with pytest.raises(ValueError, match="num_groups=0"):
        tiny_unet(num_groups=0)


def test_unet_rejects_sizes_it_cannot_halve():
    with pytest.raises(ValueError, match="divisible by 4"):
        tiny_unet(data_shape=(1, 10, 10), channel_mult=(1, 1, 1), attn_resolutions=())


def test_gradients_reach_every_parameter():
    net = tiny_unet(out_mult=2)
    perturb_(net)  # zero-initialised convs would otherwise block gradient to the layers before them
    x = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    target = torch.randn(4, 2, 8, 8, generator=torch.Generator().manual_seed(3))
    (net(x, torch.tensor([0, 10, 20, 49])) - target).square().mean().backward()
    dead = [name for name, p in net.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert dead == []
    assert sum(isinstance(m, ResBlock) for m in net.modules()) == 2 * 1 + 2 * 2 + 2


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_softplus_equals_torchs_in_value_and_gradient(dtype):
    """The activation registry's softplus is log(1 + e^x), the function nn.Softplus computes (β = 1):
    within two ulps of max(value, 1) of float64's logaddexp(x, 0) over the whole range (nn.Softplus
    itself returns x above 20, 2e-9 off in float64), exact at ±inf and 0, gradient sigmoid(x)."""
    from diffrepro.nets.activations import ACTIVATIONS, Softplus

    assert ACTIVATIONS["softplus"] is Softplus
    x = torch.cat([torch.linspace(-120.0, 120.0, 200_001, dtype=dtype),
                   torch.tensor([-float("inf"), float("inf"), 0.0], dtype=dtype)]).requires_grad_(True)
    out = Softplus()(x)
    out.sum().backward()
    ours = out.detach()
    ref = torch.logaddexp(x.detach().double(), torch.zeros((), dtype=torch.float64))
    tol = 2 * torch.finfo(dtype).eps
    assert torch.equal(ours[-3:], torch.tensor([0.0, float("inf"), math.log(2.0)], dtype=dtype))
    assert float(((ours[:-3].double() - ref[:-3]).abs() / ref[:-3].clamp(min=1.0)).max()) <= tol
    assert torch.allclose(ours, torch.nn.functional.softplus(x.detach()), rtol=1e-6, atol=1e-7)
    assert torch.allclose(x.grad, torch.sigmoid(x.detach()), rtol=0, atol=0)
    xd = torch.randn(50, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(Softplus(), (xd,))


def test_softplus_in_float16_and_bfloat16_stays_finite_and_close():
    """Where e^80 overflows (float16) aten's kernel is used; bfloat16 takes the fast path."""
    from diffrepro.nets.activations import Softplus

    x = torch.linspace(-60.0, 60.0, 2001)
    for dtype, tol in ((torch.float16, 1e-2), (torch.bfloat16, 1e-2)):
        ours = Softplus()(x.to(dtype)).float()
        assert bool(torch.isfinite(ours).all()), dtype
        ref = torch.nn.functional.softplus(x)
        assert float(((ours - ref).abs() / ref.clamp(min=1.0)).max()) <= tol, dtype
