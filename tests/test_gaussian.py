"""Tests for DDPM's GaussianDiffusion against closed forms, Bayes' rule and Monte Carlo."""
import math

import numpy as np
import pytest
import torch

from diffrepro.diffusion.gaussian import GaussianDiffusion, LossType, ModelMeanType, ModelVarType
from diffrepro.diffusion.likelihood import discretized_gaussian_log_likelihood
from diffrepro.diffusion.schedules import get_betas

F64 = torch.float64


def closed_form(betas):
    """ᾱ_t, ᾱ_{t-1}, posterior coefficients and β̃ by an explicit float64 loop (paper eq. 7)."""
    abar, abar_prev, prod = [], [], 1.0
    for b in betas:
        abar_prev.append(prod)
        prod *= 1.0 - float(b)
        abar.append(prod)
    abar, abar_prev, betas = np.array(abar), np.array(abar_prev), np.asarray(betas)
    return {
        "abar": abar, "abar_prev": abar_prev,
        "coef1": np.sqrt(abar_prev) * betas / (1 - abar),
        "coef2": np.sqrt(1 - betas) * (1 - abar_prev) / (1 - abar),
        "post_var": (1 - abar_prev) / (1 - abar) * betas,
    }


def col(values, t, x):
    """Per-example constants values[t] as a float64 tensor broadcastable to x [N x D]."""
    picked = torch.as_tensor(np.asarray(values)[t.numpy()], dtype=F64)
    return picked.reshape(-1, *[1] * (x.dim() - 1))


def gen(seed):
    return torch.Generator().manual_seed(seed)


def test_choices_lookup_and_errors():
    assert ModelMeanType.from_str("epsilon") is ModelMeanType.EPSILON
    assert ModelVarType.from_str("FIXED_LARGE") is ModelVarType.FIXED_LARGE
    assert LossType.from_str(LossType.HYBRID).is_vb() and not LossType.SIMPLE.is_vb()
    with pytest.raises(ValueError, match="allowed: epsilon, start_x, previous_x"):
        ModelMeanType.from_str("eps")
    with pytest.raises(ValueError, match="discretized, gaussian"):
        GaussianDiffusion(get_betas("linear", 5), decoder="logistic")
    with pytest.raises(ValueError, match="learned_range"):
        GaussianDiffusion(get_betas("linear", 5), var_type="learned_range", loss_type="simple")


def test_q_sample_moments():
    betas = get_betas("linear", 10, beta_start=0.01, beta_end=0.2)
    cf = closed_form(betas)
    proc = GaussianDiffusion(betas)
    n, i, x0 = 200_000, 5, 1.3
    x_start = torch.full((n, 1), x0, dtype=F64)
    x_t = proc.q_sample(x_start, torch.full((n,), i), generator=gen(0))
    mean, var = math.sqrt(cf["abar"][i]) * x0, 1 - cf["abar"][i]
    assert abs(x_t.mean().item() - mean) < 4 * math.sqrt(var / n)
    assert x_t.var().item() == pytest.approx(var, rel=4 * math.sqrt(2 / n))
    m, v, logv = proc.q_mean_variance(x_start[:1], torch.tensor([i]))
    assert m.item() == pytest.approx(mean) and v.item() == pytest.approx(var)
    assert logv.item() == pytest.approx(math.log(var))


@pytest.mark.parametrize("i", [1, 4, 9])
def test_posterior_matches_bayes_rule_on_a_grid(i):
    betas = get_betas("linear", 10, beta_start=0.01, beta_end=0.2)
    cf = closed_form(betas)
    x0, xt = 0.7, -0.4
    y = np.linspace(-8, 8, 400_001)  # x_{t-1}
    prior = np.exp(-0.5 * (y - math.sqrt(cf["abar_prev"][i]) * x0) ** 2 / (1 - cf["abar_prev"][i]))
    lik = np.exp(-0.5 * (xt - math.sqrt(1 - betas[i]) * y) ** 2 / betas[i])
    w = prior * lik / np.sum(prior * lik)
    grid_mean = np.sum(w * y)
    grid_var = np.sum(w * (y - grid_mean) ** 2)
    mean, var, logvar = GaussianDiffusion(betas).q_posterior_mean_variance(
        torch.tensor([[x0]], dtype=F64), torch.tensor([[xt]], dtype=F64), torch.tensor([i]))
    assert mean.item() == pytest.approx(grid_mean, rel=1e-6)
    assert var.item() == pytest.approx(grid_var, rel=1e-5)
    assert logvar.item() == pytest.approx(math.log(grid_var), abs=1e-5)


