"""features: the FID/KID feature extractor of a data set (a small classifier, or identity for unlabelled data)."""
from __future__ import annotations

import logging
from ..io import load_data, save_json
from ..runtime import derive_seed

LOG = logging.getLogger("diffrepro.features")


def run(args, params, device):
    from ..metrics import fid

    ds = params.dataset(args.dataset)
    train = load_data(args.train, "training data", ds.data_type)
    test = load_data(args.test, "test data", ds.data_type)
    out = args.extractor
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
    save_json(args.metrics, {"dataset": ds.name, **metrics})
