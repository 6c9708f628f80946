"""Sampling and inpainting loops, kept outside the math (as diffusers' pipeline_ddpm), plus `randn`.

The loops use only a duck-typed process, so DDPM and SD-2015 processes plug in alike:
`num_timesteps`, `prior_sample(shape, generator, device)`, `q_sample(x_start, t, noise=None,
generator=None)` (drawing its own kind of noise when none is given: Gaussian, or uniform for a
binomial process) and `p_sample(model, x_t, t, generator)`; t is a LongTensor `[N]` of 0-based
step indices. A process whose p_sample takes `clip_denoised` may be passed that option.
"""
from __future__ import annotations

import inspect
from typing import Protocol

import torch
from tqdm.auto import tqdm

from .choices import Choice
from .diffusion.draws import rand, randn  # noqa: F401  (randn is part of this module's API)


class DiffusionProcess(Protocol):
    """What the loops need from a process."""

    num_timesteps: int

    def prior_sample(self, shape, generator, device) -> torch.Tensor: ...

    def q_sample(self, x_start: torch.Tensor, t: torch.Tensor, noise=None,
                 generator=None) -> torch.Tensor: ...

    def p_sample(self, model, x_t: torch.Tensor, t: torch.Tensor, generator) -> torch.Tensor: ...


def _steps(process, progress: bool, desc: str):
    return tqdm(range(process.num_timesteps - 1, -1, -1), desc=desc, disable=not progress,
                total=process.num_timesteps)


def _p_sample_options(process, clip_denoised: bool | None) -> dict:
    """Keyword options for process.p_sample: clip_denoised where given and understood.

    Not clipping is what a process without the option does anyway, so False is then dropped.
    """
    if clip_denoised is None:
        return {}
    if "clip_denoised" in inspect.signature(process.p_sample).parameters:
        return {"clip_denoised": bool(clip_denoised)}
    if clip_denoised:
        raise ValueError(f"clip_denoised=True, but {type(process).__name__}.p_sample has no "
                         "clip_denoised option; allowed for it: None or False")
    return {}


def _infer_device(model, generator):
    params = getattr(model, "parameters", None)
    first = next(iter(params()), None) if callable(params) else None
    if first is not None:
        return first.device
    return generator.device if generator is not None else torch.get_default_device()


@torch.no_grad()
def sample(process: DiffusionProcess, model, shape, generator: torch.Generator | None = None,
           device=None, progress: bool = True, clip_denoised: bool | None = None) -> torch.Tensor:
    """Ancestral sampling: x_T ~ prior, then x_{t-1} ~ p(x_{t-1} | x_t) for t = T..1.

    `shape` is the batch shape `[N x ...]`; `device` defaults to the model's (or the generator's).
    clip_denoised: None keeps the process's own default. Returns x_0 `[N x ...]`. Put the model
    in eval mode first.
    """
    device = device if device is not None else _infer_device(model, generator)
    options = _p_sample_options(process, clip_denoised)
    x = process.prior_sample(tuple(shape), generator, device)
    for i in _steps(process, progress, "sampling"):
        t = torch.full((x.shape[0],), i, dtype=torch.long, device=x.device)
        x = process.p_sample(model, x, t, generator, **options)
    return x


class InpaintMode(Choice):
    """How known coordinates are held during the reverse trajectory."""

    NOISED = "noised"    # known coordinates of x_{t-1} are a fresh draw of q(x_{t-1} | x_known)
    CLAMPED = "clamped"  # known coordinates always equal x_known (SD-2015's delta r(x_t) = r(x_0))



@torch.no_grad()
def inpaint(process: DiffusionProcess, model, x_known: torch.Tensor, mask: torch.Tensor,
            generator: torch.Generator | None = None, mode: str | InpaintMode = "noised",
            progress: bool = True, clip_denoised: bool | None = None) -> torch.Tensor:
    """Sample the unknown coordinates given the known ones; the output equals x_known where known.

    x_known `[N x ...]`; mask broadcastable to it, nonzero where a value is KNOWN. "noised": the
    known coordinates entering step t are a fresh draw of q(x_t | x_known) (the process's own
    q_sample and noise); "clamped": they always equal x_known.
    """
    mode = InpaintMode.from_str(mode)
    options = _p_sample_options(process, clip_denoised)
    known = torch.as_tensor(mask, device=x_known.device).bool().expand_as(x_known)
    n = x_known.shape[0]

    def hold(x, i):
        if mode is InpaintMode.CLAMPED or i < 0:
            return torch.where(known, x_known, x)
        t = torch.full((n,), i, dtype=torch.long, device=x_known.device)
        return torch.where(known, process.q_sample(x_known, t, generator=generator), x)

    x = hold(process.prior_sample(tuple(x_known.shape), generator, x_known.device),
             process.num_timesteps - 1)
    for i in _steps(process, progress, "inpainting"):
        t = torch.full((n,), i, dtype=torch.long, device=x_known.device)
        x = hold(process.p_sample(model, x, t, generator, **options), i - 1)
    return x


