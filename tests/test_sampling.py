"""Tests for the sampling and inpainting loops (with DDPM and with a recording fake process)."""
import math

import numpy as np
import pytest
import torch

from diffrepro.diffusion.binomial import BinomialDiffusion
from diffrepro.diffusion.gaussian import GaussianDiffusion
from diffrepro.diffusion.protocol import DiffusionProcess
from diffrepro.diffusion.schedules import get_betas
from diffrepro.runs.sampling import InpaintMode, inpaint, randn, sample


def gen(seed):
    return torch.Generator().manual_seed(seed)


def gaussian_data_eps_model(betas, mean, std):
    """The exact E[ε | x_t] when x_0 ~ N(mean, std²) per coordinate."""
    abar = np.cumprod(1.0 - np.asarray(betas))

    def model(x_t, t):
        a = torch.as_tensor(abar, dtype=x_t.dtype)[t].reshape(-1, *[1] * (x_t.dim() - 1))
        return torch.sqrt(1 - a) / (a * std ** 2 + 1 - a) * (x_t - torch.sqrt(a) * mean)

    return model


def test_sample_is_deterministic_given_a_seed():
    proc = GaussianDiffusion(get_betas("linear", 20, beta_end=0.2))
    model = gaussian_data_eps_model(proc.consts.betas, 0.0, 1.0)
    a = sample(proc, model, (4, 3), gen(0), progress=True)
    b = sample(proc, model, (4, 3), gen(0), progress=False)
    c = sample(proc, model, (4, 3), gen(1), progress=False)
    assert a.shape == (4, 3) and a.dtype == torch.float32
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_sampling_with_the_exact_model_recovers_gaussian_data():
    betas = get_betas("linear", 200, beta_start=1e-4, beta_end=0.1)
    proc = GaussianDiffusion(betas, var_type="fixed_small", decoder="gaussian")
    mean, std, n = 2.0, 0.5, 20_000
    x = sample(proc, gaussian_data_eps_model(betas, mean, std), (n, 1), gen(2), progress=False)
    assert abs(x.mean().item() - mean) < 0.03
    assert x.std().item() == pytest.approx(std, rel=0.05)


class RecordingProcess(DiffusionProcess):
    """A fake process: q_sample marks its step (x + 100·(t+1)), p_sample records and keeps x."""

    num_timesteps = 4

    def __init__(self):
        super().__init__()
        self.calls = []

    def prior_sample(self, shape, generator, device):
        return torch.zeros(shape, device=device)

    def q_sample(self, x_start, t, noise=None, generator=None):
        return x_start + 100.0 * (t.reshape(-1, 1) + 1)

    def p_sample(self, model, x_t, t, generator=None, clip_denoised=None):
        self._check_clip(clip_denoised, "RecordingProcess")
        self.calls.append((int(t[0]), x_t.clone()))
        return x_t - 1.0


def test_noised_inpainting_holds_known_values_at_the_current_noise_level():
    proc = RecordingProcess()
    x_known = torch.tensor([[5.0, 7.0], [-3.0, 1.0]])
    mask = torch.tensor([1.0, 0.0])
    out = inpaint(proc, None, x_known, mask, gen(0), mode="noised", progress=False)
    assert [i for i, _ in proc.calls] == [3, 2, 1, 0]
    for i, x_t in proc.calls:
        # known coordinates entering step i are a draw of q(x_i | x_known) (here, the marker)
        torch.testing.assert_close(x_t[:, 0], x_known[:, 0] + 100.0 * (i + 1))
    torch.testing.assert_close([x for _, x in proc.calls][-1][:, 1], torch.full((2,), -3.0))
    torch.testing.assert_close(out[:, 0], x_known[:, 0])
    torch.testing.assert_close(out[:, 1], torch.full((2,), -4.0))


def test_clamped_inpainting_never_lets_known_values_move():
    proc = RecordingProcess()
    x_known = torch.tensor([[5.0, 7.0], [-3.0, 1.0]])
    mask = torch.tensor([[0, 1], [1, 0]])
    out = inpaint(proc, None, x_known, mask, gen(0), mode="clamped", progress=False)
    for _, x_t in proc.calls:
        assert torch.equal(x_t[mask.bool()], x_known[mask.bool()])
    assert torch.equal(out[mask.bool()], x_known[mask.bool()])
    assert torch.equal(out[~mask.bool()], torch.full((2,), -4.0))


@pytest.mark.parametrize("mode", ["noised", "clamped"])
def test_ddpm_inpainting_keeps_known_pixels_and_fills_the_rest(mode):
    proc = GaussianDiffusion(get_betas("linear", 30, beta_end=0.3), clip_denoised=True)
    model = gaussian_data_eps_model(proc.consts.betas, 0.0, 0.5)
    x_known = torch.rand(3, 1, 4, 4, generator=gen(3)) * 2 - 1
    mask = torch.zeros(1, 1, 4, 4)
    mask[..., :, :2] = 1
    a = inpaint(proc, model, x_known, mask, gen(4), mode=mode, progress=False)
    b = inpaint(proc, model, x_known, mask, gen(4), mode=mode, progress=False)
    assert torch.equal(a, b)
    assert torch.equal(a[..., :2], x_known[..., :2])
    assert not torch.allclose(a[..., 2:], x_known[..., 2:])


def test_inpaint_mode_lookup():
    assert InpaintMode.from_str("Clamped") is InpaintMode.CLAMPED
    with pytest.raises(ValueError, match="allowed: noised, clamped"):
        InpaintMode.from_str("repaint")


def test_randn_follows_the_generator_and_lands_on_the_device():
    x = randn((3, 2), gen(5), "cpu", torch.float64)
    assert torch.equal(x, torch.randn(3, 2, generator=gen(5), dtype=torch.float64))
    # a generator on another device draws there and the result is moved (here to "meta")
    y = randn((3, 2), gen(5), "meta")
    assert y.device.type == "meta" and y.shape == (3, 2)
    assert math.isfinite(randn((1,), None, None).item())


def test_clip_denoised_reaches_p_sample_when_the_process_has_it():
    proc = GaussianDiffusion(get_betas("linear", 5, beta_end=0.2), mean_type="start_x")
    three = lambda x, t: torch.full_like(x, 3.0)  # noqa: E731
    # the last step's mean is the predicted x_0 itself (μ̃ at t = 1 is x_0)
    assert torch.all(sample(proc, three, (2, 3), gen(6), progress=False) == 3)
    assert torch.all(sample(proc, three, (2, 3), gen(6), progress=False, clip_denoised=True) == 1)
    x_known, mask = torch.zeros(2, 3), torch.tensor([1.0, 0.0, 0.0])
    filled = inpaint(proc, three, x_known, mask, gen(7), progress=False, clip_denoised=True)
    assert torch.all(filled[:, 1:] == 1) and torch.all(filled[:, 0] == 0)
    # a process with no predicted x0 (SD-2015's): False is what it does anyway, True is an error
    assert sample(RecordingProcess(), None, (2, 2), gen(8), progress=False,
                  clip_denoised=False).shape == (2, 2)
    with pytest.raises(ValueError, match="clip_denoised"):
        sample(RecordingProcess(), None, (2, 2), gen(8), progress=False, clip_denoised=True)
    with pytest.raises(ValueError, match="clip_denoised"):
        sample(BinomialDiffusion(3), lambda x, t: torch.zeros_like(x), (2, 2), gen(8), progress=False,
               clip_denoised=True)
