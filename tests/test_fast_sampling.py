"""Fast samplers for the DDPM family: Improved-DDPM respacing and DDIM, and their params checks."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from diffrepro.config import ParamsError, parse_params
from diffrepro.diffusion.gaussian import GaussianDiffusion, SpacedDiffusion, space_timesteps
from diffrepro.diffusion.schedules import get_betas
from diffrepro.diffusion.sd_gaussian import SDGaussianDiffusion
from diffrepro.runs.sampling import inpaint, reverse_chain, sample

CONSTANTS = ("betas", "alphas_cumprod", "alphas_cumprod_prev", "posterior_variance",
             "posterior_log_variance_clipped", "posterior_mean_coef1", "posterior_mean_coef2", "log_betas")


def gen(seed):
    return torch.Generator().manual_seed(seed)


def gaussian_eps_oracle(process, mean, std):
    """The exact E[ε | x_t] when x_0 ~ N(mean, std²) per coordinate (std = 0: a single point), at the
    process's own indices: a respaced process must call it with the original ones to be right."""
    abar = torch.as_tensor(process.signal_fraction())

    def model(x_t, t):
        a = abar.to(x_t.dtype)[t].reshape(-1, *[1] * (x_t.dim() - 1))
        return torch.sqrt(1 - a) / (a * std ** 2 + 1 - a) * (x_t - torch.sqrt(a) * mean)

    return model


class Recorder:
    """A network that records the step indices it is called with and predicts ε = 0."""

    def __init__(self, out_mult=1):
        self.calls, self.out_mult = [], out_mult

    def __call__(self, x_t, t):
        self.calls.append(t.tolist())
        return torch.zeros(x_t.shape[0], x_t.shape[1] * self.out_mult, *x_t.shape[2:], dtype=x_t.dtype)


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_respacing_with_all_steps_reproduces_the_process(schedule):
    base = GaussianDiffusion(get_betas(schedule, 200), var_type="learned_range", loss_type="hybrid")
    spaced = SpacedDiffusion(base, np.arange(200))
    for name in CONSTANTS:
        np.testing.assert_allclose(getattr(spaced.consts, name), getattr(base.consts, name), rtol=1e-13,
                                   atol=0, err_msg=name)
    assert base.respaced(None) is base and base.respaced(200) is base  # the loops skip the wrapper


@pytest.mark.parametrize("steps", [1, 2, 7, 50, 199])
def test_respaced_alphas_cumprod_are_the_kept_ones(steps):
    base = GaussianDiffusion(get_betas("linear", 200, beta_start=5e-4, beta_end=0.1))
    kept = space_timesteps(200, steps)
    assert len(kept) == steps and np.all(np.diff(kept) > 0) and kept[-1] == 199
    assert steps == 1 or kept[0] == 0
    spaced = base.respaced(steps)
    assert spaced.num_timesteps == steps and spaced.timestep_map.tolist() == kept.tolist()
    abar = spaced.consts.alphas_cumprod
    np.testing.assert_allclose(abar, base.consts.alphas_cumprod[kept], rtol=1e-10)  # float64 sums in another order
    np.testing.assert_allclose(spaced.consts.betas, 1 - abar / np.append(1.0, abar[:-1]), rtol=1e-9)


def test_space_timesteps_refuses_more_steps_than_the_process_has():
    with pytest.raises(ValueError, match="1 to 10"):
        space_timesteps(10, 11)


def test_respacing_a_respaced_process_keeps_the_original_indices():
    base = GaussianDiffusion(get_betas("linear", 100))
    twice = base.respaced(20).respaced(5)
    assert twice.timestep_map.tolist() == space_timesteps(100, 20)[space_timesteps(20, 5)].tolist()
    np.testing.assert_allclose(twice.consts.alphas_cumprod,
                               base.consts.alphas_cumprod[twice.timestep_map.numpy()], rtol=1e-12)


@pytest.mark.parametrize("sampler", ["ancestral", "ddim"])
def test_the_network_is_called_with_the_original_indices(sampler):
    base = GaussianDiffusion(get_betas("linear", 100), decoder="gaussian")
    kept = space_timesteps(100, 6).tolist()
    model = Recorder()
    sample(base, model, (3, 2), gen(0), progress=False, sampler=sampler, steps=6)
    assert model.calls == [[s] * 3 for s in reversed(kept)]
    model = Recorder()
    inpaint(base, model, torch.zeros(3, 2), torch.tensor([1.0, 0.0]), gen(0), progress=False,
            sampler=sampler, steps=6)
    assert model.calls == [[s] * 3 for s in reversed(kept)]
    model = Recorder()
    base.respaced(6).training_losses(model, torch.zeros(2, 2), torch.tensor([0, 5]))
    assert model.calls == [[kept[0], kept[5]]]


