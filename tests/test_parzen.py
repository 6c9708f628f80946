"""The Parzen-window estimate (metrics/parzen.py) and its stage: exact Gaussian cases, bandwidth
selection with a known optimum, blockwise = direct, memorisation scores higher than noise, and
parzen.json for image and non-image runs.

What the Gaussian test checks, honestly: with bandwidth h, a Parzen estimate on N samples of
N(m, s² I) converges to the density convolved with the kernel, N(m, (s² + h²) I), not to the data's
own density. The tests compare against that convolved density at a fixed h, and show the estimate
is measurably *not* the unconvolved density (the kernel's smoothing bias, which only vanishes as
h → 0, where a finite N makes the estimate's variance grow instead).
"""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from diffrepro.diffusion.likelihood import nats_to_bits
from diffrepro.metrics import parzen as P

from .conftest import TINY_PARAMS, stage_args


def gauss_logpdf(x, mean, var):
    """log N(x; mean, var I) per row, in nats."""
    d = x.shape[1]
    return -0.5 * d * math.log(2 * math.pi * var) - 0.5 * ((x - mean) ** 2).sum(1) / var


# the kernel's smoothing bias E[log p_h - log p] = D/2 (h²/(s²+h²) - log(1 + h²/s²)) is O(h^4): at h = 0.5
# it is -0.035 nats and resolved; at h = 0.25 it is -0.003 nats, below the finite-N noise of the paired
# difference, which grows as h shrinks: the h -> 0 trade-off
@pytest.mark.parametrize("h, bias_resolved", [(0.5, True), (0.25, False)])
def test_recovers_the_expected_log_density_of_the_kernel_convolved_gaussian(h, bias_resolved):
    rng = np.random.default_rng(1)
    d, s, n, m = 3, 1.0, 20_000, 2_000
    mean = np.array([2.0, -1.0, 0.5])
    samples = mean + s * rng.standard_normal((n, d))
    x = mean + s * rng.standard_normal((m, d))   # fresh draws
    ll = P.parzen_log_likelihood(samples, x, h)
    var = s * s + h * h
    expected = -0.5 * d * math.log(2 * math.pi * var) - 0.5 * d * s * s / var  # E_x log N(x; mean, (s²+h²) I)
    se = ll.std(ddof=1) / math.sqrt(m)
    assert abs(ll.mean() - expected) < 3 * se, (ll.mean(), expected, se)
    # paired with the exact convolved log-density at the same points: the residual is the estimate's own
    # finite-N error, far below the test set's spread
    paired = ll - gauss_logpdf(x, mean, var)
    paired_se = paired.std(ddof=1) / math.sqrt(m)
    assert abs(paired.mean()) < 4 * paired_se + 2e-3, (paired.mean(), paired_se)
    # ... and it is not the unconvolved density: the kernel's smoothing bias is resolved
    bias = (gauss_logpdf(x, mean, var) - gauss_logpdf(x, mean, s * s)).mean()
    to_true = ll - gauss_logpdf(x, mean, s * s)
    assert abs(to_true.mean() - bias) < 4 * paired_se + 2e-3, (to_true.mean(), bias)
    assert (abs(bias) > 5 * paired_se) == bias_resolved, (bias, paired_se)
    print(f"h={h}: Parzen {ll.mean():.4f} ± {se:.4f} nats vs convolved {expected:.4f}; paired residual "
          f"{paired.mean():+.4f} ± {paired_se:.4f}; smoothing bias {bias:+.4f}")


def clusters(rng, centres, per, s):
    """`per` points around each centre whose mean squared offset per dimension is exactly s²."""
    noise = rng.standard_normal((len(centres), per, centres.shape[1]))
    noise *= s / np.sqrt((noise ** 2).mean())
    return (centres[:, None] + noise).reshape(-1, centres.shape[1])


