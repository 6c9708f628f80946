"""train: fit a run's network (and SD-2015's learned β) on its data set.

Writes model.pt, the loss record (loss.csv, rewritten as training runs, and its picture), samples
drawn along training (training_samples.png), the EMA weights at train.keep_steps (the checkpoints
folder, scored by the curve stage), the β schedule, and the resumable state: kept after the run, so
that raising train.steps continues from it.
"""
from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd
import torch

from ..convention import DataMap
from ..interop.safetensors import save as save_safetensors
from ..io import InputError, file_sha256, load_data, save_csv, save_json, save_torch
from ..nets import count_parameters
from ..runs import distributed
from ..runs.checkpoint import KEPT, checkpoint_dict, kept_checkpoint, kept_steps, load_init
from ..runs.training import Hooks, data_digest, state_digest, train
from ..runtime import derive_seed
from ..tables.plots import loss_curve, schedule_panel, training_samples_panel
from ..wiring.codedeps import code_digest

LOG = logging.getLogger("diffrepro.train")


def loss_table(history: dict, rates: list) -> pd.DataFrame:
    """loss.csv: one row per train.log_every steps (the mean loss of those steps, the learning rate at
    the row's last step, images per second over them)."""
    return pd.DataFrame({**history, "images_per_s": rates})


class _Live:
    """The train stage's hooks: loss.csv rewritten atomically at every row (and DVCLive's step where
    train.logger is dvclive), kept checkpoints, the training-samples picture."""

    def __init__(self, args, cfg, seed, data_shape, data_map, digest):
        self.args, self.cfg, self.seed, self.data_shape, self.data_map, self.digest = (
            args, cfg, seed, data_shape, data_map, digest)
        self.live, self.live_step = None, None
        if cfg.train.logger == "dvclive":
            from dvclive import Live  # optional (params check: installed); offline, files only

            # dvclive/<run> in the project (DVCLive's own place), outside results/: no stage's output
            self.live = Live(dir=str(Path("dvclive") / cfg.name), resume=True, save_dvc_exp=False)

    def row(self, history, rates, step, steps):
        save_csv(self.args.loss, loss_table(history, rates))
        if self.live is not None and history["step"] and history["step"][-1] != self.live_step:
            self.live_step = self.live.step = history["step"][-1]  # DVCLive's step is the training step
            self.live.log_metric("train/loss", history["loss"][-1])
            self.live.log_metric("train/lr", history["lr"][-1])
            self.live.log_metric("train/images_per_s", rates[-1])
            self.live.next_step()

    def keep(self, step, ema_state, process_state, history):
        path = Path(self.args.checkpoints) / KEPT.format(step)
        save_torch(path, kept_checkpoint(self.cfg, step, ema_state, process_state, history, self.data_shape,
                                         self.seed, self.data_map, self.digest))
        LOG.info("%s: kept the EMA weights of step %d in %s", self.cfg.name, step, path)

    def grid(self, rows):
        training_samples_panel(self.args.training_samples, rows, self.cfg.dataset.data_type,
                               f"{self.cfg.name}: samples from the EMA weights along training (same draws)")

    def close(self):
        if self.live is not None:
            self.live.end()


def _tidy_checkpoints(folder: Path, cfg, digest: str, resumed_from: int) -> None:
    """The checkpoints folder holds this config's train.keep_steps and nothing else; a kept step
    the job passed before it started (added to keep_steps when extending a run) is said to be missing."""
    wanted = set(cfg.train.keep_steps)
    for step, path in kept_steps(folder).items():
        if step not in wanted or kept_checkpoint_digest(path) != digest:
            path.unlink()
    missing = sorted(wanted - set(kept_steps(folder)))
    if missing:
        LOG.warning("%s: train.keep_steps %s were passed before this job (it continued from step %d): their "
                    "weights cannot be kept now", cfg.name, ", ".join(map(str, missing)), resumed_from)


