"""Multiplying the model by r(x) (SD-2015 §2.5): denoising lands on the true posterior p(x_0) r(x_0)."""
import math

import pytest
import torch

from diffrepro.diffusion.binomial import BinomialDiffusion
from diffrepro.diffusion.gaussian import GaussianDiffusion
from diffrepro.diffusion.protocol import GaussianReverse, ReverseStep
from diffrepro.diffusion.schedules import get_betas
from diffrepro.runs.sampling import RSchedule, denoise

from .test_sampling import gaussian_data_eps_model


def gen(seed):
    return torch.Generator().manual_seed(seed)


class LinearGaussianProcess(GaussianReverse):
    """A reverse process with p(x_i | x_{i+1}) = N(a_i x_{i+1} + b_i, c_i) and a N(0, 1) prior."""

    def __init__(self, a, b, c):
        super().__init__()
        self.a, self.b, self.c = (torch.as_tensor(v, dtype=torch.float64) for v in (a, b, c))
        self.num_timesteps = len(a)

    def prior_sample(self, shape, generator, device):
        return torch.randn(shape, generator=generator, dtype=torch.float64)

    def reverse_step(self, model, x_t, t, clip_denoised=None):
        return ReverseStep(mean=self.a[t][:, None] * x_t + self.b[t][:, None],
                           log_variance=torch.log(self.c[t])[:, None].expand_as(x_t))


def procedure_moments(proc, y, sigma, schedule):
    """Mean and variance of what `denoise` draws, by propagating the Gaussian through each step."""
    T = proc.num_timesteps
    w = schedule.exponent(T, T)
    prec = 1.0 + w / sigma ** 2
    m, v = (w * y / sigma ** 2) / prec, 1.0 / prec
    for i in range(T - 1, -1, -1):
        a, b, c = proc.a[i].item(), proc.b[i].item(), proc.c[i].item()
        w = schedule.exponent(i, T)
        vt = 1.0 / (1.0 / c + w / sigma ** 2)
        m = vt * ((a * m + b) / c + w * y / sigma ** 2)
        v = (vt * a / c) ** 2 * v + (vt if i > 0 else 0.0)
    return m, v


@pytest.mark.parametrize("schedule", ["constant", "annealed"])
def test_gaussian_denoising_draws_the_perturbed_kernels_product(schedule):
    """Each step is N(mean, var) times r(x)^w renormalised (SD-2015 eq. 16-17): the whole chain is
    linear-Gaussian, so its output moments are known in closed form."""
    g = torch.Generator().manual_seed(0)
    T = 30
    proc = LinearGaussianProcess(0.9 + 0.1 * torch.rand(T, generator=g), 0.1 * torch.randn(T, generator=g),
                                 0.01 + 0.05 * torch.rand(T, generator=g))
    sigma, y_value, n = 0.5, 1.5, 40_000
    x = denoise(proc, None, torch.full((n, 1), y_value, dtype=torch.float64), sigma, generator=gen(1),
                schedule=schedule, progress=False)
    m, v = procedure_moments(proc, y_value, sigma, RSchedule.from_str(schedule))
    assert x.mean().item() == pytest.approx(m, abs=4 * math.sqrt(v / n) + 1e-9)
    assert x.var().item() == pytest.approx(v, rel=0.05)


def test_gaussian_denoising_pulls_toward_the_posterior():
    """Exact model of x_0 ~ N(0, 1): the denoised mean lies between the prior mean and y, and its
    error to the true posterior mean (1.2) is the paper's approximation, well under the prior's."""
    betas = get_betas("linear", 200, beta_start=1e-4, beta_end=0.1)
    proc = GaussianDiffusion(betas, var_type="fixed_small", decoder="gaussian")
    x = denoise(proc, gaussian_data_eps_model(betas, 0.0, 1.0), torch.full((4000, 1), 1.5), 0.5,
                generator=gen(0), schedule="constant", progress=False)
    assert 1.0 < x.mean().item() < 1.45
    assert x.std().item() < 0.6


def test_r_schedule_exponents():
    assert RSchedule.from_str("annealed").exponent(0, 10) == 1.0
    assert RSchedule.from_str("annealed").exponent(10, 10) == 0.0
    assert RSchedule.from_str("constant").exponent(7, 10) == 1.0
    with pytest.raises(ValueError, match="constant, annealed"):
        RSchedule.from_str("sometimes")


def test_binomial_denoising_with_a_perfect_observation_returns_it():
    """r that trusts the observation fully (flip probability ~0) makes every bit equal y."""
    proc = BinomialDiffusion(num_timesteps=50, p=0.5)
    y = (torch.rand(64, 20, generator=gen(1)) < 0.3).float()
    model = lambda x, t: torch.zeros_like(x)  # noqa: E731  (an uninformative x0 predictor)
    x = denoise(proc, model, y, 1e-9, generator=gen(2), schedule="constant", progress=False)
    assert torch.equal(x, y)
    # a flip probability of 1/2 is no information: the result is a sample of the model, not y
    x_free = denoise(proc, model, y, 0.5, generator=gen(2), schedule="constant", progress=False)
    assert (x_free != y).float().mean().item() == pytest.approx(0.5, abs=0.08)