def test_bandwidth_selection_picks_the_known_optimum():
    # K kernels far apart, validation points around each with spread s: log p_h(x) = −log K +
    # log N(x; own centre, h² I) up to terms below e^-1000, so the mean is
    # −log K − D/2 log(2π h²) − D s²/(2h²), maximised exactly at h = s; s is put on the grid, and the
    # curve is checked point by point
    rng = np.random.default_rng(2)
    k, d = 5, 4
    grid = P.SIGMA_GRID
    s = grid[4]
    centres = 50.0 * np.eye(k, d) + 50.0 * np.arange(k)[:, None]
    valid = clusters(rng, centres, 400, s)
    chosen = P.select_bandwidth(centres, valid, grid)
    assert chosen["sigma"] == s and not chosen["at_grid_edge"]
    curve = [-math.log(k) - 0.5 * d * math.log(2 * math.pi * h * h) - 0.5 * d * s * s / (h * h) for h in grid]
    np.testing.assert_allclose(chosen["valid_ll_nats"], curve, rtol=1e-10)
    # an optimum beyond the grid is flagged
    wide = P.select_bandwidth(centres, clusters(rng, centres, 50, 3.0), grid)
    assert wide["sigma"] == grid[-1] and wide["at_grid_edge"]


def test_blocks_give_the_direct_computation():
    rng = np.random.default_rng(3)
    samples, x = rng.random((300, 10)), rng.random((77, 10))
    sigmas = [0.05, 0.2, 1.0]
    whole = P.parzen_log_likelihoods(samples, x, sigmas, chunk_m=10_000, chunk_n=10_000)
    blocks = P.parzen_log_likelihoods(samples, x, sigmas, chunk_m=5, chunk_n=17)
    np.testing.assert_allclose(blocks, whole, rtol=0, atol=1e-10)
    # the direct sum, from differences (no ||a||² + ||b||² − 2a·b expansion), with a shifted max
    d2 = ((x[:, None, :] - samples[None]) ** 2).sum(2)
    for row, sigma in zip(whole, sigmas):
        e = -d2 / (2 * sigma ** 2)
        top = e.max(1, keepdims=True)
        direct = (top[:, 0] + np.log(np.exp(e - top).mean(1)) - 0.5 * x.shape[1] * math.log(2 * math.pi * sigma ** 2))
        np.testing.assert_allclose(row, direct, rtol=0, atol=1e-9)
    assert P.parzen_log_likelihood(samples, x, 0.2, chunk_m=7, chunk_n=50) == pytest.approx(whole[1], abs=1e-10)


def digits_unit():
    from sklearn.datasets import load_digits

    return load_digits().images.reshape(-1, 64) / 16.0   # 17 levels -> [0, 1]


def test_memorised_training_images_score_above_noise_and_above_unseen_data():
    rng = np.random.default_rng(4)
    x = digits_unit()[rng.permutation(1797)]
    valid, kernels, test = x[:300], x[300:1400], x[1400:]
    memorised = P.parzen_bits(kernels, valid, test)
    noise = P.parzen_bits(rng.random(kernels.shape), valid, test)
    assert memorised["ll_bits"] > noise["ll_bits"] + 10 * (memorised["ll_bits_se"] + noise["ll_bits_se"])
    # Parzen rewards memorisation: the kernels' own images score far above unseen digits at the same σ
    on_kernels = nats_to_bits(P.parzen_log_likelihood(kernels, kernels[:len(test)], memorised["sigma"])).mean()
    assert on_kernels > memorised["ll_bits"] + 10 * memorised["ll_bits_se"]
    assert memorised["n_samples"] == 1100 and memorised["n_valid"] == 300 and memorised["n_test"] == 397
    assert memorised["sigmas"] == list(P.SIGMA_GRID) and memorised["sigma"] in P.SIGMA_GRID


