"""Random draws from an explicit generator, wherever it lives: the same seed gives the same numbers
whatever device the data is on (a CPU generator for CUDA data draws on the CPU, then moves)."""
from __future__ import annotations

import torch


def _where(generator, device):
    device = torch.device(device) if device is not None else torch.get_default_device()
    same = generator is None or generator.device.type == device.type
    return device, (device if same else generator.device)


def randn(shape, generator: torch.Generator | None = None, device=None,
          dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Standard normal draws `shape` on `device`."""
    device, draw_on = _where(generator, device)
    return torch.randn(shape, generator=generator, device=draw_on, dtype=dtype).to(device)


def rand(shape, generator: torch.Generator | None = None, device=None,
         dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Uniform [0, 1) draws `shape` on `device`."""
    device, draw_on = _where(generator, device)
    return torch.rand(shape, generator=generator, device=draw_on, dtype=dtype).to(device)
