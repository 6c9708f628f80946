"""Atomic output writing (temp file in the same folder + rename) and checked loading of every input
file: arrays, tables, JSON, and torch files through one loader that never runs code (`load_torch`).
A model checkpoint's format and its loader: runs/checkpoint.py."""
from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
from pathlib import Path

import numpy as np


class InputError(ValueError):
    """A missing or unreadable input file: the message names the path and what was expected."""


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path beside `path`; on success it replaces `path` in one rename.

    On failure the temporary file is removed and whatever `path` held before is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + path.suffix, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; results get the permissions of any new file
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def file_sha256(path) -> str:
    """The hex SHA-256 of a file's bytes (read in 1 MiB blocks)."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_json(path, obj) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=_to_builtin) + "\n")


def save_text(path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def save_npz(path, **arrays) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays)


def save_torch(path, obj) -> None:
    import torch

    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        torch.save(obj, f)  # to a file object: the archive's inner folder is "archive", not the temp name


def save_figure(path, fig) -> None:
    """Save a matplotlib figure as PNG atomically and close it."""
    import matplotlib.pyplot as plt

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)


def save_csv(path, frame) -> None:
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)


def require_file(path, what: str) -> Path:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{what} {str(path)!r} does not exist; run the stage that makes it first")
    return path


def load_npz(path, what: str = "data file") -> dict:
    path = require_file(path, what)
    try:
        with np.load(path, allow_pickle=False) as f:
            return {k: f[k] for k in f.files}
    except Exception as exc:  # zipfile / value errors of a truncated file
        raise InputError(f"{what} {str(path)!r} is corrupt or not an .npz file ({exc})") from None


DATA_NDIM = {"points": 2, "binary": 2, "image": 4}   # [N x D], [N x L], [N x C x H x W]


def load_data(path, what: str, data_type: str) -> dict:
    """A prepared data file, checked before any work: its array `x` exists, has the data type's
    shape, is finite, and lies in the data type's range (images in [-1, 1], bits in {0, 1})."""
    arrays = load_npz(path, what)
    if "x" not in arrays:
        raise InputError(f"{what} {str(path)!r} has no array 'x' (it holds: {', '.join(arrays) or 'nothing'}); "
                         f"write the data with the prepare stage")
    x = arrays["x"]
    want = DATA_NDIM[data_type]
    if x.ndim != want or len(x) == 0:
        raise InputError(f"{what} {str(path)!r}: array x has shape {tuple(x.shape)}; {data_type} data must be "
                         f"{want}-dimensional with at least one example")
    if not np.all(np.isfinite(x)):
        raise InputError(f"{what} {str(path)!r}: array x holds {int(np.sum(~np.isfinite(x)))} NaN or infinite values")
    lo, hi = float(x.min()), float(x.max())
    if data_type == "image" and (lo < -1.0 - 1e-6 or hi > 1.0 + 1e-6):
        raise InputError(f"{what} {str(path)!r}: image values lie in [{lo:g}, {hi:g}]; they must be scaled to "
                         f"[-1, 1] (raw 0-255 pixels? rescale with v / 127.5 - 1)")
    if data_type == "binary" and not np.all((x == 0) | (x == 1)):
        raise InputError(f"{what} {str(path)!r}: binary data must hold only 0 and 1; found values in [{lo:g}, {hi:g}]")
    return arrays


def check_same_shape(x, path, reference, reference_path) -> None:
    """Two data files of one run hold examples of one shape; else InputError naming the first."""
    if tuple(x.shape[1:]) != tuple(reference.shape[1:]):
        raise InputError(f"data file {str(path)!r} holds examples of shape {tuple(x.shape[1:])}, but "
                         f"{str(reference_path)!r} holds shape {tuple(reference.shape[1:])}; a run's train and test "
                         f"data come from one prepare stage")


def load_json(path, what: str = "metrics file") -> dict:
    path = require_file(path, what)
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise InputError(f"{what} {str(path)!r} is not valid JSON ({exc})") from None


def load_csv(path, what: str = "table"):
    import pandas as pd

    path = require_file(path, what)
    try:
        return pd.read_csv(path)
    except (ValueError, pd.errors.ParserError) as exc:
        raise InputError(f"{what} {str(path)!r} is not a readable CSV table ({exc})") from None


_UNSAFE = re.compile(r"Unsupported global: GLOBAL ([\w.]+)")


def load_torch(path, what: str, expected: str = "a diffrepro checkpoint"):
    """The one loader of every torch file this project reads (model.pt, training state, resume parts,
    feature networks, Inception weights): `torch.load(weights_only=True)`, which rebuilds tensors,
    plain containers and numbers and refuses any other class or function a pickle names, so a file
    can never run code. InputError (one line, naming the file) for a missing, cut-short, foreign or
    code-carrying file."""
    import torch

    path = require_file(path, what)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - every unreadable file gets the same one line
        unsafe = _UNSAFE.search(str(exc))
        if unsafe:
            raise InputError(f"{what} {str(path)!r} is refused: its pickle calls {unsafe.group(1)}, i.e. it would "
                             f"run code when loaded; only tensors and plain values are loaded") from None
        lines = str(exc).strip().splitlines() or [""]
        detail = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("WeightsUnpickler error:")),
                      lines[0])[:200]
        raise InputError(f"{what} {str(path)!r} is corrupt or not {expected} ({type(exc).__name__}: "
                         f"{detail})") from None


def _to_builtin(obj):
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot serialise {type(obj).__name__}")
