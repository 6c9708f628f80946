"""Activation registry shared by the networks."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class _SoftplusCPU(torch.autograd.Function):
    """softplus(x) = max(x, 0) + log(1 + exp(-|x|)), ATen's own gradient (sigmoid(x)).

    ATen's CPU softplus calls log1p(exp(x)), and its log1p is not vectorised: 4.1 ms for a
    [64, 24, 16, 16] activation on one thread (2-core AMD EPYC), a quarter of SD-2015's dead-leaves
    training step. exp and log are, and this form takes 1.4 ms. It differs from log1p's by at most one
    float32 step (2e-6 near 20; where exp(-|x|) is below float's epsilon, 1 + exp(-|x|) rounds to 1;
    ATen returns x itself above 20, as this does).
    """

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x.abs().neg_().exp_().add_(1).log_().add_(x.relu())

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return torch.ops.aten.softplus_backward(grad, x, 1.0, 20.0)


class Softplus(nn.Module):
    """`nn.Softplus()` (β = 1), through `_SoftplusCPU` for float32 on the CPU. On CUDA ATen's own kernel
    is fast (and autocast keeps softplus in fp32); in float64 ATen's cut-off at 20 is itself off by
    exp(-20) ≈ 2e-9, so float64 keeps ATen's values exactly."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type == "cpu" and x.dtype == torch.float32:
            return _SoftplusCPU.apply(x)
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
