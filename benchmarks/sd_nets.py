"""Benchmark: SD-2015's image networks with aten's softplus against ours (nets/activations.py).

For each SD-2015 image run of params.yaml (arch sd_multiscale: digits-sd, deadleaves-sd), the run's
network at its training batch, laid out as training lays it out on this device
(runtime.uses_channels_last), once with nn.Softplus and once with the registry's Softplus: medians
of the forward and of forward+backward, the two timed in turn within every repeat, and their ratio.
One CPU thread unless --threads says more.
Usage: python benchmarks/sd_nets.py [--params params.yaml] [--repeats 7] [--inner 5] [--threads 1]
"""
from __future__ import annotations

import copy
import statistics
import time

import torch
from torch import nn

from diffrepro.build import build
from diffrepro.nets.activations import Softplus
from diffrepro.runtime import uses_channels_last
from step_overhead import data_shape, setup  # benchmarks/ is this script's folder


def with_aten_softplus(model: nn.Module) -> nn.Module:
    """A copy of `model` whose registry Softplus modules are nn.Softplus."""
    model = copy.deepcopy(model)
    for module in model.modules():
        for name, child in module.named_children():
            if isinstance(child, Softplus):
                setattr(module, name, nn.Softplus())
    return model


def timed(fn, inner: int, device) -> float:
    start = time.perf_counter()
    for _ in range(inner):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / inner * 1e3


def bench(run, shape, device, repeats: int, inner: int) -> dict:
    torch.manual_seed(0)
    ours, _ = build(run, shape)
    fmt = torch.channels_last if uses_channels_last(device, len(shape)) else torch.contiguous_format
    ours = ours.to(device, memory_format=fmt)
    aten = with_aten_softplus(ours)
    b = run.train.batch_size
    x = torch.randn(b, *shape, device=device).contiguous(memory_format=fmt)
    t = torch.randint(0, run.diffusion.timesteps, (b,), device=device)

    def forward(model):
        with torch.no_grad():
            model(x, t)

    def forward_backward(model):
        model(x, t).square().mean().backward()
        model.zero_grad(set_to_none=True)

    times = {}
    for _ in range(repeats + 1):  # the first round warms up
        for label, model in (("aten", aten), ("ours", ours)):
            for kind, fn in (("forward", forward), ("forward+backward", forward_backward)):
                fn(model)
                times.setdefault((label, kind), []).append(timed(lambda: fn(model), inner, device))
    return {key: statistics.median(values[1:]) for key, values in times.items()}


def main():
    args, params, device = setup(__doc__)
    print("| run (batch) | pass | nn.Softplus ms | ours ms | ratio |\n|---|---|---:|---:|---:|")
    for name, run in params.runs.items():
        shape = data_shape(run.dataset)
        if run.model.arch != "sd_multiscale" or shape is None:
            continue
        res = bench(run, shape, device, args.repeats, args.inner)
        for kind in ("forward", "forward+backward"):
            a, o = res[("aten", kind)], res[("ours", kind)]
            print(f"| {name} ({run.train.batch_size}) | {kind} | {a:.2f} | {o:.2f} | {a / o:.2f} |")


if __name__ == "__main__":
    main()