def test_unit_pixels_maps_the_model_range():
    x = np.array([[[[-1.0, 0.0], [1.0, 1.5]]]], dtype=np.float32)   # [1 x 1 x 2 x 2], one value outside
    np.testing.assert_array_equal(P.unit_pixels(x), [[0.0, 0.5, 1.0, 1.25]])


def _stage(run, tmp_path, data):
    from diffrepro import cli
    from diffrepro.config import load_params
    from diffrepro.io import save_npz
    from diffrepro.stages import parzen as stage

    args = cli.build_parser().parse_args(["parzen", *stage_args("parzen", run, tmp_path, TINY_PARAMS)])
    for name, x in data.items():
        save_npz(getattr(args, name), x=x)
    stage.run(args, load_params(TINY_PARAMS), torch.device("cpu"))
    return json.loads(open(args.metrics).read())


def test_stage_on_an_image_run(tmp_path):
    rng = np.random.default_rng(5)
    x = (digits_unit() * 2 - 1).astype(np.float32).reshape(-1, 1, 8, 8)[rng.permutation(1797)]
    train, test = x[:1400], x[1400:]
    out = _stage("digits-tiny", tmp_path, {"train": train, "test": test, "samples": test[:32]})
    assert out["applicable"] and out["units"] == "bits per example (Parzen window, [0,1] pixels)"
    assert out["n_samples"] == 32 and out["n_valid"] == 700 and out["n_test"] == 397 and out["n_train_kernels"] == 32
    for key in ("ll_bits", "ll_bits_se", "ll_bits_train_kernels", "ll_bits_train_kernels_se", "sigma"):
        assert math.isfinite(out[key]), key
    # samples that copy test images are the kernels, and the test set is what is scored
    assert out["ll_bits"] > out["ll_bits_train_kernels"] + 3 * out["ll_bits_se"], out


def test_stage_on_a_points_run_says_not_applicable(tmp_path):
    pts = np.zeros((8, 2), dtype=np.float32)
    out = _stage("toyroll-ddpm", tmp_path, {"train": pts, "test": pts, "samples": pts})
    assert out["applicable"] is False and "not applicable" in out["note"]


def test_parzen_n_is_a_checked_eval_key(tiny_raw):
    from diffrepro.config import EvalConfig, ParamsError, parse_params

    assert EvalConfig().parzen_n == 1000
    tiny_raw["runs"]["digits-tiny"]["eval"]["parzen_n"] = 50
    assert parse_params(tiny_raw).runs["digits-tiny"].eval.parzen_n == 50
    tiny_raw["runs"]["digits-tiny"]["eval"]["parzen_n"] = 1
    with pytest.raises(ParamsError, match="eval.parzen_n"):
        parse_params(tiny_raw)


def test_report_puts_sd2015_table2_beside_mnist_runs(tiny_raw):
    import pandas as pd

    from diffrepro.config import parse_params
    from diffrepro.stages.report import paper_table

    tiny_raw["datasets"]["m5k"] = {"kind": "mnist5k"}
    tiny_raw["runs"]["m5k-ddpm"] = {**tiny_raw["runs"]["digits-tiny"], "dataset": "m5k"}
    params = parse_params(tiny_raw)
    frame = pd.DataFrame([{"run": "m5k-ddpm", "parzen.ll_bits": 250.0, "parzen.ll_bits_train_kernels": 300.0},
                          {"run": "digits-tiny", "parzen.ll_bits": 80.0}])
    table = paper_table(params, frame).set_index("metric")
    assert set(table["run"]) == {"m5k-ddpm"}
    assert table.loc["ll_bits", "paper"] == 317.0 and table.loc["ll_bits", "ours"] == 250.0
    assert table.loc["ll_bits_train_kernels", "paper"] == 349.0 and table.loc["ll_bits_train_kernels", "ours"] == 300.0
    gan = table.loc["ll_bits [adversarial net]"]
    assert gan["paper"] == 325.0 and pd.isna(gan["ours"])
