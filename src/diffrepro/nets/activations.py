"""Activation registry shared by the networks (the paper code's softplus / leaky ReLU with slope 0.05
for SD-2015's image nets, sigmoid for its toy nets; SiLU for DDPM's U-Net)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class _SoftplusFn(torch.autograd.Function):
    """softplus(x) = log(1 + e^x), its gradient sigmoid(x), in four in-place passes after one copy.

    aten's softplus (like its log1p) is slow on the CPU: 3.8 ms for the 64 x 24 x 16 x 16
    activations of the dead-leaves net on one thread of an AMD EPYC, against 0.8 ms here, where it
    took over a quarter of the network's forward+backward (docs/benchmarks.md, issue 21). e^x is taken at
    min(x, 80) (finite in float32) and the result raised to x, since log(1 + e^x) >= x: exact at
    ±inf, within two units in the last place of max(softplus(x), 1) elsewhere (log(1 + y) in place
    of log1p(y)); the gradient is sigmoid(x) (tests/test_nets.py)."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        out = x.clamp(max=80.0).exp_().add_(1.0).log_()
        return torch.maximum(out, x, out=out)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return torch.sigmoid(x).mul_(grad)


# dtypes in which e^80 is finite (float16's range ends at e^11)
_FAST_SOFTPLUS_DTYPES = (torch.float32, torch.float64, torch.bfloat16)


class Softplus(nn.Module):
    """nn.Softplus (β = 1), through `_SoftplusFn` on the CPU (4.5x faster there); aten's one kernel
    elsewhere, and for other dtypes."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type == "cpu" and x.dtype in _FAST_SOFTPLUS_DTYPES:
            return _SoftplusFn.apply(x)
        return F.softplus(x)


ACTIVATIONS = {
    "silu": nn.SiLU,
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "tanh": nn.Tanh,
    "softplus": Softplus,
    "sigmoid": nn.Sigmoid,
    "leaky_relu": lambda: nn.LeakyReLU(0.05),
}


def make_activation(name: str) -> nn.Module:
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; allowed: {', '.join(sorted(ACTIVATIONS))}")
    return ACTIVATIONS[name]()
