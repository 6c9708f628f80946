"""The one process protocol: what DDPM's Gaussian, SD-2015's Gaussian and SD-2015's binomial
processes all offer, with the same method names, signatures and typed results.

Sampling, inpainting, denoising (runs/sampling.py), the bound (stages/nll.py), training
(runs/training.py) and the report call only these methods; which process a run uses is chosen in
one place, the builder (build.py; what each family takes: diffusion/families.py). Conventions: `t`
is a LongTensor `[N]` of 0-based step indices 0..T-1 (index i is the paper's step i + 1);
log-likelihoods are in nats.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from .draws import randn


@dataclass
class ReverseStep:
    """p_θ(x_{t-1} | x_t) for one batch: a Gaussian (mean, log_variance) or independent bits
    (prob_one, prob_zero, each in float64 so neither loses precision to 1 − p)."""
    mean: torch.Tensor | None = None
    log_variance: torch.Tensor | None = None
    prob_one: torch.Tensor | None = None
    prob_zero: torch.Tensor | None = None
    pred_xstart: torch.Tensor | None = None   # the x_0 the step is built from, where there is one


@dataclass
class BoundResult:
    """The variational bound of a batch, every term in nats per example.

    prior `[N]`: L_T = KL(q(x_T | x_0) ‖ p(x_T)); terms `[N x T]`: column 0 the decoder term
    −log p(x_0 | x_1), column i the KL at paper step i + 1; total `[N]` = prior + Σ terms.
    extras: named per-example tensors a process adds (e.g. "eps_mse" `[N x T]`, the implied ε
    prediction's squared error, for rate–distortion; "k_paper" `[N]`, SD-2015's eq. 14).
    """
    prior: torch.Tensor
    terms: torch.Tensor
    total: torch.Tensor
    extras: dict = field(default_factory=dict)


class DiffusionProcess(nn.Module):
    """Base of every process. An nn.Module so learned parts (SD-2015's β) train and checkpoint
    like the network's weights; processes without any have an empty state."""

    num_timesteps: int

    # ---- the schedule -----------------------------------------------------------------------------
    def forward_betas(self) -> np.ndarray:
        """float64 β_1..T (learned ones included)."""
        raise NotImplementedError

    def signal_fraction(self) -> np.ndarray:
        """float64 ᾱ_1..T = Π_{s<=t} (1 − β_s): the part of x_0 that survives to step t."""
        return np.cumprod(1.0 - self.forward_betas())

    def entropy_bounds(self, x_train) -> tuple:
        """SD-2015 §2.6 bounds on H_q(X_{t-1} | X_t), nats per dimension: numpy (lower, upper) `[T]`."""
        raise NotImplementedError

    # ---- forward process q and prior ----------------------------------------------------------------
    def prior_sample(self, shape, generator=None, device=None) -> torch.Tensor:
        raise NotImplementedError

    def prior_kl(self, x_start) -> torch.Tensor:
        """L_T `[N]` nats."""
        raise NotImplementedError

    def q_sample(self, x_start, t, noise=None, generator=None) -> torch.Tensor:
        """x_{t+1} ~ q(x_{t+1} | x_0) at index t; the process draws its own kind of noise when none is given."""
        raise NotImplementedError

    # ---- reverse process p ---------------------------------------------------------------------------
    def reverse_step(self, model, x_t, t, clip_denoised=None) -> ReverseStep:
        raise NotImplementedError

    def p_sample(self, model, x_t, t, generator=None, clip_denoised=None) -> torch.Tensor:
        """x_{t-1} ~ p_θ(x_{t-1} | x_t), in x_t's dtype."""
        raise NotImplementedError

    # ---- fast samplers (DDPM only: respacing and DDIM need a Gaussian q with ᾱ) --------------------
    def respaced(self, steps: int | None) -> "DiffusionProcess":
        """The process on `steps` of its T steps, evenly spaced; None or T: the process itself."""
        if steps is None or int(steps) == self.num_timesteps:
            return self
        raise ValueError(f"{type(self).__name__} cannot skip steps: sample.steps = {steps}; allowed: null or "
                         f"{self.num_timesteps} (respacing is a ddpm option)")

    def ddim_sample(self, model, x_t, t, generator=None, clip_denoised=None, eta: float = 0.0) -> torch.Tensor:
        """x_{t-1} by DDIM's step (Song et al. 2021), with σ² = η² β̃_t."""
        raise ValueError(f"{type(self).__name__} has no DDIM step; sample.sampler allowed: ancestral "
                         "(ddim is a ddpm option)")

    # ---- the bound and the loss --------------------------------------------------------------------
    def bound_terms(self, model, x_start, generator=None) -> BoundResult:
        raise NotImplementedError

    def training_loss(self, model, x_start, generator=None) -> torch.Tensor:
        """Per-example loss `[N]`; the process draws its own t and noise from `generator`, only through
        draws.py's helpers, each with the batch as its first axis (so a draws.Shard splits them)."""
        raise NotImplementedError

    # ---- multiplying by r(x) (SD-2015 §2.5): denoising ---------------------------------------------
    def multiply_prior(self, x_T, y, noise_level: float, weight: float, generator=None) -> torch.Tensor:
        """A draw of π(x) r(x)^weight given the plain prior draw x_T, for an observation y."""
        raise NotImplementedError

    def multiply_step(self, model, x_t, t, y, noise_level: float, weight: float, generator=None) -> torch.Tensor:
        """A draw of p(x_{t-1} | x_t) r(x_{t-1})^weight for an observation y."""
        raise NotImplementedError

    @staticmethod
    def _check_clip(clip_denoised, family: str) -> None:
        if clip_denoised:
            raise ValueError(f"clip_denoised=True is a DDPM option; {family} has no predicted x0 to clip "
                             "(allowed: None or False)")


class GaussianReverse(DiffusionProcess):
    """What both Gaussian processes share: multiplying a Gaussian reverse step by a Gaussian r.

    r(x) = N(y; x, noise_level² I), so N(m, v) · r(x)^w is Gaussian again: precision
    1/v + w/noise_level², mean (m/v + w y/noise_level²)/precision (SD-2015's perturbed mean).
    """

    def multiply_prior(self, x_T, y, noise_level, weight, generator=None):
        prec = 1.0 + weight / noise_level ** 2
        return (weight * y / noise_level ** 2 + x_T * prec ** 0.5) / prec

    def multiply_step(self, model, x_t, t, y, noise_level, weight, generator=None):
        step = self.reverse_step(model, x_t, t)
        prec = torch.exp(-step.log_variance) + weight / noise_level ** 2
        mean = (step.mean * torch.exp(-step.log_variance) + weight * y / noise_level ** 2) / prec
        noise = randn(y.shape, generator, y.device, dtype=mean.dtype)
        nonzero = bool((t != 0).all())  # the last step (t = 0) returns the mean
        return (mean + noise / prec.sqrt() * nonzero).to(y.dtype)
