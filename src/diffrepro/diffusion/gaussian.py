"""DDPM's Gaussian diffusion (Ho et al. 2020; Improved DDPM's learned variance and hybrid loss).

The process never owns the network: every method takes `model(x_t, t) -> output` as an argument
(openai/improved-diffusion's `GaussianDiffusion`). t is a LongTensor `[N]` of 0-based step indices
(index i is the paper's step t = i + 1). Constants come from `schedules.schedule_constants` in
float64 and are cast to the data's dtype per call, so float64 data gets float64 arithmetic.
Likelihoods are in nats per example (summed over dimensions) unless a name says otherwise.
"""
from __future__ import annotations

import numpy as np
import torch
from tqdm.auto import tqdm

from diffrepro.choices import Choice
from diffrepro.diffusion.draws import randint, randn
from diffrepro.diffusion.entropy import entropy_bounds_gaussian
from diffrepro.diffusion.likelihood import (
    LOG2,
    discretized_gaussian_log_likelihood,
    gaussian_log_likelihood,
    mean_flat,
    normal_kl,
    sum_flat,
)
from diffrepro.diffusion.protocol import BoundResult, GaussianReverse, ReverseStep
from diffrepro.diffusion.schedules import extract, schedule_constants


class ModelMeanType(Choice):
    """What the network's (first) output predicts."""

    EPSILON = "epsilon"        # the noise ε
    START_X = "start_x"        # x_0
    PREVIOUS_X = "previous_x"  # μ̃, the mean of x_{t-1} directly


class ModelVarType(Choice):
    """The reverse-step variance σ_t²."""

    FIXED_SMALL = "fixed_small"      # β̃_t (log clipped at t = 1)
    FIXED_LARGE = "fixed_large"      # β_t
    # a second output v: log σ² = (1 + v)/2 · log β + (1 − v)/2 · log β̃ (Improved DDPM)
    LEARNED_RANGE = "learned_range"


class LossType(Choice):
    """The training objective."""

    SIMPLE = "simple"  # L_simple: MSE on the mean target (ε, x_0 or μ̃)
    KL = "kl"          # the true bound L_vlb (one t per example, scaled by T)
    HYBRID = "hybrid"  # L_simple + λ·L_vlb, the vlb term seeing a stop-gradient mean

    def is_vb(self) -> bool:
        return self is not LossType.SIMPLE


class Decoder(Choice):
    """L_0 = −log p(x_0 | x_1)."""

    DISCRETIZED = "discretized"  # images of L levels in [-1, 1], one bin per level (DDPM §3.3, eq. 13)
    GAUSSIAN = "gaussian"        # continuous Gaussian density (real-valued data, e.g. 2-D points)


