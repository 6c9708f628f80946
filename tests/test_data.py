"""Tests for diffrepro.data: the registry, the procedural sets, and the image loaders on real file formats."""
from __future__ import annotations

import gzip
import math
import pickle
import struct

import numpy as np
import pytest
from scipy import integrate

from diffrepro.data import toy
from diffrepro.data.images import DatasetNotFoundError, stratified_split
from diffrepro.data.kinds import KINDS
from diffrepro.data.loaders import LOADERS, load_dataset


def on_8bit_grid(x: np.ndarray) -> bool:
    v = (x.astype(np.float64) + 1.0) * 127.5
    return bool(np.all(np.abs(v - np.round(v)) < 1e-4) and v.min() >= -1e-4 and v.max() <= 255 + 1e-4)


# ---------------------------------------------------------------- registry

def test_unknown_kind_names_it_and_the_allowed_kinds():
    with pytest.raises(ValueError, match="'bogus'") as err:
        load_dataset("bogus", seed=0)
    for kind in LOADERS:
        assert kind in str(err.value)


def test_unknown_and_missing_keywords_are_named():
    with pytest.raises(TypeError, match="'nosie'.*noise"):
        load_dataset("swissroll", seed=0, nosie=0.1)
    with pytest.raises(TypeError, match="'root'"):
        load_dataset("mnist", seed=0)
    with pytest.raises(ValueError, match="n_train"):
        load_dataset("swissroll", seed=0, n_train=0)
    with pytest.raises(ValueError, match="noise"):
        load_dataset("swissroll", seed=0, noise=-1.0)
    with pytest.raises(ValueError, match="test_fraction"):
        load_dataset("digits", seed=0, test_fraction=1.0)


def test_registry_matches_the_config_data_types():
    assert set(LOADERS) == set(KINDS)
    for kind, kw in [("swissroll", {}), ("heartbeat", {}), ("deadleaves", {})]:
        split = load_dataset(kind, seed=0, n_train=8, n_test=4, **kw)
        assert split.data_type == KINDS[kind].data_type


# ---------------------------------------------------------------- swiss roll

def test_swissroll_shape_unit_variance_and_seed():
    split = load_dataset("swissroll", seed=3, n_train=5000, n_test=700)
    assert split.x_train.shape == (5000, 2) and split.x_test.shape == (700, 2)
    assert split.x_train.dtype == np.float32 and split.y_train is None and split.data_type == "points"
    np.testing.assert_allclose(split.x_train.astype(np.float64).var(axis=0), 1.0, atol=1e-5)
    np.testing.assert_allclose(split.x_train.astype(np.float64).mean(axis=0), 0.0, atol=1e-5)
    again = load_dataset("swissroll", seed=3, n_train=5000, n_test=700)
    np.testing.assert_array_equal(split.x_train, again.x_train)
    np.testing.assert_array_equal(split.x_test, again.x_test)
    other = load_dataset("swissroll", seed=4, n_train=5000, n_test=700)
    assert not np.allclose(split.x_train, other.x_train)


def test_swissroll_undone_scaling_lies_on_the_roll():
    """Noise-free raw points satisfy |p| = t and angle(p) = t (mod 2 pi) with t in [1.5 pi, 4.5 pi]."""
    split = load_dataset("swissroll", seed=0, n_train=2000, n_test=500)
    raw = (split.x_test.astype(np.float64) * split.info["standardise_std"] + split.info["standardise_mean"])
    t = np.hypot(raw[:, 0], raw[:, 1])
    assert t.min() > 1.5 * np.pi - 1e-3 and t.max() < 4.5 * np.pi + 1e-3
    phase_error = np.angle(np.exp(1j * (np.arctan2(raw[:, 1], raw[:, 0]) - t)))
    assert np.abs(phase_error).max() < 1e-4


def test_swissroll_noise_is_added_before_standardising():
    """Same seed, same angles and noise draws: the raw points differ by noise * N(0, 1) per axis."""
    clean = load_dataset("swissroll", seed=5, n_train=20000, n_test=10, noise=0.0)
    noisy = load_dataset("swissroll", seed=5, n_train=20000, n_test=10, noise=0.5)

    def raw(split):
        return split.x_train.astype(np.float64) * split.info["standardise_std"] + split.info["standardise_mean"]

    difference = raw(noisy) - raw(clean)
    np.testing.assert_allclose(difference.std(axis=0), 0.5, atol=0.01)
    np.testing.assert_allclose(difference.mean(axis=0), 0.0, atol=0.015)
    np.testing.assert_allclose(noisy.x_train.astype(np.float64).var(axis=0), 1.0, atol=1e-5)
    assert noisy.info["noise"] == 0.5


