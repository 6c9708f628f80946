"""sample: draw N samples from a trained run's reverse process; writes samples.npz and a picture."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from ..io import load_checkpoint, load_npz, save_npz
from ..plots import progressive_panel, show_data
from ..runtime import derive_seed
from ..sampling import progressive, sample
from ..training import load_trained

LOG = logging.getLogger("diffrepro.sample")


def add_arguments(p):
    p.add_argument("--run", required=True, help="run name under params runs")
    p.add_argument("--checkpoint", required=True, help="the train stage's model.pt")
    p.add_argument("--data-dir", required=True, help="the run's dataset folder (drawn beside 2-D samples)")
    p.add_argument("--out-dir", required=True, help="writes samples.npz, samples.png, progressive.png")


def run(args, params, device):
    cfg = params.run(args.run)
    ckpt = load_checkpoint(args.checkpoint)
    test = load_npz(Path(args.data_dir) / "test.npz", "test data")["x"]
    run_cfg, model, process = load_trained(ckpt, device)
    gen = torch.Generator(device=device).manual_seed(derive_seed(params.seed, "sample", cfg.name))
    shape = tuple(ckpt["data_shape"])
    chunks, left = [], cfg.sample.n
    while left > 0:
        b = min(left, cfg.sample.batch_size)
        chunks.append(sample(process, model, (b, *shape), generator=gen, device=device,
                             clip_denoised=cfg.sample.clip_denoised and run_cfg.dataset.data_type == "image").cpu())
        left -= b
    x = torch.cat(chunks).numpy().astype(np.float32)
    out = Path(args.out_dir)
    save_npz(out / "samples.npz", x=x)
    show_data(out / "samples.png", x, run_cfg.dataset.data_type, f"{cfg.name}: samples", reference=test)
    data_type = run_cfg.dataset.data_type
    frames = progressive(process, model, (8 if data_type == "image" else 500, *shape), generator=gen, device=device)
    progressive_panel(out / "progressive.png", frames, data_type, f"{cfg.name}: along the reverse chain")
    LOG.info("%s: %d samples of shape %s", cfg.name, len(x), shape)
