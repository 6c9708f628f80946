"""Sampling, inpainting, denoising and progressive loops, kept outside the math (as diffusers' pipeline_ddpm).

The loops call only the process protocol (diffusion/protocol.py), so DDPM and SD-2015 processes
plug in alike: `num_timesteps`, `prior_sample`, `q_sample` (drawing its own kind of noise:
Gaussian, or uniform for a binomial process), `p_sample`, `reverse_step` and, for denoising,
`multiply_prior`/`multiply_step`. t is a LongTensor `[N]` of 0-based step indices. `sample` and
`inpaint` also take the fast samplers (DDPM only): `steps` walks a respaced process (`respaced`),
`sampler="ddim"` takes its `ddim_sample` step.
"""
from __future__ import annotations

from functools import partial

import torch

from .. import runtime
from ..choices import Choice
from ..diffusion.draws import rand, randn  # noqa: F401  (part of this module's API)
from ..diffusion.protocol import DiffusionProcess


def reverse_steps(process, n: int, device, progress: bool = False, desc: str = "sampling", bar=None):
    """The one reverse loop every chain here walks: yields (i, t) for i = T-1 .. 0, t the
    LongTensor `[n]` of step i on `device`, with a progress bar of its own when `progress`, or
    advancing `bar` (a whole job's bar, over all its chunks) one step at a time."""
    steps = range(process.num_timesteps - 1, -1, -1)
    if bar is None:
        steps = runtime.progress(steps, desc=desc, enabled=progress, total=process.num_timesteps)
    for i in steps:
        yield i, torch.full((n,), i, dtype=torch.long, device=device)
        if bar is not None:
            bar.update(1)


def _infer_device(model, generator):
    params = getattr(model, "parameters", None)
    first = next(iter(params()), None) if callable(params) else None
    if first is not None:
        return first.device
    return generator.device if generator is not None else torch.get_default_device()


class Sampler(Choice):
    """The reverse step a sampling loop takes."""

    ANCESTRAL = "ancestral"  # x_{t-1} ~ p_θ(x_{t-1} | x_t), the process's own step
    DDIM = "ddim"            # Song et al.'s step, σ² = η² β̃ (η = 0: deterministic); DDPM only


def reverse_chain(process: DiffusionProcess, sampler: str | Sampler = "ancestral", steps: int | None = None,
                  eta: float = 0.0):
    """(the process to walk: `process` on `steps` of its T steps, evenly spaced (None: all T), and
    its one-step draw `step(model, x_t, t, generator, clip_denoised=...)`)."""
    process = process.respaced(steps)
    if Sampler.from_str(sampler) is Sampler.DDIM:
        return process, partial(process.ddim_sample, eta=eta)
    return process, process.p_sample


@torch.no_grad()
def sample(process: DiffusionProcess, model, shape, generator: torch.Generator | None = None,
           device=None, progress: bool = True, clip_denoised: bool | None = None,
           sampler: str | Sampler = "ancestral", steps: int | None = None, eta: float = 0.0,
           bar=None) -> torch.Tensor:
    """Sampling: x_T ~ prior, then x_{t-1} ~ p(x_{t-1} | x_t) for t = T..1 (ancestral), or by DDIM's
    step with η = eta; steps: walk only that many of the T steps (respaced), None: all.

    `shape` is the batch shape `[N x ...]`; `device` defaults to the model's (or the generator's).
    clip_denoised: None keeps the process's own default. bar: a whole job's progress bar to advance
    one reverse step at a time (instead of a bar of its own). Returns x_0 `[N x ...]`. Put the model
    in eval mode first.
    """
    device = device if device is not None else _infer_device(model, generator)
    process, step = reverse_chain(process, sampler, steps, eta)
    x = process.prior_sample(tuple(shape), generator, device)
    for _, t in reverse_steps(process, x.shape[0], x.device, progress, "sampling", bar):
        x = step(model, x, t, generator, clip_denoised=clip_denoised)
    return x


def for_sampling(trained, precision: str):
    """`trained` (checkpoint.TrainedRun) with its network as the sampler runs it at sample.precision
    (precision.sampling_bf16): itself in fp32; in bf16 a copy of the network under autocast
    (precision.Bf16Net), laid out as training under bf16 lays it out (runtime.uses_channels_last: NCHW
    on the CPU). The copy leaves the fp32 network to the bound (the curve stage uses both). Either is
    called in cache-sized slices of the batch on the CPU (slicing.for_evaluation)."""
    import copy
    import dataclasses

    from .precision import Bf16Net, sampling_bf16
    from .slicing import for_evaluation

    device = next(trained.model.parameters()).device
    net = trained.model
    if sampling_bf16(precision, trained.run, device):
        fmt = (torch.channels_last if runtime.uses_channels_last(device, len(trained.data_shape), bf16=True)
               else torch.contiguous_format)
        net = Bf16Net(copy.deepcopy(net).to(memory_format=fmt)).eval()
    return dataclasses.replace(trained, model=for_evaluation(net, device, trained.data_shape))


