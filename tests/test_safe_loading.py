"""A checkpoint never runs code: every torch file the project reads (model.pt, the training state,
resume parts, feature networks, Inception weights) goes through io.load_torch (weights_only=True).
Each door is given a pickle whose unpickling writes a marker file; the marker must never appear, and
the refusal is one line naming the file."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from diffrepro.io import InputError, load_torch
from diffrepro.runs.checkpoint import load_checkpoint, peek_checkpoint_run

from . import evil
from .conftest import TINY_PARAMS, run_cli, stage_args


@pytest.mark.parametrize("fmt", list(evil.FORMATS))
def test_the_evil_file_really_runs_code_when_loaded_unsafely(tmp_path, fmt):
    """The fixture itself: loaded the old way, the marker appears (so its absence below means something)."""
    marker = tmp_path / "marker"
    path = tmp_path / "evil.pt"
    path.write_bytes(evil.FORMATS[fmt](marker))
    try:
        torch.load(path, weights_only=False)
    except RuntimeError:  # a plain pickle: torch unpickles it as the legacy header, then finds no magic number
        pass
    assert marker.exists()


@pytest.mark.parametrize("fmt", list(evil.FORMATS))
def test_every_loader_refuses_without_running_it(tmp_path, fmt):
    from diffrepro.metrics import fid, inception
    from diffrepro.runs.resume import Parts

    marker = tmp_path / "marker"
    path = tmp_path / "evil.pt"
    path.write_bytes(evil.FORMATS[fmt](marker))
    for load in (lambda: load_torch(path, "file"), lambda: load_checkpoint(path)):
        with pytest.raises(InputError) as err:
            load()
        assert str(path) in str(err.value) and "\n" not in str(err.value)
    if fmt == "torch-zip":
        with pytest.raises(InputError, match="would run code"):
            load_torch(path, "file")
        with pytest.raises(InputError, match=r"\.exec, i.e. it would run code"):
            peek_checkpoint_run(path)  # the plan-time check, without torch
    with pytest.raises(InputError, match="feature extractor"):
        fid.load_extractor(path)
    with pytest.raises(inception.InceptionError, match="Inception weights"):
        inception.load_source(path)
    parts = Parts(tmp_path / "parts", "key")
    (tmp_path / "parts").mkdir()
    shutil.copy(path, tmp_path / "parts" / "part-000000.pt")
    assert parts.get(0) is None and parts.done([0], "test") == {}  # refused: computed again
    assert not marker.exists()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("trained")
    raw = yaml.safe_load(TINY_PARAMS.read_text())
    raw["runs"]["toyroll-ddpm"]["train"]["steps"] = 10
    (root / "params.yaml").write_text(yaml.safe_dump(raw))
    run_cli("prepare", *stage_args("prepare", "toyroll", root, root / "params.yaml"), check=True)
    run_cli("train", *stage_args("train", "toyroll-ddpm", root, root / "params.yaml"), check=True)
    return root


@pytest.fixture
def project(trained, tmp_path):
    shutil.copytree(trained, tmp_path / "p")
    return tmp_path / "p"


def _args(stage, root, **swap):
    args = stage_args(stage, "toyroll-ddpm", root, root / "params.yaml")
    for flag, value in swap.items():
        args[args.index(f"--{flag}") + 1] = str(value)
    return args


def _refused(proc, stage, *fragments):
    lines = [line for line in proc.stderr.splitlines() if line.startswith(f"diffrepro {stage}: error:")]
    assert proc.returncode == 2 and len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert all(f in lines[0] for f in fragments), lines[0]


@pytest.mark.parametrize("stage", ["sample", "inpaint", "nll"])
def test_stages_that_load_a_model_refuse_a_code_running_checkpoint(project, stage):
    marker = project / "marker"
    bad = project / "evil.pt"
    bad.write_bytes(evil.torch_zip(marker))
    args = _args(stage, project, model=bad)
    _refused(run_cli(stage, *args), stage, str(bad), "calls", "exec", "run code")
    assert not marker.exists()
    outputs = [Path(args[i + 1]) for i, a in enumerate(args) if a in ("--samples", "--metrics", "--arrays")]
    assert outputs and not any(p.exists() for p in outputs)


def test_train_ignores_a_code_running_state_file(project):
    """A resumable state that would run code is not loaded: training starts from step 0 (logged)."""
    marker = project / "marker"
    args = _args("train", project)
    model = Path(args[args.index("--model") + 1])
    good = model.read_bytes()
    model.with_name("train_state.pt").write_bytes(evil.torch_zip(marker))
    proc = run_cli("train", *args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "training state" in proc.stderr and "run code" in proc.stderr and "starting from step 0" in proc.stderr
    assert not marker.exists()
    assert model.read_bytes() == good  # the same training from the start


def test_fid_refuses_a_code_running_feature_network(project):
    marker = project / "marker"
    bad = project / "evil-extractor.pt"
    bad.write_bytes(evil.torch_zip(marker))
    run_cli("sample", *_args("sample", project), check=True)
    run_cli("features", *stage_args("features", "toyroll", project, project / "params.yaml"), check=True)
    run_cli("reference", *stage_args("reference", "toyroll", project, project / "params.yaml"), check=True)
    args = _args("fid", project, extractor=bad)
    _refused(run_cli("fid", *args), "fid", str(bad), "run code")
    assert not marker.exists() and not Path(args[args.index("--metrics") + 1]).exists()


@pytest.mark.parametrize("stage", ["sample", "inpaint", "nll"])
def test_wrong_shaped_test_data_is_blamed_on_the_data_file(project, stage):
    test = project / "results" / "data" / "toyroll" / "test.npz"
    arrays = dict(np.load(test))
    np.savez(test, **{**arrays, "x": np.concatenate([arrays["x"], arrays["x"][:, :1]], axis=1)})
    proc = run_cli(stage, *_args(stage, project))
    _refused(proc, stage, f"data file '{test}'", "shape (3,)", "trained on shape (2,)")
    assert "''" not in proc.stderr


@pytest.mark.parametrize("stage", ["inpaint", "nll"])
def test_train_and_test_data_of_different_shapes_name_the_training_file(project, stage):
    train = project / "results" / "data" / "toyroll" / "train.npz"
    arrays = dict(np.load(train))
    np.savez(train, **{**arrays, "x": np.concatenate([arrays["x"], arrays["x"][:, :1]], axis=1)})
    _refused(run_cli(stage, *_args(stage, project)), stage, f"data file '{train}'", "shape (3,)", "shape (2,)")


@pytest.mark.parametrize("protocol", [2, 5])
def test_a_cifar_batch_reads_arrays_and_refuses_a_pickle_that_runs_code(tmp_path, protocol):
    """CIFAR-10's python batches are pickles: they are read by an unpickler that builds containers and
    numpy arrays only (what the real batches hold, in Python 2's protocol or a new one)."""
    import pickle

    from diffrepro.data.images import read_cifar_batch

    data = np.random.default_rng(0).integers(0, 256, (3, 3072), dtype=np.uint8)
    good = tmp_path / "data_batch_1"
    good.write_bytes(pickle.dumps({b"data": data, b"labels": [1, 2, 3], b"batch_label": b"x"}, protocol=protocol))
    x, y = read_cifar_batch(good)
    assert np.array_equal(x.reshape(3, -1), data) and y.tolist() == [1, 2, 3]
    marker = tmp_path / "marker"
    bad = tmp_path / "test_batch"
    bad.write_bytes(evil.legacy_pickle(marker))
    with pytest.raises(ValueError, match=r"test_batch: not a CIFAR-10 python batch .*builtin_*s?\.exec, i.e. it would"):
        read_cifar_batch(bad)
    assert not marker.exists()