# ---------------------------------------------------------------- heartbeat

def test_heartbeat_five_equally_likely_sequences():
    split = load_dataset("heartbeat", seed=1, n_train=5000, n_test=1000)
    x = split.x_train
    assert x.shape == (5000, 20) and x.dtype == np.float32 and split.data_type == "binary"
    assert set(np.unique(x)) == {0.0, 1.0}
    rows, counts = np.unique(x, axis=0, return_counts=True)
    assert len(rows) == 5
    # binomial(5000, 1/5): sd = 28; allow 5 sd
    assert np.all(np.abs(counts - 1000) < 140)
    for row in rows:
        ones = np.flatnonzero(row)
        assert len(ones) == 4 and ones[0] < 5 and np.all(np.diff(ones) == 5)
    assert split.info["true_entropy_bits"] == pytest.approx(math.log2(5))
    assert split.info["firing_rate"] == pytest.approx(0.2)


def test_heartbeat_period_longer_than_length_is_refused():
    with pytest.raises(ValueError, match="period"):
        load_dataset("heartbeat", seed=0, length=4, period=5)


# ---------------------------------------------------------------- dead leaves

def test_deadleaves_range_grid_shape_and_seed():
    split = load_dataset("deadleaves", seed=2, n_train=40, n_test=8, image_size=16)
    assert split.x_train.shape == (40, 1, 16, 16) and split.x_test.shape == (8, 1, 16, 16)
    assert split.x_train.dtype == np.float32 and split.data_type == "image"
    assert on_8bit_grid(split.x_train) and on_8bit_grid(split.x_test)
    again = load_dataset("deadleaves", seed=2, n_train=40, n_test=8, image_size=16)
    np.testing.assert_array_equal(split.x_train, again.x_train)
    assert not np.array_equal(split.x_train, load_dataset("deadleaves", seed=3, n_train=40, n_test=8).x_train)


def test_leaf_radii_follow_the_window_tilted_power_law():
    """Leaves reaching an S-window have radius density ∝ r^-3 (S + 2r)^2; compare CDFs (KS distance)."""
    s, a, b = 16, 1.0, 8.0
    radii = np.sort(toy.sample_leaf_radii(np.random.default_rng(0), 20000, s, a, b))
    density = lambda r: r ** -3 * (s + 2 * r) ** 2  # noqa: E731
    total = integrate.quad(density, a, b)[0]
    probe = np.quantile(radii, np.linspace(0.01, 0.99, 40))
    cdf = np.array([integrate.quad(density, a, r)[0] / total for r in probe])
    empirical = np.searchsorted(radii, probe, side="right") / len(radii)
    assert np.abs(cdf - empirical).max() < 0.015  # KS 1% critical value at n=20000 is 0.0115


def test_front_leaf_matches_a_dense_painter():
    rng = np.random.default_rng(7)
    s, k = 12, 60
    radii = toy.sample_leaf_radii(rng, (6, k), s, 0.5, 6.0)
    centres = rng.random((6, k, 2)) * (s + 2 * radii)[..., None] - radii[..., None]
    grid = np.arange(s) + 0.5
    inside = ((grid[None, None, None, :] - centres[:, :, None, None, 0]) ** 2
              + (grid[None, None, :, None] - centres[:, :, None, None, 1]) ** 2 <= radii[:, :, None, None] ** 2)
    expected = np.where(inside.any(axis=1), inside.argmax(axis=1), k)
    np.testing.assert_array_equal(toy._front_leaf(radii, centres, s), expected)


def _lens_area(r, d):
    """Area of the intersection of two discs of radius r whose centres are d apart."""
    return 2 * r * r * math.acos(d / (2 * r)) - d / 2 * math.sqrt(4 * r * r - d * d) if 2 * r > d else 0.0


