"""SD-2015's image convention (convention.py): dequantised, unit-variance data, a continuous first step,
K in bits/pixel, and the dequantisation bound back to the levels' bits/dim."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from diffrepro.config import ParamsError, parse_params
from diffrepro.convention import DataMap
from diffrepro.data.images import levels_to_model_range
from diffrepro.diffusion.sd_gaussian import SDGaussianDiffusion


def quantised_gaussian(n: int, sd_levels: float, seed: int = 0, dims: int = 16):
    """Levels v = round(N(127.5, sd²)) clipped to 0..255, stored as the pipeline stores images, and the
    exact discrete entropy of one such pixel (nats)."""
    rng = np.random.default_rng(seed)
    v = np.clip(np.round(rng.normal(127.5, sd_levels, size=(n, 1, 1, dims))), 0, 255)
    edges = np.arange(-0.5, 256.5)
    cdf = 0.5 * (1 + np.vectorize(math.erf)((edges - 127.5) / (sd_levels * math.sqrt(2))))
    cdf[0], cdf[-1] = 0.0, 1.0  # the clipped tails fall in the end levels
    p = np.diff(cdf)
    p = p[p > 0]
    return levels_to_model_range(v, 256), float(-(p * np.log(p)).sum())


def test_fit_gives_dequantised_data_zero_mean_and_unit_variance():
    x, _ = quantised_gaussian(20_000, 30.0)
    dmap = DataMap.fit("sd2015", x, 256)
    z = dmap.to_process(torch.from_numpy(x), torch.Generator().manual_seed(1)).double()
    assert abs(z.mean().item()) < 0.01 and abs(z.var().item() - 1.0) < 0.01
    assert dmap.continuous and not DataMap.fit("ddpm", x, 256).continuous


def test_the_map_returns_every_level_it_dequantised():
    x, _ = quantised_gaussian(500, 50.0)
    dmap = DataMap.fit("sd2015", x, 256)
    z = dmap.to_process(torch.from_numpy(x), torch.Generator().manual_seed(2))
    assert torch.equal(dmap.from_process(z), torch.from_numpy(x))
    centres = dmap.to_process(torch.from_numpy(x))  # no generator: the bin centres
    u = ((z - centres) * dmap.std).double()  # the dequantisation noise, in levels: U(-½, ½)
    assert torch.all(u.abs() <= 0.5 + 1e-4) and abs(u.var().item() - 1 / 12) < 0.005 and abs(u.mean().item()) < 0.01
    ddpm = DataMap.fit("ddpm", x, 256)
    assert ddpm.to_process(torch.from_numpy(x), torch.Generator()) is not None
    assert torch.equal(ddpm.to_process(torch.from_numpy(x)), torch.from_numpy(x))


def test_oracle_bound_on_dequantised_gaussian_data_is_at_least_its_entropy_and_close():
    """Unit-variance Gaussian data make every marginal of the variance-preserving chain N(0, I), so the
    true reverse kernel is the forward kernel's own form: SD-2015's zero network is the oracle and its
    bound is the cross-entropy of N(0, I). Data: a quantised Gaussian of known discrete entropy H(V),
    dequantised and rescaled as the paper does: H(z) = H(V) − log s per dimension. The bound must not
    fall below it (beyond Monte-Carlo error) and must come close (the gap is KL(p_z ‖ N(0, I)))."""
    x, h_levels = quantised_gaussian(4000, 30.0)
    dmap = DataMap.fit("sd2015", x, 256)
    z = dmap.to_process(torch.from_numpy(x), torch.Generator().manual_seed(3)).double()
    process = SDGaussianDiffusion(num_timesteps=20, beta_1=1e-3, learn_betas=False, beta_end=0.5, decoder="gaussian")

    def oracle(x_t, t):
        return torch.zeros((x_t.shape[0], 2 * x_t.shape[1], *x_t.shape[2:]), dtype=x_t.dtype)

    res = process.bound_terms(oracle, z, generator=torch.Generator().manual_seed(4))
    dims = z[0].numel()
    per_dim = res.total.numpy() / dims
    entropy = h_levels - math.log(dmap.std)  # nats per dimension of z
    mean, se = per_dim.mean(), per_dim.std(ddof=1) / math.sqrt(len(per_dim))
    assert mean >= entropy - 3 * se, (mean, entropy, se)
    assert mean - entropy < 0.01, (mean, entropy)
    # back to the levels: the dequantisation bound is an upper bound on −log P(v), close to H(V)
    levels = dmap.levels_nats(res.total.numpy(), dims) / dims
    assert levels.mean() >= h_levels - 3 * se and levels.mean() - h_levels < 0.01


@pytest.mark.parametrize("mutate, fragments", [
    (lambda r: r["datasets"]["toyroll"].update(image_convention="sd2015"), ["image_convention", "points"]),
    (lambda r: r["datasets"]["tinydigits"].update(image_convention="jpeg"), ["image_convention", "'jpeg'", "sd2015"]),
    (lambda r: (r["datasets"]["tinydigits"].update(image_convention="sd2015"),
                r["runs"]["digits-tiny"]["sample"].update(clip_denoised=True)), ["clip_denoised", "sd2015"]),
])
def test_the_convention_is_refused_where_it_cannot_apply(tiny_raw, mutate, fragments):
    mutate(tiny_raw)
    with pytest.raises(ParamsError) as err:
        parse_params(tiny_raw)
    assert all(f in str(err.value) for f in fragments), str(err.value)


def test_a_dataset_of_the_convention_builds_a_continuous_process(tiny_raw):
    from diffrepro.build import build_process

    tiny_raw["datasets"]["tinydigits"]["image_convention"] = "sd2015"
    tiny_raw["runs"]["digits-tiny"]["sample"]["clip_denoised"] = False
    run = parse_params(tiny_raw).runs["digits-tiny"]
    process = build_process(run.diffusion, run.dataset.data_type, run.dataset.levels, run.dataset.image_convention)
    assert process.decoder.value == "gaussian" and not process.clip_denoised


def test_an_sd2015_run_reports_bits_per_pixel_and_stores_levels(tmp_path):
    """prepare → train → nll → sample → inpaint through the CLI on tiny dead leaves of the convention."""
    import json

    import yaml

    from .conftest import run_cli, stage_args

    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({
        "seed": 0, "threads": 1, "device": "cpu",
        "datasets": {"dl": {"kind": "deadleaves", "n_train": 256, "n_test": 64, "image_size": 8,
                            "image_convention": "sd2015"}},
        "models": {"sd-conv": {"arch": "sd_multiscale", "num_scales": 2, "conv_channels": 8, "conv_layers": 1,
                               "dense_hidden": 8, "dense_layers": 1, "num_bumps": 3}},
        "runs": {"dl-sd": {"dataset": "dl", "model": "sd-conv",
                           "diffusion": {"family": "sd_gaussian", "timesteps": 10, "beta_1": 1.0e-3,
                                         "schedule": "geometric", "beta_end": 0.5},
                           "train": {"steps": 20, "batch_size": 32, "lr": 2.0e-3, "checkpoint_every": 10},
                           "sample": {"n": 16, "batch_size": 16, "clip_denoised": False,
                                      "sampler": "ancestral", "steps": None, "eta": 0.0, "precision": "auto"},
                           "inpaint": {"n": 4, "masks": ["right_half"], "mode": "clamped", "denoise_noise": 0.3},
                           "eval": {"nll_n": 32, "fid_n": 16, "parzen_n": 1000, "batch_size": 32,
                                    "curve_fid_n": 16, "curve_nll_n": 8, "nll_shards": 1}}},
    }))
    run_cli("prepare", *stage_args("prepare", "dl", tmp_path, params), check=True)
    for stage in ("train", "nll", "sample", "inpaint"):
        run_cli(stage, *stage_args(stage, "dl-sd", tmp_path, params), check=True)
    run_dir = tmp_path / "results" / "runs" / "dl-sd"
    nll = json.loads((run_dir / "nll.json").read_text())
    assert nll["unit"] == "bits/pixel" and nll["convention"].startswith("sd2015")
    pixels, dims = 64, nll["dims"]
    implied = (nll["nll"] * pixels + dims * math.log2(nll["pixel_std"])) / dims
    assert nll["nll_levels_bits_per_dim"] == pytest.approx(implied, rel=1e-9)
    assert nll["K"] == pytest.approx(-nll["nll"]) and nll["K_minus_L_null"] == pytest.approx(nll["K"] - nll["L_null"])
    assert nll["L_null"] == pytest.approx(-0.5 * math.log2(2 * math.pi * math.e), abs=0.1)  # unit variance, 1 channel
    assert "K_paper_eq14" in nll and math.isfinite(nll["nll_categorical"])
    samples = np.load(run_dir / "samples.npz")["x"]
    levels = (samples.astype(np.float64) + 1) * 127.5
    assert samples.shape == (16, 1, 8, 8) and np.allclose(levels, np.round(levels), atol=1e-3)
    assert levels.min() >= 0 and levels.max() <= 255
    inpaint = json.loads((run_dir / "inpaint.json").read_text())
    assert inpaint["known_max_abs_err_right_half"] == 0.0 and math.isfinite(inpaint["mse_denoise"])


@pytest.mark.parametrize("convention, unit, shown", [("sd2015", "bits/pixel", True), ("ddpm", "bits/dim", False)])
def test_sd2015_image_figures_stand_beside_ours_only_in_their_units(tiny_raw, convention, unit, shown):
    import pandas as pd

    from diffrepro.stages.report import paper_table

    tiny_raw["datasets"]["leaves"] = {"kind": "deadleaves", "n_train": 8, "n_test": 8, "image_size": 8,
                                      "image_convention": convention}
    tiny_raw["runs"]["leaves-sd"] = {**tiny_raw["runs"]["toyroll-sd"], "dataset": "leaves", "model": "sd-tiny"}
    params = parse_params(tiny_raw)
    frame = pd.DataFrame([{"run": "leaves-sd", "nll.unit": unit, "nll.K": -0.3, "nll.K_minus_L_null": 1.7}])
    table = paper_table(params, frame).set_index("metric")
    assert table.loc["K", "paper"] == 1.489 and table.loc["K_minus_L_null", "paper"] == 3.536
    assert (table.loc["K", "ours"] == -0.3) if shown else pd.isna(table.loc["K", "ours"])
    assert shown or "image_convention: sd2015" in table.loc["K", "source"]