def draw(trained, n: int, generator, batch_size: int, sampler: str | Sampler = "ancestral", steps: int | None = None,
         eta: float = 0.0, clip_denoised: bool | None = None, bar=None) -> torch.Tensor:
    """`n` samples of a trained run (checkpoint.TrainedRun) in `batch_size` chunks from one generator,
    mapped back to the stored examples' convention, on the CPU `[n x ...]` (the curve stage,
    `diffrepro generate`)."""
    device = next(trained.model.parameters()).device
    chunks, left = [], n
    while left > 0:
        b = min(left, batch_size)
        z = sample(trained.process, trained.model, (b, *trained.data_shape), generator=generator, device=device,
                   progress=False, clip_denoised=clip_denoised, sampler=sampler, steps=steps, eta=eta, bar=bar)
        chunks.append(trained.data_map.from_process(z).cpu())
        left -= b
    return torch.cat(chunks)


class InpaintMode(Choice):
    """How known coordinates are held during the reverse trajectory."""

    NOISED = "noised"    # known coordinates of x_{t-1} are a fresh draw of q(x_{t-1} | x_known)
    CLAMPED = "clamped"  # known coordinates always equal x_known (SD-2015's delta r(x_t) = r(x_0))



@torch.no_grad()
def inpaint(process: DiffusionProcess, model, x_known: torch.Tensor, mask: torch.Tensor,
            generator: torch.Generator | None = None, mode: str | InpaintMode = "noised",
            progress: bool = True, clip_denoised: bool | None = None, sampler: str | Sampler = "ancestral",
            steps: int | None = None, eta: float = 0.0) -> torch.Tensor:
    """Sample the unknown coordinates given the known ones; the output equals x_known where known.

    x_known `[N x ...]`; mask broadcastable to it, nonzero where a value is KNOWN. "noised": the
    known coordinates entering step t are a fresh draw of q(x_t | x_known) (the process's own
    q_sample and noise); "clamped": they always equal x_known. sampler, steps, eta: as in `sample`.
    """
    mode = InpaintMode.from_str(mode)
    process, step = reverse_chain(process, sampler, steps, eta)
    known = torch.as_tensor(mask, device=x_known.device).bool().expand_as(x_known)
    n = x_known.shape[0]

    def hold(x, i):
        if mode is InpaintMode.CLAMPED or i < 0:
            return torch.where(known, x_known, x)
        t = torch.full((n,), i, dtype=torch.long, device=x_known.device)
        return torch.where(known, process.q_sample(x_known, t, generator=generator), x)

    x = hold(process.prior_sample(tuple(x_known.shape), generator, x_known.device),
             process.num_timesteps - 1)
    for i, t in reverse_steps(process, n, x_known.device, progress, "inpainting"):
        x = hold(step(model, x, t, generator, clip_denoised=clip_denoised), i - 1)
    return x


@torch.no_grad()
def progressive(process: DiffusionProcess, model, shape, generator: torch.Generator | None = None,
                device=None, frames: int = 10) -> list:
    """Ancestral sampling that records `frames` snapshots along the chain (DDPM Fig. 6).

    Returns a list of (t, x_t, predicted x_0 or None) from t = T down to 1: the reverse step's
    pred_xstart where the process predicts one (DDPM), else None.
    """
    device = device if device is not None else _infer_device(model, generator)
    x = process.prior_sample(tuple(shape), generator, device)
    keep = {int(round(v)) for v in torch.linspace(process.num_timesteps - 1, 0, frames).tolist()}
    snapshots = []
    for i, t in reverse_steps(process, x.shape[0], x.device):
        if i in keep:
            pred = process.reverse_step(model, x, t).pred_xstart
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


@torch.no_grad()
def denoise(process: DiffusionProcess, model, y: torch.Tensor, noise_level: float,
            generator: torch.Generator | None = None, schedule: str | RSchedule = "constant",
            progress: bool = True) -> torch.Tensor:
    """Sample p̃(x_0) ∝ p(x_0) r(x_0) for an observation y of x_0 (SD-2015 §2.5, multiplying distributions).

    Gaussian processes: r(x) = N(y; x, noise_level² I), smooth, so each reverse step times r(x)^w
    is again Gaussian (the perturbed mean). Binomial processes: y is a bit-flipped copy (flip
    probability noise_level), r(x_j) = 1 − noise_level where x_j = y_j, and the reverse rate is
    perturbed. Each process does its own product (`multiply_prior`, `multiply_step`); w =
    r_schedule.exponent(t) at the marginal each step produces.
    """
    schedule = RSchedule.from_str(schedule)
    T = process.num_timesteps
    n = y.shape[0]
    x = process.prior_sample(tuple(y.shape), generator, y.device)
    w_T = schedule.exponent(T, T)
    if w_T > 0:  # r(x_T)^w multiplies the prior too
        x = process.multiply_prior(x, y, noise_level, w_T, generator)
    for i, t in reverse_steps(process, n, y.device, progress, "denoising"):
        x = process.multiply_step(model, x, t, y, noise_level, schedule.exponent(i, T), generator)
    return x
