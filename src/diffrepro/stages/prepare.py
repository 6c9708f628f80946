"""prepare: build a data set's train/test arrays (procedural or shipped data, or a local torchvision root)."""
from __future__ import annotations

import logging

from ..io import save_json, save_npz
from ..runtime import derive_seed
from ..tables.plots import show_data

LOG = logging.getLogger("diffrepro.prepare")
USES_TORCH = False  # reads and writes numpy arrays and a picture: no torch (start-up)


def run(args, params, device):
    from ..data.loaders import load_dataset

    ds = params.dataset(args.dataset)
    split = load_dataset(ds.kind, seed=derive_seed(params.seed, "data", ds.name), **ds.options)
    for path, x, y in ((args.train, split.x_train, split.y_train), (args.test, split.x_test, split.y_test)):
        arrays = {"x": x} if y is None else {"x": x, "y": y}
        save_npz(path, **arrays)
    info = {"dataset": ds.name, "kind": ds.kind, "data_type": split.data_type,
            "n_train": int(len(split.x_train)), "n_test": int(len(split.x_test)),
            "shape": list(split.x_train.shape[1:]), **split.info}
    save_json(args.info, info)
    show_data(args.preview, split.x_train[:100], split.data_type, f"{ds.name} (train)")
    LOG.info("%s: %d train, %d test examples of shape %s", ds.name, len(split.x_train), len(split.x_test),
             tuple(split.x_train.shape[1:]))
