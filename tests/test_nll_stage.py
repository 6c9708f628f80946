"""The nll stage's baseline L_null and rate-distortion view, against independent computations."""
import math

import numpy as np
import pytest
import torch

from diffrepro.metrics.bound import l_null_nats, rate_distortion


def test_l_null_points_is_the_isotropic_gaussian_log_density():
    rng = np.random.default_rng(0)
    train = rng.normal(size=(5000, 2)) * [1.0, 3.0]
    test = rng.normal(size=(10, 2))
    var = train.var(axis=0).mean()  # isotropic: one variance, the mean of the per-axis ones
    mu = train.mean(axis=0)
    expected = [sum(-0.5 * math.log(2 * math.pi * var) - (x - m) ** 2 / (2 * var) for x, m in zip(row, mu))
                for row in test]
    assert l_null_nats(train, test, "points") == pytest.approx(expected, rel=1e-9)


def test_l_null_images_is_a_probability_of_8bit_bins():
    rng = np.random.default_rng(1)
    train = (rng.integers(0, 256, size=(2000, 1, 2, 2)) / 127.5 - 1).astype(np.float32)
    ll = l_null_nats(train, train[:50], "image")
    assert (ll <= 0).all()  # a log-probability of a discrete outcome
    # uniform-ish 8-bit data under a wide Gaussian: about log(1/256) per pixel, within a factor
    assert (ll / 4).mean() == pytest.approx(-math.log(256), rel=0.15)


def test_l_null_binary_is_independent_bernoulli():
    train = np.array([[1, 0], [1, 1], [0, 0], [1, 0]], dtype=np.float32)
    ll = l_null_nats(train, np.array([[1, 0]], dtype=np.float32), "binary")
    assert ll[0] == pytest.approx(math.log(0.75) + math.log(0.75))


def test_rate_distortion_accumulates_from_t_to_T():
    terms = np.array([[1.0, 2.0, 3.0, 4.0]])  # L_0, L_1, L_2, L_3 (T = 4)
    res = {"terms": terms, "prior": np.array([0.5]), "eps_mse": np.array([[0.1, 0.2, 0.3, 0.4]])}
    abar = np.array([0.9, 0.5, 0.2, 0.1])
    rd = rate_distortion(res, abar, lambda nats: nats, "points")
    # after receiving x_t the receiver has paid L_T + L_{T-1} + ... + L_t
    assert rd["rate"].tolist() == [0.5 + 2 + 3 + 4, 0.5 + 3 + 4, 0.5 + 4, 0.5]
    assert rd["distortion"] == pytest.approx(np.sqrt([0.1, 0.2, 0.3, 0.4] * (1 - abar) / abar))


def test_paper_k_only_on_the_continuous_scale():
    from diffrepro.stages.nll import paper_k

    res = {"k_paper": np.array([2.0, 4.0])}
    assert paper_k(res, True, lambda nats: nats / np.log(2)) == {"K_paper_eq14": pytest.approx(3.0 / np.log(2))}
    assert paper_k(res, False, lambda nats: nats) == {}  # differential entropies are not bits/dim of bins
    assert paper_k({}, True, lambda nats: nats) == {}


def test_categorical_baseline_is_add_one_counts_over_the_levels():
    from diffrepro.metrics.bound import categorical_nats, to_levels

    levels = 17
    rng = np.random.default_rng(0)
    train_v = rng.integers(0, levels, size=(200, 1, 2, 2))
    test_v = rng.integers(0, levels, size=(30, 1, 2, 2))
    scale = lambda v: v / 8.0 - 1.0  # noqa: E731  (the digits' scaling)
    assert np.array_equal(to_levels(scale(test_v), levels), test_v)
    got = categorical_nats(scale(train_v), scale(test_v), levels)
    flat_train, flat_test = train_v.reshape(200, 4), test_v.reshape(30, 4)
    expected = np.zeros(30)
    for d in range(4):  # p_d(v) = (count + 1) / (N + L), by a plain loop
        counts = np.array([(flat_train[:, d] == v).sum() for v in range(levels)])
        expected += np.log((counts[flat_test[:, d]] + 1) / (200 + levels))
    np.testing.assert_allclose(got, expected, rtol=1e-12)
    # uniform data: the baseline approaches log2(L) bits/dim, the entropy of the data
    big = rng.integers(0, levels, size=(20000, 1, 2, 2))
    bits = -categorical_nats(scale(big[:10000]), scale(big[10000:]), levels).mean() / (4 * math.log(2))
    assert bits == pytest.approx(math.log2(levels), abs=0.01)


def test_discretised_decoder_bins_follow_the_levels():
    from diffrepro.diffusion.likelihood import discretized_gaussian_log_likelihood

    for levels in (17, 256):
        grid = torch.arange(levels, dtype=torch.float64) * 2 / (levels - 1) - 1
        for mean in (-0.9, 0.1, 0.7):
            logp = discretized_gaussian_log_likelihood(grid, torch.full_like(grid, mean),
                                                       torch.full_like(grid, math.log(0.2)), bins=levels)
            assert torch.exp(logp).sum().item() == pytest.approx(1.0, abs=1e-9)
    # a sharp decoder on 17 levels costs ~0 bits where 256 bins would charge the unused resolution
    x = torch.tensor([0.125], dtype=torch.float64)
    sharp = torch.log(torch.tensor([0.0224], dtype=torch.float64))  # σ_1 = sqrt(5e-4)
    assert -discretized_gaussian_log_likelihood(x, x, sharp, bins=17).item() < 0.01
    assert -discretized_gaussian_log_likelihood(x, x, sharp, bins=256).item() > 1.0
