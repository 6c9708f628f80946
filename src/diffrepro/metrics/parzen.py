"""Parzen-window log-likelihood of a test set under a model's samples (SD-2015 Table 2's MNIST figure).

The protocol is Goodfellow et al. 2014 ("Generative Adversarial Nets", section 5), which SD-2015
follows: put an isotropic Gaussian kernel of width σ on each of N model samples, pick σ from a grid
by the mean log-likelihood of a validation split of the *training* set, and report the mean
log-likelihood of the test set with its standard error, per example (not per dimension), on pixels
in [0, 1]. The GAN paper's MNIST 225 ± 2 nats is SD-2015's 325 bits; SD-2015's diffusion model gets
317 ± 2.7 bits, the same estimate with training images as kernels 349 bits.

The functions here take arrays of any range (the tests use Gaussians in R^D); for the paper's
protocol give them [0, 1] pixels: this project stores images in the model range [-1, 1]
(io.load_data), and `unit_pixels` maps them there.

Caveat (Theis, van den Oord & Bethge 2016, "A note on the evaluation of generative models"):
Parzen estimates in high dimensions are far from the model's true log-likelihood and can rank
models wrongly (a model that memorises its training set scores well).

Everything is float64 and in nats; `parzen_bits` converts to bits (diffusion/likelihood.py's `nats_to_bits`).
"""
from __future__ import annotations

import math

import numpy as np
import torch

from ..diffusion.likelihood import nats_to_bits

# Goodfellow et al.'s parzen_ll.py defaults: σ on numpy.logspace(-1, 0, 10) ([0, 1] pixels), chosen on
# 1,000 validation images (MNIST train[50000:51000]), kernels on 10,000 samples, the whole test set
SIGMA_GRID = tuple(float(s) for s in np.logspace(-1.0, 0.0, 10))
CHUNK_M = 256     # test examples per block
CHUNK_N = 4096    # kernels per block: a block's distances are CHUNK_M x CHUNK_N float64 (8 MiB)


def unit_pixels(x) -> np.ndarray:
    """Images in the model range [-1, 1] (any shape `[N x ...]`) -> float64 `[N x D]` in [0, 1], the
    Parzen protocol's pixels: (x + 1) / 2. Values outside the range (unclipped samples) stay outside."""
    x = np.asarray(x, dtype=np.float64)
    return ((x + 1.0) / 2.0).reshape(len(x), -1)


def _rows(a, device) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(a), dtype=torch.float64, device=device)
    return t.reshape(len(t), -1)


def parzen_log_likelihoods(samples, x, sigmas, *, chunk_m: int = CHUNK_M, chunk_n: int = CHUNK_N,
                           device="cpu") -> np.ndarray:
    """log p_σ(x_j) = log (1/N) Σ_i N(x_j; s_i, σ² I) in nats, for every σ in `sigmas`.

    samples: `[N x D]` kernel centres; x: `[M x D]` points; returns `[S x M]` float64 (S = len(sigmas)).
    Squared distances are computed block by block (chunk_m points x chunk_n kernels) and reduced by
    a log-sum-exp per block, then across blocks, so memory does not grow with N or M.
    """
    s, xs = _rows(samples, device), _rows(x, device)
    if s.shape[1] != xs.shape[1]:
        raise ValueError(f"samples have {s.shape[1]} dimensions per example, x has {xs.shape[1]}")
    if len(s) == 0 or len(xs) == 0:
        raise ValueError(f"need at least one sample and one point; got {len(s)} samples, {len(xs)} points")
    sigmas = [float(v) for v in sigmas]
    if not sigmas or min(sigmas) <= 0:
        raise ValueError(f"bandwidths must be positive; got {sigmas}")
    centre = s.mean(0)  # distances do not change; centring keeps ||a||² + ||b||² − 2a·b accurate
    s, xs = s - centre, xs - centre
    n, dims = s.shape
    s_sq = (s * s).sum(1)
    scale = torch.tensor([-0.5 / v ** 2 for v in sigmas], dtype=torch.float64, device=s.device)
    log_norm = torch.tensor([-math.log(n) - 0.5 * dims * math.log(2 * math.pi * v ** 2) for v in sigmas],
                            dtype=torch.float64, device=s.device)
    out = torch.empty(len(sigmas), len(xs), dtype=torch.float64, device=s.device)
    for m0 in range(0, len(xs), chunk_m):
        xc = xs[m0:m0 + chunk_m]
        x_sq = (xc * xc).sum(1)
        blocks = []  # per kernel block: [S x m] log-sum-exp over that block
        for n0 in range(0, n, chunk_n):
            d2 = (x_sq[:, None] + s_sq[None, n0:n0 + chunk_n] - 2.0 * xc @ s[n0:n0 + chunk_n].T).clamp_min_(0.0)
            blocks.append(torch.stack([torch.logsumexp(d2 * c, dim=1) for c in scale]))
        out[:, m0:m0 + chunk_m] = torch.logsumexp(torch.stack(blocks, dim=2), dim=2) + log_norm[:, None]
    return out.cpu().numpy()


