"""Data sets: a registry of loaders (`DATASETS`) and `load_dataset`, returning a `DatasetSplit`.

Conventions (docs/ARCHITECTURE.md): points are `[N x 2]` float32; binary sequences `[N x L]`
float32 in {0, 1}; images `[N x C x H x W]` float32 with 8-bit values v rescaled to v / 127.5 - 1.
Labels, where a data set has them, are int64 `[N]`. All randomness comes from
`numpy.random.default_rng(seed)`, so equal seeds and keywords give identical arrays.
"""
from __future__ import annotations

import dataclasses
import inspect
import numbers
from dataclasses import dataclass, field

import numpy as np

DATA_TYPES = ("points", "binary", "image")


@dataclass(frozen=True)
class DatasetSplit:
    """A train/test split plus the facts a stage should save beside it.

    x_train: float32 `[N_train x ...]`; y_train: int64 `[N_train]` or None; likewise x_test, y_test.
    data_type: one of DATA_TYPES. info: JSON-serialisable facts (sizes, shape, noise, scaling).
    """

    x_train: np.ndarray
    y_train: np.ndarray | None
    x_test: np.ndarray
    y_test: np.ndarray | None
    data_type: str
    info: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.data_type not in DATA_TYPES:
            raise ValueError(f"data_type {self.data_type!r} is not allowed; allowed: {', '.join(DATA_TYPES)}")
        for part, x, y in (("train", self.x_train, self.y_train), ("test", self.x_test, self.y_test)):
            if x.dtype != np.float32:
                raise TypeError(f"x_{part} must be float32, got {x.dtype}")
            if y is not None and (y.dtype != np.int64 or y.shape != x.shape[:1]):
                raise TypeError(f"y_{part} must be int64 of shape {x.shape[:1]}, got {y.dtype} {y.shape}")
        if self.x_train.shape[1:] != self.x_test.shape[1:]:
            raise ValueError(f"train and test examples differ in shape: {self.x_train.shape[1:]} vs "
                             f"{self.x_test.shape[1:]}")

    @property
    def data_shape(self) -> tuple:
        """One example's shape, e.g. (2,), (20,) or (1, 8, 8)."""
        return tuple(self.x_train.shape[1:])


def check_positive_int(name: str, value) -> int:
    """A loader keyword that must be an integer >= 1 (bools refused)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def check_fraction(name: str, value) -> float:
    """A loader keyword that must lie strictly between 0 and 1."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0.0 < value < 1.0:
        raise ValueError(f"{name} must be a number strictly between 0 and 1, got {value!r}")
    return float(value)


# The loaders build DatasetSplit and use the checks above, so they are imported after them.
from diffrepro.data import images, toy, user  # noqa: E402

# dataset kind -> loader(rng, **keywords) -> DatasetSplit
DATASETS = {
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
# pipeline is planned, before any job starts (config.check_local_inputs)
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
    if kind not in DATASETS:
        raise ValueError(f"unknown dataset kind {kind!r}; allowed: {', '.join(DATASETS)}")
    loader = DATASETS[kind]
    _check_keywords(kind, loader, kwargs)
    split = loader(np.random.default_rng(seed), **kwargs)
    options = {k: v if isinstance(v, (bool, int, float, str, type(None))) else str(v) for k, v in kwargs.items()}
    info = {"kind": kind, "seed": seed, "options": options, "data_type": split.data_type,
            "shape": list(split.data_shape), "n_train": len(split.x_train), "n_test": len(split.x_test),
            **split.info}
    return dataclasses.replace(split, info=info)


__all__ = ["DATASETS", "DATA_TYPES", "DatasetSplit", "load_dataset", "check_source", "check_positive_int", "check_fraction"]
