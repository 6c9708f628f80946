"""One place that turns a run's diffusion config into a process object and its training loss.

A process follows the protocol in docs/ARCHITECTURE.md (num_timesteps, prior_sample, q_sample,
p_sample, bound_terms); this module only chooses and wires, the math lives in diffusion/.
"""
from __future__ import annotations

import torch

from .config import DiffusionConfig, RunConfig
from .diffusion import likelihood

FAMILIES = ("ddpm", "sd_gaussian", "sd_binomial")


def out_mult(diff: DiffusionConfig) -> int:
    """How many data-shaped tensors the network must output for this family."""
    if diff.family == "ddpm":
        return 2 if diff.var_type == "learned_range" else 1
    if diff.family == "sd_gaussian":
        return 2  # reverse mean and variance
    return 1  # binomial: x0 logits


def ddpm_betas(diff: DiffusionConfig):
    """The named schedule with the settings it takes (a constant schedule uses beta_start throughout)."""
    from .diffusion.schedules import get_betas, schedule_settings

    given = {"beta_start": diff.beta_start, "beta_end": diff.beta_end, "beta": diff.beta_start}
    return get_betas(diff.schedule, diff.timesteps,
                     **{k: v for k, v in given.items() if k in schedule_settings(diff.schedule)})


def build_process(diff: DiffusionConfig, data_type: str):
    """The diffusion process for a run (an nn.Module when it has learnable parameters)."""
    if diff.family == "ddpm":
        from .diffusion.gaussian import GaussianDiffusion, LossType, ModelMeanType, ModelVarType
        betas = ddpm_betas(diff)
        return GaussianDiffusion(
            betas=betas,
            mean_type=ModelMeanType.from_str(diff.mean_type),
            var_type=ModelVarType.from_str(diff.var_type),
            loss_type=LossType.from_str(diff.loss_type),
            decoder="discretized" if data_type == "image" else "gaussian",
            hybrid_lambda=diff.hybrid_lambda,
            clip_denoised=data_type == "image",  # predicted x0 of 8-bit images lies in [-1, 1]
        )
    if diff.family == "sd_gaussian":
        from .diffusion.sd_gaussian import SDGaussianDiffusion

        return SDGaussianDiffusion(num_timesteps=diff.timesteps, beta_1=diff.beta_1, learn_betas=diff.learn_betas,
                                   beta_schedule_init=diff.schedule, beta_end=diff.beta_end,
                                   decoder="discretized" if data_type == "image" else "gaussian")
    if diff.family == "sd_binomial":
        from .diffusion.binomial import BinomialDiffusion

        return BinomialDiffusion(num_timesteps=diff.timesteps, p=diff.binomial_p, reverse_type=diff.binomial_reverse)
    raise ValueError(f"unknown diffusion family {diff.family!r}; allowed: {', '.join(FAMILIES)}")


def training_loss(process, model, x_start: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Scalar loss for one batch: every process draws its own t and noise (DDPM: L_simple/L_vlb/
    hybrid; SD-2015: an unbiased estimate of the negative bound)."""
    return process.training_loss(model, x_start, generator=generator).mean()


def build_model(run: RunConfig, data_shape):
    from .nets import build_net

    return build_net(run.model.arch, data_shape=data_shape, out_mult=out_mult(run.diffusion),
                     num_timesteps=run.diffusion.timesteps, **run.model.options)


def to_bits(nats, data_type: str, dims: int):
    """Per-example nats -> the unit each data type reports: bits/dim for images, else bits/example."""
    bits = likelihood.nats_to_bits(nats)
    return bits / dims if data_type == "image" else bits


def unit(data_type: str) -> str:
    return {"image": "bits/dim", "binary": "bits/seq", "points": "bits/example"}[data_type]


def forward_betas(process):
    """float64 numpy β_1..T of any process (learned ones included)."""
    import numpy as np

    if hasattr(process, "consts"):
        return np.asarray(process.consts.betas, dtype=np.float64)
    betas = process.betas
    return betas.detach().double().cpu().numpy() if torch.is_tensor(betas) else np.asarray(betas, np.float64)


def entropy_bounds(process, data_type: str, x_train):
    """SD-2015 §2.6 per-step bounds on H_q(X_{t-1} | X_t), nats per dimension, numpy (lower, upper) [T]."""
    from .diffusion import entropy

    betas = forward_betas(process)
    if data_type == "binary":
        marginal = float(x_train.mean())
        lower, upper = entropy.entropy_bounds_binomial(betas, process.p, marginal)
    else:
        lower, upper = entropy.entropy_bounds_gaussian(betas)
    return lower.numpy(), upper.numpy()
