"""Sohl-Dickstein et al. 2015 Gaussian diffusion: learned β schedule, perturbation reverse kernel, bound K.

Steps follow the project convention: t is a LongTensor `[N]` of 0-based indices, index i is the
paper's step i + 1, `betas[i]` = β_{i+1}, and `q_sample(x_start, i)` draws the state x_{i+1}.

Forward:  q(x_t | x_{t-1}) = N(sqrt(1 - β_t) x_{t-1}, β_t I),  π = N(0, I).
Schedule: β_1 is a fixed constant; β_2..T are learned (or fixed, `learn_betas=False`). As in the
paper's code (model.py, `generate_beta_arr`) each β_t is a logistic squashed into
(beta_min, beta_max): β_t = beta_min + (beta_max - beta_min) · sigmoid(logit_t), with the logits
initialised from a named schedule (`SDBetaInit`). Every constant is computed in float64 from the
betas on each call, differentiably, so gradients of the bound reach the learned β
(in float32 the t = 2 posterior variance β̃_2 = β_2 (1 − ᾱ_1)/(1 − ᾱ_2) loses its digits at
β_1 ~ 1e-5, SD-2015 App. B's smallest β_1).

Reverse, steps t = 2..T (the paper code's `get_mu_sigma`, a perturbation of the forward kernel):
    the network returns `[N x 2C x ...]` = (f_μ, f_Σ) (C data channels each);
    mean     μ_t = sqrt(1 - β_t) · x_t + sqrt(β_t) · f_μ
    variance Σ_t = sigmoid(f_Σ · variance_coeff_scale + logit(β_t))     (default scale 1/sqrt(T))
so a zero output gives back the forward kernel's own form N(sqrt(1 - β_t) x_t, β_t).
First step t = 1 (paper Appendix B.2, "removing the edge effect"): p(x_0 | x_1) is the
π-reversal of the forward step, q(x_1 | x_0) π(x_0) / π(x_1) = N(x_0; sqrt(1 - β_1) x_1, β_1 I);
it has no learned part (the paper code skips step 1 in training for this reason).

The bound. `bound_terms` returns the EXACT evidence lower bound (a true bound on log p(x_0)):
    -ELBO = prior + Σ_i terms[:, i]
    prior       = KL(q(x_T | x_0) ‖ π)                                   [N] nats
    terms[:, 0] = -E_{q(x_1|x_0)} log p(x_0 | x_1)  (analytic expectation) [N] nats
    terms[:, i] = E KL(q(x_i | x_{i+1}, x_0) ‖ p(x_i | x_{i+1})),  i >= 1  (paper step t = i + 1)
Each KL is analytic given one draw of x_{i+1} ~ q(x_{i+1} | x_0), drawn independently per i.
The paper's K (eq. 14) = -Σ_{t>=2} KL + H_q(X_T|X_0) - H_q(X_1|X_0) - H_p(X_T) replaces
E_q[log π(x_T)] by -H_p(X_T) and drops log π(x_0) - E_q[log π(x_1)]; per example
    ELBO - K_paper = ½ (ᾱ_T + β_1) Σ_j (1 - x_{0,j}²),
which is zero on average over data with unit second moment (what the paper trains on) but not per
example. `bound_terms` also returns K_paper and its three entropy terms by name.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from diffrepro.choices import Choice
from diffrepro.diffusion.draws import randint, randn
from diffrepro.diffusion.entropy import entropy_bounds_gaussian
from diffrepro.diffusion.likelihood import (
    discretized_gaussian_log_likelihood,
    gaussian_entropy,
    normal_kl,
    sum_flat,
)
from diffrepro.diffusion.protocol import BoundResult, GaussianReverse, ReverseStep
from diffrepro.diffusion.schedules import extract


class SDBetaInit(Choice):
    """Initial β_1..T (β_1 is then replaced by the fixed `beta_1`)."""

    GEOMETRIC = "geometric"  # constant ratio from beta_1 to beta_end
    LINEAR = "linear"        # linear from beta_1 to beta_end
    # the paper code's baseline 1/linspace(T, 2, T): each step destroys a constant fraction of the
    # remaining signal variance, leaving ᾱ_T ~ 1/T (beta_end is ignored)
    SD = "sd"



def sd_initial_betas(init, num_timesteps: int, beta_1: float, beta_end: float) -> torch.Tensor:
    """float64 `[T]` initial schedule of kind `init` (an `SDBetaInit` or its name)."""
    init = SDBetaInit.from_str(init)
    T = num_timesteps
    if init is SDBetaInit.GEOMETRIC:
        betas = torch.logspace(math.log10(beta_1), math.log10(beta_end), T, dtype=torch.float64)
    elif init is SDBetaInit.LINEAR:
        betas = torch.linspace(beta_1, beta_end, T, dtype=torch.float64)
    else:
        betas = 1.0 / torch.linspace(T, 2.0, T, dtype=torch.float64)
    betas[0] = beta_1
    return betas


class SDSchedule(NamedTuple):
    """float64 `[T]` constants of one β schedule; index i is the paper's step i + 1."""

    betas: torch.Tensor
    alphas_cumprod: torch.Tensor                 # ᾱ_t
    one_minus_alphas_cumprod: torch.Tensor       # 1 - ᾱ_t (through expm1)
    posterior_mean_coef_start: torch.Tensor      # μ̃_t = coef_start · x_0 + coef_t · x_t
    posterior_mean_coef_t: torch.Tensor
    posterior_log_variance: torch.Tensor         # log β̃_t; index 0 holds log β_1 (never used)


