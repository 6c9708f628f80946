"""Bring your own data: a dataset of kind `npz` reads the user's .npz file.

The file holds either `train` and `test` arrays (labels, optional: `train_labels`, `test_labels`), or
one array `x` (labels `y`) that is split by the seed with `test_fraction`. `data_type` says what the
arrays are, and every example is checked against it before anything is written:

- points: float `[N x D]`, finite; used as given (rescale them yourself if a model expects unit scale);
- binary: `[N x L]` of 0 and 1 only (bool or any numeric dtype);
- image: integers 0..levels-1 (uint8 or any integer or integral float dtype), `[N x C x H x W]` with
  C in (1, 3) or `[N x H x W]` (one channel); rescaled to 2v / (levels - 1) - 1 like every image set.
Labels: integers `[N]` (they train the FID feature classifier of image data).
"""
from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from diffrepro.data import DATA_TYPES, DatasetSplit, check_fraction
from diffrepro.data.images import DatasetNotFoundError, levels_to_model_range, scaling


class UserDataError(ValueError):
    """A user's .npz that does not hold what its dataset entry declares (the message names the array)."""


def _read(path: Path) -> dict:
    if not path.is_file():
        raise DatasetNotFoundError(f"{path}: no such file; kind npz reads the .npz named by the dataset's path")
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
        raise UserDataError(f"{path}: not a readable .npz of plain arrays ({type(err).__name__}: "
                            f"{str(err).splitlines()[0] if str(err) else 'unreadable'})") from None


def _check_examples(path: Path, name: str, a: np.ndarray, data_type: str, levels: int) -> np.ndarray:
    """One array of examples -> float32 in the data convention, or UserDataError naming it."""
    where = f"{path}: array {name!r}"
    if a.dtype.kind not in "biuf":
        raise UserDataError(f"{where} has dtype {a.dtype}; allowed: bool, integer or float")
    if len(a) == 0:
        raise UserDataError(f"{where} holds no examples")
    if a.dtype.kind == "f" and not np.isfinite(a).all():
        raise UserDataError(f"{where} holds {int((~np.isfinite(a)).sum())} NaN or infinite values")
    if data_type == "points":
        if a.ndim != 2:
            raise UserDataError(f"{where} has shape {a.shape}; points are [N x D]")
        return a.astype(np.float32)
    if data_type == "binary":
        if a.ndim != 2:
            raise UserDataError(f"{where} has shape {a.shape}; binary data are [N x L]")
        if not np.isin(a, (0, 1)).all():
            raise UserDataError(f"{where} holds values other than 0 and 1 (e.g. {a[~np.isin(a, (0, 1))][0]!r})")
        return a.astype(np.float32)
    if a.ndim == 3:
        a = a[:, None]
    if a.ndim != 4 or a.shape[1] not in (1, 3):
        raise UserDataError(f"{where} has shape {a.shape}; images are [N x C x H x W] with C in (1, 3), "
                            f"or [N x H x W]")
    if a.dtype.kind == "f" and not (a == np.round(a)).all():
        raise UserDataError(f"{where} holds non-integer values; images are integer levels 0..{levels - 1}")
    lo, hi = a.min(), a.max()
    if lo < 0 or hi > levels - 1:
        raise UserDataError(f"{where} has values in [{lo:g}, {hi:g}]; images of levels: {levels} are integers "
                            f"0..{levels - 1} (set the dataset's levels)")
    return levels_to_model_range(a.astype(np.int64), levels)


def _labels(path: Path, name: str, y, n: int):
    if y is None:
        return None
    if y.dtype.kind not in "iu" or y.shape != (n,):
        raise UserDataError(f"{path}: array {name!r} has dtype {y.dtype} and shape {y.shape}; labels are "
                            f"integers [N] with N = {n}")
    if y.min() < 0:
        raise UserDataError(f"{path}: array {name!r} holds negative labels; labels are 0..classes-1")
    return y.astype(np.int64)


def npz(rng: np.random.Generator, *, path: str, data_type: str, levels: int = 256,
        test_fraction: float = 0.2) -> DatasetSplit:
    """The user's .npz (module docstring): train/test arrays, or x split by the seed."""
    if data_type not in DATA_TYPES:
        raise ValueError(f"data_type {data_type!r} is not allowed; allowed: {', '.join(DATA_TYPES)}")
    path = Path(path)
    arrays = _read(path)
    if "train" in arrays and "test" in arrays:
        parts = {part: (_check_examples(path, part, arrays[part], data_type, levels),
                        arrays.get(f"{part}_labels")) for part in ("train", "test")}
        split_info = {"split": "train/test arrays of the file"}
    elif "x" in arrays:
        x = _check_examples(path, "x", arrays["x"], data_type, levels)
        y = arrays.get("y")
        test_fraction = check_fraction("test_fraction", test_fraction)
        order = rng.permutation(len(x))
        n_test = int(round(test_fraction * len(x)))
        if not 0 < n_test < len(x):
            raise UserDataError(f"{path}: {len(x)} examples leave no train or no test part at "
                                f"test_fraction={test_fraction:g}")
        y = None if y is None else np.asarray(y)
        parts = {"test": (x[order[:n_test]], None if y is None or y.shape != (len(x),) else y[order[:n_test]]),
                 "train": (x[order[n_test:]], None if y is None or y.shape != (len(x),) else y[order[n_test:]])}
        if y is not None:
            _labels(path, "y", y, len(x))
        split_info = {"split": f"x split by the seed, test_fraction {test_fraction:g}"}
    else:
        raise UserDataError(f"{path}: holds arrays {', '.join(sorted(arrays)) or 'none'}; kind npz needs train "
                            f"and test, or x (labels: train_labels/test_labels, or y)")
    (x_train, y_train), (x_test, y_test) = parts["train"], parts["test"]
    if x_train.shape[1:] != x_test.shape[1:]:
        raise UserDataError(f"{path}: train examples have shape {x_train.shape[1:]}, test {x_test.shape[1:]}")
    y_train = _labels(path, "train_labels" if "train" in arrays else "y", y_train, len(x_train))
    y_test = _labels(path, "test_labels" if "test" in arrays else "y", y_test, len(x_test))
    if (y_train is None) != (y_test is None):
        raise UserDataError(f"{path}: labels for one part only; give both train_labels and test_labels or neither")
    info = {"source": str(path), **split_info}
    if data_type == "image":
        info.update(levels=levels, scaling=scaling(levels))
    if y_train is not None:
        info["num_classes"] = int(max(y_train.max(), y_test.max())) + 1
    return DatasetSplit(x_train, y_train, x_test, y_test, data_type, info)
