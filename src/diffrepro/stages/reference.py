"""reference: a data set's train and test features in its FID feature space, computed once and
shared by every run's fid stage (for CIFAR-10 and Inception: 60,000 forward passes, not one per run)."""
from __future__ import annotations

import logging

from ..io import load_data, save_npz

LOG = logging.getLogger("diffrepro.reference")


def run(args, params, device):
    from ..metrics import fid

    ds = params.dataset(args.dataset)
    train = load_data(args.train, "training data", ds.data_type)["x"]
    test = load_data(args.test, "test data", ds.data_type)["x"]
    net, meta = fid.load_extractor(args.extractor, device)
    feats = {part: fid.extract_features(net, x, progress=f"{ds.name} {part} features").numpy()
             for part, x in (("train", train), ("test", test))}
    save_npz(args.reference, **feats, kind=meta["kind"], data_shape=list(train.shape[1:]))
    LOG.info("%s: %s features of %d train and %d test examples (%d-d)", ds.name, meta["kind"], len(train),
             len(test), feats["train"].shape[1])
