"""fid: FID and KID (torch-fidelity's statistics) of a run's samples in its data set's feature space, against the
held-out test set and against the training set (DDPM's protocol), beside the train-vs-test floor.

The data set's reference features come from the reference stage. Every comparison uses the same
count of examples per side within it (FID moves with the count, so only equal counts compare).
"""
from __future__ import annotations

import logging

from ..io import InputError, load_npz, require_file, save_json
from ..runtime import derive_seed

LOG = logging.getLogger("diffrepro.fid")


def feature_space(kind: str, dataset: str) -> str:
    """The feature space's name, as fid.json and every table state it."""
    return {"identity": "data space", "inception": "inception-v3-compat pool3 (2048)"}.get(
        kind, f"{kind} of {dataset}")  # a domain classifier's features


def run(args, params, device):
    from ..metrics import fid

    cfg = params.run(args.run)
    require_file(args.extractor, "feature extractor")
    samples = load_npz(args.samples, "samples")["x"]  # a model's samples may stray outside the data's range
    ref = load_npz(args.reference, "reference features")
    if "train" not in ref or "test" not in ref:
        raise InputError(f"reference features {args.reference!r} lack the train/test arrays; run the reference stage")
    if list(samples.shape[1:]) != [int(s) for s in ref["data_shape"]]:
        raise InputError(f"samples {args.samples!r} have examples of shape {tuple(samples.shape[1:])}, the data set "
                         f"{tuple(int(s) for s in ref['data_shape'])}: they are not of run {cfg.name!r}")
    net, meta = fid.load_extractor(args.extractor, device)
    f_train, f_test = ref["train"], ref["test"]
    n = min(cfg.eval.fid_n, len(samples), len(f_test), len(f_train))
    m = min(cfg.eval.fid_n, len(samples), len(f_train))
    f_samples = fid.extract_features(net, samples[:max(n, m)], progress=f"{cfg.name} sample features")
    seed = derive_seed(params.seed, "fid", cfg.name)
    vs_test = fid.fid_kid_from_features(f_samples[:n], f_test[:n], seed=seed)
    floor = fid.fid_kid_from_features(f_train[:n], f_test[:n], seed=seed)
    vs_train = fid.fid_kid_from_features(f_samples[:m], f_train[:m], seed=seed)
    metrics = {"n": n, "feature_space": feature_space(meta["kind"], cfg.dataset.name),
               "fid": vs_test["fid"], "kid": vs_test["kid_mean"], "kid_std": vs_test["kid_std"],
               "kid_subset_size": vs_test["kid_subset_size"],
               "fid_floor_train_vs_test": floor["fid"], "kid_floor_train_vs_test": floor["kid_mean"],
               "n_train_ref": m, "fid_vs_train": vs_train["fid"], "kid_vs_train": vs_train["kid_mean"]}
    if meta["kind"] == "inception":
        if net.classifier_head:
            metrics.update(fid.inception_score(net, samples[:m], seed=seed))
        else:
            metrics["inception_score_note"] = ("not computed: these FID Inception weights have no classifier head; "
                                          "the Inception Score needs torch-fidelity's official weights")
    save_json(args.metrics, metrics)
    LOG.info("%s: FID %.3f (floor %.3f) at n=%d in %s; vs train %.3f at n=%d", cfg.name, metrics["fid"],
             metrics["fid_floor_train_vs_test"], n, metrics["feature_space"], metrics["fid_vs_train"], m)