def kept_checkpoint_digest(path: Path) -> str | None:
    """The training state's digest a kept checkpoint belongs to, read without its tensors (at paper
    scale each holds 143 MB of weights); None for a cut or foreign file (it goes)."""
    from ..runs.checkpoint import peek_checkpoint

    try:
        ckpt = peek_checkpoint(path)
    except InputError:
        return None
    return ckpt.get("state_digest") if isinstance(ckpt, dict) else None


def run(args, params, device):
    cfg = params.run(args.run)
    x_train = load_data(args.train, "training data", cfg.dataset.data_type)["x"]
    seed = derive_seed(params.seed, "train", cfg.name)
    shape = tuple(x_train.shape[1:])
    init = None
    if cfg.train.init_from is not None:  # fine-tuning: refused in one line before anything is trained
        init = load_init(cfg, shape, Path(args.model).parent.parent)
    code = code_digest(__name__)  # a state left by other training code is not continued
    digest = state_digest(cfg, seed, shape, None if init is None else init["digest"], data_digest(x_train), code)
    group = distributed.from_env()  # one process, or one of train.processes under torchrun
    data_map = DataMap.fit(cfg.dataset.image_convention, x_train, cfg.dataset.levels)
    live = _Live(args, cfg, seed, shape, data_map, digest) if group.main else None
    if group.main:
        Path(args.checkpoints).mkdir(parents=True, exist_ok=True)
    hooks = Hooks(row=live.row, keep=live.keep, grid=live.grid) if live else None
    with distributed.joined(group, device) as own_device:
        result = train(cfg, x_train, device=own_device, seed=seed, state_path=args.state, group=group,
                       data_map=data_map, hooks=hooks, init=init, code_digest=code)
    if not group.main:  # rank 0 writes every output
        return
    live.close()
    _tidy_checkpoints(Path(args.checkpoints), cfg, digest, result.resumed_from)
    provenance = None if init is None else {"init_from": cfg.train.init_from, "path": str(init["path"]),
                                            "sha256": init["digest"], "weights": "ema"}
    ckpt = checkpoint_dict(cfg, result, shape, seed, data_map, provenance=provenance)
    save_torch(args.model, ckpt)
    save_safetensors(ckpt, args.weights, args.weights_config, file_sha256(args.model))  # beside it, no pickle
    hist = loss_table(result.history, result.rates)
    save_csv(args.loss, hist)
    loss_curve(args.curve, hist["step"], hist["loss"], f"{cfg.name}: training loss")
    betas = result.process.forward_betas()
    lower, upper = result.process.entropy_bounds(data_map.to_process(torch.from_numpy(x_train)).numpy())
    sched = pd.DataFrame({"t": range(1, len(betas) + 1), "beta": betas, "entropy_lower_nats": lower,
                          "entropy_upper_nats": upper})
    save_csv(args.schedule, sched)
    schedule_panel(args.schedule_plot, sched, f"{cfg.name}: β schedule and reverse-step entropy bounds")
    tail = result.final_loss  # the mean loss of the last 100 steps
    metrics = {
        "steps": cfg.train.steps, "final_loss": float(tail) if tail == tail else None,  # None: no step was taken
        "params": count_parameters(result.model),
        "train_wall_s": round(result.wall_s, 2), "resumed_from_step": result.resumed_from,
        "examples_per_s": round(result.steps_run * min(cfg.train.batch_size, len(x_train))
                                / max(result.wall_s, 1e-9), 1),
        "kept_steps": sorted(kept_steps(Path(args.checkpoints))),
        "device": device.type,
    }
    if init is not None:
        metrics["init_from"] = provenance
    save_json(args.metrics, metrics)
    LOG.info("%s: %d steps in %.1f s, final loss %s (model %s)", cfg.name, cfg.train.steps, result.wall_s,
             f"{tail:.5f}" if tail == tail else "none (no training: the network as built)",
             file_sha256(args.model)[:12])
