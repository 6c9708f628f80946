"""The nll stage's baseline L_null and rate-distortion view, against independent computations."""
import math

import numpy as np
import pytest
import torch

from diffrepro.stages.nll import l_null_nats, rate_distortion


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
    assert paper_k(res, "points", lambda nats: nats / np.log(2)) == {"K_paper_eq14": pytest.approx(3.0 / np.log(2))}
    assert paper_k(res, "image", lambda nats: nats) == {}  # differential entropies are not bits/dim of bins
    assert paper_k({}, "points", lambda nats: nats) == {}
