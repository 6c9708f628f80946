"""An evaluation's network called in cache-sized slices on the CPU (runs/slicing.py) returns the
whole call's bits: for SD-2015's multi-scale net and the U-Net, in fp32 NHWC and under bf16, with
one t or a t per example, through the sampler and the bound."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from diffrepro.diffusion.gaussian import GaussianDiffusion
from diffrepro.diffusion.schedules import linear_betas
from diffrepro.metrics.bound import evaluate_bound
from diffrepro.nets import build_net
from diffrepro.runs.precision import Bf16Net
from diffrepro.runs.sampling import sample
from diffrepro.runs.slicing import CPU_PIXELS_PER_CALL, Sliced, for_evaluation


def _perturbed(net):
    """Random weights (the readouts start at zero, which would hide any difference)."""
    torch.manual_seed(1)
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0.0, 0.2)
    return net.eval()


def _nets():
    sd = build_net("sd_multiscale", data_shape=(1, 16, 16), out_mult=2, num_timesteps=100, num_scales=3,
                   conv_channels=24, conv_layers=3, dense_hidden=48, dense_layers=2, num_bumps=10)
    unet = build_net("unet", data_shape=(1, 8, 8), out_mult=1, num_timesteps=100, preset="digits-cpu")
    sd, unet = _perturbed(sd), _perturbed(unet)
    return {
        "sd_multiscale fp32 NHWC": (sd.to(memory_format=torch.channels_last), (1, 16, 16)),
        "unet fp32 NHWC": (copy.deepcopy(unet).to(memory_format=torch.channels_last), (1, 8, 8)),
        "unet bf16 NCHW": (Bf16Net(copy.deepcopy(unet)).eval(), (1, 8, 8)),
    }


@pytest.mark.parametrize("name", list(_nets()))
def test_sliced_call_gives_the_whole_calls_bits(name):
    net, shape = _nets()[name]
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(203, *shape, generator=gen).contiguous(memory_format=torch.channels_last)
    sliced = Sliced(net, 64)  # 4 slices of 51 or 50 examples
    with torch.no_grad():
        for t in (torch.full((203,), 17), torch.randint(0, 100, (203,), generator=gen)):
            whole = net(x, t)
            assert torch.equal(sliced(x, t), whole)
            assert not torch.equal(whole[:51], whole[51:102])  # the slices see different examples


def test_for_evaluation_slices_images_on_the_cpu_only():
    net = torch.nn.Identity()
    dead = for_evaluation(net, torch.device("cpu"), (1, 16, 16))
    assert isinstance(dead, Sliced) and dead.max_examples == CPU_PIXELS_PER_CALL // 256 == 64
    assert for_evaluation(net, "cpu", (1, 8, 8)).max_examples == 256
    assert for_evaluation(dead, "cpu", (1, 16, 16)) is dead  # never sliced twice
    assert for_evaluation(net, "cpu", (20,)) is net  # vectors: whole batches
    assert for_evaluation(net, torch.device("cuda", 0), (1, 16, 16)) is net
    assert for_evaluation(net, "cuda:1", (3, 32, 32)) is net


def test_sampler_and_bound_give_the_same_numbers_sliced():
    """The sample loop and the bound (which slices by itself on the CPU) against the unsliced net."""
    torch.manual_seed(0)
    unet = _perturbed(build_net("unet", data_shape=(1, 8, 8), out_mult=1, num_timesteps=20, preset="digits-cpu"))
    process = GaussianDiffusion(linear_betas(20, 1e-3, 0.2), var_type="fixed_large")
    plain = sample(process, unet, (300, 1, 8, 8), generator=torch.Generator().manual_seed(3), progress=False)
    sliced = sample(process, Sliced(unet, 256), (300, 1, 8, 8), generator=torch.Generator().manual_seed(3),
                    progress=False)
    assert torch.equal(plain, sliced)
    x = np.random.default_rng(0).uniform(-1, 1, (300, 1, 8, 8)).astype(np.float32)

    class Whole(torch.nn.Module):  # an object for_evaluation does not recognise: called whole
        def __init__(self):
            super().__init__()
            self.calls = []

        def forward(self, x, t):
            self.calls.append(len(x))
            return unet(x, t)

    counted = Whole()
    ours = evaluate_bound(process, counted, x, batch_size=300, seed=5, device="cpu")
    assert set(counted.calls) == {150}  # 300 examples of 64 pixels: two slices of 150
    counted.calls.clear()
    ref = evaluate_bound(process, Sliced(counted, 10**6), x, batch_size=300, seed=5, device="cpu")
    assert set(counted.calls) == {300}
    for key in ("prior", "terms", "total"):
        np.testing.assert_array_equal(ours[key], ref[key])
