"""sample: draw N samples from a trained run's reverse process; writes samples.npz and a picture."""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np
import torch

from ..io import load_data, save_npz
from ..runs.checkpoint import TrainedRun
from ..runs.resume import Parts, digest
from ..runs.sampling import for_sampling, progressive, sample
from ..runs.shards import Batches, batch_generator, gather, scatter
from ..runtime import ChunkClock, derive_seed, progress
from ..tables.plots import progressive_panel, show_data

LOG = logging.getLogger("diffrepro.sample")


def run(args, params, device):
    cfg = params.run(args.run)
    trained = for_sampling(TrainedRun.open(args.model, device, run=cfg.name), cfg.sample.precision)
    test = load_data(args.test, "test data", cfg.dataset.data_type)["x"]  # drawn beside 2-D samples
    trained.check_data(args.test, test)
    run_cfg, model, process, shape = trained.run, trained.model, trained.process, trained.data_shape
    data_map = trained.data_map  # SD-2015's images: back to the stored levels
    seed = derive_seed(params.seed, "sample", cfg.name)
    # batch j of sample.batch_size draws from its own seeded generator: the batches split over
    # sample.shards jobs (scatter, `--shard k`) and gathered here are byte-identical to one job's, and a
    # killed job redoes only its unfinished batches
    plan = Batches(cfg.sample.n, cfg.sample.batch_size, cfg.sample.shards)
    plan.check(f"runs.{cfg.name}.sample.shards")
    settings = {k: v for k, v in dataclasses.asdict(cfg.sample).items() if k != "shards"}
    key = digest(run=cfg.name, sample=settings, seed=seed, device=device.type, model=trained.digest)
    walk = cfg.sample.steps or process.num_timesteps  # reverse steps per batch

    def compute(indices, parts):
        found = parts.done(indices, f"{cfg.name}: sampling")
        todo = [j for j in indices if j not in found]
        clock = ChunkClock(f"{cfg.name}: sampling", len(todo), "samples")
        with progress(total=len(todo) * walk, desc=f"sample {cfg.name}", unit="step") as bar:  # the whole job
            for j in todo:
                z = sample(process, model, (plan.size(j), *shape), generator=batch_generator(seed, j, device),
                           device=device, clip_denoised=cfg.sample.clip_denoised, sampler=cfg.sample.sampler,
                           steps=cfg.sample.steps, eta=cfg.sample.eta, bar=bar)
                found[j] = {"x": data_map.from_process(z).cpu()}
                parts.save(j, found[j])
                clock.done(plan.size(j))
        return {j: {"x": found[j]["x"]} for j in indices}

    if args.shard is not None:
        return scatter(args.shard, args.shard_file, plan, key, compute)
    parts = Parts(Path(args.samples).with_name("sample_parts"), key)
    batches = gather(plan, key, args.shard_files.__getitem__, lambda indices: compute(indices, parts))
    x = torch.cat([b["x"] for b in batches.values()]).numpy().astype(np.float32)
    save_npz(args.samples, x=x)
    show_data(args.picture, x, run_cfg.dataset.data_type, f"{cfg.name}: samples", reference=test)
    data_type = run_cfg.dataset.data_type
    gen = torch.Generator(device=device).manual_seed(derive_seed(params.seed, "sample-progressive", cfg.name))
    frames = progressive(process, model, (8 if data_type == "image" else 500, *shape), generator=gen, device=device)
    if data_map.continuous:
        frames = [(t, data_map.from_process(x), None if x0 is None else data_map.from_process(x0))
                  for t, x, x0 in frames]
    progressive_panel(args.progressive, frames, data_type, f"{cfg.name}: along the reverse chain")
    parts.clear()
    LOG.info("%s: %d samples of shape %s", cfg.name, len(x), shape)