def sd_schedule(betas: torch.Tensor) -> SDSchedule:
    """Constants of float64 betas `[T]`, differentiable in the betas (no -inf enters the graph)."""
    log_alphas = torch.log1p(-betas)
    log_cum = torch.cumsum(log_alphas, 0)
    alphas_cumprod = torch.exp(log_cum)
    one_minus = -torch.expm1(log_cum)
    one = torch.ones_like(betas[:1])
    alphas_cumprod_prev = torch.cat([one, alphas_cumprod[:-1]])
    one_minus_prev = torch.cat([torch.zeros_like(one), one_minus[:-1]])
    coef_start = alphas_cumprod_prev.sqrt() * betas / one_minus
    coef_t = torch.exp(0.5 * log_alphas) * one_minus_prev / one_minus
    post_logvar = torch.cat([
        torch.log(betas[:1]),
        torch.log(betas[1:]) + torch.log(one_minus_prev[1:]) - torch.log(one_minus[1:]),
    ])
    return SDSchedule(betas, alphas_cumprod, one_minus, coef_start, coef_t, post_logvar)


class SDGaussianDiffusion(GaussianReverse):
    """SD-2015 Gaussian diffusion with a learned (or fixed) β schedule; see the module docstring.

    It is an nn.Module because it owns the β logits: give `process.parameters()` to the optimiser
    beside the network's, and never cast it with `.float()` (its constants must stay float64).
    The model is `model(x_t [N x ...] in the data's dtype, t [N]) -> [N x 2C x ...]` (f_μ, f_Σ).
    """

    def __init__(self, num_timesteps: int, beta_1: float = 1e-5, learn_betas: bool = True,
                 beta_schedule_init: str | SDBetaInit = "geometric", beta_end: float = 0.5,
                 beta_min: float = 1e-6, beta_max: float = 1.0 - 1e-5,
                 variance_coeff_scale: float | None = None, decoder: str = "gaussian", bins: int = 256):
        super().__init__()
        if decoder not in ("gaussian", "discretized"):
            raise ValueError(f"unknown decoder {decoder!r}; allowed: gaussian, discretized")
        self.decoder = decoder
        self.bins = int(bins)  # quantisation levels of discretised data (decoder "discretized")
        if num_timesteps < 2:
            raise ValueError(f"num_timesteps must be >= 2 for SD-2015 diffusion, got {num_timesteps}")
        if not 0.0 < beta_1 < 1.0:
            raise ValueError(f"beta_1 must lie in (0, 1), got {beta_1}")
        if not 0.0 <= beta_min < beta_max <= 1.0:
            raise ValueError(f"need 0 <= beta_min < beta_max <= 1, got {beta_min}, {beta_max}")
        self.num_timesteps = int(num_timesteps)
        self.learn_betas = bool(learn_betas)
        self.beta_min, self.beta_max = float(beta_min), float(beta_max)
        self.variance_coeff_scale = (1.0 / math.sqrt(num_timesteps) if variance_coeff_scale is None
                                     else float(variance_coeff_scale))
        init = sd_initial_betas(beta_schedule_init, num_timesteps, beta_1, beta_end)
        unit = (init[1:] - beta_min) / (beta_max - beta_min)
        if not bool(((unit > 0) & (unit < 1)).all()):
            raise ValueError(f"initial betas from {beta_schedule_init!r} leave ({beta_min}, {beta_max})")
        self.register_buffer("beta_1", torch.tensor([beta_1], dtype=torch.float64))
        logits = torch.logit(unit)
        if self.learn_betas:
            self.beta_logits = nn.Parameter(logits)
        else:
            self.register_buffer("beta_logits", logits)

    # ----- schedule -------------------------------------------------------------------------
    @property
    def betas(self) -> torch.Tensor:
        """float64 `[T]`: β_1 (fixed) then β_2..T in (beta_min, beta_max)."""
        rest = self.beta_min + (self.beta_max - self.beta_min) * torch.sigmoid(self.beta_logits)
        return torch.cat([self.beta_1, rest])

    def schedule(self) -> SDSchedule:
        return sd_schedule(self.betas)

    # ----- the process protocol (protocol.DiffusionProcess) ------------------------------------
    def forward_betas(self):
        return self.betas.detach().double().cpu().numpy()

    def entropy_bounds(self, x_train) -> tuple:
        lower, upper = entropy_bounds_gaussian(self.forward_betas())
        return lower.numpy(), upper.numpy()

    def prior_kl(self, x_start) -> torch.Tensor:
        return self._prior_kl(x_start, self.schedule())

    def reverse_step(self, model, x_t, t, clip_denoised=None) -> ReverseStep:
        """float64 mean and log-variance of p(x_t | x_{t+1}) (see p_mean_variance)."""
        self._check_clip(clip_denoised, "SD-2015 Gaussian diffusion")
        out = self.p_mean_variance(model, x_t, t)
        return ReverseStep(mean=out["mean"], log_variance=out["log_variance"])

    # ----- forward process ------------------------------------------------------------------
    def prior_sample(self, shape, generator=None, device=None) -> torch.Tensor:
        """x_T ~ π = N(0, I), float32 `shape`."""
        return randn(tuple(shape), generator, device or self.beta_1.device, dtype=torch.float64).float()

    def _q_sample64(self, x_start, t, sched: SDSchedule, noise=None, generator=None):
        x0 = x_start.double()
        if noise is None:
            noise = randn(x0.shape, generator, x0.device, dtype=torch.float64)
        ac = extract(sched.alphas_cumprod, t, x0.shape, torch.float64)
        om = extract(sched.one_minus_alphas_cumprod, t, x0.shape, torch.float64)
        return ac.sqrt() * x0 + om.sqrt() * noise.double()

    def q_sample(self, x_start, t, noise=None, generator=None) -> torch.Tensor:
        """x_{t+1} ~ q(x_{t+1} | x_0) for index t `[N]` (reparameterised by `noise` when given)."""
        return self._q_sample64(x_start, t, self.schedule(), noise, generator).to(x_start.dtype)

    def q_posterior_mean_variance(self, x_start, x_t, t, sched: SDSchedule | None = None):
        """float64 mean and log-variance of q(x_t | x_{t+1}, x_0) for index t >= 1 (state x_t is
        the argument `x_t` = x_{t+1} in paper numbering)."""
        sched = sched or self.schedule()
        shape = x_t.shape
        mean = (extract(sched.posterior_mean_coef_start, t, shape, torch.float64) * x_start.double()
                + extract(sched.posterior_mean_coef_t, t, shape, torch.float64) * x_t.double())
        return mean, extract(sched.posterior_log_variance, t, shape, torch.float64).expand_as(mean)

    # ----- reverse process ------------------------------------------------------------------
    def p_mean_variance(self, model, x_t, t, sched: SDSchedule | None = None, dtype=None):
        """float64 {"mean", "log_variance"} `[N x C x ...]` of p(x_{t} | x_{t+1}) for index t `[N]` (a
        dict, as GaussianDiffusion.p_mean_variance returns).

        Index 0 is the fixed first step N(sqrt(1 - β_1) x_1, β_1); the network's output is ignored
        there. `dtype` is what the network is fed (default: x_t's dtype).
        """
        sched = sched or self.schedule()
        x64 = x_t.double()
        beta = extract(sched.betas, t, x64.shape, torch.float64)
        f_mu, f_sigma = model(x_t.to(dtype or x_t.dtype), t).double().chunk(2, dim=1)
        mean = torch.sqrt(1.0 - beta) * x64 + beta.sqrt() * f_mu
        logit_beta = torch.log(beta) - torch.log1p(-beta)
        logvar = F.logsigmoid(f_sigma * self.variance_coeff_scale + logit_beta)
        first = (t == 0).reshape(-1, *([1] * (x64.ndim - 1)))
        mean = torch.where(first, torch.sqrt(1.0 - beta) * x64, mean)
        logvar = torch.where(first, torch.log(beta).expand_as(logvar), logvar)
        return {"mean": mean, "log_variance": logvar}

    def p_sample(self, model, x_t, t, generator=None, clip_denoised=None) -> torch.Tensor:
        """x_t ~ p(x_t | x_{t+1}) for index t `[N]` (index 0 gives x_0), in x_t's dtype."""
        self._check_clip(clip_denoised, "SD-2015 Gaussian diffusion")
        out = self.p_mean_variance(model, x_t, t)
        mean, logvar = out["mean"], out["log_variance"]
        noise = randn(x_t.shape, generator, x_t.device, dtype=torch.float64)
        return (mean + torch.exp(0.5 * logvar) * noise).to(x_t.dtype)

    # ----- the bound ------------------------------------------------------------------------
    def _prior_kl(self, x_start, sched: SDSchedule) -> torch.Tensor:
        """KL(q(x_T | x_0) ‖ N(0, I)) `[N]` nats."""
        x0 = x_start.double()
        mean = sched.alphas_cumprod[-1].sqrt() * x0
        logvar = torch.log(sched.one_minus_alphas_cumprod[-1]).expand_as(x0)
        return sum_flat(normal_kl(mean, logvar, torch.zeros_like(x0), torch.zeros_like(x0)))

    def first_step_nll(self, x_start, sched: SDSchedule, generator=None) -> torch.Tensor:
        """-E_{q(x_1|x_0)} log p(x_0 | x_1) `[N]` nats with p(x_0 | x_1) = N(sqrt(1 - β_1) x_1, β_1).

        decoder "gaussian" (continuous data): closed form, per dimension
        ½ log(2π β_1) + ½ (β_1 x_0² + 1 - β_1). decoder "discretized" (images of L levels in [-1, 1]):
        the same Gaussian integrated over x_0's bin (one per level, width 2/(L-1)) (DDPM's decoder, so SD-2015 and DDPM
        share one bits/dim), with one draw of x_1 ~ q(x_1 | x_0).
        """
        x0 = x_start.double()
        b1 = sched.betas[0]
        if self.decoder == "gaussian":
            return sum_flat(0.5 * torch.log(2 * math.pi * b1) + 0.5 * (b1 * x0 ** 2 + 1.0 - b1))
        first = torch.zeros(x0.shape[0], dtype=torch.long, device=x0.device)
        x1 = self._q_sample64(x_start, first, sched, generator=generator)
        mean = torch.sqrt(1.0 - b1) * x1
        return -sum_flat(discretized_gaussian_log_likelihood(x0, mean, 0.5 * torch.log(b1).expand_as(x0),
                                                             bins=self.bins))

    def kl_term(self, model, x_start, t, sched: SDSchedule, generator=None) -> torch.Tensor:
        """KL(q(x_t | x_{t+1}, x_0) ‖ p(x_t | x_{t+1})) `[N]` nats at index t >= 1, with
        x_{t+1} ~ q(x_{t+1} | x_0) reparameterised (gradients reach β)."""
        x_t = self._q_sample64(x_start, t, sched, generator=generator)
        q_mean, q_logvar = self.q_posterior_mean_variance(x_start, x_t, t, sched)
        p = self.p_mean_variance(model, x_t, t, sched, dtype=x_start.dtype)
        return sum_flat(normal_kl(q_mean, q_logvar, p["mean"], p["log_variance"]))

    def training_loss(self, model, x_start, generator=None) -> torch.Tensor:
        """Unbiased one-sample estimate of -ELBO `[N]` nats (what the optimiser minimises):
        prior + first-step term + (T - 1) · KL at one uniformly drawn step t in 2..T."""
        sched = self.schedule()
        n, T = x_start.shape[0], self.num_timesteps
        t = randint(1, T, (n,), generator, x_start.device)
        kl = self.kl_term(model, x_start, t, sched, generator)
        return self._prior_kl(x_start, sched) + self.first_step_nll(x_start, sched, generator) + (T - 1) * kl

    def bound_terms(self, model, x_start, generator=None) -> BoundResult:
        """Every term of the bound for x_start `[N x ...]`, in nats per example.

        terms `[N x T]` (col 0 the first-step NLL, col i the KL at paper step i + 1), prior `[N]`,
        total `[N]` = prior + terms.sum(1) = -ELBO >= -log p(x_0); and in extras the paper's K by
        parts: "kl" `[N x T-1]` (= terms[:, 1:]), "h_q_xT_given_x0", "h_q_x1_given_x0", "h_p_xT" `[N]`,
        "k_paper" `[N]` (eq. 14, a log-likelihood bound: larger is better).
        """
        sched = self.schedule()
        n = x_start.shape[0]
        kls = [self.kl_term(model, x_start, torch.full((n,), i, dtype=torch.long, device=x_start.device),
                            sched, generator) for i in range(1, self.num_timesteps)]
        kl = torch.stack(kls, dim=1)
        first = self.first_step_nll(x_start, sched, generator)
        prior = self._prior_kl(x_start, sched)
        terms = torch.cat([first[:, None], kl], dim=1)
        dims = x_start[0].numel()
        ones = torch.ones(n, dtype=torch.float64, device=x_start.device)
        h_xT = dims * gaussian_entropy(torch.log(sched.one_minus_alphas_cumprod[-1])) * ones
        h_x1 = dims * gaussian_entropy(torch.log(sched.betas[0])) * ones
        h_p = dims * gaussian_entropy(torch.zeros((), dtype=torch.float64)) * ones
        return BoundResult(prior=prior, terms=terms, total=prior + terms.sum(dim=1), extras={
            "kl": kl, "h_q_xT_given_x0": h_xT, "h_q_x1_given_x0": h_x1, "h_p_xT": h_p,
            "k_paper": -kl.sum(dim=1) + h_xT - h_x1 - h_p,
        })


def l_null_gaussian(x_train: torch.Tensor, x_eval: torch.Tensor) -> torch.Tensor:
    """SD-2015's baseline L_null: log-likelihood `[N_eval]` (nats per example) of x_eval under an
    isotropic Gaussian fitted to x_train by maximum likelihood (per-dimension mean, one variance)."""
    xt = x_train.double().reshape(x_train.shape[0], -1)
    xe = x_eval.double().reshape(x_eval.shape[0], -1)
    mean = xt.mean(dim=0)
    var = ((xt - mean) ** 2).mean()
    d = xe.shape[1]
    return -0.5 * (d * torch.log(2 * math.pi * var) + ((xe - mean) ** 2).sum(dim=1) / var)
