"""Tests for the β-schedule registry, the float64 schedule constants and `extract`."""
import math

import numpy as np
import pytest
import torch

from diffrepro.diffusion.schedules import (
    SCHEDULES,
    extract,
    get_betas,
    schedule_constants,
    schedule_settings,
)


def test_linear_endpoints_and_even_steps():
    betas = get_betas("linear", 1000)
    assert betas.dtype == np.float64 and betas.shape == (1000,)
    assert betas[0] == pytest.approx(1e-4) and betas[-1] == pytest.approx(0.02)
    np.testing.assert_allclose(np.diff(betas), (0.02 - 1e-4) / 999, rtol=1e-9)


def test_geometric_has_constant_ratio():
    betas = get_betas("geometric", 40, beta_start=1e-5, beta_end=0.3)
    assert betas[0] == pytest.approx(1e-5) and betas[-1] == pytest.approx(0.3)
    np.testing.assert_allclose(betas[1:] / betas[:-1], (0.3 / 1e-5) ** (1 / 39), rtol=1e-9)


def test_constant():
    np.testing.assert_array_equal(get_betas("constant", 7, beta=0.1), np.full(7, 0.1))


def test_cosine_matches_improved_ddpm_formula():
    T, s = 50, 0.008
    betas = get_betas("cosine", T)

    def alpha_bar(t):
        return math.cos((t / T + s) / (1 + s) * math.pi / 2) ** 2

    expected = [min(1 - alpha_bar(i + 1) / alpha_bar(i), 0.999) for i in range(T)]
    np.testing.assert_allclose(betas, expected, rtol=1e-12)
    assert betas[-1] == 0.999  # the last step is capped


def test_unknown_schedule_names_the_allowed_ones():
    with pytest.raises(ValueError) as err:
        get_betas("sigmoid", 10)
    assert "sigmoid" in str(err.value)
    for name in SCHEDULES:
        assert name in str(err.value)


def test_unknown_setting_and_bad_betas_raise():
    assert schedule_settings("linear") == ("beta_start", "beta_end")
    assert schedule_settings("constant") == ("beta",)
    with pytest.raises(ValueError, match="beta_end.*allowed: beta$"):
        get_betas("constant", 10, beta_end=0.1)
    with pytest.raises(ValueError, match=r"\(0, 1\)"):
        get_betas("linear", 10, beta_start=0.0)
    with pytest.raises(ValueError):
        schedule_constants(np.array([0.1, 1.0]))


def test_constants_match_explicit_float64_loops():
    betas = get_betas("linear", 20, beta_start=1e-3, beta_end=0.3)
    c = schedule_constants(betas)
    abar, abar_prev = [], []
    prod = 1.0
    for b in betas:
        abar_prev.append(prod)
        prod *= 1.0 - float(b)
        abar.append(prod)
    abar, abar_prev = np.array(abar), np.array(abar_prev)
    np.testing.assert_allclose(c.alphas_cumprod, abar, rtol=1e-13)
    np.testing.assert_allclose(c.alphas_cumprod_prev, abar_prev, rtol=1e-13)
    np.testing.assert_allclose(c.one_minus_alphas_cumprod, 1 - abar, rtol=1e-12)
    np.testing.assert_allclose(c.sqrt_recipm1_alphas_cumprod, np.sqrt(1 / abar - 1), rtol=1e-11)
    # DDPM eq. (7): β̃_t and the two coefficients of μ̃_t
    var = (1 - abar_prev) / (1 - abar) * betas
    np.testing.assert_allclose(c.posterior_variance, var, rtol=1e-12, atol=1e-300)
    assert c.posterior_variance[0] == 0.0
    np.testing.assert_allclose(c.posterior_log_variance_clipped[1:], np.log(var[1:]), rtol=1e-12)
    assert c.posterior_log_variance_clipped[0] == pytest.approx(math.log(var[1]))
    np.testing.assert_allclose(c.posterior_mean_coef1, np.sqrt(abar_prev) * betas / (1 - abar),
                               rtol=1e-12)
    np.testing.assert_allclose(c.posterior_mean_coef2,
                               np.sqrt(1 - betas) * (1 - abar_prev) / (1 - abar), rtol=1e-12)


def test_tiny_first_beta_keeps_full_relative_precision():
    # 1 - ᾱ_1 must equal β_1 to ~1e-15 relative; computed naively in float32 it would be off by ~1%.
    betas = get_betas("geometric", 40, beta_start=1e-7, beta_end=0.5)
    c = schedule_constants(betas)
    assert c.one_minus_alphas_cumprod[0] == pytest.approx(1e-7, rel=1e-14)
    # β̃_2 = β_1 β_2 / (1 - (1 - β_1)(1 - β_2)), exactly
    b1, b2 = betas[0], betas[1]
    assert c.posterior_variance[1] == pytest.approx(b1 * b2 / (b1 + b2 - b1 * b2), rel=1e-12)


def test_extract_indexes_broadcasts_and_casts():
    arr = np.arange(10, dtype=np.float64) * 0.5
    t = torch.tensor([3, 0, 9])
    out = extract(arr, t, (3, 2, 4, 4))
    assert out.shape == (3, 2, 4, 4) and out.dtype == torch.float32 and out.device == t.device
    torch.testing.assert_close(out[:, 1, 2, 3], torch.tensor([1.5, 0.0, 4.5]))
    out64 = extract(torch.from_numpy(arr), t, (3, 5), dtype=torch.float64)
    assert out64.dtype == torch.float64
    torch.testing.assert_close(out64[:, 4], torch.tensor([1.5, 0.0, 4.5], dtype=torch.float64))
