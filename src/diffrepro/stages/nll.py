"""nll: the variational bound on the test set over all T terms, stored term by term.

Images: bits/dim with DDPM's discretised 8-bit decoder. 2-D points: bits per example with a
Gaussian decoder. Binary sequences: bits per sequence. SD-2015 runs also get K = −bound, L_null and
K − L_null in the paper's units.
"""
from __future__ import annotations

import logging
import numpy as np
import pandas as pd
import torch

from .. import families
from ..diffusion.likelihood import discretized_gaussian_log_likelihood, nats_to_bits
from ..io import load_checkpoint, load_npz, save_csv, save_json
from ..plots import bound_terms as plot_terms
from ..runtime import derive_seed, progress
from ..training import load_trained

LOG = logging.getLogger("diffrepro.nll")


def l_null_nats(x_train: np.ndarray, x_eval: np.ndarray, data_type: str) -> np.ndarray:
    """Per-example log-likelihood (nats) of the baseline SD-2015 compares with: independent
    Bernoullis for binary data, else an isotropic Gaussian fitted to the training data — for 8-bit
    images integrated over each pixel's bin, the same discretisation the bound uses."""
    from ..diffusion.binomial import l_null_bernoulli
    from ..diffusion.sd_gaussian import l_null_gaussian

    xt, xe = torch.as_tensor(x_train), torch.as_tensor(x_eval)
    if data_type == "binary":
        return l_null_bernoulli(xt, xe).numpy()
    if data_type != "image":
        return l_null_gaussian(xt, xe).numpy()
    xt, xe = xt.double().reshape(len(xt), -1), xe.double().reshape(len(xe), -1)
    mean = xt.mean(dim=0)
    log_scale = 0.5 * torch.log(((xt - mean) ** 2).mean())  # one variance for all dimensions
    return discretized_gaussian_log_likelihood(xe, mean.expand_as(xe), log_scale.expand_as(xe)).sum(dim=1).numpy()


@torch.no_grad()
def evaluate_bound(process, model, x: np.ndarray, *, batch_size: int, generator, device, desc=None) -> dict:
    """The process's BoundResult over all examples, batched, as float64 numpy: prior [N], terms
    [N x T], total [N] (nats) and every per-example extra the process adds (eps_mse, k_paper, ...)."""
    out = {}
    for i in progress(range(0, len(x), batch_size), desc=desc):
        xb = torch.as_tensor(x[i:i + batch_size], device=device)
        res = process.bound_terms(model, xb, generator=generator)
        for k, v in {"prior": res.prior, "terms": res.terms, "total": res.total, **res.extras}.items():
            out.setdefault(k, []).append(v.double().cpu())
    return {k: torch.cat(v).numpy() for k, v in out.items()}


def rate_distortion(res: dict, alphas_cumprod, to_unit, data_type: str) -> dict:
    """DDPM's progressive-coding view (Ho et al. Fig. 5), one value per t = 1..T.

    rate: what a receiver holds once it has x_t, L_T + Σ_{s>t} L_{s-1} (bits/dim for images);
    distortion: RMSE of x̂_0 predicted from x_t, from the ε-prediction MSE through
    ‖x̂_0 − x_0‖² = (1 − ᾱ_t)/ᾱ_t · ‖ε̂ − ε‖², on the 0–255 scale for images.
    """
    per_t = to_unit(res["terms"]).mean(axis=0)          # [T], index i = L_i
    rate = to_unit(res["prior"]).mean() + np.cumsum(per_t[::-1])[::-1] - per_t  # Σ_{i >= t} L_i, t = 1..T
    mse_x0 = res["eps_mse"].mean(axis=0) * (1.0 - alphas_cumprod) / alphas_cumprod
    scale = 127.5 if data_type == "image" else 1.0
    return {"rate": rate, "distortion": scale * np.sqrt(mse_x0),
            "distortion_unit": "RMSE (0-255)" if data_type == "image" else "RMSE"}


def paper_k(res: dict, data_type: str, to_unit) -> dict:
    """SD-2015's eq. 14 K (it differs from the exact bound per example, see sd_gaussian.py), where it
    is on this file's scale: it is made of differential entropies, so on continuous data only; for
    discretised images (bits/dim of the decoder's bins) it is left out."""
    if "k_paper" not in res or data_type == "image":
        return {}
    return {"K_paper_eq14": float(to_unit(res["k_paper"]).mean())}


def run(args, params, device):
    cfg = params.run(args.run)
    ckpt = load_checkpoint(args.model)
    x_test = load_npz(args.test, "test data")["x"][: cfg.eval.nll_n]
    x_train = load_npz(args.train, "training data")["x"]
    run_cfg, model, process = load_trained(ckpt, device)
    data_type = run_cfg.dataset.data_type
    dims = int(np.prod(x_test.shape[1:]))
    gen = torch.Generator(device=device).manual_seed(derive_seed(params.seed, "nll", cfg.name))
    res = evaluate_bound(process, model, x_test, batch_size=cfg.eval.batch_size, generator=gen, device=device,
                         desc=f"bound {cfg.name}")
    unit = families.unit(data_type)
    to_unit = lambda nats: families.to_bits(nats, data_type, dims)  # noqa: E731
    total = to_unit(res["total"])
    metrics = {
        "unit": unit, "n": int(len(x_test)), "timesteps": int(process.num_timesteps), "dims": dims,
        "nll": float(total.mean()), "nll_stderr": float(total.std(ddof=1) / np.sqrt(len(total))) if len(total) > 1 else 0.0,
        "prior": float(to_unit(res["prior"]).mean()),
        "decoder": float(to_unit(res["terms"][:, 0]).mean()),
        "kl_sum": float(to_unit(res["terms"][:, 1:].sum(axis=1)).mean()),
    }
    # SD-2015's view of the same number: K = −bound, and its gain over the null model
    null = to_unit(l_null_nats(x_train, x_test, data_type))
    metrics["K"] = -metrics["nll"]
    metrics["L_null"] = float(null.mean())
    metrics["K_minus_L_null"] = metrics["K"] - metrics["L_null"]
    metrics.update(paper_k(res, data_type, to_unit))
    metrics.update(families.family(run_cfg.diffusion.family).bound_settings(run_cfg))
    terms = pd.DataFrame({"t": np.arange(1, res["terms"].shape[1] + 1), "term": to_unit(res["terms"]).mean(axis=0)})
    rd = None
    if "eps_mse" in res:  # processes that predict ε: DDPM's progressive-coding view
        rd = rate_distortion(res, process.signal_fraction(), to_unit, data_type)
        terms["rate"], terms["distortion"] = rd["rate"], rd["distortion"]
    save_csv(args.terms, terms)
    plot_terms(args.plot, terms["t"], terms["term"], unit, f"{cfg.name}: bound terms (L_0 at t=1)",
               rate_distortion=None if rd is None else (rd["rate"], rd["distortion"], rd["distortion_unit"]))
    save_json(args.metrics, metrics)
    LOG.info("%s: bound %.4f %s (prior %.2e, decoder %.4f, KL sum %.4f)", cfg.name, metrics["nll"], unit,
             metrics["prior"], metrics["decoder"], metrics["kl_sum"])