def test_posterior_at_first_step_is_x_start():
    proc = GaussianDiffusion(get_betas("linear", 10))
    x0, xt = torch.randn(3, 2, dtype=F64), torch.randn(3, 2, dtype=F64)
    mean, var, _ = proc.q_posterior_mean_variance(x0, xt, torch.zeros(3, dtype=torch.long))
    torch.testing.assert_close(mean, x0)
    assert torch.all(var == 0)


def test_prior_kl_closed_form():
    betas = get_betas("linear", 10, beta_start=0.01, beta_end=0.2)
    abar = closed_form(betas)["abar"][-1]
    x0 = torch.tensor([[0.5, -1.0], [2.0, 0.0]], dtype=F64)
    expected = (0.5 * (-1 - math.log(1 - abar) + (1 - abar) + abar * x0 ** 2)).sum(1)
    torch.testing.assert_close(GaussianDiffusion(betas).prior_kl_nats(x0), expected)


def test_epsilon_start_and_previous_parameterisations_agree():
    betas = get_betas("linear", 12, beta_start=0.02, beta_end=0.3)
    cf = closed_form(betas)
    g = gen(1)
    x_t = torch.randn(6, 3, dtype=F64, generator=g)
    t = torch.tensor([0, 1, 3, 5, 8, 11])
    eps = torch.randn(6, 3, dtype=F64, generator=g)
    abar, beta = col(cf["abar"], t, x_t), col(betas, t, x_t)
    x0 = (x_t - torch.sqrt(1 - abar) * eps) / torch.sqrt(abar)
    mu = col(cf["coef1"], t, x_t) * x0 + col(cf["coef2"], t, x_t) * x_t
    outputs = {"epsilon": eps, "start_x": x0, "previous_x": mu}
    means = {}
    for mean_type, output in outputs.items():
        proc = GaussianDiffusion(betas, mean_type=mean_type, decoder="gaussian")
        out = proc.p_mean_variance(lambda x, tt, o=output: o, x_t, t)
        torch.testing.assert_close(out["pred_xstart"], x0)
        means[mean_type] = out["mean"]
    paper_mean = (x_t - beta / torch.sqrt(1 - abar) * eps) / torch.sqrt(1 - beta)  # DDPM eq. 11
    for mean in means.values():
        torch.testing.assert_close(mean, paper_mean)


def test_fixed_and_learned_range_variances():
    betas = get_betas("linear", 8, beta_start=0.05, beta_end=0.4)
    post_var = closed_form(betas)["post_var"]
    x_t, t = torch.zeros(5, 2, dtype=F64), torch.full((5,), 4)
    zero = lambda x, tt: torch.zeros_like(x)  # noqa: E731
    small = GaussianDiffusion(betas, var_type="fixed_small").p_mean_variance(zero, x_t, t)
    large = GaussianDiffusion(betas, var_type="fixed_large").p_mean_variance(zero, x_t, t)
    assert torch.allclose(small["variance"], torch.tensor(post_var[4], dtype=F64))
    assert torch.allclose(large["variance"], torch.tensor(betas[4], dtype=F64))
    v = torch.linspace(-1, 1, 5, dtype=F64)[:, None].expand(5, 2)
    learned = GaussianDiffusion(betas, var_type="learned_range", loss_type="hybrid")
    var = learned.p_mean_variance(lambda x, tt: torch.cat([torch.zeros_like(x), v], 1), x_t, t)
    var = var["variance"][:, 0]
    assert var[0].item() == pytest.approx(post_var[4]) and var[-1].item() == pytest.approx(betas[4])
    assert torch.all(var[1:] > var[:-1])
    assert torch.all((var >= post_var[4] * (1 - 1e-12)) & (var <= betas[4] * (1 + 1e-12)))
    # the geometric mean of β̃ and β at v = 0
    assert var[2].item() == pytest.approx(math.sqrt(post_var[4] * betas[4]))


def test_clip_denoised_is_optional_with_a_process_default():
    betas = get_betas("linear", 6)
    x_t, t = torch.zeros(2, 2), torch.full((2,), 3)
    three = lambda x, tt: torch.full_like(x, 3.0)  # noqa: E731
    unclipped = GaussianDiffusion(betas, mean_type="start_x")
    clipped = GaussianDiffusion(betas, mean_type="start_x", clip_denoised=True)
    assert torch.all(unclipped.p_mean_variance(three, x_t, t)["pred_xstart"] == 3)
    assert torch.all(clipped.p_mean_variance(three, x_t, t)["pred_xstart"] == 1)
    forced = unclipped.p_mean_variance(three, x_t, t, clip_denoised=True)
    assert torch.all(forced["pred_xstart"] == 1)