@pytest.mark.parametrize("d", [1, 3])
def test_deadleaves_pixel_pairs_share_a_leaf_as_in_closed_form(d):
    """Stationary dead leaves: P(two points d apart lie on the same leaf) = E[lens] / E[2 pi r^2 - lens],
    and pixels on different leaves match by chance with probability 1/256."""
    a, b = 1.0, 8.0
    lens = integrate.quad(lambda r: r ** -3 * _lens_area(r, d), a, b, limit=200)[0]
    union = integrate.quad(lambda r: r ** -3 * (2 * math.pi * r * r - _lens_area(r, d)), a, b, limit=200)[0]
    p_leaf = lens / union
    expected = p_leaf + (1 - p_leaf) / 256
    img = toy.render_dead_leaves(np.random.default_rng(11), 400, 16, a, b)
    same = np.concatenate([(img[:, :, d:] == img[:, :, :-d]).ravel(), (img[:, d:, :] == img[:, :-d, :]).ravel()])
    assert same.mean() == pytest.approx(expected, abs=0.015)


# ---------------------------------------------------------------- digits and mnist5k

def test_digits_grid_shapes_labels_and_stratification():
    from sklearn.datasets import load_digits

    split = load_dataset("digits", seed=0, test_fraction=0.25)
    assert split.x_train.shape[1:] == (1, 8, 8) and len(split.x_train) + len(split.x_test) == 1797
    # the data's own 17 levels, v / 8 - 1, not stretched over 256 bins
    levels = (np.concatenate([split.x_train, split.x_test]) + 1) * 8
    assert np.array_equal(levels, np.round(levels)) and split.x_train.min() == -1.0 and split.x_train.max() == 1.0
    assert len(np.unique(levels)) == 17 and split.info["levels"] == 17
    assert split.y_train.dtype == np.int64 and set(split.y_test) == set(range(10))
    # each class is split 75/25 up to rounding
    per_class = np.bincount(split.y_test, minlength=10) / np.bincount(load_digits().target, minlength=10)
    assert np.all(np.abs(per_class - 0.25) < 0.02)
    # together the splits hold every source image, at its own level, with its own label
    source = load_digits().images.reshape(1797, 64)
    ours = levels.reshape(1797, 64)
    labels = np.concatenate([split.y_train, split.y_test])

    def sort_rows(images, targets):
        rows = np.column_stack([images, targets])
        return rows[np.lexsort(rows.T[::-1])]

    np.testing.assert_array_equal(sort_rows(ours, labels), sort_rows(source, load_digits().target))


def test_mnist5k_total_shapes_and_shuffled_split():
    split = load_dataset("mnist5k", seed=0)
    assert len(split.x_train) + len(split.x_test) == 5000
    assert split.x_train.shape[1:] == (1, 28, 28) and len(split.x_test) == 1000
    assert on_8bit_grid(split.x_test)
    assert np.bincount(split.y_test, minlength=10).tolist() == [100] * 10
    assert len(set(split.y_test[:20])) >= 4  # shuffled: the file itself is sorted by class
    assert load_dataset("mnist5k", seed=1).y_test[:50].tolist() != split.y_test[:50].tolist()


def test_stratified_split_partitions_the_indices():
    labels = np.repeat(np.arange(3), [10, 20, 30])
    train, test = stratified_split(np.random.default_rng(0), labels, 0.3)
    assert sorted(np.concatenate([train, test]).tolist()) == list(range(60))
    assert np.bincount(labels[test]).tolist() == [3, 6, 9]


# ---------------------------------------------------------------- MNIST and CIFAR-10 on disk