class GaussianDiffusion(GaussianReverse):
    """Forward q, reverse p_θ, training losses and the full variational bound of a Gaussian DDPM.

    betas: float64 `[T]`. clip_denoised: the default for every method's `clip_denoised=None`,
    i.e. whether the predicted x_0 is clamped to [-1, 1] (True for images, False for unbounded
    data). hybrid_lambda: λ of the hybrid loss (Improved DDPM's 0.001).
    With LEARNED_RANGE the model outputs `[N x 2C x ...]`: C mean channels then C values v.
    """

    def __init__(self, betas, mean_type=ModelMeanType.EPSILON, var_type=ModelVarType.FIXED_LARGE,
                 loss_type=LossType.SIMPLE, decoder=Decoder.DISCRETIZED,
                 clip_denoised: bool = False, hybrid_lambda: float = 0.001, bins: int = 256):
        super().__init__()
        self.mean_type = ModelMeanType.from_str(mean_type)
        self.var_type = ModelVarType.from_str(var_type)
        self.loss_type = LossType.from_str(loss_type)
        self.decoder = Decoder.from_str(decoder)
        if int(bins) < 2:
            raise ValueError(f"bins = {bins}: the discretised decoder needs at least 2 quantisation levels")
        self.bins = int(bins)  # quantisation levels of the data: the discretised decoder's bins span 2/(bins-1)
        if self.loss_type is LossType.SIMPLE and self.var_type is ModelVarType.LEARNED_RANGE:
            raise ValueError("loss_type 'simple' cannot train var_type 'learned_range'; "
                             "use loss_type 'hybrid' or 'kl'")
        self.clip_denoised = bool(clip_denoised)
        self.hybrid_lambda = float(hybrid_lambda)
        self.consts = schedule_constants(betas)
        self.num_timesteps = self.consts.num_timesteps
        self._cast = {}  # (name, device, dtype) -> the constant as a tensor there

    # ---- the process protocol (protocol.DiffusionProcess) ------------------------------------------
    def forward_betas(self) -> np.ndarray:
        return np.asarray(self.consts.betas, dtype=np.float64)

    def signal_fraction(self) -> np.ndarray:
        return np.asarray(self.consts.alphas_cumprod, dtype=np.float64)

    def entropy_bounds(self, x_train) -> tuple:
        lower, upper = entropy_bounds_gaussian(self.forward_betas())
        return lower.numpy(), upper.numpy()

    def prior_kl(self, x_start) -> torch.Tensor:
        return self.prior_kl_nats(x_start)

    def reverse_step(self, model, x_t, t, clip_denoised=None) -> ReverseStep:
        out = self.p_mean_variance(model, x_t, t, clip_denoised)
        return ReverseStep(mean=out["mean"], log_variance=out["log_variance"], pred_xstart=out["pred_xstart"])

    def _c(self, name: str, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Schedule constant `name` at t, broadcast to x's shape in x's dtype."""
        key = (name, t.device, x.dtype)
        if key not in self._cast:  # one host-to-device copy per constant, not one per call
            self._cast[key] = torch.as_tensor(getattr(self.consts, name)).to(t.device, x.dtype)
        return extract(self._cast[key], t, x.shape, dtype=x.dtype)

    # ---- forward process q -------------------------------------------------------------------
    def q_mean_variance(self, x_start, t):
        """q(x_t | x_0) = N(sqrt(ᾱ_t) x_0, (1 − ᾱ_t) I): mean, variance, log_variance [N x ...]."""
        return (self._c("sqrt_alphas_cumprod", t, x_start) * x_start,
                self._c("one_minus_alphas_cumprod", t, x_start),
                self._c("log_one_minus_alphas_cumprod", t, x_start))

    def q_sample(self, x_start, t, noise=None, generator=None):
        """Draw x_t ~ q(x_t | x_0) = sqrt(ᾱ_t) x_0 + sqrt(1 − ᾱ_t) ε, [N x ...]."""
        if noise is None:
            noise = randn(x_start.shape, generator, x_start.device, x_start.dtype)
        return (self._c("sqrt_alphas_cumprod", t, x_start) * x_start
                + self._c("sqrt_one_minus_alphas_cumprod", t, x_start) * noise)

    def q_posterior_mean_variance(self, x_start, x_t, t):
        """q(x_{t-1} | x_t, x_0) = N(μ̃_t, β̃_t I): (mean, variance, log_variance_clipped)."""
        mean = (self._c("posterior_mean_coef1", t, x_t) * x_start
                + self._c("posterior_mean_coef2", t, x_t) * x_t)
        return (mean, self._c("posterior_variance", t, x_t),
                self._c("posterior_log_variance_clipped", t, x_t))

    def prior_kl_nats(self, x_start) -> torch.Tensor:
        """L_T = KL(q(x_T | x_0) ‖ N(0, I)) summed over dimensions, in nats: [N]."""
        t = torch.full((x_start.shape[0],), self.num_timesteps - 1, dtype=torch.long,
                       device=x_start.device)
        mean, _, log_variance = self.q_mean_variance(x_start, t)
        return sum_flat(normal_kl(mean, log_variance, 0.0, 0.0))

    def prior_sample(self, shape, generator=None, device=None, dtype=torch.float32):
        """x_T ~ N(0, I), [shape]."""
        return randn(shape, generator, device, dtype)

    # ---- parameterisations -------------------------------------------------------------------
    def predict_start_from_noise(self, x_t, t, noise):
        """x_0 = (x_t − sqrt(1 − ᾱ_t) ε) / sqrt(ᾱ_t)."""
        return (self._c("sqrt_recip_alphas_cumprod", t, x_t) * x_t
                - self._c("sqrt_recipm1_alphas_cumprod", t, x_t) * noise)

    def predict_noise_from_start(self, x_t, t, pred_xstart):
        """ε = (x_t − sqrt(ᾱ_t) x_0) / sqrt(1 − ᾱ_t)."""
        return ((self._c("sqrt_recip_alphas_cumprod", t, x_t) * x_t - pred_xstart)
                / self._c("sqrt_recipm1_alphas_cumprod", t, x_t))

    def predict_start_from_previous(self, x_t, t, x_prev):
        """x_0 from μ̃ = coef1 · x_0 + coef2 · x_t."""
        return ((x_prev - self._c("posterior_mean_coef2", t, x_t) * x_t)
                / self._c("posterior_mean_coef1", t, x_t))

    # ---- reverse process p -------------------------------------------------------------------
    def _split_output(self, model_output, x_t):
        if self.var_type is ModelVarType.LEARNED_RANGE:
            if model_output.shape[1] != 2 * x_t.shape[1]:
                raise ValueError(f"var_type 'learned_range' needs {2 * x_t.shape[1]} output "
                                 f"channels, got {model_output.shape[1]}")
            return torch.chunk(model_output, 2, dim=1)
        if model_output.shape != x_t.shape:
            raise ValueError(f"model output shape {tuple(model_output.shape)} differs from x_t's "
                             f"{tuple(x_t.shape)}")
        return model_output, None

    def p_log_variance(self, t, x_t, var_values=None):
        """log σ_t², [N x ...]; var_values (LEARNED_RANGE's v, [-1, 1] spans β̃..β) else None."""
        if self.var_type is ModelVarType.FIXED_SMALL:
            return self._c("posterior_log_variance_clipped", t, x_t)
        if self.var_type is ModelVarType.FIXED_LARGE:
            return self._c("log_betas", t, x_t)
        frac = (var_values + 1) / 2
        return (frac * self._c("log_betas", t, x_t)
                + (1 - frac) * self._c("posterior_log_variance_clipped", t, x_t))

    def p_mean_variance_from_output(self, model_output, x_t, t, clip_denoised=None):
        """p_mean_variance given the network's output already computed (see p_mean_variance)."""
        clip = self.clip_denoised if clip_denoised is None else clip_denoised
        mean_output, var_values = self._split_output(model_output, x_t)
        log_variance = self.p_log_variance(t, x_t, var_values)

        def process(x):
            return x.clamp(-1, 1) if clip else x

        if self.mean_type is ModelMeanType.PREVIOUS_X:
            pred_xstart = process(self.predict_start_from_previous(x_t, t, mean_output))
            mean = mean_output
        else:
            if self.mean_type is ModelMeanType.START_X:
                pred_xstart = process(mean_output)
            else:
                pred_xstart = process(self.predict_start_from_noise(x_t, t, mean_output))
            mean, _, _ = self.q_posterior_mean_variance(pred_xstart, x_t, t)
        return {"mean": mean, "variance": torch.exp(log_variance), "log_variance": log_variance,
                "pred_xstart": pred_xstart}

    def p_mean_variance(self, model, x_t, t, clip_denoised=None):
        """p_θ(x_{t-1} | x_t): dict of mean, variance, log_variance, pred_xstart, each [N x ...]."""
        return self.p_mean_variance_from_output(model(x_t, t), x_t, t, clip_denoised)

    def p_sample(self, model, x_t, t, generator=None, clip_denoised=None):
        """Draw x_{t-1} ~ p_θ(x_{t-1} | x_t), [N x ...]; the mean, without noise, where t = 0."""
        out = self.p_mean_variance(model, x_t, t, clip_denoised)
        noise = randn(x_t.shape, generator, x_t.device, x_t.dtype)
        nonzero = (t != 0).to(x_t.dtype).reshape((-1,) + (1,) * (x_t.dim() - 1))
        return out["mean"] + nonzero * torch.exp(0.5 * out["log_variance"]) * noise

    # ---- fast samplers (the bound stays over all T) ------------------------------------------------
    def respaced(self, steps: int | None) -> "GaussianDiffusion":
        """The process on `steps` of its T steps, evenly spaced (`SpacedDiffusion`); None or T: itself."""
        if steps is None or int(steps) == self.num_timesteps:
            return self
        return SpacedDiffusion(self, space_timesteps(self.num_timesteps, steps))

    def original_steps(self, t: torch.Tensor) -> torch.Tensor:
        """The indices the network is called with at this process's steps t: t itself (respaced: S_t)."""
        return t

    def ddim_mean_variance(self, model, x_t, t, eta: float = 0.0, clip_denoised=None):
        """DDIM's step x_t -> x_{t-1} (Song et al. 2021, eq. 12): dict of mean, variance, pred_xstart [N x ...].

        mean = sqrt(ᾱ_{t-1}) x̂_0 + sqrt(1 − ᾱ_{t-1} − σ²) ε̂ with ε̂ implied by the (clipped) x̂_0, and
        σ² = η² (1 − ᾱ_{t-1})/(1 − ᾱ_t) · (1 − ᾱ_t/ᾱ_{t-1}) = η² β̃_t: η = 1 is the ancestral step with
        σ² = β̃, η = 0 deterministic. The network's own variance (if any) is not used.
        """
        out = self.p_mean_variance(model, x_t, t, clip_denoised)
        eps = self.predict_noise_from_start(x_t, t, out["pred_xstart"])
        variance = float(eta) ** 2 * self._c("posterior_variance", t, x_t)
        eps_weight = (self._c("one_minus_alphas_cumprod_prev", t, x_t) - variance).clamp(min=0).sqrt()
        mean = self._c("alphas_cumprod_prev", t, x_t).sqrt() * out["pred_xstart"] + eps_weight * eps
        return {"mean": mean, "variance": variance, "pred_xstart": out["pred_xstart"]}

    def ddim_sample(self, model, x_t, t, generator=None, clip_denoised=None, eta: float = 0.0):
        """Draw x_{t-1} by DDIM's step (see ddim_mean_variance), [N x ...]; σ = 0 where t = 0.

        Always draws the noise, so the generator advances alike for every η."""
        out = self.ddim_mean_variance(model, x_t, t, eta, clip_denoised)
        noise = randn(x_t.shape, generator, x_t.device, x_t.dtype)
        return out["mean"] + out["variance"].sqrt() * noise

    # ---- the bound ---------------------------------------------------------------------------
    def decoder_nll_nats(self, x_start, mean, log_variance) -> torch.Tensor:
        """L_0 = −log p(x_0 | x_1) summed over dimensions, in nats: [N]."""
        if self.decoder is Decoder.DISCRETIZED:
            log_p = discretized_gaussian_log_likelihood(x_start, mean, 0.5 * log_variance, bins=self.bins)
        else:
            log_p = gaussian_log_likelihood(x_start, mean, log_variance)
        return -sum_flat(log_p)

    def vb_term_nats(self, out, x_start, x_t, t) -> torch.Tensor:
        """The bound's term at t from p_mean_variance's `out`, in nats: [N].

        KL(q(x_{t-1} | x_t, x_0) ‖ p_θ(x_{t-1} | x_t)) where t > 0, the decoder NLL where t = 0.
        """
        true_mean, _, true_log_variance = self.q_posterior_mean_variance(x_start, x_t, t)
        kl = sum_flat(normal_kl(true_mean, true_log_variance, out["mean"], out["log_variance"]))
        nll = self.decoder_nll_nats(x_start, out["mean"], out["log_variance"])
        return torch.where(t == 0, nll, kl)

    def training_loss(self, model, x_start, generator=None) -> torch.Tensor:
        """The process protocol's per-example loss `[N]`: t ~ U{0..T-1} and ε drawn here from
        `generator` (on its own device), then `training_losses(...)["loss"]`."""
        t = randint(0, self.num_timesteps, (x_start.shape[0],), generator, x_start.device)
        noise = randn(x_start.shape, generator, x_start.device)  # float32, whatever x_start's dtype
        return self.training_losses(model, x_start, t, noise)["loss"]

    def training_losses(self, model, x_start, t, noise=None, generator=None):
        """Per-example losses at steps t: dict of "loss" [N], and "mse" [N] and/or "vb" [N].

        mse: mean over dimensions of the squared error of the mean target (ε, x_0 or μ̃).
        vb: T · (bound term at t) / (D · ln 2), the one-t estimate of the whole bound in bits/dim
            (improved-diffusion's scale, for which λ = 0.001 was tuned). KL: loss = vb;
            HYBRID: loss = mse + λ · vb, where vb sees the mean output through a stop-gradient.
        """
        if noise is None:
            noise = randn(x_start.shape, generator, x_start.device, x_start.dtype)
        x_t = self.q_sample(x_start, t, noise)
        model_output = model(x_t, t)
        terms = {}
        if self.loss_type is LossType.KL:
            out = self.p_mean_variance_from_output(model_output, x_t, t, clip_denoised=False)
            terms["vb"] = self._vb_bpd(out, x_start, x_t, t)
            terms["loss"] = terms["vb"]
            return terms
        mean_output, var_values = self._split_output(model_output, x_t)
        target = {ModelMeanType.EPSILON: noise, ModelMeanType.START_X: x_start,
                  ModelMeanType.PREVIOUS_X: self.q_posterior_mean_variance(x_start, x_t, t)[0]}
        terms["mse"] = mean_flat((target[self.mean_type] - mean_output) ** 2)
        terms["loss"] = terms["mse"]
        if self.loss_type is LossType.HYBRID:
            frozen = mean_output.detach()
            if var_values is not None:
                frozen = torch.cat([frozen, var_values], dim=1)
            out = self.p_mean_variance_from_output(frozen, x_t, t, clip_denoised=False)
            terms["vb"] = self._vb_bpd(out, x_start, x_t, t)
            terms["loss"] = terms["mse"] + self.hybrid_lambda * terms["vb"]
        return terms

    def _vb_bpd(self, out, x_start, x_t, t):
        dims = x_start[0].numel()
        return self.vb_term_nats(out, x_start, x_t, t) * self.num_timesteps / (dims * LOG2)

    @torch.no_grad()
    def bound_terms(self, model, x_start, generator=None, clip_denoised=None, progress=False) -> BoundResult:
        """The full variational bound over all T steps, in nats per example.

        Each x_t is drawn independently from q(x_t | x_0) (lower variance than one trajectory,
        same mean). Returns dict of
          prior [N]: L_T = KL(q(x_T | x_0) ‖ N(0, I));
          terms [N x T]: terms[:, 0] = L_0 = −log p(x_0 | x_1) and, for i ≥ 1 (paper steps),
              terms[:, i] = KL(q(x_i | x_{i+1}, x_0) ‖ p_θ(x_i | x_{i+1}));
          total [N]: prior + terms.sum(1);
          extras["eps_mse"] [N x T]: mean over dimensions of the squared error of the implied ε prediction.
        """
        n = x_start.shape[0]
        terms = torch.zeros(n, self.num_timesteps, dtype=x_start.dtype, device=x_start.device)
        mse = torch.zeros_like(terms)
        steps = range(self.num_timesteps - 1, -1, -1)
        for i in tqdm(steps, desc="bound", disable=not progress):
            t = torch.full((n,), i, dtype=torch.long, device=x_start.device)
            noise = randn(x_start.shape, generator, x_start.device, x_start.dtype)
            x_t = self.q_sample(x_start, t, noise)
            out = self.p_mean_variance(model, x_t, t, clip_denoised)
            terms[:, i] = self.vb_term_nats(out, x_start, x_t, t)
            eps = self.predict_noise_from_start(x_t, t, out["pred_xstart"])
            mse[:, i] = mean_flat((eps - noise) ** 2)
        prior = self.prior_kl_nats(x_start)
        return BoundResult(prior=prior, terms=terms, total=prior + terms.sum(dim=1), extras={"eps_mse": mse})


def space_timesteps(num_timesteps: int, steps: int) -> np.ndarray:
    """`steps` of the indices 0..T-1, evenly spaced, first and last kept (K = 1: the last only), int64 `[K]`."""
    steps = int(steps)
    if not 1 <= steps <= num_timesteps:
        raise ValueError(f"steps = {steps}: a process of T = {num_timesteps} steps keeps 1 to {num_timesteps}")
    # floor(x + 1/2) rather than np.round: ties go one way, so points ≥ 1 apart stay distinct
    return np.floor(np.linspace(num_timesteps - 1, 0, steps)[::-1] + 0.5).astype(np.int64)


class SpacedDiffusion(GaussianDiffusion):
    """A Gaussian process on a subsequence S of a base process's steps (Improved DDPM's respacing).

    ᾱ'_k = ᾱ_{S_k} and β'_k = 1 − ᾱ'_k/ᾱ'_{k−1}; the network is called with the base index S_k
    (improved-diffusion's SpacedDiffusion and _WrappedModel). Every constant is the respaced one, so
    LEARNED_RANGE's v interpolates between the respaced β' and β̃'. `timestep_map` `[K]`: S.
    """

    def __init__(self, base: GaussianDiffusion, use_timesteps):
        kept = np.asarray(use_timesteps, dtype=np.int64)
        if kept.ndim != 1 or len(kept) == 0 or np.any(np.diff(kept) <= 0) or kept[0] < 0 \
                or kept[-1] >= base.num_timesteps:
            raise ValueError(f"use_timesteps must rise strictly within 0..{base.num_timesteps - 1}; "
                             f"got {kept.tolist()}")
        # log(1 − β'_k) is the sum of log(1 − β) over the base steps S_{k−1}+1..S_k, kept whole in float64
        log_alphas = np.log1p(-base.forward_betas())
        starts = np.append(0, kept[:-1] + 1)
        betas = -np.expm1(np.array([log_alphas[a:b + 1].sum() for a, b in zip(starts, kept)]))
        super().__init__(betas, mean_type=base.mean_type, var_type=base.var_type, loss_type=base.loss_type,
                         decoder=base.decoder, clip_denoised=base.clip_denoised,
                         hybrid_lambda=base.hybrid_lambda, bins=base.bins)
        self.timestep_map = base.original_steps(torch.as_tensor(kept))

    def original_steps(self, t: torch.Tensor) -> torch.Tensor:
        if self.timestep_map.device != t.device:  # once per device: no host-device copy every step
            self.timestep_map = self.timestep_map.to(t.device)
        return self.timestep_map[t]

    def _wrap(self, model):
        return lambda x_t, t: model(x_t, self.original_steps(t))

    def p_mean_variance(self, model, x_t, t, clip_denoised=None):
        return super().p_mean_variance(self._wrap(model), x_t, t, clip_denoised)

    def training_losses(self, model, x_start, t, noise=None, generator=None):
        return super().training_losses(self._wrap(model), x_start, t, noise, generator)
