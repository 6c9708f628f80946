"""features: a data set's FID/KID feature extractor, in the feature space its params choose:
domain (a classifier trained on its labels, or identity for unlabelled data) or inception (the
standard FID Inception-v3, converted once from local weights)."""
from __future__ import annotations

import logging

from ..io import load_data, save_json
from ..runtime import derive_seed

LOG = logging.getLogger("diffrepro.features")


def run(args, params, device):
    from ..metrics import fid, inception

    ds = params.dataset(args.dataset)
    if ds.feature_space == "inception":
        state, facts = inception.load_source(ds.inception_weights)
        if facts["format"].startswith("torchscript"):
            facts["max_rel_err_vs_source"] = inception.conversion_error(facts["source"], state)
        fid.save_extractor(args.extractor, inception.InceptionFeatures(state), {"dataset": ds.name, **facts})
        save_json(args.metrics, {"dataset": ds.name, "extractor": "inception", **facts})
        LOG.info("%s: FID Inception from %s (%s)", ds.name, facts["source"], facts["format"])
        return
    train = load_data(args.train, "training data", ds.data_type)
    test = load_data(args.test, "test data", ds.data_type)
    if ds.labelled and "y" in train:
        cfg = {"steps": 1500, "batch_size": 128, "lr": 1e-3, **ds.classifier}
        model, metrics = fid.train_feature_classifier(
            train["x"], train["y"], test["x"], test["y"], steps=cfg["steps"], batch_size=cfg["batch_size"],
            lr=cfg["lr"], seed=derive_seed(params.seed, "features", ds.name), device=device, progress=True)
        # the checkpoint holds no wall time, so equal params and seed give the same bytes
        fid.save_extractor(args.extractor, model, {"dataset": ds.name, **{k: v for k, v in metrics.items()
                                                                           if k != "train_seconds"}})
        LOG.info("%s classifier: test accuracy %.4f", ds.name, metrics["test_accuracy"])
    else:
        fid.save_extractor(args.extractor, None, fid.identity_extractor_meta(tuple(train["x"].shape[1:])))
        metrics = {"extractor": "identity"}
        LOG.info("%s: unlabelled data, identity features", ds.name)
    save_json(args.metrics, {"dataset": ds.name, **metrics})
