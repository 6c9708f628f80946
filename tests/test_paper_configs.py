"""The paper configurations: valid, the paper's sizes, selectable with --configfile, and they
refuse to start without their local data root."""
from __future__ import annotations

import shutil
import subprocess

import pytest
import yaml

from diffrepro.build import build
from diffrepro.config import ParamsError, load_params
from diffrepro.nets import count_parameters
from diffrepro.wiring.checks import check_local_inputs

from .conftest import BIN, ROOT, copy_pipeline_files
from .roots import write_cifar_root

CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_paper_config_is_valid(path):
    params = load_params(path)
    assert params.runs


def test_cifar10_config_has_the_papers_hyperparameters():
    run = load_params(ROOT / "configs" / "ddpm-cifar10.yaml").run("cifar10-ddpm")
    assert count_parameters(build(run, (3, 32, 32))[0]) == pytest.approx(35.7e6, rel=0.01)
    t = run.train
    assert (t.batch_size, t.lr, t.warmup_steps, t.ema_decay, t.steps) == (128, 2e-4, 5000, 0.9999, 800_000)
    assert run.diffusion.timesteps == 1000 and run.model.options["preset"] == "ddpm-cifar10"
    assert run.eval.fid_n == 50_000 and t.hflip
    assert run.dataset.feature_space == "inception"  # DDPM's FID: Inception features, 50k samples vs train


def test_inception_weights_that_do_not_exist_are_refused_before_any_work(tmp_path):
    raw = yaml.safe_load((ROOT / "configs" / "ddpm-cifar10.yaml").read_text())
    (tmp_path / "tv").mkdir()
    raw["datasets"]["cifar10"].update(root=str(tmp_path / "tv"), inception_weights=str(tmp_path / "w.pth"))
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ParamsError, match=r"datasets\.cifar10\.inception_weights = .*w\.pth' does not exist"):
        check_local_inputs(load_params(path))


def test_missing_root_is_refused_before_any_work(tmp_path):
    params = load_params(ROOT / "configs" / "ddpm-cifar10.yaml")
    with pytest.raises(ParamsError, match=r"datasets\.cifar10\.root = 'data/torchvision' does not exist"):
        check_local_inputs(params)


def test_snakemake_selects_a_paper_config(tmp_path):
    copy_pipeline_files(tmp_path, ROOT / "params.yaml")
    shutil.copytree(ROOT / "configs", tmp_path / "configs")
    cmd = [str(BIN / "snakemake"), "-n", "-p", "--cores", "1", "--configfile", "configs/ddpm-cifar10.yaml"]
    refused = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True)
    assert refused.returncode != 0 and "datasets.cifar10.root" in refused.stdout + refused.stderr
    (tmp_path / "data" / "torchvision").mkdir(parents=True)
    refused = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True)  # a root without the batches
    assert refused.returncode != 0 and "missing data_batch_1" in refused.stderr, refused.stderr
    write_cifar_root(tmp_path / "data" / "torchvision", per_batch=4, n_test=4)
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "--params configs/ddpm-cifar10.yaml" in proc.stdout and "--run cifar10-ddpm" in proc.stdout
    assert "swissroll" not in proc.stdout  # the paper config replaces params.yaml, it is not merged in
