"""One call turns a run's config into its network and diffusion process: `build(run, data_shape)`.

Training, the trained-run handle (runs/checkpoint.py), the benchmarks and the tests all build
through it, so a run's process is the same everywhere (its decoder's bins are the data's levels).
What each family takes and can do: diffusion/families.py; its process: `PROCESSES` below, one
builder per family, each importing its process module only when called.

Every process follows the protocol in diffusion/protocol.py (reverse_step, p_sample, bound_terms,
training_loss, prior_kl, forward_betas, entropy_bounds, multiply_prior/multiply_step), so the loops,
the stages and the trainer call those methods and never ask which family they hold.
"""
from __future__ import annotations

from .diffusion.families import family


def _decoder(data_type: str, convention: str) -> str:
    """Binned for images of discrete levels; a Gaussian density for points and for SD-2015's
    dequantised, unit-variance images (convention.py)."""
    return "discretized" if data_type == "image" and convention == "ddpm" else "gaussian"


def ddpm_betas(diff):
    """The named schedule with the settings it takes (a constant schedule uses beta_start throughout)."""
    from .diffusion.schedules import get_betas, schedule_settings

    given = {"beta_start": diff.beta_start, "beta_end": diff.beta_end, "beta": diff.beta_start}
    return get_betas(diff.schedule, diff.timesteps,
                     **{k: v for k, v in given.items() if k in schedule_settings(diff.schedule)})


def _build_ddpm(diff, data_type: str, levels: int, convention: str):
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


def _build_sd_gaussian(diff, data_type: str, levels: int, convention: str):
    from .diffusion.sd_gaussian import SDGaussianDiffusion

    return SDGaussianDiffusion(num_timesteps=diff.timesteps, beta_1=diff.beta_1, learn_betas=diff.learn_betas,
                               beta_schedule_init=diff.schedule, beta_end=diff.beta_end,
                               decoder=_decoder(data_type, convention), bins=levels)


def _build_sd_binomial(diff, data_type: str, levels: int, convention: str):
    from .diffusion.binomial import BinomialDiffusion

    return BinomialDiffusion(num_timesteps=diff.timesteps, p=diff.binomial_p, reverse_type=diff.binomial_reverse)


# family -> (DiffusionConfig, data_type, levels, convention) -> a protocol.DiffusionProcess
PROCESSES = {"ddpm": _build_ddpm, "sd_gaussian": _build_sd_gaussian, "sd_binomial": _build_sd_binomial}


def out_mult(diff) -> int:
    """How many data-shaped tensors the network must output for this family."""
    return family(diff.family).out_mult(diff)


def build_process(diff, data_type: str, levels: int | None = None, convention: str = "ddpm"):
    """The diffusion process of a diffusion config (a protocol.DiffusionProcess, an nn.Module); images
    of the ddpm convention get a discretised decoder with one bin per quantisation level (default
    256), images of the sd2015 convention a continuous one (convention.py)."""
    family(diff.family)  # an unknown family: one line naming the allowed ones
    return PROCESSES[diff.family](diff, data_type, levels or 256, convention)


def build(run, data_shape) -> tuple:
    """(network, process) of a run (config.RunConfig) for examples of `data_shape`, on the CPU: the
    network first (its initialisation draws from torch's global generator), then the process with
    the run's data type, levels and image convention."""
    from .nets import build_net

    net = build_net(run.model.arch, data_shape=tuple(data_shape), out_mult=out_mult(run.diffusion),
                    num_timesteps=run.diffusion.timesteps, **run.model.options)
    process = build_process(run.diffusion, run.dataset.data_type, run.dataset.levels, run.dataset.image_convention)
    if run.model.arch == "diffusers":  # someone else's network: the run must describe its scheduler
        from .interop.diffusers import check_scheduler

        check_scheduler(run, process, run.model.options["path"])
    return net, process
