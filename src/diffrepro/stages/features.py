"""features: the FID/KID feature extractor of a data set (a small classifier, or identity for unlabelled data)."""
from __future__ import annotations

import logging
from pathlib import Path

from ..io import load_npz, save_json
from ..runtime import derive_seed

LOG = logging.getLogger("diffrepro.features")


def add_arguments(p):
    p.add_argument("--dataset", required=True, help="dataset name under params datasets")
    p.add_argument("--data-dir", required=True, help="the prepare stage's folder for this dataset")
    p.add_argument("--out", required=True, help="extractor checkpoint (.pt); a .json with its metrics beside it")


def run(args, params, device):
    from ..metrics import fid

    ds = params.dataset(args.dataset)
    train = load_npz(Path(args.data_dir) / "train.npz", "training data")
    test = load_npz(Path(args.data_dir) / "test.npz", "test data")
    out = Path(args.out)
    if ds.labelled and "y" in train:
        cfg = {"steps": 1500, "batch_size": 128, "lr": 1e-3, **ds.classifier}
        model, metrics = fid.train_feature_classifier(
            train["x"], train["y"], test["x"], test["y"], steps=cfg["steps"], batch_size=cfg["batch_size"],
            lr=cfg["lr"], seed=derive_seed(params.seed, "features", ds.name), device=device, progress=True)
        fid.save_extractor(out, model, {"dataset": ds.name, **metrics})
        LOG.info("%s classifier: test accuracy %.4f", ds.name, metrics["test_accuracy"])
    else:
        fid.save_extractor(out, None, fid.identity_extractor_meta(tuple(train["x"].shape[1:])))
        metrics = {"extractor": "identity"}
        LOG.info("%s: unlabelled data, identity features", ds.name)
    save_json(out.with_suffix(".json"), {"dataset": ds.name, **metrics})
