"""The network of an evaluation (sampling, the bound) called in cache-sized slices of the batch on the CPU.

A forward pass of an image network over a large batch costs more per example than over a small one
once its activations outgrow the CPU's caches: SD-2015's dead-leaves net (16x16 images, 24-48
channels) takes 1.4x as long per example at batch 500 as at 64 on one thread of an AMD EPYC
(docs/benchmarks.md). No example's output depends on another's (no batch statistics in any network
here; the convolutions give the same bits for any batch size: tests/test_slicing.py), so a call
split into slices returns what the whole call returns, sooner. Training keeps its whole batch
(its batches are small, and backward needs the whole graph).
"""
from __future__ import annotations

import torch

from ..runtime import device_kind

# examples x pixels of one network call on the CPU: 64 dead-leaves images (16x16), 256 digits (8x8)
CPU_PIXELS_PER_CALL = 16384


class Sliced(torch.nn.Module):
    """`net(x, t)` as the concatenation of `net` over equal slices of at most `max_examples` examples."""

    def __init__(self, net: torch.nn.Module, max_examples: int):
        super().__init__()
        self.net, self.max_examples = net, max(1, int(max_examples))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        if n <= self.max_examples:
            return self.net(x, t)
        parts = -(-n // self.max_examples)
        return torch.cat([self.net(xs, ts) for xs, ts in zip(x.tensor_split(parts), t.tensor_split(parts))])


def for_evaluation(net: torch.nn.Module, device, example_shape) -> torch.nn.Module:
    """`net` as sampling and the bound call it on `device`: on the CPU an image network (examples
    `[C x H x W]`) in slices of CPU_PIXELS_PER_CALL pixels; elsewhere, and for vectors, itself."""
    if device_kind(device) != "cpu" or len(example_shape) != 3 or isinstance(net, Sliced):
        return net
    pixels = int(example_shape[1]) * int(example_shape[2])
    return Sliced(net, CPU_PIXELS_PER_CALL // pixels)
