"""train: fit a run's network (and SD-2015's learned β) on its data set; writes model.pt and the loss curve."""
from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd
import torch

from ..convention import DataMap
from ..io import load_data, save_csv, save_json, save_torch
from ..nets import count_parameters
from ..runs import distributed
from ..runs.checkpoint import checkpoint_dict
from ..runs.training import train
from ..runtime import derive_seed
from ..tables.plots import loss_curve, schedule_panel

LOG = logging.getLogger("diffrepro.train")


def run(args, params, device):
    cfg = params.run(args.run)
    x_train = load_data(args.train, "training data", cfg.dataset.data_type)["x"]
    state = Path(args.model).with_name("train_state.pt")  # resumable state beside the model, removed when done
    seed = derive_seed(params.seed, "train", cfg.name)
    group = distributed.from_env()  # one process, or one of train.processes under torchrun
    data_map = DataMap.fit(cfg.dataset.image_convention, x_train, cfg.dataset.levels)
    with distributed.joined(group, device) as own_device:
        result = train(cfg, x_train, device=own_device, seed=seed, state_path=state, group=group, data_map=data_map)
    if not group.main:  # rank 0 writes every output
        return
    save_torch(args.model, checkpoint_dict(cfg, result, x_train.shape[1:], seed, data_map))
    hist = pd.DataFrame(result.history)
    save_csv(args.loss, hist)
    loss_curve(args.curve, hist["step"], hist["loss"], f"{cfg.name}: training loss")
    betas = result.process.forward_betas()
    lower, upper = result.process.entropy_bounds(data_map.to_process(torch.from_numpy(x_train)).numpy())
    sched = pd.DataFrame({"t": range(1, len(betas) + 1), "beta": betas, "entropy_lower_nats": lower,
                          "entropy_upper_nats": upper})
    save_csv(args.schedule, sched)
    schedule_panel(args.schedule_plot, sched, f"{cfg.name}: β schedule and reverse-step entropy bounds")
    tail = hist["loss"].tail(10).mean()
    metrics = {
        "steps": cfg.train.steps, "final_loss": float(tail), "params": count_parameters(result.model),
        "train_wall_s": round(result.wall_s, 2), "resumed_from_step": result.resumed_from,
        "examples_per_s": round(result.steps_run * min(cfg.train.batch_size, len(x_train))
                                / max(result.wall_s, 1e-9), 1),
        "device": device.type,
    }
    save_json(args.metrics, metrics)
    if state.exists():
        state.unlink()
    LOG.info("%s: %d steps in %.1f s, final loss %.5f", cfg.name, cfg.train.steps, result.wall_s, tail)
