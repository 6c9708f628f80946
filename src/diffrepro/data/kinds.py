"""The dataset kinds, one record each: what a kind's data are and what it takes. Pure Python (no
numpy, no loader): params are checked against it when a pipeline is planned (config.py), and the
JSON Schema's kind enum is tested against it. The loaders themselves: data/loaders.py (`LOADERS`).
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Kind:
    name: str
    data_type: str | None           # "points" R^D, "binary" {0,1}^D, "image" levels; None: its data_type key says
    options: tuple                  # its loader's keywords (params keys of the dataset entry)
    levels: int | None = None       # images: quantisation levels (the discretised decoder's bins, the unit of bits/dim)
    labelled: bool = False          # has class labels (a domain classifier can be trained for FID/KID)
    root_layout: str | None = None  # read from a local torchvision root holding this folder (nothing is downloaded)


KINDS = {k.name: k for k in (
    Kind("swissroll", "points", ("n_train", "n_test", "noise")),
    Kind("heartbeat", "binary", ("n_train", "n_test", "length", "period")),
    Kind("deadleaves", "image", ("n_train", "n_test", "image_size", "r_min", "r_max"), levels=256),
    Kind("digits", "image", ("test_fraction",), levels=17, labelled=True),   # sklearn's 8x8 digits: 0..16
    Kind("mnist5k", "image", ("test_fraction",), levels=256, labelled=True),
    Kind("mnist", "image", ("root", "n_train", "n_test"), levels=256, labelled=True, root_layout="MNIST/raw/"),
    Kind("cifar10", "image", ("root", "n_train", "n_test"), levels=256, labelled=True,
         root_layout="cifar-10-batches-py/"),
    # your own .npz: its data_type and levels keys say (levels default 256); labelled when it holds labels
    Kind("npz", None, ("path", "data_type", "levels", "test_fraction"), labelled=True),
)}
