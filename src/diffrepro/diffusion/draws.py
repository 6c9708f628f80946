"""Random draws from an explicit generator, wherever it lives: the same seed gives the same numbers
whatever device the data is on (a CPU generator for CUDA data draws on the CPU, then moves).

A `Shard` in place of the generator gives one process of a multi-process training step its rows
of the draws the whole batch would get: every process draws for the whole batch and keeps its slice.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Shard:
    """Process `rank` of `world`'s share of draws whose first axis is a batch split evenly over the
    processes: a draw of shape [n x ...] is the rows rank·n .. (rank+1)·n − 1 of the [world·n x ...]
    draw that `generator` makes for the whole batch (so every process advances it alike)."""
    generator: torch.Generator
    rank: int
    world: int

    @property
    def device(self) -> torch.device:
        return self.generator.device


def _where(generator, device):
    device = torch.device(device) if device is not None else torch.get_default_device()
    same = generator is None or generator.device.type == device.type
    return device, (device if same else generator.device)


def moved(x: torch.Tensor, device) -> torch.Tensor:
    """`x` on `device`. A CPU tensor bound for a GPU goes through pinned memory without blocking: a
    plain copy from pageable memory waits for the GPU to finish its queue, once per draw."""
    device = torch.device(device)
    if x.device.type == "cpu" and device.type == "cuda":
        return x.pin_memory().to(device, non_blocking=True)
    return x.to(device)


def _draw(fn, shape, generator, device, **kwargs) -> torch.Tensor:
    device, draw_on = _where(generator, device)
    if isinstance(generator, Shard):
        n = shape[0]
        whole = fn((generator.world * n, *shape[1:]), generator=generator.generator, device=draw_on, **kwargs)
        return moved(whole[generator.rank * n:(generator.rank + 1) * n], device)
    return moved(fn(shape, generator=generator, device=draw_on, **kwargs), device)


def randn(shape, generator: torch.Generator | Shard | None = None, device=None,
          dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Standard normal draws `shape` on `device`."""
    return _draw(torch.randn, shape, generator, device, dtype=dtype)


def rand(shape, generator: torch.Generator | Shard | None = None, device=None,
         dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Uniform [0, 1) draws `shape` on `device`."""
    return _draw(torch.rand, shape, generator, device, dtype=dtype)


def randint(low: int, high: int, shape, generator: torch.Generator | Shard | None = None,
            device=None) -> torch.Tensor:
    """Integers uniform in low .. high − 1 (int64), `shape` on `device`."""
    return _draw(lambda size, **kw: torch.randint(low, high, size, **kw), shape, generator, device)
