"""Bring your own data (dataset kind npz): the arrays a user's .npz may hold, the split, the scaling,
and one clear error line for each way the file can be wrong."""
from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from diffrepro.data.loaders import load_dataset
from diffrepro.data.user import UserDataError

from .conftest import TINY_PARAMS, run_cli, stage_args


def test_train_test_image_arrays_scaled_from_their_levels(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "mine.npz"
    train = rng.integers(0, 4, (30, 6, 5)).astype(np.uint8)       # [N x H x W]: one channel
    test = rng.integers(0, 4, (10, 6, 5)).astype(np.uint8)
    np.savez(path, train=train, test=test, train_labels=np.arange(30) % 3, test_labels=np.arange(10) % 3)
    split = load_dataset("npz", seed=0, path=str(path), data_type="image", levels=4)
    assert split.x_train.shape == (30, 1, 6, 5) and split.data_type == "image"
    np.testing.assert_allclose(split.x_train[:, 0], train / 1.5 - 1, atol=1e-6)  # 2v/(L-1) - 1 with L = 4
    assert split.x_train.min() == -1 and split.x_train.max() == 1
    assert split.info["levels"] == 4 and split.info["num_classes"] == 3
    np.testing.assert_array_equal(split.y_test, np.arange(10) % 3)


def test_one_array_is_split_by_the_seed(tmp_path):
    path = tmp_path / "points.npz"
    x = np.random.default_rng(0).normal(size=(50, 3))
    np.savez(path, x=x)
    a = load_dataset("npz", seed=4, path=str(path), data_type="points", test_fraction=0.2)
    b = load_dataset("npz", seed=4, path=str(path), data_type="points", test_fraction=0.2)
    c = load_dataset("npz", seed=5, path=str(path), data_type="points", test_fraction=0.2)
    assert a.x_train.shape == (40, 3) and a.x_test.shape == (10, 3) and a.y_train is None
    np.testing.assert_array_equal(a.x_test, b.x_test)
    assert not np.array_equal(a.x_test, c.x_test)
    together = np.concatenate([a.x_train, a.x_test])
    np.testing.assert_allclose(np.sort(together, axis=0), np.sort(x.astype(np.float32), axis=0))


def _write(path, **arrays):
    np.savez(path, **arrays)
    return str(path)


BAD = [
    ("image", {"train": np.full((4, 1, 3, 3), np.nan), "test": np.zeros((2, 1, 3, 3))}, "'train' holds 36 NaN"),
    ("image", {"train": np.zeros((4, 3, 3, 3, 1)), "test": np.zeros((2, 3, 3, 3, 1))},
     "'train' has shape (4, 3, 3, 3, 1)"),
    ("image", {"train": np.full((4, 1, 3, 3), 256), "test": np.zeros((2, 1, 3, 3))}, "values in [256, 256]"),
    ("image", {"train": np.full((4, 1, 3, 3), 0.5), "test": np.zeros((2, 1, 3, 3))}, "non-integer"),
    ("image", {"train": np.zeros((4, 1, 3, 3)), "test": np.zeros((2, 1, 4, 4))}, "train examples have shape"),
    ("binary", {"x": np.full((10, 5), 2)}, "values other than 0 and 1"),
    ("points", {"x": np.zeros((10,))}, "'x' has shape (10,)"),
    ("points", {"x": np.array(["a", "b"])}, "dtype <U1"),
    ("points", {"data": np.zeros((10, 2))}, "holds arrays data"),
    ("image", {"train": np.zeros((4, 1, 3, 3)), "test": np.zeros((2, 1, 3, 3)), "train_labels": np.zeros(3, int),
               "test_labels": np.zeros(2, int)}, "'train_labels' has dtype int64 and shape (3,)"),
]


@pytest.mark.parametrize("data_type, arrays, must_say", BAD,
                         ids=["nan", "rank", "range", "fraction", "mismatch", "bits", "points-1d", "strings",
                              "no-arrays", "labels"])
def test_bad_user_arrays_name_the_file_and_array(tmp_path, data_type, arrays, must_say):
    path = _write(tmp_path / "bad.npz", **arrays)
    with pytest.raises(UserDataError) as err:
        load_dataset("npz", seed=0, path=path, data_type=data_type)
    message = str(err.value)
    assert "bad.npz" in message and must_say in message and "\n" not in message, message


def test_not_an_npz_is_one_clear_error(tmp_path):
    path = tmp_path / "broken.npz"
    path.write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(UserDataError, match="broken.npz: not a readable .npz"):
        load_dataset("npz", seed=0, path=str(path), data_type="points")


def _params_with(tmp_path, spec: dict):
    raw = yaml.safe_load(TINY_PARAMS.read_text())
    raw["datasets"]["tinydigits"] = spec
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(raw))
    return params


def test_prepare_and_features_read_a_users_labelled_images(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 17, (120, 1, 8, 8)).astype(np.uint8)
    y = np.arange(120) % 4
    x[y == 1, :, :4] = 16  # the classes differ, so the feature classifier has something to learn
    np.savez(tmp_path / "mine.npz", x=x, y=y)
    params = _params_with(tmp_path, {"kind": "npz", "path": str(tmp_path / "mine.npz"), "data_type": "image",
                                     "levels": 17, "test_fraction": 0.25,
                                     "classifier": {"steps": 20, "batch_size": 32, "lr": 0.002}})
    run_cli("prepare", *stage_args("prepare", "tinydigits", tmp_path, params), check=True)
    info = json.loads((tmp_path / "results" / "data" / "tinydigits" / "info.json").read_text())
    assert (info["n_train"], info["n_test"], info["levels"], info["shape"]) == (90, 30, 17, [1, 8, 8])
    run_cli("features", *stage_args("features", "tinydigits", tmp_path, params), check=True)
    features = json.loads((tmp_path / "results" / "features" / "tinydigits.json").read_text())
    assert 0 <= features["test_accuracy"] <= 1 and features["steps"] == 20


def test_bad_user_data_stops_prepare_with_one_line_and_keeps_old_outputs(tmp_path):
    np.savez(tmp_path / "mine.npz", x=np.full((20, 1, 8, 8), 300))
    params = _params_with(tmp_path, {"kind": "npz", "path": str(tmp_path / "mine.npz"), "data_type": "image"})
    args = stage_args("prepare", "tinydigits", tmp_path, params)
    old = tmp_path / "results" / "data" / "tinydigits" / "train.npz"
    old.parent.mkdir(parents=True)
    old.write_bytes(b"an earlier file")
    proc = run_cli("prepare", *args)
    errors = [line for line in proc.stderr.splitlines() if "error:" in line]
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert len(set(errors)) == 1 and "mine.npz" in errors[0] and "0..255" in errors[0], proc.stderr
    assert old.read_bytes() == b"an earlier file"
    missing = _params_with(tmp_path, {"kind": "npz", "path": str(tmp_path / "nowhere.npz"), "data_type": "image"})
    proc = run_cli("prepare", *stage_args("prepare", "tinydigits", tmp_path, missing))
    assert proc.returncode != 0 and "nowhere.npz" in proc.stderr and "does not exist" in proc.stderr
