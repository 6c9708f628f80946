"""nll: the variational bound on the test set over all T terms, stored term by term.

Images: bits/dim with DDPM's discretised decoder over the data's own quantisation levels (stated as
`levels`); or, for a dataset of SD-2015's image convention (convention.py), K, L_null and K − L_null
in bits/pixel of the dequantised, unit-variance data, beside the bits/dim of the levels the same
bound implies. 2-D points: bits per example with a Gaussian decoder. Binary sequences: bits per sequence.
Every run also gets K = −bound, SD-2015's L_null and K − L_null in the same units, and images the
per-pixel categorical baseline and the gain over it. The math lives in diffusion/ and
metrics/bound.py; this stage reads, calls and writes.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..diffusion.families import family
from ..diffusion.likelihood import to_bits
from ..io import check_same_shape, load_data, save_csv, save_json
from ..metrics.bound import bound_batches, bound_unit, categorical_nats, join_results, l_null_nats, rate_distortion
from ..runs.checkpoint import TrainedRun
from ..runs.resume import Parts, digest
from ..runs.shards import Batches, gather, scatter
from ..runtime import derive_seed
from ..tables.plots import bound_terms as plot_terms

LOG = logging.getLogger("diffrepro.nll")


def paper_k(res: dict, continuous: bool, to_unit) -> dict:
    """SD-2015's eq. 14 K (it differs from the exact bound per example, see sd_gaussian.py), where it
    is on this file's scale: it is made of differential entropies, so on continuous data only; for
    discretised images (bits/dim of the decoder's bins) it is left out."""
    if "k_paper" not in res or not continuous:
        return {}
    return {"K_paper_eq14": float(to_unit(res["k_paper"]).mean())}


def run(args, params, device):
    cfg = params.run(args.run)
    trained = TrainedRun.open(args.model, device, run=cfg.name)
    x_test = load_data(args.test, "test data", cfg.dataset.data_type)["x"][: cfg.eval.nll_n]
    x_train = load_data(args.train, "training data", cfg.dataset.data_type)["x"]
    trained.check_data(args.test, x_test)
    check_same_shape(x_train, args.train, x_test, args.test)
    run_cfg, model, process, data_map = trained.run, trained.model, trained.process, trained.data_map
    data_type = run_cfg.dataset.data_type
    dims = int(np.prod(x_test.shape[1:]))
    seed = derive_seed(params.seed, "nll", cfg.name)
    x_train_levels, x_test_levels = x_train, x_test
    if data_map.continuous:  # SD-2015's images: one seeded dequantisation draw of the test and train sets
        dequant = torch.Generator().manual_seed(derive_seed(params.seed, "nll-dequantise", cfg.name))
        x_test, x_train = (data_map.to_process(torch.from_numpy(x), dequant).numpy() for x in (x_test, x_train))
    # the bound's batches, each from its own seeded generator: split over eval.nll_shards jobs (scatter,
    # `--shard k`) and gathered here byte-identical to one job's; a killed job redoes only unfinished batches
    plan = Batches(len(x_test), cfg.eval.batch_size, cfg.eval.nll_shards)
    plan.check(f"runs.{cfg.name}.eval.nll_shards")
    key = digest(run=cfg.name, batch_size=cfg.eval.batch_size, seed=seed, device=device.type, model=trained.digest,
                 x=x_test)

    def compute(indices, parts):
        return bound_batches(process, model, x_test, batch_size=cfg.eval.batch_size, seed=seed, device=device,
                             desc=f"bound {cfg.name}", parts=parts, label=f"run {cfg.name!r}, stage nll",
                             batches=indices)

    if args.shard is not None:
        return scatter(args.shard, args.shard_file, plan, key, compute)
    parts = Parts(Path(args.metrics).with_name("nll_parts"), key)
    res = join_results(list(gather(plan, key, args.shard_files.__getitem__,
                                   lambda indices: compute(indices, parts)).values()))
    unit, to_unit = bound_unit(data_type, data_map, x_test.shape[1:])
    total = to_unit(res["total"])
    metrics = {
        "unit": unit, "n": int(len(x_test)), "timesteps": int(process.num_timesteps), "dims": dims,
        "nll": float(total.mean()),
        "nll_stderr": float(total.std(ddof=1) / np.sqrt(len(total))) if len(total) > 1 else 0.0,
        "prior": float(to_unit(res["prior"]).mean()),
        "decoder": float(to_unit(res["terms"][:, 0]).mean()),
        "kl_sum": float(to_unit(res["terms"][:, 1:].sum(axis=1)).mean()),
    }
    # SD-2015's view of the same number: K = −bound, and its gain over the null model
    levels = run_cfg.dataset.levels
    null = to_unit(l_null_nats(x_train, x_test, "points" if data_map.continuous else data_type, levels or 256))
    metrics["K"] = -metrics["nll"]
    metrics["L_null"] = float(null.mean())
    metrics["K_minus_L_null"] = metrics["K"] - metrics["L_null"]
    if data_map.continuous:  # the same bound on the levels themselves (the dequantisation bound)
        levels_bits = to_bits(data_map.levels_nats(res["total"], dims), "image", dims)
        metrics.update(convention="sd2015: levels dequantised (uniform), unit variance, continuous first step",
                       pixel_mean=data_map.mean, pixel_std=data_map.std,
                       nll_levels_bits_per_dim=float(levels_bits.mean()))
    if levels:  # discrete images: the bound's unit is bits/dim of these levels; the trivial baseline
        x_levels = (x_train_levels, x_test_levels) if data_map.continuous else (x_train, x_test)
        categorical = -to_bits(categorical_nats(*x_levels, levels), "image", dims)
        bits_per_dim = metrics.get("nll_levels_bits_per_dim", metrics["nll"])
        metrics.update(levels=levels, nll_categorical=float(categorical.mean()),
                       gain_over_categorical=float(categorical.mean()) - bits_per_dim)
    metrics.update(paper_k(res, data_type != "image" or data_map.continuous, to_unit))
    metrics.update(family(run_cfg.diffusion.family).bound_settings(run_cfg))
    terms = pd.DataFrame({"t": np.arange(1, res["terms"].shape[1] + 1), "term": to_unit(res["terms"]).mean(axis=0)})
    rd = None
    if "eps_mse" in res:  # processes that predict ε: DDPM's progressive-coding view
        rd = rate_distortion(res, process.signal_fraction(), to_unit, data_type)
        terms["rate"], terms["distortion"] = rd["rate"], rd["distortion"]
    save_csv(args.terms, terms)
    plot_terms(args.plot, terms["t"], terms["term"], unit, f"{cfg.name}: bound terms (L_0 at t=1)",
               rate_distortion=None if rd is None else (rd["rate"], rd["distortion"], rd["distortion_unit"]))
    save_json(args.metrics, metrics)
    parts.clear()
    LOG.info("%s: bound %.4f %s (prior %.2e, decoder %.4f, KL sum %.4f)", cfg.name, metrics["nll"], unit,
             metrics["prior"], metrics["decoder"], metrics["kl_sum"])
