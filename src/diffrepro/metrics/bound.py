"""The bound's evaluation and the baselines it is set beside, on the same test data and in the same units.

- `evaluate_bound`: a process's BoundResult over a data set, batched (every term, prior, extras);
- `rate_distortion`: DDPM's progressive-coding view of the terms;
- baselines, log-likelihood per example in nats: `l_null_nats` (SD-2015's L_null: an isotropic
  Gaussian, or independent Bernoullis for bits) and `categorical_nats` (an independent per-pixel
  categorical over the data's quantisation levels, fitted on the training split with add-one
  smoothing: the trivial model any image bound must beat).
"""
from __future__ import annotations

import logging

import numpy as np
import torch

from ..diffusion.likelihood import UNITS, discretized_gaussian_log_likelihood, to_bits
from ..runtime import ChunkClock, progress

LOG = logging.getLogger("diffrepro.bound")


def bound_unit(data_type: str, data_map, example_shape) -> tuple:
    """(unit, to_unit): the unit a run's bound is stated in and nats per example -> that unit. Images:
    bits/dim (DDPM's discretised decoder), or bits/pixel of the dequantised unit-variance density for a
    data set of SD-2015's image convention (the colour channels of a pixel summed); points: bits per
    example; binary sequences: bits per sequence."""
    dims = int(np.prod(example_shape))
    if data_map is not None and data_map.continuous:
        pixels = int(np.prod(example_shape[1:]))
        return "bits/pixel", lambda nats: to_bits(nats, "points", 1) / pixels
    return UNITS[data_type], lambda nats: to_bits(nats, data_type, dims)


def l_null_nats(x_train: np.ndarray, x_eval: np.ndarray, data_type: str, levels: int = 256) -> np.ndarray:
    """Per-example log-likelihood (nats) of the baseline SD-2015 compares with: independent
    Bernoullis for binary data, else an isotropic Gaussian fitted to the training data — for images
    integrated over each pixel's bin (`levels` of them), the same discretisation the bound uses."""
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
    return discretized_gaussian_log_likelihood(xe, mean.expand_as(xe), log_scale.expand_as(xe),
                                               bins=levels).sum(dim=1).numpy()


@torch.no_grad()
def evaluate_bound(process, model, x: np.ndarray, *, batch_size: int, seed: int, device, desc=None,
                   parts=None, label: str = "bound") -> dict:
    """The process's BoundResult over all examples, batched, as float64 numpy: prior [N], terms
    [N x T], total [N] (nats) and every per-example extra the process adds (eps_mse, k_paper, ...)."""
    found = bound_batches(process, model, x, batch_size=batch_size, seed=seed, device=device, desc=desc,
                          parts=parts, label=label)
    return join_results(list(found.values()))


@torch.no_grad()
def bound_batches(process, model, x: np.ndarray, *, batch_size: int, seed: int, device, desc=None,
                  parts=None, label: str = "bound", batches: list | None = None) -> dict:
    """{batch index: {prior, terms, total, extras...} as float64 CPU tensors} of `evaluate_bound`.

    Batch j draws from its own generator seeded from `seed` and j (runs/shards.py), so any subset of
    batches (`batches`: their indices, default all)
    gives the numbers the whole loop gives them: a shard of the nll stage computes its own.
    `parts` (a resume.Parts): each finished batch is saved, and a re-run computes only the others.
    A non-finite bound stops with a RuntimeError naming `label` and the example; nothing after it is
    computed."""
    from ..runs.shards import Batches, batch_generator
    from ..runs.slicing import for_evaluation

    model = for_evaluation(model, device, x.shape[1:])  # cache-sized slices on the CPU, the same numbers
    plan = Batches(len(x), batch_size)
    indices = list(range(plan.count)) if batches is None else list(batches)
    done = {j: part["result"] for j, part in parts.done(indices, label).items()} if parts is not None else {}
    todo = [j for j in indices if j not in done]
    bar = progress(total=sum(plan.size(j) for j in indices), desc=desc, enabled=desc is not None, unit="example")
    bar.update(sum(plan.size(j) for j in done))
    clock = ChunkClock(f"{label}: the bound", len(todo), "examples") if desc is not None else None
    for j in todo:
        start, stop = plan.bounds(j)
        xb = torch.as_tensor(x[start:stop], device=device)
        res = process.bound_terms(model, xb, generator=batch_generator(seed, j, device))
        if not bool(torch.isfinite(res.total).all()):
            bad = start + int((~torch.isfinite(res.total)).nonzero()[0, 0])
            raise RuntimeError(f"{label}: the bound is {float(res.total.flatten()[bad - start])} for test example "
                               f"{bad} (batch {j + 1}); no metrics are written")
        done[j] = {k: v.double().cpu() for k, v in
                   {"prior": res.prior, "terms": res.terms, "total": res.total, **res.extras}.items()}
        if parts is not None:
            parts.save(j, {"result": done[j]})
        bar.update(len(xb))
        if clock is not None:
            clock.done(len(xb))
    bar.close()
    return {j: done[j] for j in indices}


def join_results(results: list) -> dict:
    """Per-batch results ({name: tensor [b x ...]}) joined in order, as numpy."""
    return {k: torch.cat([r[k] for r in results]).numpy() for k in results[0]}


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


def to_levels(x: np.ndarray, levels: int) -> np.ndarray:
    """Images in [-1, 1] -> their level indices 0..levels-1 (the inverse of 2v/(levels-1) - 1)."""
    return np.clip(np.rint((np.asarray(x, np.float64) + 1.0) * (levels - 1) / 2.0), 0, levels - 1).astype(np.int64)


def categorical_nats(x_train: np.ndarray, x_eval: np.ndarray, levels: int) -> np.ndarray:
    """Per-example log-likelihood (nats) under independent per-pixel categoricals over `levels`
    values, fitted on x_train with add-one smoothing: p_d(v) = (count_d(v) + 1) / (N + levels)."""
    train = to_levels(x_train, levels).reshape(len(x_train), -1)
    test = to_levels(x_eval, levels).reshape(len(x_eval), -1)
    dims = train.shape[1]
    counts = np.zeros((dims, levels))
    np.add.at(counts, (np.broadcast_to(np.arange(dims), train.shape), train), 1.0)
    log_p = np.log(counts + 1.0) - np.log(len(train) + levels)
    return log_p[np.arange(dims)[None, :], test].sum(axis=1)
