"""The family registry: the one place that turns a run's diffusion config into a process and its
network, and the only place that knows the families by name.

Every process follows the protocol in diffusion/protocol.py (reverse_step, p_sample, bound_terms,
training_loss, prior_kl, forward_betas, entropy_bounds, multiply_prior/multiply_step), so the loops,
the stages and the trainer call those methods and never ask which family they hold. What each
family accepts in params.yaml is checked in config.py (FAMILY_OPTIONS), before any job starts.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from .config import FAMILY_DATA_TYPES, DiffusionConfig, RunConfig
from .diffusion import likelihood


def _decoder(data_type: str, convention: str) -> str:
    """Binned for images of discrete levels; a Gaussian density for points and for SD-2015's
    dequantised, unit-variance images (convention.py)."""
    return "discretized" if data_type == "image" and convention == "ddpm" else "gaussian"


def ddpm_betas(diff: DiffusionConfig):
    """The named schedule with the settings it takes (a constant schedule uses beta_start throughout)."""
    from .diffusion.schedules import get_betas, schedule_settings

    given = {"beta_start": diff.beta_start, "beta_end": diff.beta_end, "beta": diff.beta_start}
    return get_betas(diff.schedule, diff.timesteps,
                     **{k: v for k, v in given.items() if k in schedule_settings(diff.schedule)})


def _build_ddpm(diff: DiffusionConfig, data_type: str, levels: int, convention: str):
    from .diffusion.gaussian import GaussianDiffusion, LossType, ModelMeanType, ModelVarType

    decoder = _decoder(data_type, convention)
    return GaussianDiffusion(
        betas=ddpm_betas(diff),
        mean_type=ModelMeanType.from_str(diff.mean_type),
        var_type=ModelVarType.from_str(diff.var_type),
        loss_type=LossType.from_str(diff.loss_type),
        decoder=decoder,
        bins=levels,
        hybrid_lambda=diff.hybrid_lambda,
        clip_denoised=decoder == "discretized",  # x0 of stored images lies in [-1, 1]
    )


def _build_sd_gaussian(diff: DiffusionConfig, data_type: str, levels: int, convention: str):
    from .diffusion.sd_gaussian import SDGaussianDiffusion

    return SDGaussianDiffusion(num_timesteps=diff.timesteps, beta_1=diff.beta_1, learn_betas=diff.learn_betas,
                               beta_schedule_init=diff.schedule, beta_end=diff.beta_end, decoder=_decoder(data_type, convention),
                               bins=levels)


def _build_sd_binomial(diff: DiffusionConfig, data_type: str, levels: int, convention: str):
    from .diffusion.binomial import BinomialDiffusion

    return BinomialDiffusion(num_timesteps=diff.timesteps, p=diff.binomial_p, reverse_type=diff.binomial_reverse)


def _noise(run: RunConfig) -> float:
    return run.dataset.options.get("noise", 0.0)


@dataclass(frozen=True)
class Family:
    name: str
    build: Callable                 # (DiffusionConfig, data_type, levels, convention) -> a protocol.DiffusionProcess
    out_mult: Callable              # DiffusionConfig -> data-shaped tensors the network outputs
    bf16_autocast: bool             # trains under bf16 autocast on CUDA (float64 schedule math does not)
    setting: Callable               # RunConfig -> what its figures depend on most (the report prints it)
    bound_settings: Callable        # RunConfig -> settings stored beside the bound in nll.json


FAMILIES = {
    "ddpm": Family("ddpm", _build_ddpm,
                   out_mult=lambda d: 2 if d.var_type == "learned_range" else 1,
                   bf16_autocast=True,
                   setting=lambda run: f"T={run.diffusion.timesteps}, {run.diffusion.schedule} β",
                   bound_settings=lambda run: {}),
    "sd_gaussian": Family("sd_gaussian", _build_sd_gaussian,
                          out_mult=lambda d: 2,  # reverse mean and variance
                          bf16_autocast=False,
                          # the swiss roll is a curve: K is set by β_1 and the data noise
                          setting=lambda run: (f"T={run.diffusion.timesteps}, β_1={run.diffusion.beta_1:g}, "
                                               + (f"image_convention={run.dataset.image_convention}"
                                                  if run.dataset.data_type == "image"
                                                  else f"data noise={_noise(run):g}")),
                          bound_settings=lambda run: {"beta_1": run.diffusion.beta_1, **(
                              {"data_noise": _noise(run)} if run.dataset.data_type == "points" else {})}),
    "sd_binomial": Family("sd_binomial", _build_sd_binomial,
                          out_mult=lambda d: 1,  # x0 (or rate) logits
                          bf16_autocast=False,
                          setting=lambda run: f"T={run.diffusion.timesteps}, p={run.diffusion.binomial_p:g}",
                          bound_settings=lambda run: {}),
}
assert set(FAMILIES) == set(FAMILY_DATA_TYPES), "config.FAMILY_DATA_TYPES and FAMILIES must name the same families"


def family(name: str) -> Family:
    if name not in FAMILIES:
        raise ValueError(f"unknown diffusion family {name!r}; allowed: {', '.join(FAMILIES)}")
    return FAMILIES[name]


def out_mult(diff: DiffusionConfig) -> int:
    """How many data-shaped tensors the network must output for this family."""
    return family(diff.family).out_mult(diff)


def build_process(diff: DiffusionConfig, data_type: str, levels: int | None = None, convention: str = "ddpm"):
    """The diffusion process for a run (a protocol.DiffusionProcess, an nn.Module); images of the
    ddpm convention get a discretised decoder with one bin per quantisation level (default 256),
    images of the sd2015 convention a continuous one (convention.py)."""
    return family(diff.family).build(diff, data_type, levels or 256, convention)


def training_loss(process, model, x_start, generator):
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
