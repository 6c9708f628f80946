"""Sinusoidal timestep embedding (Vaswani et al. 2017, as in the DDPM reference code)."""
from __future__ import annotations

import math

import torch

MAX_PERIOD = 10000.0


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = MAX_PERIOD) -> torch.Tensor:
    """Embed timesteps as [sin(t·f_0..f_{h-1}), cos(t·f_0..f_{h-1})], h = dim // 2.

    Frequencies follow the DDPM reference code (`get_timestep_embedding` in diffusion_tf/nn.py):
    f_i = max_period^(-i / (h - 1)), i.e. geometric from 1 down to exactly 1/max_period. An odd
    `dim` gets one trailing zero column.

    t: [N] step indices (long) or real-valued times (float); dim: embedding width (>= 2).
    Returns a float32 tensor [N x dim] on t's device.
    """
    if t.ndim != 1:
        raise ValueError(f"timestep_embedding expects t of shape [N]; got shape {tuple(t.shape)}")
    if dim < 2:
        raise ValueError(f"timestep_embedding dim must be >= 2; got {dim}")
    half = dim // 2
    # With half == 1 there is a single frequency, 1 (the DDPM formula would divide by zero).
    step = math.log(max_period) / (half - 1) if half > 1 else 0.0
    freqs = torch.exp(-step * torch.arange(half, dtype=torch.float32, device=t.device))
    args = t.to(torch.float32)[:, None] * freqs[None, :]
    emb = torch.cat([torch.sin(args), torch.cos(args)], dim=1)
    if dim % 2 == 1:
        emb = torch.nn.functional.pad(emb, (0, 1))
    return emb