def test_learned_range_interpolates_between_the_respaced_variances():
    base = GaussianDiffusion(get_betas("linear", 100), var_type="learned_range", loss_type="hybrid",
                             decoder="gaussian")
    spaced = base.respaced(10)
    x_t, t = torch.zeros(10, 1, dtype=torch.float64), torch.arange(10)
    for v, name in ((1.0, "log_betas"), (-1.0, "posterior_log_variance_clipped")):
        out = spaced.p_mean_variance(lambda x, s: torch.cat([torch.zeros_like(x), torch.full_like(x, v)], 1), x_t, t)
        np.testing.assert_allclose(out["log_variance"][:, 0].numpy(), getattr(spaced.consts, name), rtol=1e-12)
    # the respaced β' are much larger than the base's β at the kept steps: the variance range moved
    assert np.all(spaced.consts.betas[1:] > 5 * base.consts.betas[spaced.timestep_map.numpy()[1:]])


def test_ddim_with_eta_0_is_deterministic():
    base = GaussianDiffusion(get_betas("linear", 100), decoder="gaussian")
    model = gaussian_eps_oracle(base, 1.0, 0.5)
    x_T = torch.randn(64, 2, generator=gen(9))
    outs = []
    for seed in (0, 1):
        process, step = reverse_chain(base, "ddim", steps=10, eta=0.0)
        x, g = x_T.clone(), gen(seed)
        for i in range(process.num_timesteps - 1, -1, -1):
            x = step(model, x, torch.full((64,), i), g)
        outs.append(x)
    assert torch.equal(outs[0], outs[1])
    stochastic = [sample(base, model, (64, 2), gen(0), progress=False, sampler="ddim", steps=10, eta=1.0, )
                  for _ in range(2)]
    assert torch.equal(*stochastic)  # a seed fixes it; η > 0 draws noise
    assert not torch.equal(stochastic[0], sample(base, model, (64, 2), gen(1), progress=False, sampler="ddim",
                                                 steps=10, eta=1.0))


def test_ddim_with_few_steps_lands_on_a_single_point_exactly():
    base = GaussianDiffusion(get_betas("linear", 1000, beta_end=0.02), decoder="gaussian")
    point = torch.tensor([0.3, -1.2])
    model = gaussian_eps_oracle(base, point, 0.0)
    x = sample(base, model, (256, 2), gen(0), progress=False, sampler="ddim", steps=5)
    torch.testing.assert_close(x, point.expand_as(x), rtol=0, atol=1e-5)


def ddim_gaussian_std(alphas_cumprod, kept, std):
    """The std DDIM (η = 0, exact ε) gives N(·, std²) data from x_T ~ N(0, 1): each step is linear,
    x_s = c x_t, c = (sqrt(ᾱ_s ᾱ_t) std² + sqrt((1 − ᾱ_s)(1 − ᾱ_t))) / (ᾱ_t std² + 1 − ᾱ_t); by
    Cauchy–Schwarz it shrinks the variance a little per step, so few steps give too narrow samples."""
    a = np.append(alphas_cumprod[kept][::-1], 1.0)
    c = (np.sqrt(a[1:] * a[:-1]) * std ** 2 + np.sqrt((1 - a[1:]) * (1 - a[:-1]))) / (a[:-1] * std ** 2 + 1 - a[:-1])
    return float(np.prod(c))


@pytest.mark.parametrize("steps, closeness", [(10, 0.30), (50, 0.06), (250, 0.015)])
def test_ddim_with_few_steps_lands_on_gaussian_data(steps, closeness):
    base = GaussianDiffusion(get_betas("linear", 1000, beta_end=0.02), decoder="gaussian")
    mean, std, n = 2.0, 0.5, 20_000
    x = sample(base, gaussian_eps_oracle(base, mean, std), (n, 1), gen(3), progress=False, sampler="ddim",
               steps=steps, eta=0.0)
    assert abs(x.mean().item() - mean) < 0.02
    expected = ddim_gaussian_std(base.consts.alphas_cumprod, space_timesteps(1000, steps), std)
    assert x.std().item() == pytest.approx(expected, rel=0.02)  # the sampler is DDIM's map, no more
    assert expected == pytest.approx(std, rel=closeness)  # which nears the data as the steps grow


@pytest.mark.parametrize("mean_type, clip", [("epsilon", False), ("epsilon", True), ("start_x", True),
                                             ("previous_x", False)])