def test_p_sample_noise_scale_and_no_noise_at_first_step():
    betas = get_betas("linear", 6, beta_start=0.05, beta_end=0.3)
    proc = GaussianDiffusion(betas, var_type="fixed_large", decoder="gaussian")
    model = lambda x, tt: 0.5 * x  # noqa: E731
    n = 100_000
    x_t = torch.full((n, 1), 0.8, dtype=F64)
    mean = proc.p_mean_variance(model, x_t[:1], torch.tensor([3]))["mean"].item()
    draws = proc.p_sample(model, x_t, torch.full((n,), 3), generator=gen(2))
    assert abs(draws.mean().item() - mean) < 4 * math.sqrt(betas[3] / n)
    assert draws.var().item() == pytest.approx(betas[3], rel=4 * math.sqrt(2 / n))
    first = proc.p_sample(model, x_t[:4], torch.zeros(4, dtype=torch.long), generator=gen(3))
    torch.testing.assert_close(first, proc.p_mean_variance(model, x_t[:4], torch.zeros(4,
                               dtype=torch.long))["mean"])


class RandomEpsModel(torch.nn.Module):
    """A small fixed random ε-network: tanh(x W_t + b_t), float64."""

    def __init__(self, num_timesteps, dim, seed):
        super().__init__()
        g = gen(seed)
        w = 0.7 * torch.randn(num_timesteps, dim, dim, dtype=F64, generator=g)
        self.w = torch.nn.Parameter(w)
        self.b = torch.nn.Parameter(0.3 * torch.randn(num_timesteps, dim, dtype=F64, generator=g))

    def forward(self, x, t):
        return torch.tanh(torch.einsum("nd,nde->ne", x, self.w[t]) + self.b[t])


def normal_logpdf(x, mean, var):
    return (-0.5 * (math.log(2 * math.pi) + torch.log(var) + (x - mean) ** 2 / var)).sum(1)


def test_bound_matches_monte_carlo_over_forward_trajectories():
    T, dim, n = 5, 2, 200_000
    betas = get_betas("linear", T, beta_start=0.05, beta_end=0.6)
    cf = closed_form(betas)
    model = RandomEpsModel(T, dim, seed=4)
    g = gen(5)
    x_start = 0.5 * torch.randn(n, dim, dtype=F64, generator=g)
    x_start += torch.tensor([1.0, -0.5], dtype=F64)
    proc = GaussianDiffusion(betas, var_type="fixed_large", decoder="gaussian")
    with torch.no_grad():
        bound = proc.bound_terms(model, x_start, generator=g).total
        # E_q[log q(x_{1:T} | x_0) − log p(x_{0:T})] along forward chains, by the paper's formulas
        log_q = torch.zeros(n, dtype=F64)
        log_p = torch.zeros(n, dtype=F64)
        xs = [x_start]
        for k in range(T):
            b = torch.tensor(betas[k], dtype=F64)
            xs.append(math.sqrt(1 - betas[k]) * xs[-1]
                      + math.sqrt(betas[k]) * torch.randn(n, dim, dtype=F64, generator=g))
            log_q += normal_logpdf(xs[k + 1], math.sqrt(1 - betas[k]) * xs[k], b)
        log_p += normal_logpdf(xs[T], torch.zeros(()), torch.ones((), dtype=F64))
        for k in range(T):
            t = torch.full((n,), k)
            eps = model(xs[k + 1], t)
            mu = xs[k + 1] - betas[k] / math.sqrt(1 - cf["abar"][k]) * eps
            mu = mu / math.sqrt(1 - betas[k])
            log_p += normal_logpdf(xs[k], mu, torch.tensor(betas[k], dtype=F64))
        mc = log_q - log_p
    se = math.sqrt(bound.var().item() / n + mc.var().item() / n)
    assert abs(bound.mean().item() - mc.mean().item()) < 4 * se
    assert se < 0.015  # 4 SE < 0.1 nats, the smallest term (L_T) of this bound


