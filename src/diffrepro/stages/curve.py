"""curve: quality over training (Improved DDPM's figure): every checkpoint the train stage kept
(train.keep_steps) and the final model, each scored by FID against the test set and by the bound on
test examples, with the same evaluator as the fid and nll stages.

For every checkpoint the same draws: its samples start from the same noise (the run's sampler, as
the sample stage walks it, at sample.precision), its bound (always fp32) sees the same test examples
and the same t and noise, so the rows differ only by the weights. FID uses eval.curve_fid_n samples
per side (compare rows only with each other, or with fid.json at the same count).
"""
from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import torch

from ..io import InputError, load_data, load_npz, require_file, save_csv
from ..metrics.bound import bound_unit, evaluate_bound
from ..runs.checkpoint import TrainedRun, kept_steps
from ..runs.sampling import draw, for_sampling
from ..runtime import derive_seed
from ..tables.plots import quality_curve
from .fid import feature_space

LOG = logging.getLogger("diffrepro.curve")


def checkpoints(args, cfg, device) -> list:
    """[(step, TrainedRun)]: the kept checkpoints before the last step, then the final model.pt."""
    final = TrainedRun.open(args.model, device, run=cfg.name)
    found = [(step, TrainedRun.open(path, device, run=cfg.name))
             for step, path in kept_steps(args.checkpoints).items() if step < final.run.train.steps]
    return found + [(final.run.train.steps, final)]


def run(args, params, device):
    from ..metrics import fid

    cfg = params.run(args.run)
    require_file(args.extractor, "feature extractor")
    runs = checkpoints(args, cfg, device)
    final = runs[-1][1]
    x_test = load_data(args.test, "test data", cfg.dataset.data_type)["x"]
    final.check_data(args.test, x_test)
    ref = load_npz(args.reference, "reference features")
    if "test" not in ref:
        raise InputError(f"reference features {args.reference!r} lack the test array; run the reference stage")
    net, meta = fid.load_extractor(args.extractor, device)
    n_fid = min(cfg.eval.curve_fid_n, len(ref["test"]))
    x_bound = x_test[: cfg.eval.curve_nll_n]
    data_map = final.data_map
    if data_map.continuous:  # SD-2015's images: one seeded dequantisation of the test examples
        dequant = torch.Generator().manual_seed(derive_seed(params.seed, "curve-dequantise", cfg.name))
        x_bound = data_map.to_process(torch.from_numpy(x_bound), dequant).numpy()
    unit, to_unit = bound_unit(cfg.dataset.data_type, data_map, x_test.shape[1:])
    rows = []
    for i, (step, trained) in enumerate(runs):
        gen = torch.Generator(device=device).manual_seed(derive_seed(params.seed, "curve", cfg.name))
        samples = draw(for_sampling(trained, cfg.sample.precision), n_fid, gen, cfg.eval.batch_size,
                       cfg.sample.sampler, cfg.sample.steps, cfg.sample.eta).numpy().astype(np.float32)
        f_samples = fid.extract_features(net, samples)
        score = fid.fid_kid_from_features(f_samples, ref["test"][:n_fid],
                                          seed=derive_seed(params.seed, "fid", cfg.name))
        res = evaluate_bound(trained.process, trained.model, x_bound, batch_size=cfg.eval.batch_size,
                             seed=derive_seed(params.seed, "curve-bound", cfg.name), device=device, desc=None,
                             label=f"run {cfg.name!r}, stage curve")
        nll = float(to_unit(res["total"]).mean())
        rows.append({"step": step, "fid": score["fid"], "nll": nll, "unit": unit, "fid_n": n_fid,
                     "nll_n": len(x_bound)})
        LOG.info("%s: checkpoint %d of %d (step %d): FID %.3f at n=%d, bound %.4f %s", cfg.name, i + 1, len(runs),
                 step, score["fid"], n_fid, nll, unit)
    table = pd.DataFrame(rows)
    save_csv(args.table, table)
    quality_curve(args.plot, table, unit, feature_space(meta["kind"], cfg.dataset.name),
                  f"{cfg.name}: quality over training")
