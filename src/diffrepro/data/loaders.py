"""The dataset loaders by kind (`LOADERS`), `load_dataset` and `check_source` (a kind's files on
disk, checked when a pipeline is planned)."""
from __future__ import annotations

import dataclasses
import inspect

import numpy as np

from . import DatasetSplit, images, toy, user

# dataset kind -> loader(rng, **keywords) -> DatasetSplit (what each kind is: kinds.KINDS)
LOADERS = {
    "swissroll": toy.swissroll,
    "heartbeat": toy.heartbeat,
    "deadleaves": toy.deadleaves,
    "digits": images.digits,
    "mnist5k": images.mnist5k,
    "mnist": images.mnist,
    "cifar10": images.cifar10,
    "npz": user.npz,
}


def _check_npz(**options) -> None:
    user.npz(np.random.default_rng(0), **options)  # the whole file: it is the user's, and usually small


# dataset kind -> a check of its files on disk that needs no job: external data are checked when a
# pipeline is planned, before any job starts (wiring.checks.check_local_inputs)
SOURCE_CHECKS = {"mnist": images.check_mnist_root, "cifar10": images.check_cifar_root, "npz": _check_npz}


def check_source(kind: str, **options) -> None:
    """Check the files an external data set reads (a root, a user's file); raises FileNotFoundError
    or ValueError naming the file. Kinds made in memory have nothing to check."""
    if kind in SOURCE_CHECKS:
        SOURCE_CHECKS[kind](**options)


def _check_keywords(kind: str, loader, kwargs: dict) -> None:
    params = {name: p for name, p in inspect.signature(loader).parameters.items()
              if p.kind is inspect.Parameter.KEYWORD_ONLY}
    allowed = ", ".join(params) or "none"
    for key in kwargs:
        if key not in params:
            raise TypeError(f"dataset kind {kind!r} has no option {key!r}; allowed: {allowed}")
    for name, p in params.items():
        if p.default is inspect.Parameter.empty and name not in kwargs:
            raise TypeError(f"dataset kind {kind!r} needs the option {name!r}; options: {allowed}")


def load_dataset(kind: str, *, seed: int, **kwargs) -> DatasetSplit:
    """Build the data set `kind` with its keywords; everything random is drawn from default_rng(seed).

    Raises ValueError for an unknown kind or a bad value, TypeError for an unknown or missing keyword.
    The returned info also records kind, seed and the keywords given.
    """
    if kind not in LOADERS:
        raise ValueError(f"unknown dataset kind {kind!r}; allowed: {', '.join(LOADERS)}")
    loader = LOADERS[kind]
    _check_keywords(kind, loader, kwargs)
    split = loader(np.random.default_rng(seed), **kwargs)
    options = {k: v if isinstance(v, (bool, int, float, str, type(None))) else str(v) for k, v in kwargs.items()}
    info = {"kind": kind, "seed": seed, "options": options, "data_type": split.data_type,
            "shape": list(split.data_shape), "n_train": len(split.x_train), "n_test": len(split.x_test),
            **split.info}
    return dataclasses.replace(split, info=info)