def posterior_oracle(betas, x_start, mean_type):
    """A model that knows x_start, so that p_θ(x_{t-1} | x_t) = q(x_{t-1} | x_t, x_0)."""
    cf = closed_form(betas)

    def model(x_t, t):
        abar = col(cf["abar"], t, x_t)
        if mean_type == "epsilon":
            return (x_t - torch.sqrt(abar) * x_start) / torch.sqrt(1 - abar)
        if mean_type == "start_x":
            return x_start
        return col(cf["coef1"], t, x_t) * x_start + col(cf["coef2"], t, x_t) * x_t

    return model


@pytest.mark.parametrize("mean_type", ["epsilon", "start_x", "previous_x"])
def test_oracle_posterior_leaves_only_prior_and_decoder(mean_type):
    T = 7
    betas = get_betas("linear", T, beta_start=0.01, beta_end=0.5)
    post_var = closed_form(betas)["post_var"]
    x_start = torch.randn(16, 3, dtype=F64, generator=gen(6))
    proc = GaussianDiffusion(betas, mean_type=mean_type, var_type="fixed_small", decoder="gaussian")
    out = proc.bound_terms(posterior_oracle(betas, x_start, mean_type), x_start, generator=gen(7))
    assert out.terms.shape == (16, T) and out.extras["eps_mse"].shape == (16, T)
    assert out.terms[:, 1:].abs().max().item() < 1e-9
    torch.testing.assert_close(out.total, out.prior + out.terms.sum(1))
    torch.testing.assert_close(out.total, proc.prior_kl_nats(x_start) + out.terms[:, 0])
    # μ̃ at t = 1 is x_0 itself, and σ² there is the clipped β̃_2: L_0 = D/2 · log(2π β̃_2)
    expected_l0 = torch.full((16,), 3 * 0.5 * math.log(2 * math.pi * post_var[1]), dtype=F64)
    torch.testing.assert_close(out.terms[:, 0], expected_l0)
    if mean_type == "epsilon":
        assert out.extras["eps_mse"].max().item() < 1e-12


def test_discretized_decoder_term_of_the_oracle():
    betas = get_betas("linear", 4, beta_start=0.001, beta_end=0.3)
    sigma = math.sqrt(closed_form(betas)["post_var"][1])
    pixels = torch.tensor([[0, 3, 128, 255], [255, 254, 1, 77]], dtype=F64)
    x_start = pixels / 127.5 - 1
    proc = GaussianDiffusion(betas, mean_type="start_x", var_type="fixed_small")
    out = proc.bound_terms(posterior_oracle(betas, x_start, "start_x"), x_start, generator=gen(8))

    def cdf(z):
        return 0.5 * (1 + math.erf(z / math.sqrt(2)))

    half = 1 / 255
    expected = []
    for row in pixels.tolist():
        logp = 0.0
        for v in row:  # the mean sits exactly on the value; the outer bins are open
            upper = 1.0 if v == 255 else cdf(half / sigma)
            lower = 0.0 if v == 0 else cdf(-half / sigma)
            logp += math.log(upper - lower)
        expected.append(-logp)
    torch.testing.assert_close(out.terms[:, 0], torch.tensor(expected, dtype=F64))


@pytest.mark.parametrize("mean", [-1.0, -0.3, 0.5, 1.2])
@pytest.mark.parametrize("scale", [0.001, 0.05, 1.0])
def test_discretized_decoder_probabilities_sum_to_one(mean, scale):
    bins = torch.arange(256, dtype=F64) / 127.5 - 1
    logp = discretized_gaussian_log_likelihood(bins, torch.full_like(bins, mean),
                                               torch.full_like(bins, math.log(scale)))
    assert torch.exp(logp).sum().item() == pytest.approx(1.0, abs=1e-6)


def test_bound_terms_is_deterministic_given_a_generator():
    betas = get_betas("linear", 6, beta_start=0.05, beta_end=0.5)
    proc = GaussianDiffusion(betas, decoder="gaussian")
    model = RandomEpsModel(6, 2, seed=9)
    x_start = torch.randn(5, 2, dtype=F64, generator=gen(10))
    a = proc.bound_terms(model, x_start, generator=gen(11))
    b = proc.bound_terms(model, x_start, generator=gen(11))
    c = proc.bound_terms(model, x_start, generator=gen(12))
    assert torch.equal(a.terms, b.terms) and not torch.equal(a.terms, c.terms)


