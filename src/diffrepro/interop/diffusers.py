"""The diffusers format: a DDPM run as a `UNet2DModel` + `DDPMScheduler` folder (`export`), and the
checks that let a diffusers folder stand in for a trained network (`read_folder`, `check_scheduler`).

Our U-Net (nets/unet.py) is DDPM's (Ho et al. 2020, Appendix B): the sinusoidal embedding with
frequencies 10000^(-i/(h-1)) in [sin, cos] order (diffusers: `flip_sin_to_cos=False, freq_shift=1`),
single-head attention over all channels (`attention_head_dim=None`), GroupNorm ε = 1e-6, a 1×1
shortcut where the width changes, and a fused 1×1 qkv convolution, which diffusers holds as three
linear projections (to_q, to_k, to_v). The scheduler carries the run's β schedule (by name where
diffusers' own construction gives the same β, else as `trained_betas`), the parameterisation
(`prediction_type`), the reverse variance (`variance_type`) and the x̂_0 clip.

What diffusers cannot say is refused in one line (SD-2015 runs, x_{t-1} prediction, a U-Net that
resamples without convolutions) or stated in one line (a discretised decoder of other than 256
levels: diffusers has no likelihood, so the bound's decoder is not part of the folder).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np

from ..io import InputError

# what a diffusers DDPM folder (`DDPMPipeline.save_pretrained`) holds
UNET_CONFIG = Path("unet") / "config.json"
SCHEDULER_CONFIG = Path("scheduler") / "scheduler_config.json"
PROVENANCE = "diffrepro.json"       # beside model_index.json: the run and model.pt it came from
PREDICTION = {"epsilon": "epsilon", "start_x": "sample"}          # our mean_type -> prediction_type
VARIANCES = ("fixed_small", "fixed_large", "learned_range")     # the same names on both sides
PIPELINE_LEVELS = 256  # DDPMPipeline returns images in [0, 1] a PIL/uint8 consumer reads as 8 bits


def needs_diffusers(what: str):
    try:
        import diffusers
    except ImportError:
        raise InputError(f"{what} needs the diffusers package, which is not installed; install it with "
                         f"`pip install -e '.[interop]'` (the dev extra has it too)") from None
    diffusers.utils.logging.disable_progress_bar()
    diffusers.utils.logging.set_verbosity(diffusers.utils.logging.CRITICAL)  # our own one-line messages say it
    return diffusers


# ---- our U-Net <-> UNet2DModel -------------------------------------------------------------------

def unet_config(cfg: dict, data_shape, out_mult: int) -> dict:
    """UNet2DModel keywords for our U-Net of resolved architecture `cfg` (UNet.config) on examples of
    `data_shape` (C, H, W) with `out_mult`·C output channels. InputError where diffusers has no match."""
    channels, height, width = data_shape
    widths = [cfg["base_channels"] * m for m in cfg["channel_mult"]]
    if not cfg["resample_with_conv"]:
        raise InputError("model option resample_with_conv = false (average-pool down, no conv up) has no "
                         "UNet2DModel equivalent: its down and up blocks always convolve; allowed: true")
    if min(widths) < cfg["num_groups"]:
        raise InputError(f"model option num_groups = {cfg['num_groups']} exceeds the narrowest level's "
                         f"{min(widths)} channels (our GroupNorm then takes one group per channel, "
                         f"UNet2DModel cannot); allowed: num_groups <= {min(widths)}")
    heights = [height // 2 ** i for i in range(len(widths))]
    attn = [h in cfg["attn_resolutions"] for h in heights]
    down = tuple("AttnDownBlock2D" if a else "DownBlock2D" for a in attn)
    return dict(sample_size=height if height == width else (height, width), in_channels=channels,
                out_channels=out_mult * channels, center_input_sample=False, time_embedding_type="positional",
                flip_sin_to_cos=False, freq_shift=1, down_block_types=down,
                up_block_types=tuple(d.replace("Down", "Up") for d in reversed(down)),
                block_out_channels=tuple(widths), layers_per_block=cfg["num_res_blocks"],
                mid_block_scale_factor=1, downsample_padding=1, downsample_type="conv", upsample_type="conv",
                dropout=cfg["dropout"], act_fn="silu", attention_head_dim=None, norm_num_groups=cfg["num_groups"],
                norm_eps=1e-6, resnet_time_scale_shift="default", add_attention=True)


_RES = {"norm1": "norm1", "conv1": "conv1", "temb_proj": "time_emb_proj", "norm2": "norm2", "conv2": "conv2",
        "skip": "conv_shortcut"}


def _block(prefix: str, rest: str, out: dict, value) -> None:
    """One ResAttn's tensor `rest` (res.X / attn.X) under diffusers' `prefix` (…resnets.j / attentions.j
    are filled in by the caller through `prefix.format(kind)`)."""
    kind, name, param = rest.split(".", 2)
    if kind == "res":
        out[f"{prefix.format('resnets')}.{_RES[name]}.{param}"] = value
    elif name == "norm":
        out[f"{prefix.format('attentions')}.group_norm.{param}"] = value
    elif name == "qkv":  # [3C x C x 1 x 1] (or [3C]): q, k, v in that order, as forward's reshape reads it
        for part, chunk in zip(("to_q", "to_k", "to_v"), value.chunk(3, dim=0)):
            out[f"{prefix.format('attentions')}.{part}.{param}"] = chunk.reshape(chunk.shape[:2]) \
                if param == "weight" else chunk
    elif name == "proj_out":
        out[f"{prefix.format('attentions')}.to_out.0.{param}"] = value.reshape(value.shape[:2]) \
            if param == "weight" else value
    else:
        raise KeyError(rest)


def to_diffusers_state(state: dict) -> dict:
    """Our U-Net's state_dict in UNet2DModel's keys (the tensors shared, 1×1 convs as linear weights)."""
    out = {}
    for key, value in state.items():
        if m := re.fullmatch(r"temb\.(0|2)\.(weight|bias)", key):
            out[f"time_embedding.linear_{1 if m[1] == '0' else 2}.{m[2]}"] = value
        elif m := re.fullmatch(r"(down|up)\.(\d+)\.blocks\.(\d+)\.(.+)", key):
            _block(f"{m[1]}_blocks.{m[2]}.{{}}.{m[3]}", m[4], out, value)
        elif m := re.fullmatch(r"(down|up)\.(\d+)\.resample\.conv\.(.+)", key):
            out[f"{m[1]}_blocks.{m[2]}.{m[1]}samplers.0.conv.{m[3]}"] = value
        elif m := re.fullmatch(r"mid_res_attn\.(.+)", key):
            _block("mid_block.{}.0", m[1], out, value)
        elif m := re.fullmatch(r"mid_res\.(\w+)\.(.+)", key):
            out[f"mid_block.resnets.1.{_RES[m[1]]}.{m[2]}"] = value
        elif m := re.fullmatch(r"norm_out\.(.+)", key):
            out[f"conv_norm_out.{m[1]}"] = value
        elif key.startswith(("conv_in.", "conv_out.")):
            out[key] = value
        else:
            raise KeyError(f"no UNet2DModel key for {key!r}")
    return out


# ---- our process <-> DDPMScheduler ------------------------------------------------------------------

def _named_or_trained(betas: np.ndarray, diff) -> dict:
    """The schedule by diffusers' own name where its construction (in float32) gives our β to float32
    precision, else the β themselves (`trained_betas`, written with every float64 digit)."""
    import torch
    from diffusers import DDPMScheduler

    ours = torch.as_tensor(betas, dtype=torch.float32)
    if diff.schedule == "linear":
        named = dict(beta_schedule="linear", beta_start=float(betas[0]), beta_end=float(betas[-1]))
        theirs = DDPMScheduler(num_train_timesteps=len(betas), **named).betas
        if torch.allclose(theirs, ours, rtol=2e-7, atol=0):
            return named
    return dict(beta_schedule="linear", trained_betas=[float(b) for b in betas])


def scheduler_config(run, process) -> tuple:
    """(DDPMScheduler keywords, notes) for a DDPM run; InputError for what the scheduler cannot express."""
    diff = run.diffusion
    if diff.family != "ddpm":
        raise InputError(f"run {run.name!r} is of family {diff.family!r}: diffusers' DDPMScheduler expresses "
                         f"the DDPM family only (SD-2015's learned β and reverse networks have no counterpart); "
                         f"allowed: family ddpm")
    if diff.mean_type not in PREDICTION:
        raise InputError(f"run {run.name!r} has diffusion.mean_type = {diff.mean_type!r} (the network predicts "
                         f"x_(t-1)); DDPMScheduler's prediction_type knows epsilon and sample only; allowed: "
                         f"{', '.join(PREDICTION)}")
    if diff.var_type not in VARIANCES:
        raise InputError(f"run {run.name!r} has diffusion.var_type = {diff.var_type!r}; allowed: "
                         f"{', '.join(VARIANCES)}")
    clip = run.sample.clip_denoised if run.sample.clip_denoised is not None else process.clip_denoised
    config = dict(num_train_timesteps=int(process.num_timesteps), **_named_or_trained(process.forward_betas(), diff),
                  variance_type=diff.var_type, prediction_type=PREDICTION[diff.mean_type], clip_sample=bool(clip),
                  clip_sample_range=1.0, thresholding=False, timestep_spacing="leading", steps_offset=0)
    notes = []
    bins = getattr(process, "bins", PIPELINE_LEVELS)
    if getattr(getattr(process, "decoder", None), "value", None) == "discretized" and bins != PIPELINE_LEVELS:
        notes.append(f"run {run.name}'s bound uses a discretised decoder of {bins} levels; diffusers has no "
                     f"likelihood, so the folder does not carry it, and DDPMPipeline's images are read as "
                     f"{PIPELINE_LEVELS} levels")
    return config, notes


# ---- export -------------------------------------------------------------------------------------------

def _replace_dir(tmp: Path, out: Path) -> None:
    """`tmp` becomes `out`; an earlier `out` is removed only once the new one is in place."""
    old = None
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
        os.replace(out, old / out.name)
    os.replace(tmp, out)
    if old is not None:
        shutil.rmtree(old)


def export(model_path, out, device="cpu") -> list:
    """Write the DDPM run of `model_path` (a model.pt or .safetensors) as a diffusers DDPMPipeline
    folder at `out`; returns the notes to show (what the folder does not carry). Every check runs
    before anything is written; `out` appears whole or not at all."""
    from ..runs.checkpoint import TrainedRun

    needs_diffusers("export --format diffusers")
    from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {str(out)!r} is a file; give a folder (it is created, or replaced when it "
                         f"holds an earlier export)")
    if out.is_dir() and any(out.iterdir()) and not (out / PROVENANCE).is_file():
        raise InputError(f"--out {str(out)!r} is a folder with other files in it; give a new folder or an "
                         f"earlier export (which is replaced)")
    trained = TrainedRun.open(model_path, device)
    run = trained.run
    sched_cfg, notes = scheduler_config(run, trained.process)
    if run.model.arch == "diffusers":  # an imported model goes back out as it came in
        unet = trained.model.unet
    elif run.model.arch == "unet":
        unet_cfg = unet_config(trained.model.config, trained.data_shape, trained.model.out_mult)
        unet = UNet2DModel(**unet_cfg)
        unet.load_state_dict(to_diffusers_state(trained.model.state_dict()), strict=True)
    else:
        raise InputError(f"run {run.name!r}'s network is arch {run.model.arch!r}; UNet2DModel expresses the "
                         f"DDPM U-Net only; allowed: arch unet (or an imported diffusers model)")
    pipe = DDPMPipeline(unet=unet.eval(), scheduler=DDPMScheduler(**sched_cfg))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        pipe.save_pretrained(tmp, safe_serialization=True)
        (tmp / PROVENANCE).write_text(json.dumps({"run": run.name, "source": str(model_path),
                                                  "source_sha256": trained.digest, "config": run.to_dict(),
                                                  "data_shape": list(trained.data_shape), "notes": notes},
                                                 indent=1, sort_keys=True) + "\n")
        _replace_dir(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return notes


# ---- import -------------------------------------------------------------------------------------------

def read_folder(path, where: str) -> dict:
    """The unet and scheduler configs of a local diffusers DDPM folder; InputError (naming `where`, the
    params key) when it is missing or is not one."""
    folder = Path(path)
    if not folder.is_dir():
        raise InputError(f"{where} = {str(path)!r} is not a folder; give a local diffusers model folder "
                         f"(`save_pretrained` layout: unet/config.json and scheduler/scheduler_config.json)")
    found = {}
    for key, rel in (("unet", UNET_CONFIG), ("scheduler", SCHEDULER_CONFIG)):
        try:
            found[key] = json.loads((folder / rel).read_text())
        except FileNotFoundError:
            raise InputError(f"{where} = {str(path)!r} is not a diffusers model folder: {str(rel)!r} is "
                             f"missing (a DDPMPipeline folder has unet/ and scheduler/)") from None
        except (OSError, ValueError) as exc:
            raise InputError(f"{where}: {str(folder / rel)!r} is not readable JSON ({exc})") from None
    if found["unet"].get("_class_name") != "UNet2DModel":
        raise InputError(f"{where}: {str(folder / UNET_CONFIG)!r} describes a "
                         f"{found['unet'].get('_class_name')!r}; allowed: UNet2DModel")
    return found


def check_scheduler(run, process, folder) -> None:
    """The run's diffusion section must describe the folder's scheduler: the same T, β (to float32,
    diffusers' own precision), parameterisation and variance; InputError naming the key otherwise."""
    where = f"runs.{run.name}"
    sched = read_folder(folder, f"{where} model path")["scheduler"]
    source = str(Path(folder) / SCHEDULER_CONFIG)
    diff = run.diffusion
    if diff.family != "ddpm":
        raise InputError(f"{where}.diffusion.family = {diff.family!r}, but a diffusers model is a DDPM "
                         f"network; allowed: ddpm")
    needs_diffusers("a model of arch diffusers")
    import torch
    from diffusers import DDPMScheduler

    theirs = DDPMScheduler.from_config(sched)
    if theirs.config.num_train_timesteps != process.num_timesteps:
        raise InputError(f"{where}.diffusion.timesteps = {process.num_timesteps}, but {source!r} has "
                         f"num_train_timesteps {theirs.config.num_train_timesteps}; set them equal")
    ours = torch.as_tensor(process.forward_betas(), dtype=torch.float32)
    if not torch.allclose(theirs.betas, ours, rtol=1e-6, atol=0):
        worst = int((theirs.betas - ours).abs().argmax())
        raise InputError(f"{where}.diffusion's β schedule differs from {source!r} (β at step {worst + 1}: ours "
                         f"{float(ours[worst]):.6g}, theirs {float(theirs.betas[worst]):.6g}); set schedule, "
                         f"beta_start and beta_end to the folder's")
    for ours_key, value, theirs_key, allowed in (
            ("mean_type", PREDICTION.get(diff.mean_type), "prediction_type", PREDICTION),
            ("var_type", diff.var_type, "variance_type", VARIANCES)):
        if value != theirs.config[theirs_key]:
            ok = [k for k, v in PREDICTION.items() if v == theirs.config[theirs_key]] if allowed is PREDICTION \
                else [theirs.config[theirs_key]] if theirs.config[theirs_key] in VARIANCES else []
            raise InputError(f"{where}.diffusion.{ours_key} = {getattr(diff, ours_key)!r}, but {source!r} has "
                             f"{theirs_key} {theirs.config[theirs_key]!r}; "
                             + (f"allowed: {ok[0]}" if ok else "diffrepro cannot evaluate that scheduler"))