def parzen_log_likelihood(samples, x, sigma: float, **blocks) -> np.ndarray:
    """Per-example log p_σ(x) in nats, `[M]`, under Gaussian kernels of width σ on `samples` `[N x D]`
    (x: `[M x D]`; blocks: chunk_m, chunk_n, device as in `parzen_log_likelihoods`)."""
    return parzen_log_likelihoods(samples, x, [sigma], **blocks)[0]


def select_bandwidth(samples, x_valid, sigmas=SIGMA_GRID, **blocks) -> dict:
    """The σ of the grid with the highest mean validation log-likelihood (the first on a tie).

    Returns {"sigma", "sigmas", "valid_ll_nats" (mean per σ, in nats), "at_grid_edge" (the best σ is the
    grid's smallest or largest: the optimum may lie outside it)}."""
    sigmas = [float(v) for v in sigmas]
    valid = parzen_log_likelihoods(samples, x_valid, sigmas, **blocks).mean(axis=1)
    best = int(np.argmax(valid))
    return {"sigma": sigmas[best], "sigmas": sigmas, "valid_ll_nats": [float(v) for v in valid],
            "at_grid_edge": len(sigmas) > 1 and best in (0, len(sigmas) - 1)}


def parzen_bits(samples, x_valid, x_test, sigmas=SIGMA_GRID, **blocks) -> dict:
    """Goodfellow et al.'s Parzen-window estimate, in bits per example (not per dimension).

    samples `[N x D]` (the kernels: a model's samples, or training images for the "Parzen on training
    samples" baseline), x_valid `[V x D]` (a validation split of the training set, disjoint from any
    training-image kernels), x_test `[M x D]`; for the paper's figure all in [0, 1] (`unit_pixels`).
    Returns {"ll_bits" (mean over the test set), "ll_bits_se" (its standard error), "sigma", "sigmas",
    "valid_ll_bits" (mean per σ), "sigma_at_grid_edge", "n_samples", "n_valid", "n_test"}.
    """
    chosen = select_bandwidth(samples, x_valid, sigmas, **blocks)
    bits = nats_to_bits(np.asarray(parzen_log_likelihood(samples, x_test, chosen["sigma"], **blocks), dtype=np.float64))
    se = float(bits.std(ddof=1) / math.sqrt(len(bits))) if len(bits) > 1 else float("nan")
    return {"ll_bits": float(bits.mean()), "ll_bits_se": se, "sigma": chosen["sigma"], "sigmas": chosen["sigmas"],
            "valid_ll_bits": [float(v) for v in nats_to_bits(np.asarray(chosen["valid_ll_nats"], dtype=np.float64))],
            "sigma_at_grid_edge": chosen["at_grid_edge"],
            "n_samples": int(len(samples)), "n_valid": int(len(x_valid)), "n_test": int(len(x_test))}
