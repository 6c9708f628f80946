"""Small data roots in torchvision's on-disk layout (CIFAR-10 python batches, MNIST IDX files), for
the tests of the real loaders and of the paper configs: nothing is downloaded."""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np


def blobs(rng, n: int, channels: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images [n x C x size x size] of one bright disc on a dark ground; the label is its quadrant
    plus 4 times its colour index (so the classes differ in what a network sees)."""
    yy, xx = np.mgrid[:size, :size]
    images = np.zeros((n, channels, size, size), np.uint8)
    labels = rng.integers(0, 10, n)
    for i, label in enumerate(labels):
        cy, cx = (size // 4 + (size // 2) * ((label >> b) & 1) for b in (0, 1))
        disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= (size // 5) ** 2
        for c in range(channels):
            images[i, c][disc] = 120 + 40 * ((label + c) % 3) + rng.integers(0, 15)
    return images, labels.astype(np.int64)


def write_cifar_root(root: Path, per_batch: int, n_test: int) -> None:
    """cifar-10-batches-py/ as torchvision keeps it: pickled dicts of uint8 [N x 3072] rows (R, G, B
    planes) and label lists, plus batches.meta."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name, n in [(f"data_batch_{i}", per_batch) for i in range(1, 6)] + [("test_batch", n_test)]:
        x, y = blobs(rng, n, 3, 32)
        with open(folder / name, "wb") as f:
            pickle.dump({b"batch_label": name.encode(), b"labels": y.tolist(), b"data": x.reshape(n, -1),
                         b"filenames": [f"{i}.png".encode() for i in range(n)]}, f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": [f"c{i}".encode() for i in range(10)], b"num_cases_per_batch": per_batch,
                     b"num_vis": 3072}, f)


def write_mnist_root(root: Path, n_train: int, n_test: int) -> None:
    """MNIST/raw/ as torchvision keeps it: big-endian IDX files of unsigned bytes."""
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(1)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        x, y = blobs(rng, n, 1, 28)
        header = (0x803).to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in (n, 28, 28))
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(header + x.tobytes())
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes((0x801).to_bytes(4, "big") + n.to_bytes(4, "big")
                                                          + y.astype(np.uint8).tobytes())
