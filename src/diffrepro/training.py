"""The training loop: Adam with warm-up, gradient clipping, EMA, periodic resumable state.

A killed run re-run with the same config resumes from its last saved state and ends with exactly
the weights of an uninterrupted run: the state holds the model, EMA, optimiser, the process's own
parameters (SD-2015's learned β) and both random generators.
"""
from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from . import families
from .choices import Choice
from .config import RunConfig
from .io import InputError, save_torch
from .runtime import progress

LOG = logging.getLogger("diffrepro.train")
RECORD_EVERY = 10  # steps averaged into one loss-history point


@dataclass
class TrainResult:
    model: torch.nn.Module
    ema: torch.nn.Module
    process: object
    history: dict = field(default_factory=dict)   # step, loss, lr lists
    wall_s: float = 0.0
    steps_run: int = 0                             # steps run in this process (less when resumed)
    resumed_from: int = 0


def config_hash(run: RunConfig, seed: int, data_shape) -> str:
    blob = json.dumps({"run": run.to_dict(), "seed": seed, "shape": list(data_shape)}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


class LRSchedule(Choice):
    """The learning rate after warm-up (params runs.<run>.train.lr_schedule)."""

    CONSTANT = "constant"
    LINEAR_DECAY = "linear_decay"  # flat for half the run, then linearly to 0


def _lr_at(step: int, run: RunConfig) -> float:
    """Linear warm-up, then constant or (linear_decay) flat for half the run and linearly to 0."""
    tc = run.train
    scale = min(1.0, (step + 1) / tc.warmup_steps) if tc.warmup_steps > 0 else 1.0
    if LRSchedule.from_str(tc.lr_schedule) is LRSchedule.LINEAR_DECAY:
        scale *= min(1.0, 2.0 * (1.0 - step / tc.steps))
    return tc.lr * scale


def _random_hflip(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    flip = torch.rand(x.shape[0], generator=generator, device=generator.device).to(x.device) < 0.5
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


def train(run: RunConfig, x_train: np.ndarray, *, device: torch.device, seed: int,
          state_path=None, show_progress: bool = True) -> TrainResult:
    """Train `run` on `x_train` [N x ...]; checkpoint to `state_path` every run.train.checkpoint_every."""
    data_type = run.dataset.data_type
    data = torch.as_tensor(x_train, dtype=torch.float32, device=device)
    data_shape = tuple(data.shape[1:])
    torch.manual_seed(seed)  # network initialisation
    model = families.build_model(run, data_shape).to(device)
    process = families.build_process(run.diffusion, data_type, run.dataset.levels).to(device)
    ema = copy.deepcopy(model).requires_grad_(False)
    params = list(model.parameters()) + list(process.parameters())  # SD-2015's learned β, where learned
    optimizer = torch.optim.Adam(params, lr=run.train.lr)
    # batch indices and flips from a CPU generator; t and noise from one on the training device
    index_gen = torch.Generator().manual_seed(seed)
    noise_gen = torch.Generator(device=device).manual_seed(seed + 1)
    history = {"step": [], "loss": [], "lr": []}
    start_step = 0
    digest = config_hash(run, seed, data_shape)
    if state_path is not None and Path(state_path).exists():
        start_step = _resume(state_path, digest, model, ema, process, optimizer, index_gen, noise_gen, history)

    use_bf16 = device.type == "cuda" and families.family(run.diffusion.family).bf16_autocast
    ema_params = list(ema.parameters())
    model_params = list(model.parameters())
    steps = run.train.steps
    n = data.shape[0]
    batch = min(run.train.batch_size, n)
    t0 = time.perf_counter()
    model.train()
    bar = progress(range(start_step, steps), total=steps - start_step, desc=f"train {run.name}", enabled=show_progress)
    running = []
    report_every = max(RECORD_EVERY, (steps // 20) // RECORD_EVERY * RECORD_EVERY)
    for step in bar:
        lr = _lr_at(step, run)
        for group in optimizer.param_groups:
            group["lr"] = lr
        idx = torch.randint(0, n, (batch,), generator=index_gen)
        x = data[idx.to(device)]
        if run.train.hflip and data_type == "image":
            x = _random_hflip(x, index_gen)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_bf16):
            loss = families.training_loss(process, model, x, noise_gen)
        value = loss.item()
        if not math.isfinite(value):  # stop before a non-finite update reaches the weights
            kept = (f"the last resumable state is kept in {state_path}" if state_path is not None
                    and Path(state_path).exists() else "no resumable state was saved yet")
            raise RuntimeError(f"run {run.name!r}, stage train: the loss is {value} at step {step + 1}; "
                               f"model.pt is not written and {kept} (lower train.lr or raise grad_clip)")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if run.train.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(params, run.train.grad_clip)
        optimizer.step()
        with torch.no_grad():
            torch._foreach_lerp_(ema_params, model_params, 1.0 - run.train.ema_decay)
        running.append(value)
        if (step + 1) % RECORD_EVERY == 0 or step + 1 == steps:
            history["step"].append(step + 1)
            history["loss"].append(float(np.mean(running)))
            history["lr"].append(lr)
            running = []
            if (step + 1) % report_every == 0 or step + 1 == steps:
                LOG.info("step %d/%d loss %.5f lr %.2e", step + 1, steps, history["loss"][-1], lr)
                bar.set_postfix(loss=f"{history['loss'][-1]:.4f}")
        if state_path is not None and (step + 1) % run.train.checkpoint_every == 0 and step + 1 < steps:
            _save_state(state_path, digest, step + 1, model, ema, process, optimizer, index_gen, noise_gen, history)
    bar.close()
    for b_ema, b in zip(ema.buffers(), model.buffers()):
        b_ema.copy_(b)
    wall = time.perf_counter() - t0
    return TrainResult(model=model, ema=ema, process=process, history=history, wall_s=wall,
                       steps_run=steps - start_step, resumed_from=start_step)


def _save_state(path, digest, step, model, ema, process, optimizer, index_gen, noise_gen, history):
    save_torch(path, {
        "config_hash": digest, "step": step,
        "model": model.state_dict(), "ema": ema.state_dict(),
        "process": process.state_dict(),
        "optimizer": optimizer.state_dict(),
        "index_gen": index_gen.get_state(), "noise_gen": noise_gen.get_state(),
        "torch_rng": torch.get_rng_state(),  # dropout draws from the global generator
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "history": history,
    })


def _resume(path, digest, model, ema, process, optimizer, index_gen, noise_gen, history) -> int:
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
        ok = isinstance(state, dict) and "config_hash" in state
    except Exception as exc:  # a state file cut short by the kill itself
        LOG.warning("training state %s is unreadable (%s); starting from step 0", path, exc)
        return 0
    if not ok or state["config_hash"] != digest:
        LOG.info("training state %s belongs to another config; starting from step 0", path)
        return 0
    model.load_state_dict(state["model"])
    ema.load_state_dict(state["ema"])
    process.load_state_dict(state["process"])
    optimizer.load_state_dict(state["optimizer"])
    index_gen.set_state(state["index_gen"])
    noise_gen.set_state(state["noise_gen"])
    torch.set_rng_state(state["torch_rng"])
    if state["cuda_rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    for k in history:
        history[k].extend(state["history"][k])
    LOG.info("resuming %s from step %d", path, state["step"])
    return int(state["step"])


def checkpoint_dict(run: RunConfig, result: TrainResult, data_shape, seed: int) -> dict:
    """What model.pt holds: the config it was built from, the EMA and raw weights, the process state."""
    return {
        "format": "diffrepro-checkpoint-1",
        "config": run.to_dict(),
        "data_shape": list(data_shape),
        "seed": seed,
        "model": result.ema.state_dict(),          # EMA weights: used for sampling and evaluation
        "model_raw": result.model.state_dict(),
        "process": result.process.state_dict(),
        "history": result.history,
    }


def load_trained(ckpt: dict, device: torch.device, expect=None):
    """Rebuild (run config, EMA model in eval mode, process) from a model.pt dict.

    expect: (run name, one example's shape, checkpoint path) the caller needs; a checkpoint of
    another run or data shape is refused before anything is computed or written.
    """
    run = RunConfig.from_dict(ckpt["config"])
    if expect is not None:
        name, shape, path = expect
        if run.name != name:
            raise InputError(f"checkpoint {str(path)!r} is of run {run.name!r}, not of run {name!r}; "
                             f"give run {name!r}'s own model.pt (its train stage writes it)")
        if tuple(ckpt["data_shape"]) != tuple(shape):
            raise InputError(f"checkpoint {str(path)!r} was trained on examples of shape {tuple(ckpt['data_shape'])}, "
                             f"but run {name!r}'s data has shape {tuple(shape)}")
    try:
        model = families.build_model(run, tuple(ckpt["data_shape"]))
        model.load_state_dict(ckpt["model"])
        process = families.build_process(run.diffusion, run.dataset.data_type, run.dataset.levels)
        process.load_state_dict(ckpt["process"])
        process.to(device)
    except (RuntimeError, KeyError, TypeError) as exc:
        raise InputError(f"checkpoint for run {run.name!r} does not match its own config ({exc})") from None
    return run, model.to(device).eval(), process
