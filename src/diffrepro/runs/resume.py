"""Resumable long loops (sampling in chunks, the bound's loop over test batches).

Each finished chunk is saved as its own file in a parts folder beside the stage's output, with the
random generator's state after it and a digest of everything the result depends on (settings, seed,
the model file's bytes, the data). Re-run after a kill, the stage loads the parts whose digest
matches, restores the generator and continues, so it ends with the uninterrupted run's result; the
folder is removed once the stage's outputs are written. Neither engine takes a parts folder as an
output, so a half-done loop is never mistaken for a result. (Training keeps its own state file:
training.py.)
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
    """The saved chunks of one loop: `load()` the finished ones, `save(i, payload)` the next, `clear()`."""

    def __init__(self, folder, key: str):
        self.folder = Path(folder)
        self.key = key

    def _path(self, index: int) -> Path:
        return self.folder / f"part-{index:06d}.pt"

    def load(self) -> list:
        """The payloads of parts 0, 1, ... up to the first missing, unreadable or foreign one."""
        found = []
        while self._path(len(found)).exists():
            path = self._path(len(found))
            try:
                part = load_torch(path, "saved part")  # tensors and plain values only: never runs code
            except InputError as exc:  # a part cut short by the kill itself
                LOG.warning("%s; continuing from part %d", exc, len(found))
                break
            if not isinstance(part, dict) or part.get("digest") != self.key:
                LOG.info("%s belongs to other settings, a model or data; starting over", self.folder)
                self.clear()
                return []
            found.append(part)
        return found

    def save(self, index: int, payload: dict) -> None:
        save_torch(self._path(index), {"digest": self.key, **payload})

    def clear(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
