"""sample: draw N samples from a trained run's reverse process; writes samples.npz and a picture."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from ..io import load_data, save_npz
from ..runs.checkpoint import TrainedRun
from ..runs.resume import Parts, digest
from ..runs.sampling import progressive, sample
from ..runtime import ChunkClock, derive_seed, progress
from ..tables.plots import progressive_panel, show_data

LOG = logging.getLogger("diffrepro.sample")


def run(args, params, device):
    cfg = params.run(args.run)
    trained = TrainedRun.open(args.model, device, run=cfg.name)
    test = load_data(args.test, "test data", cfg.dataset.data_type)["x"]  # drawn beside 2-D samples
    trained.check_data(args.test, test)
    run_cfg, model, process, shape = trained.run, trained.model, trained.process, trained.data_shape
    data_map = trained.data_map  # SD-2015's images: back to the stored levels
    seed = derive_seed(params.seed, "sample", cfg.name)
    gen = torch.Generator(device=device).manual_seed(seed)
    # every finished chunk is kept until samples.npz is written: a killed job resumes after it
    parts = Parts(Path(args.samples).with_name("sample_parts"),
                  digest(run=cfg.name, sample=cfg.sample, seed=seed, device=device.type,
                         model=trained.digest))
    done = parts.load()
    chunks = [part["x"] for part in done]
    if done:
        gen.set_state(done[-1]["generator"])
        LOG.info("%s: resuming after %d of %d samples", cfg.name, sum(len(c) for c in chunks), cfg.sample.n)
    left = cfg.sample.n - sum(len(c) for c in chunks)
    walk = cfg.sample.steps or process.num_timesteps  # reverse steps per chunk
    todo = -(-left // cfg.sample.batch_size)
    clock = ChunkClock(f"{cfg.name}: sampling", todo, "samples")
    with progress(total=todo * walk, desc=f"sample {cfg.name}", unit="step") as bar:  # the whole job
        while left > 0:
            b = min(left, cfg.sample.batch_size)
            chunks.append(data_map.from_process(sample(process, model, (b, *shape), generator=gen, device=device,
                                                       clip_denoised=cfg.sample.clip_denoised,
                                                       sampler=cfg.sample.sampler, steps=cfg.sample.steps,
                                                       eta=cfg.sample.eta, bar=bar)).cpu())
            parts.save(len(chunks) - 1, {"x": chunks[-1], "generator": gen.get_state()})
            left -= b
            clock.done(b)
    x = torch.cat(chunks).numpy().astype(np.float32)
    save_npz(args.samples, x=x)
    show_data(args.picture, x, run_cfg.dataset.data_type, f"{cfg.name}: samples", reference=test)
    data_type = run_cfg.dataset.data_type
    frames = progressive(process, model, (8 if data_type == "image" else 500, *shape), generator=gen, device=device)
    if data_map.continuous:
        frames = [(t, data_map.from_process(x), None if x0 is None else data_map.from_process(x0))
                  for t, x, x0 in frames]
    progressive_panel(args.progressive, frames, data_type, f"{cfg.name}: along the reverse chain")
    parts.clear()
    LOG.info("%s: %d samples of shape %s", cfg.name, len(x), shape)
