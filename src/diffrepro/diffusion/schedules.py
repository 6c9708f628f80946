"""β schedules (a registry of named schedules), their float64 constants, and per-step indexing.

Every schedule returns float64 betas `[T]`, where index i is the paper's step t = i + 1. The derived
constants are computed once in float64 through log1p/expm1 (in float32 a β_1 of 1e-5, as in SD-2015
App. B, ruins the t = 2 posterior variance), then indexed per step and cast to the
data's dtype by `extract`.
"""
from __future__ import annotations

import dataclasses
import inspect
import math

import numpy as np
import torch


def linear_betas(num_timesteps: int, beta_start: float = 1e-4,
                 beta_end: float = 0.02) -> np.ndarray:
    """DDPM's schedule: β linear from beta_start (t = 1) to beta_end (t = T)."""
    return np.linspace(beta_start, beta_end, num_timesteps, dtype=np.float64)


def cosine_betas(num_timesteps: int, s: float = 0.008, max_beta: float = 0.999) -> np.ndarray:
    """Improved DDPM's schedule: ᾱ(t) = f(t)/f(0), f(t) = cos²(π/2 · (t/T + s)/(1 + s)).

    β_t = 1 − ᾱ(t)/ᾱ(t − 1), capped at max_beta.
    """
    steps = np.arange(num_timesteps + 1, dtype=np.float64) / num_timesteps
    f = np.cos((steps + s) / (1.0 + s) * math.pi / 2) ** 2
    return np.minimum(1.0 - f[1:] / f[:-1], max_beta)


def geometric_betas(num_timesteps: int, beta_start: float = 1e-4,
                    beta_end: float = 0.02) -> np.ndarray:
    """β geometric (constant ratio) from beta_start (t = 1) to beta_end (t = T)."""
    return np.geomspace(beta_start, beta_end, num_timesteps, dtype=np.float64)


def constant_betas(num_timesteps: int, beta: float = 0.02) -> np.ndarray:
    """The same β at every step."""
    return np.full(num_timesteps, beta, dtype=np.float64)


SCHEDULES = {
    "linear": linear_betas,
    "cosine": cosine_betas,
    "geometric": geometric_betas,
    "constant": constant_betas,
}


def _schedule(name: str):
    if name not in SCHEDULES:
        raise ValueError(f"unknown beta schedule {name!r}; allowed: {', '.join(sorted(SCHEDULES))}")
    return SCHEDULES[name]


def schedule_settings(name: str) -> tuple[str, ...]:
    """The keyword settings schedule `name` accepts, e.g. ("beta_start", "beta_end")."""
    params = inspect.signature(_schedule(name)).parameters
    return tuple(p for p in params if p != "num_timesteps")


def get_betas(name: str, num_timesteps: int, **kw) -> np.ndarray:
    """Look a schedule up by name and build float64 betas `[num_timesteps]`, each in (0, 1)."""
    fn = _schedule(name)
    allowed = schedule_settings(name)
    unknown = sorted(set(kw) - set(allowed))
    if unknown:
        raise ValueError(f"unknown setting(s) {', '.join(unknown)} for beta schedule {name!r}; "
                         f"allowed: {', '.join(allowed)}")
    if int(num_timesteps) < 1:
        raise ValueError(f"num_timesteps must be >= 1, got {num_timesteps}")
    betas = np.asarray(fn(int(num_timesteps), **kw), dtype=np.float64)
    if not np.all((betas > 0) & (betas < 1)):
        raise ValueError(f"beta schedule {name!r} with {kw} gives betas outside (0, 1): "
                         f"min {betas.min():g}, max {betas.max():g}")
    return betas


