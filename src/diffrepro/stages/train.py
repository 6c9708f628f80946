"""train: fit a run's network (and SD-2015's learned β) on its data set; writes model.pt and the loss curve."""
from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from ..io import load_npz, save_csv, save_json, save_torch
from ..nets import count_parameters
from ..plots import loss_curve, schedule_panel
from .. import families
from ..runtime import derive_seed
from ..training import checkpoint_dict, train

LOG = logging.getLogger("diffrepro.train")


def add_arguments(p):
    p.add_argument("--run", required=True, help="run name under params runs")
    p.add_argument("--data-dir", required=True, help="the prepare stage's folder for the run's dataset")
    p.add_argument("--out-dir", required=True,
                   help="writes model.pt, train.json, loss.csv, loss.png, schedule.csv, schedule.png")


def run(args, params, device):
    cfg = params.run(args.run)
    x_train = load_npz(Path(args.data_dir) / "train.npz", "training data")["x"]
    out = Path(args.out_dir)
    seed = derive_seed(params.seed, "train", cfg.name)
    result = train(cfg, x_train, device=device, seed=seed, state_path=out / "train_state.pt")
    save_torch(out / "model.pt", checkpoint_dict(cfg, result, x_train.shape[1:], seed))
    hist = pd.DataFrame(result.history)
    save_csv(out / "loss.csv", hist)
    loss_curve(out / "loss.png", hist["step"], hist["loss"], f"{cfg.name}: training loss")
    betas = families.forward_betas(result.process)
    lower, upper = families.entropy_bounds(result.process, cfg.dataset.data_type, x_train)
    sched = pd.DataFrame({"t": range(1, len(betas) + 1), "beta": betas, "entropy_lower_nats": lower,
                          "entropy_upper_nats": upper})
    save_csv(out / "schedule.csv", sched)
    schedule_panel(out / "schedule.png", sched, f"{cfg.name}: β schedule and reverse-step entropy bounds")
    tail = hist["loss"].tail(10).mean()
    metrics = {
        "steps": cfg.train.steps, "final_loss": float(tail), "params": count_parameters(result.model),
        "train_wall_s": round(result.wall_s, 2), "resumed_from_step": result.resumed_from,
        "examples_per_s": round(result.steps_run * min(cfg.train.batch_size, len(x_train)) / max(result.wall_s, 1e-9), 1),
        "device": device.type,
    }
    save_json(out / "train.json", metrics)
    state = out / "train_state.pt"
    if state.exists():
        state.unlink()
    LOG.info("%s: %d steps in %.1f s, final loss %.5f", cfg.name, cfg.train.steps, result.wall_s, tail)