@torch.no_grad()
def progressive(process: DiffusionProcess, model, shape, generator: torch.Generator | None = None,
                device=None, frames: int = 10) -> list:
    """Ancestral sampling that records `frames` snapshots along the chain (DDPM Fig. 6).

    Returns a list of (t, x_t, predicted x_0 or None) from t = T down to 1, where the prediction
    comes from process.p_mean_variance when the process has one (DDPM), else None.
    """
    device = device if device is not None else _infer_device(model, generator)
    x = process.prior_sample(tuple(shape), generator, device)
    keep = {int(round(v)) for v in torch.linspace(process.num_timesteps - 1, 0, frames).tolist()}
    snapshots = []
    for i in range(process.num_timesteps - 1, -1, -1):
        t = torch.full((x.shape[0],), i, dtype=torch.long, device=x.device)
        if i in keep:
            out = process.p_mean_variance(model, x, t) if hasattr(process, "p_mean_variance") else None
            pred = out.get("pred_xstart") if isinstance(out, dict) else None
            snapshots.append((i + 1, x.clone(), None if pred is None else pred.clone()))
        x = process.p_sample(model, x, t, generator)
    return snapshots


class RSchedule(Choice):
    """How r(x_0) reaches the intermediate marginals (SD-2015 §2.5.4)."""

    CONSTANT = "constant"  # r(x_t) = r(x_0)
    ANNEALED = "annealed"  # r(x_t) = r(x_0)^((T - t)/T): the start distribution is untouched

    def exponent(self, t: int, num_timesteps: int) -> float:
        """The power of r applied to the marginal at paper time t (0 = data, T = prior)."""
        return 1.0 if self is RSchedule.CONSTANT else (num_timesteps - t) / num_timesteps


def reverse_mean_logvar(process, model, x_t, t):
    """(mean, log-variance) of a Gaussian reverse step, whichever Gaussian process it is."""
    out = process.p_mean_variance(model, x_t, t)
    if isinstance(out, dict):
        return out["mean"], out["log_variance"]
    return out


@torch.no_grad()
def denoise(process, model, y: torch.Tensor, noise_level: float, generator: torch.Generator | None = None,
            schedule: str | RSchedule = "constant", progress: bool = True) -> torch.Tensor:
    """Sample p̃(x_0) ∝ p(x_0) r(x_0) for an observation y of x_0 (SD-2015 §2.5, multiplying distributions).

    Gaussian processes: r(x) = N(y; x, noise_level² I), smooth, so each reverse step N(m, v) times
    r(x)^w is again Gaussian: precision 1/v + w/noise_level², mean (m/v + w y/noise_level²)/precision
    (the perturbed mean). Binomial processes: y is a bit-flipped copy (flip probability
    noise_level), r(x_j) = 1 − noise_level where x_j = y_j, and the reverse rate is perturbed
    (`perturbed_flip_rate`). w = r_schedule.exponent(t) at the marginal each step produces.
    """
    schedule = RSchedule.from_str(schedule)
    T = process.num_timesteps
    n = y.shape[0]
    binary = hasattr(process, "p_rate")
    if binary:
        from .diffusion.binomial import perturbed_flip_rate

        r1 = torch.where(y > 0.5, 1.0 - noise_level, noise_level).double()
        r0 = 1.0 - r1
    x = process.prior_sample(tuple(y.shape), generator, y.device)
    w_T = schedule.exponent(T, T)
    if w_T > 0:  # r(x_T)^w multiplies the prior too
        if binary:
            rate = perturbed_flip_rate(torch.full_like(r1, float(process.p)), r1, r0, w_T)
            x = (rand(y.shape, generator, y.device) < rate).to(y.dtype)
        else:
            prec = 1.0 + w_T / noise_level ** 2
            x = (w_T * y / noise_level ** 2 + x * prec ** 0.5) / prec
    for i in _steps(process, progress, "denoising"):
        t = torch.full((n,), i, dtype=torch.long, device=y.device)
        w = schedule.exponent(i, T)
        if binary:
            rate1, _ = process.p_rate(model, x, t)
            rate = perturbed_flip_rate(rate1, r1, r0, w)
            x = (rand(y.shape, generator, y.device) < rate).to(y.dtype)
        else:
            mean, logvar = reverse_mean_logvar(process, model, x, t)
            prec = torch.exp(-logvar) + w / noise_level ** 2
            mean = (mean * torch.exp(-logvar) + w * y / noise_level ** 2) / prec
            noise = randn(y.shape, generator, y.device, dtype=mean.dtype)
            x = (mean + noise / prec.sqrt() * (i > 0)).to(y.dtype)
    return x
