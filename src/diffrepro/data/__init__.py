"""Data sets: what a loader returns (`DatasetSplit`) and the checks loaders share. What each kind is:
kinds.py (`KINDS`); the loaders: loaders.py (`LOADERS`, `load_dataset`, `check_source`), which this
package does not import, so that reading params (kinds.py) never imports a loader.

Conventions (docs/ARCHITECTURE.md): points are `[N x 2]` float32; binary sequences `[N x L]`
float32 in {0, 1}; images `[N x C x H x W]` float32 with their L levels v = 0..L-1 rescaled to 2v / (L - 1) - 1
(8-bit data: v / 127.5 - 1).
Labels, where a data set has them, are int64 `[N]`. All randomness comes from
`numpy.random.default_rng(seed)`, so equal seeds and keywords give identical arrays.
"""
from __future__ import annotations

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
