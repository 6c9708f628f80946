"""One process protocol: DDPM, SD-2015 Gaussian and SD-2015 binomial offer the same methods with the
same signatures and typed results, and the code that uses them never asks which family it holds."""
from __future__ import annotations

import ast
import inspect

import numpy as np
import pytest
import torch

from diffrepro import build
from diffrepro.config import DiffusionConfig
from diffrepro.diffusion.families import FAMILIES
from diffrepro.diffusion.protocol import BoundResult, DiffusionProcess, ReverseStep

from .conftest import ROOT

PROTOCOL = [name for name, member in vars(DiffusionProcess).items()
            if callable(member) and not name.startswith("_")]
CONFIGS = {
    "ddpm": (DiffusionConfig(family="ddpm", timesteps=6, beta_start=0.01, beta_end=0.3), "points"),
    "sd_gaussian": (DiffusionConfig(family="sd_gaussian", timesteps=6, beta_1=0.01, beta_end=0.3), "points"),
    # the §2.6 upper bound needs p between the marginal and 1/2
    "sd_binomial": (DiffusionConfig(family="sd_binomial", timesteps=6, binomial_p=0.5), "binary"),
}


def test_every_family_is_covered():
    assert set(CONFIGS) == set(FAMILIES) == set(build.PROCESSES)


@pytest.mark.parametrize("family", list(CONFIGS))
def test_same_methods_and_signatures(family):
    process = build.build_process(*CONFIGS[family])
    assert isinstance(process, DiffusionProcess) and isinstance(process, torch.nn.Module)
    for name in PROTOCOL:
        impl = getattr(type(process), name)
        base = getattr(DiffusionProcess, name)
        # the base's ᾱ from forward_betas is exact for every process; its respaced/ddim_sample refuse
        # (fast samplers are DDPM's: config.FAST_SAMPLER_FAMILIES)
        if name not in ("signal_fraction", "respaced", "ddim_sample"):
            assert impl is not base, f"{type(process).__name__} does not implement {name}"
        got = list(inspect.signature(impl).parameters)
        want = list(inspect.signature(base).parameters)
        assert got[:len(want)] == want, (name, got, want)
        extra = inspect.signature(impl).parameters
        assert all(extra[p].default is not inspect.Parameter.empty for p in got[len(want):]), name


@pytest.mark.parametrize("family", list(CONFIGS))
def test_typed_results_and_shapes(family):
    diff, data_type = CONFIGS[family]
    process = build.build_process(diff, data_type)
    T, n, d = diff.timesteps, 5, 2
    mult = build.out_mult(diff)

    def model(x, t):  # a fixed, t-dependent network of the family's output shape
        return torch.cat([0.1 * x + 0.01 * t[:, None].to(x.dtype)] * mult, dim=1)

    g = torch.Generator().manual_seed(0)
    x0 = (torch.rand(n, d, generator=g) < 0.5).float() if data_type == "binary" else torch.randn(n, d, generator=g)
    t = torch.full((n,), 3, dtype=torch.long)
    step = process.reverse_step(model, process.q_sample(x0, t, generator=g), t)
    assert isinstance(step, ReverseStep)
    if data_type == "binary":
        torch.testing.assert_close(step.prob_one + step.prob_zero, torch.ones(n, d, dtype=torch.float64))
    else:
        assert step.mean.shape == (n, d) and step.log_variance.shape == (n, d)
    bound = process.bound_terms(model, x0, generator=g)
    assert isinstance(bound, BoundResult)
    assert bound.prior.shape == (n,) and bound.terms.shape == (n, T) and bound.total.shape == (n,)
    torch.testing.assert_close(bound.total, bound.prior + bound.terms.sum(1))
    assert torch.all(bound.prior >= -1e-12)
    assert process.training_loss(model, x0, generator=g).shape == (n,)
    assert process.p_sample(model, x0, t, generator=g).shape == (n, d)
    assert process.prior_sample((n, d), g, torch.device("cpu")).shape == (n, d)
    assert process.prior_kl(x0).shape == (n,)
    betas, abar = process.forward_betas(), process.signal_fraction()
    assert betas.dtype == np.float64 and betas.shape == (T,) and np.all((betas > 0) & (betas <= 1))
    np.testing.assert_allclose(abar, np.cumprod(1 - betas), rtol=1e-12)
    lower, upper = process.entropy_bounds(x0.numpy())
    assert lower.shape == upper.shape == (T,) and np.all(lower <= upper + 1e-12)
    y = x0 if data_type == "binary" else x0 + 0.1
    assert process.multiply_prior(process.prior_sample((n, d), g, None), y, 0.2, 1.0, g).shape == (n, d)
    assert process.multiply_step(model, x0, t, y, 0.2, 1.0, g).shape == (n, d)
    # clip_denoised is DDPM's: False is accepted by everyone, True only where x0 is predicted
    process.p_sample(model, x0, t, generator=g, clip_denoised=False)
    if family != "ddpm":
        with pytest.raises(ValueError, match="clip_denoised"):
            process.reverse_step(model, x0, t, clip_denoised=True)


CONSUMERS = ["src/diffrepro/runs/sampling.py", "src/diffrepro/runs/training.py", "src/diffrepro/runs/checkpoint.py",
             "src/diffrepro/metrics/bound.py",
             *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "src" / "diffrepro" / "stages").glob("*.py"))]


@pytest.mark.parametrize("path", CONSUMERS)
def test_consumers_do_not_branch_on_the_family(path):
    """No isinstance/hasattr on processes and no family names outside the registry
    (diffusion/families.py) and the builder (build.py)."""
    tree = ast.parse((ROOT / path).read_text())
    names = set(FAMILIES)
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("isinstance", "hasattr"):
            text = ast.unparse(node)
            assert "process" not in text and "nn.Module" not in text and "Diffusion" not in text, (path, text)
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            assert node.value not in names, (path, node.value)
    source = (ROOT / path).read_text()
    assert ".family ==" not in source and ".family !=" not in source and ".family in" not in source, path