@dataclasses.dataclass(frozen=True)
class ScheduleConstants:
    """Float64 numpy arrays `[T]` derived from betas; index i is the paper's step t = i + 1."""

    betas: np.ndarray
    alphas: np.ndarray                        # α_t = 1 − β_t
    alphas_cumprod: np.ndarray                # ᾱ_t
    alphas_cumprod_prev: np.ndarray           # ᾱ_{t−1}, with ᾱ_0 = 1
    one_minus_alphas_cumprod: np.ndarray      # 1 − ᾱ_t, via expm1 (exact for tiny β)
    one_minus_alphas_cumprod_prev: np.ndarray  # 1 − ᾱ_{t−1}, with 1 − ᾱ_0 = 0
    sqrt_alphas_cumprod: np.ndarray
    sqrt_one_minus_alphas_cumprod: np.ndarray
    log_one_minus_alphas_cumprod: np.ndarray
    sqrt_recip_alphas_cumprod: np.ndarray     # 1 / sqrt(ᾱ_t)
    sqrt_recipm1_alphas_cumprod: np.ndarray   # sqrt(1/ᾱ_t − 1)
    log_betas: np.ndarray
    posterior_variance: np.ndarray            # β̃_t = (1 − ᾱ_{t−1}) / (1 − ᾱ_t) · β_t (0 at t = 1)
    posterior_log_variance_clipped: np.ndarray  # log β̃_t with the t = 1 entry replaced by log β̃_2
    posterior_mean_coef1: np.ndarray          # weight of x_0 in μ̃_t
    posterior_mean_coef2: np.ndarray          # weight of x_t in μ̃_t

    @property
    def num_timesteps(self) -> int:
        return len(self.betas)


def schedule_constants(betas) -> ScheduleConstants:
    """All forward-process and posterior constants of `betas` `[T]`, computed in float64."""
    betas = np.asarray(betas, dtype=np.float64)
    if betas.ndim != 1 or not np.all((betas > 0) & (betas < 1)):
        raise ValueError("betas must be a 1-D array with every value in (0, 1)")
    log_alphas_cumprod = np.cumsum(np.log1p(-betas))
    alphas_cumprod = np.exp(log_alphas_cumprod)
    one_minus = -np.expm1(log_alphas_cumprod)
    alphas_cumprod_prev = np.append(1.0, alphas_cumprod[:-1])
    one_minus_prev = np.append(0.0, one_minus[:-1])
    posterior_variance = betas * one_minus_prev / one_minus
    clipped_first = posterior_variance[1] if len(betas) > 1 else betas[0]
    return ScheduleConstants(
        betas=betas,
        alphas=1.0 - betas,
        alphas_cumprod=alphas_cumprod,
        alphas_cumprod_prev=alphas_cumprod_prev,
        one_minus_alphas_cumprod=one_minus,
        one_minus_alphas_cumprod_prev=one_minus_prev,
        sqrt_alphas_cumprod=np.sqrt(alphas_cumprod),
        sqrt_one_minus_alphas_cumprod=np.sqrt(one_minus),
        log_one_minus_alphas_cumprod=np.log(one_minus),
        sqrt_recip_alphas_cumprod=np.exp(-0.5 * log_alphas_cumprod),
        sqrt_recipm1_alphas_cumprod=np.sqrt(one_minus / alphas_cumprod),
        log_betas=np.log(betas),
        posterior_variance=posterior_variance,
        posterior_log_variance_clipped=np.log(np.append(clipped_first, posterior_variance[1:])),
        posterior_mean_coef1=betas * np.sqrt(alphas_cumprod_prev) / one_minus,
        posterior_mean_coef2=one_minus_prev * np.sqrt(1.0 - betas) / one_minus,
    )


def extract(arr, t: torch.Tensor, broadcast_shape,
            dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Index a per-step array `[T]` (numpy or torch) at t `[N]` and broadcast to `broadcast_shape`.

    The result has `dtype` and lives on t's device, shaped `[N x 1 x ...]` expanded to
    `broadcast_shape` (improved-diffusion's `_extract_into_tensor`).
    """
    # Casting then indexing equals indexing then casting, and keeps float64 off devices without it.
    values = torch.as_tensor(arr).to(device=t.device, dtype=dtype)[t]
    values = values.reshape(values.shape + (1,) * (len(broadcast_shape) - values.dim()))
    return values.expand(broadcast_shape)