def test_ddim_with_eta_1_is_the_ancestral_step(mean_type, clip):
    process = GaussianDiffusion(get_betas("linear", 40, beta_end=0.2), mean_type=mean_type,
                                var_type="fixed_small", decoder="gaussian")
    x_t = torch.randn(40, 3, generator=gen(1), dtype=torch.float64)
    t = torch.arange(40)

    def model(x, s):  # any network: a made-up function of x_t and t
        return torch.tanh(1.3 * x) * 0.7 + 0.01 * s[:, None]

    ancestral = process.p_mean_variance(model, x_t, t, clip_denoised=clip)
    ddim = process.ddim_mean_variance(model, x_t, t, eta=1.0, clip_denoised=clip)
    torch.testing.assert_close(ddim["mean"], ancestral["mean"], rtol=1e-9, atol=1e-12)
    # the same variance where the ancestral step adds noise (t ≥ 1); none at t = 0 either way
    torch.testing.assert_close(ddim["variance"][1:], ancestral["variance"][1:], rtol=1e-9, atol=0)
    assert torch.all(ddim["variance"][0] == 0)


def test_ddim_with_eta_1_over_all_steps_samples_as_the_ancestral_sampler():
    process = GaussianDiffusion(get_betas("linear", 100, beta_end=0.1), var_type="fixed_small", decoder="gaussian")
    model = gaussian_eps_oracle(process, 2.0, 0.5)
    ancestral = sample(process, model, (2000, 1), gen(5), progress=False)
    ddim = sample(process, model, (2000, 1), gen(5), progress=False, sampler="ddim", eta=1.0)
    # both draw the same noise in the same order, so the chains agree draw by draw
    torch.testing.assert_close(ddim, ancestral, rtol=1e-4, atol=1e-4)


def test_inpaint_with_ddim_keeps_the_known_values():
    process = GaussianDiffusion(get_betas("linear", 100), decoder="gaussian")
    x_known = torch.randn(16, 4, generator=gen(2))
    mask = torch.tensor([1.0, 1.0, 0.0, 0.0])
    filled = inpaint(process, gaussian_eps_oracle(process, 0.0, 1.0), x_known, mask, gen(0), progress=False,
                     sampler="ddim", steps=10)
    assert torch.equal(filled[:, :2], x_known[:, :2]) and torch.isfinite(filled).all()


def test_sd_processes_refuse_fast_samplers():
    process = SDGaussianDiffusion(num_timesteps=10)
    assert process.respaced(None) is process and process.respaced(10) is process
    with pytest.raises(ValueError, match="ddpm"):
        process.respaced(5)
    with pytest.raises(ValueError, match="ancestral"):
        sample(process, lambda x, t: torch.zeros(x.shape[0], 4), (2, 2), gen(0), progress=False, sampler="ddim")


def _params_error(raw) -> str:
    with pytest.raises(ParamsError) as err:
        parse_params(raw)
    message = str(err.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize("run, sample_keys, must_name", [
    ("toyroll-ddpm", {"steps": 10_000}, ["runs.toyroll-ddpm.sample.steps = 10000", "timesteps", "null"]),
    ("toyroll-ddpm", {"steps": 0}, ["runs.toyroll-ddpm.sample.steps", "minimum of 1"]),
    ("toyroll-ddpm", {"sampler": "ddim", "eta": -0.5}, ["runs.toyroll-ddpm.sample.eta", "-0.5", "minimum of 0"]),
    ("toyroll-ddpm", {"eta": 0.5}, ["runs.toyroll-ddpm.sample.eta = 0.5", "ddim"]),
    ("toyroll-ddpm", {"sampler": "plms"}, ["runs.toyroll-ddpm.sample.sampler", "'plms'", "ancestral, ddim"]),
    ("toyroll-sd", {"sampler": "ddim"},
     ["runs.toyroll-sd.sample.sampler = 'ddim'", "sd_gaussian", "allowed: ancestral"]),
    ("toyroll-sd", {"steps": 5}, ["runs.toyroll-sd.sample.steps = 5", "sd_gaussian", "allowed: null"]),
    ("beat-sd", {"sampler": "ddim"}, ["runs.beat-sd.sample.sampler = 'ddim'", "sd_binomial", "allowed: ancestral"]),
])
def test_bad_sampler_params_name_the_key(tiny_raw, run, sample_keys, must_name):
    tiny_raw["runs"][run].setdefault("sample", {}).update(sample_keys)
    message = _params_error(tiny_raw)
    for fragment in must_name:
        assert fragment in message, (fragment, message)


def test_sampler_params_reach_the_config(tiny_raw):
    run = tiny_raw["runs"]["toyroll-ddpm"]
    run["sample"].update(sampler="ddim", steps=run["diffusion"]["timesteps"] // 4, eta=0.5)
    tiny_raw["runs"]["toyroll-sd"]["sample"].update(steps=tiny_raw["runs"]["toyroll-sd"]["diffusion"]["timesteps"])
    params = parse_params(tiny_raw)
    cfg = params.run("toyroll-ddpm").sample
    assert (cfg.sampler, cfg.steps, cfg.eta) == ("ddim", run["diffusion"]["timesteps"] // 4, 0.5)
    default = params.run("beat-sd").sample
    assert (default.sampler, default.steps, default.eta) == ("ancestral", None, 0.0)
