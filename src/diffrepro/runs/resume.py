"""Resumable long loops (sampling in batches, the bound's loop over test batches).

Each finished batch is saved as its own file in a parts folder beside the job's output, with a
digest of everything the result depends on (settings, seed, the model file's bytes, the data).
Every batch draws from its own seeded generator (runs/shards.py), so a job re-run after a kill
loads the parts whose digest matches, computes only the others, and ends with the uninterrupted
run's result; the folder is removed once the job's outputs are written. Neither engine takes a
parts folder as an output, so a half-done loop is never mistaken for a result. (Training keeps its
own state file: training.py.)
"""
from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path

import numpy as np

from ..io import InputError, load_torch, save_torch

LOG = logging.getLogger("diffrepro.runs.resume")


def digest(**parts) -> str:
    """One hex digest of JSON-able settings and arrays (arrays by their bytes, dtype and shape)."""
    h = hashlib.sha256()
    for key in sorted(parts):
        value = parts[key]
        h.update(key.encode())
        if isinstance(value, np.ndarray):
            h.update(str((value.dtype, value.shape)).encode())
            h.update(np.ascontiguousarray(value).tobytes())
        else:
            h.update(json.dumps(value, sort_keys=True, default=str).encode())
    return h.hexdigest()


class Parts:
    """The saved batches of one loop: `done(indices)` the finished ones, `save(i, payload)` the next, `clear()`."""

    def __init__(self, folder, key: str):
        self.folder = Path(folder)
        self.key = key

    def _path(self, index: int) -> Path:
        return self.folder / f"part-{index:06d}.pt"

    def get(self, index: int) -> dict | None:
        """The payload of batch `index` if it was finished under this digest; None if missing,
        unreadable (a part cut short by the kill itself) or of other settings, model or data."""
        path = self._path(index)
        if not path.exists():
            return None
        try:
            part = load_torch(path, "saved part")  # tensors and plain values only: never runs code
        except InputError as exc:
            LOG.warning("%s; computing batch %d again", exc, index)
            return None
        if not isinstance(part, dict) or part.get("digest") != self.key:
            LOG.info("%s belongs to other settings, a model or data; computing batch %d again", path, index)
            return None
        return part

    def done(self, indices, label: str) -> dict:
        """{index: payload} of the finished batches among `indices`, logged when there are any."""
        found = {}
        for index in indices:
            part = self.get(index)
            if part is not None:
                found[index] = part
        if found:
            LOG.info("%s: resuming after %d of %d batches", label, len(found), len(indices))
        return found

    def save(self, index: int, payload: dict) -> None:
        save_torch(self._path(index), {"digest": self.key, **payload})

    def clear(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