def _write_idx(path, array: np.ndarray, compress: bool = False):
    header = struct.pack(">I", 0x0800 | array.ndim) + b"".join(struct.pack(">I", n) for n in array.shape)
    with (gzip.open if compress else open)(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def _fake_mnist(root, rng, n_train=12, n_test=5, compress=False):
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    data = {}
    for part, prefix, n in (("train", "train", n_train), ("test", "t10k", n_test)):
        images, labels = rng.integers(0, 256, (n, 28, 28)), rng.integers(0, 10, n)
        suffix = ".gz" if compress else ""
        _write_idx(raw / f"{prefix}-images-idx3-ubyte{suffix}", images, compress)
        _write_idx(raw / f"{prefix}-labels-idx1-ubyte{suffix}", labels, compress)
        data[part] = (images, labels)
    return data


@pytest.mark.parametrize("compress", [False, True])
def test_mnist_round_trips_idx_files(tmp_path, compress):
    data = _fake_mnist(tmp_path, np.random.default_rng(0), compress=compress)
    split = load_dataset("mnist", seed=0, root=str(tmp_path))
    np.testing.assert_array_equal(np.round((split.x_train[:, 0] + 1) * 127.5), data["train"][0])
    np.testing.assert_array_equal(split.y_train, data["train"][1])
    np.testing.assert_array_equal(np.round((split.x_test[:, 0] + 1) * 127.5), data["test"][0])
    np.testing.assert_array_equal(split.y_test, data["test"][1])


def test_mnist_agrees_with_torchvision_and_subsets(tmp_path):
    datasets = pytest.importorskip("torchvision.datasets")
    _fake_mnist(tmp_path, np.random.default_rng(1))
    reference = datasets.MNIST(str(tmp_path), train=True, download=False)
    split = load_dataset("mnist", seed=0, root=tmp_path)
    np.testing.assert_array_equal(split.x_train[:, 0], reference.data.numpy() / np.float32(127.5) - 1)
    np.testing.assert_array_equal(split.y_train, reference.targets.numpy())
    subset = load_dataset("mnist", seed=0, root=tmp_path, n_train=4, n_test=2)
    assert subset.x_train.shape == (4, 1, 28, 28) and len(subset.y_test) == 2
    assert any(np.array_equal(subset.x_train[0], row) for row in split.x_train)
    with pytest.raises(ValueError, match="n_train"):
        load_dataset("mnist", seed=0, root=tmp_path, n_train=13)


def test_mnist_bad_magic_is_named(tmp_path):
    _fake_mnist(tmp_path, np.random.default_rng(0))
    path = tmp_path / "MNIST" / "raw" / "t10k-labels-idx1-ubyte"
    path.write_bytes(struct.pack(">I", 0x0803) + path.read_bytes()[4:])
    with pytest.raises(ValueError, match="t10k-labels-idx1-ubyte.*magic"):
        load_dataset("mnist", seed=0, root=tmp_path)


def _fake_cifar(root, rng, sizes=(3, 2, 4, 1, 2, 5)):
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    batches = {}
    for name, n in zip(names, sizes):
        data, labels = rng.integers(0, 256, (n, 3072), dtype=np.uint8), rng.integers(0, 10, n).tolist()
        # the official batches were pickled by Python 2: bytes keys once loaded with encoding="bytes"
        with open(folder / name, "wb") as f:
            pickle.dump({b"batch_label": name.encode(), b"data": data, b"labels": labels}, f, protocol=2)
        batches[name] = (data, labels)
    return batches


def test_cifar10_round_trips_python_batches(tmp_path):
    batches = _fake_cifar(tmp_path, np.random.default_rng(0))
    split = load_dataset("cifar10", seed=0, root=str(tmp_path))
    assert split.x_train.shape == (12, 3, 32, 32) and split.x_test.shape == (5, 3, 32, 32)
    train = np.concatenate([batches[f"data_batch_{i}"][0] for i in range(1, 6)])
    # a row is 1024 red, 1024 green, 1024 blue values, each plane row-major: pixel (c, h, w) = row[1024c + 32h + w]
    c, h, w = 2, 5, 17
    assert split.x_train[7, c, h, w] == np.float32(train[7, 1024 * c + 32 * h + w] / 127.5 - 1)
    np.testing.assert_array_equal(np.round((split.x_train.reshape(12, -1) + 1) * 127.5), train)
    np.testing.assert_array_equal(split.y_train, sum((batches[f"data_batch_{i}"][1] for i in range(1, 6)), []))
    np.testing.assert_array_equal(np.round((split.x_test.reshape(5, -1) + 1) * 127.5), batches["test_batch"][0])


def test_missing_root_names_the_path(tmp_path):
    missing = tmp_path / "nowhere"
    for kind, expected in (("mnist", "train-images-idx3-ubyte"), ("cifar10", "data_batch_1")):
        with pytest.raises(DatasetNotFoundError, match=expected) as err:
            load_dataset(kind, seed=0, root=str(missing))
        assert str(missing) in str(err.value) and isinstance(err.value, FileNotFoundError)
    _fake_cifar(tmp_path, np.random.default_rng(0))
    (tmp_path / "cifar-10-batches-py" / "test_batch").unlink()
    with pytest.raises(FileNotFoundError, match="test_batch"):
        load_dataset("cifar10", seed=0, root=tmp_path)
