"""fid: FID and KID (torch-fidelity) of a run's samples against held-out data, and the train-vs-test floor.

Both numbers use the same count of examples per side: FID in a small feature space moves a lot with
the count, so only equal counts compare.
"""
from __future__ import annotations

import logging
from ..io import load_data, load_npz, require_file, save_json
from ..runtime import derive_seed

LOG = logging.getLogger("diffrepro.fid")


def run(args, params, device):
    from ..metrics import fid

    cfg = params.run(args.run)
    require_file(args.extractor, "feature extractor")
    samples = load_npz(args.samples, "samples")["x"]  # a model's samples may stray outside the data's range
    test = load_data(args.test, "test data", cfg.dataset.data_type)["x"]
    train = load_data(args.train, "training data", cfg.dataset.data_type)["x"]
    if samples.shape[1:] != test.shape[1:]:
        raise ValueError(f"samples {args.samples!r} have examples of shape {tuple(samples.shape[1:])}, "
                         f"test data {tuple(test.shape[1:])}: they are not of run {cfg.name!r}")
    n = min(cfg.eval.fid_n, len(samples), len(test), len(train))
    seed = derive_seed(params.seed, "fid", cfg.name)
    model_scores = fid.fid_kid(samples[:n], test[:n], args.extractor, device=device, seed=seed)
    floor = fid.fid_kid(train[:n], test[:n], args.extractor, device=device, seed=seed)
    kind = fid.load_extractor(args.extractor)[1].get("kind", "?")
    space = {"identity": "data space"}.get(kind, f"{kind} of {cfg.dataset.name}")  # a domain classifier's features
    metrics = {"n": n, "feature_space": space, "fid": model_scores["fid"], "kid": model_scores["kid_mean"], "kid_std": model_scores["kid_std"],
               "fid_floor_train_vs_test": floor["fid"], "kid_floor_train_vs_test": floor["kid_mean"]}
    if cfg.eval.inception_weights:  # the standard FID, as DDPM reports it: samples vs the training set
        m = min(cfg.eval.fid_n, len(samples), len(train))
        inception = fid.inception_fid_kid(samples[:m], train[:m], cfg.eval.inception_weights, device=device, seed=seed)
        metrics.update(fid_inception=inception["fid"], kid_inception=inception["kid_mean"], n_inception=m)
    save_json(args.metrics, metrics)
    LOG.info("%s: FID %.3f (floor %.3f) at n=%d", cfg.name, metrics["fid"], metrics["fid_floor_train_vs_test"], n)
