"""Bad data, foreign checkpoints and a diverging loss: each stops the stage with one line naming the
file (or run and step) and what is wrong, before anything is written; earlier outputs stay as they were."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from .conftest import TINY_PARAMS, run_cli, stage_args


def _path(args, flag) -> Path:
    return Path(args[args.index(flag) + 1])


def _one_error_line(proc, stage):
    errors = [line for line in proc.stderr.splitlines() if line.startswith(f"diffrepro {stage}: error:")]
    assert proc.returncode == 2 and len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr
    return errors[0]


@pytest.fixture(scope="module")
def prepared_once(tmp_path_factory):
    root = tmp_path_factory.mktemp("prepared")
    for dataset in ("toyroll", "tinybeat", "tinydigits"):
        run_cli("prepare", *stage_args("prepare", dataset, root, TINY_PARAMS), check=True)
    return root


@pytest.fixture
def prepared(prepared_once, tmp_path):
    """The tiny params' toyroll, tinybeat and tinydigits data, a fresh copy under tmp_path per test."""
    shutil.copytree(prepared_once / "results", tmp_path / "results")
    return tmp_path


BAD_DATA = [
    ("toyroll-ddpm", lambda x: np.where(np.arange(x.size).reshape(x.shape) == 3, np.nan, x), "NaN or infinite"),
    ("toyroll-ddpm", lambda x: x[:, :, None], "shape"),
    ("digits-tiny", lambda x: (x + 1) * 127.5, "[-1, 1]"),
    ("beat-sd", lambda x: x * 2, "only 0 and 1"),
    ("toyroll-ddpm", None, "has no array 'x'"),
]


@pytest.mark.parametrize("run, corrupt, must_say", BAD_DATA, ids=["nan", "shape", "raw-pixels", "not-bits", "no-x"])
def test_bad_training_data_is_refused_before_training(prepared, run, corrupt, must_say):
    args = stage_args("train", run, prepared, TINY_PARAMS)
    data = _path(args, "--train")
    arrays = dict(np.load(data))
    if corrupt is None:
        np.savez(data, other=arrays["x"])
    else:
        np.savez(data, **{**arrays, "x": corrupt(arrays["x"]).astype(np.float32)})
    model = _path(args, "--model")
    model.parent.mkdir(parents=True, exist_ok=True)
    model.write_bytes(b"an earlier model")
    line = _one_error_line(run_cli("train", *args), "train")
    assert str(data) in line and must_say in line, line
    assert model.read_bytes() == b"an earlier model"


def test_checkpoint_of_another_run_is_refused_before_sampling(prepared, tiny_raw):
    tiny_raw["runs"]["toyroll-ddpm"]["train"]["steps"] = 10
    params = prepared / "params.yaml"
    params.write_text(yaml.safe_dump(tiny_raw))
    args = stage_args("train", "toyroll-ddpm", prepared, params)
    run_cli("train", *args, check=True)
    other = stage_args("sample", "toyroll-sd", prepared, params)
    other[other.index("--model") + 1] = str(_path(args, "--model"))  # toyroll-ddpm's weights for toyroll-sd
    line = _one_error_line(run_cli("sample", *other), "sample")
    assert "of run 'toyroll-ddpm', not of run 'toyroll-sd'" in line and str(_path(args, "--model")) in line
    assert not _path(other, "--samples").exists()


def test_a_diverging_loss_stops_training_naming_run_and_step(prepared, tiny_raw):
    tiny_raw["runs"]["toyroll-ddpm"]["train"].update(lr=1.0e30, grad_clip=0.0, steps=40, checkpoint_every=1000)
    params = prepared / "params.yaml"
    params.write_text(yaml.safe_dump(tiny_raw))
    args = stage_args("train", "toyroll-ddpm", prepared, params)
    model = _path(args, "--model")
    model.parent.mkdir(parents=True, exist_ok=True)
    model.write_bytes(b"an earlier model")
    line = _one_error_line(run_cli("train", *args), "train")
    assert "run 'toyroll-ddpm', stage train" in line and "at step" in line and "model.pt is not written" in line
    assert model.read_bytes() == b"an earlier model"