@pytest.mark.parametrize("mean_type", ["epsilon", "start_x", "previous_x"])
def test_simple_loss_is_mse_on_the_mean_target(mean_type):
    betas = get_betas("linear", 9, beta_start=0.02, beta_end=0.4)
    cf = closed_form(betas)
    model = RandomEpsModel(9, 2, seed=13)
    g = gen(14)
    x_start = torch.randn(8, 2, dtype=F64, generator=g)
    noise = torch.randn(8, 2, dtype=F64, generator=g)
    t = torch.randint(0, 9, (8,), generator=g)
    proc = GaussianDiffusion(betas, mean_type=mean_type, decoder="gaussian")
    with torch.no_grad():
        losses = proc.training_losses(model, x_start, t, noise)
        abar = col(cf["abar"], t, x_start)
        x_t = torch.sqrt(abar) * x_start + torch.sqrt(1 - abar) * noise
        target = {"epsilon": noise, "start_x": x_start,
                  "previous_x": col(cf["coef1"], t, x_t) * x_start + col(cf["coef2"], t, x_t) * x_t}
        expected = ((target[mean_type] - model(x_t, t)) ** 2).mean(1)
    torch.testing.assert_close(losses["loss"], expected)
    torch.testing.assert_close(losses["mse"], expected)


def test_kl_loss_is_the_scaled_closed_form_kl():
    T, dim = 9, 2
    betas = get_betas("linear", T, beta_start=0.02, beta_end=0.4)
    cf = closed_form(betas)
    model = RandomEpsModel(T, dim, seed=15)
    g = gen(16)
    x_start = torch.randn(8, dim, dtype=F64, generator=g)
    noise = torch.randn(8, dim, dtype=F64, generator=g)
    t = torch.randint(1, T, (8,), generator=g)
    proc = GaussianDiffusion(betas, var_type="fixed_large", loss_type="kl", decoder="gaussian")
    with torch.no_grad():
        loss = proc.training_losses(model, x_start, t, noise)["loss"]
        abar, beta = col(cf["abar"], t, x_start), col(betas, t, x_start)
        x_t = torch.sqrt(abar) * x_start + torch.sqrt(1 - abar) * noise
        mu_q = col(cf["coef1"], t, x_t) * x_start + col(cf["coef2"], t, x_t) * x_t
        var_q = col(cf["post_var"], t, x_t)
        mu_p = (x_t - beta / torch.sqrt(1 - abar) * model(x_t, t)) / torch.sqrt(1 - beta)
        kl = (0.5 * (torch.log(beta / var_q) + var_q / beta - 1) + (mu_q - mu_p) ** 2 / (2 * beta))
    torch.testing.assert_close(loss, kl.sum(1) * T / (dim * math.log(2)))


class TwoHeadModel(torch.nn.Module):
    """ε = x·a, v = tanh(c): separate parameters for the mean and the variance heads."""

    def __init__(self):
        super().__init__()
        self.a = torch.nn.Parameter(torch.tensor(0.3, dtype=F64))
        self.c = torch.nn.Parameter(torch.tensor(0.2, dtype=F64))

    def forward(self, x, t):
        return torch.cat([x * self.a, torch.tanh(self.c).expand_as(x)], dim=1)


def test_hybrid_loss_adds_lambda_vb_with_a_stop_gradient_mean():
    betas = get_betas("linear", 9, beta_start=0.02, beta_end=0.4)
    g = gen(17)
    x_start = torch.randn(8, 2, dtype=F64, generator=g)
    noise = torch.randn(8, 2, dtype=F64, generator=g)
    t = torch.randint(0, 9, (8,), generator=g)
    hybrid = GaussianDiffusion(betas, var_type="learned_range", loss_type="hybrid",
                               decoder="gaussian")
    kl = GaussianDiffusion(betas, var_type="learned_range", loss_type="kl", decoder="gaussian")
    model = TwoHeadModel()
    losses = hybrid.training_losses(model, x_start, t, noise)
    vb = kl.training_losses(model, x_start, t, noise)["loss"]
    torch.testing.assert_close(losses["vb"], vb)
    torch.testing.assert_close(losses["loss"], losses["mse"] + 0.001 * vb)
    losses["loss"].sum().backward()
    grad_a, grad_c = model.a.grad.clone(), model.c.grad.clone()
    model.zero_grad()
    losses = hybrid.training_losses(model, x_start, t, noise)
    losses["mse"].sum().backward()
    torch.testing.assert_close(grad_a, model.a.grad)  # the vb part sends nothing to the mean
    assert model.c.grad is None or model.c.grad.item() == 0.0
    assert grad_c.abs().item() > 0  # but it trains the variance
