"""Activation registry shared by the networks (the paper code's softplus / leaky ReLU with slope 0.05
for SD-2015's image nets, sigmoid for its toy nets; SiLU for DDPM's U-Net)."""
from __future__ import annotations

from torch import nn

ACTIVATIONS = {
    "silu": nn.SiLU,
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "tanh": nn.Tanh,
    "softplus": nn.Softplus,
    "sigmoid": nn.Sigmoid,
    "leaky_relu": lambda: nn.LeakyReLU(0.05),
}


def make_activation(name: str) -> nn.Module:
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; allowed: {', '.join(sorted(ACTIVATIONS))}")
    return ACTIVATIONS[name]()
