"""The diffusion families, one record each: the only place that names them and says what each
takes and can do. Pure Python (no torch): params are checked against it when a pipeline is
planned (config.py), and the JSON Schema's family enum is tested against it.

A record says which data types a family models, the keys under a run's `diffusion` it reads
besides family and timesteps, its β schedules, whether sample.clip_denoised applies (a predicted
x0 to clamp to [-1, 1]), whether it has the fast samplers (respaced steps, DDIM), how many
data-shaped tensors its network outputs, whether it trains under bf16 autocast on CUDA, and what
the report prints beside its figures. The process itself is built in build.py (`PROCESSES`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class Family:
    name: str
    data_types: tuple               # the data types it can model
    options: tuple                  # keys under a run's `diffusion` it reads (besides family, timesteps)
    schedules: tuple                # its β schedules (the `schedule` key); () when it takes none
    clips: bool                     # sample.clip_denoised clamps its predicted x0 (image data only)
    fast_sampler: bool              # sample.steps < T and sample.sampler ddim
    bf16_autocast: bool             # trains under bf16 autocast on CUDA (float64 schedule math does not)
    out_mult: Callable              # DiffusionConfig -> data-shaped tensors the network outputs
    setting: Callable               # RunConfig -> what its figures depend on most (the report prints it)
    bound_settings: Callable        # RunConfig -> settings stored beside the bound in nll.json


def _noise(run) -> float:
    return run.dataset.options.get("noise", 0.0)


FAMILIES = {
    # Ho et al. 2020: fixed β, ε- (or x0-, mean-) prediction, L_simple / L_vlb / hybrid
    "ddpm": Family(
        "ddpm", data_types=("points", "image"),
        options=("schedule", "beta_start", "beta_end", "mean_type", "var_type", "loss_type", "hybrid_lambda"),
        schedules=("linear", "cosine", "geometric", "constant"),
        clips=True, fast_sampler=True, bf16_autocast=True,
        out_mult=lambda d: 2 if d.var_type == "learned_range" else 1,
        setting=lambda run: f"T={run.diffusion.timesteps}, {run.diffusion.schedule} β",
        bound_settings=lambda run: {}),
    # Sohl-Dickstein et al. 2015 §2.1–2.4: learned β, the network outputs reverse mean and variance
    "sd_gaussian": Family(
        "sd_gaussian", data_types=("points", "image"),
        options=("schedule", "beta_1", "beta_end", "learn_betas"),
        schedules=("geometric", "linear", "sd"),
        clips=False, fast_sampler=False, bf16_autocast=False,
        out_mult=lambda d: 2,  # reverse mean and variance
        # the swiss roll is a curve: K is set by β_1 and the data noise
        setting=lambda run: (f"T={run.diffusion.timesteps}, β_1={run.diffusion.beta_1:g}, "
                             + (f"image_convention={run.dataset.image_convention}"
                                if run.dataset.data_type == "image" else f"data noise={_noise(run):g}")),
        bound_settings=lambda run: {"beta_1": run.diffusion.beta_1, **(
            {"data_noise": _noise(run)} if run.dataset.data_type == "points" else {})}),
    # Sohl-Dickstein et al. 2015 §2 and App. A (binomial diffusion of binary data)
    "sd_binomial": Family(
        "sd_binomial", data_types=("binary",), options=("binomial_p", "binomial_reverse"), schedules=(),
        clips=False, fast_sampler=False, bf16_autocast=False,
        out_mult=lambda d: 1,  # x0 (or rate) logits
        setting=lambda run: f"T={run.diffusion.timesteps}, p={run.diffusion.binomial_p:g}",
        bound_settings=lambda run: {}),
}


def family(name: str) -> Family:
    if name not in FAMILIES:
        raise ValueError(f"unknown diffusion family {name!r}; allowed: {', '.join(FAMILIES)}")
    return FAMILIES[name]
