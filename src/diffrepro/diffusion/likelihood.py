"""Small pure likelihood helpers shared by every diffusion family. All results are in nats."""
from __future__ import annotations

import math

import torch

LOG2 = math.log(2.0)


def nats_to_bits(nats):
    """The one place where nats become bits (a tensor, an array or a number)."""
    return nats / LOG2


UNITS = {"image": "bits/dim", "binary": "bits/seq", "points": "bits/example"}


def to_bits(nats, data_type: str, dims: int):
    """Per-example nats -> the unit each data type reports (`UNITS`): bits/dim for images (over the
    `dims` values of an example), else bits per example."""
    bits = nats_to_bits(nats)
    return bits / dims if data_type == "image" else bits


def mean_flat(x: torch.Tensor) -> torch.Tensor:
    """Mean over all non-batch dimensions: [N x ...] -> [N]."""
    return x.reshape(x.shape[0], -1).mean(dim=1)


def sum_flat(x: torch.Tensor) -> torch.Tensor:
    """Sum over all non-batch dimensions: [N x ...] -> [N]."""
    return x.reshape(x.shape[0], -1).sum(dim=1)


def normal_kl(mean1, logvar1, mean2, logvar2) -> torch.Tensor:
    """Elementwise KL(N(mean1, exp(logvar1)) || N(mean2, exp(logvar2))), in nats (broadcasts)."""
    mean1, logvar1, mean2, logvar2 = torch.broadcast_tensors(
        *[torch.as_tensor(v) for v in (mean1, logvar1, mean2, logvar2)]
    )
    return 0.5 * (-1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2)
                  + (mean1 - mean2) ** 2 * torch.exp(-logvar2))


def gaussian_log_likelihood(x, mean, logvar) -> torch.Tensor:
    """Elementwise log N(x; mean, exp(logvar)) of continuous data, in nats."""
    return -0.5 * (math.log(2 * math.pi) + logvar + (x - mean) ** 2 * torch.exp(-logvar))


def gaussian_entropy(logvar) -> torch.Tensor:
    """Elementwise differential entropy of N(., exp(logvar)), in nats."""
    return 0.5 * (math.log(2 * math.pi * math.e) + torch.as_tensor(logvar))


def standard_normal_cdf(x: torch.Tensor) -> torch.Tensor:
    """Exact standard normal CDF."""
    return 0.5 * (1.0 + torch.erf(x / math.sqrt(2.0)))


def discretized_gaussian_log_likelihood(x, means, log_scales, bins: int = 256) -> torch.Tensor:
    """Elementwise log-probability of quantised data under a discretised Gaussian, in nats.

    Data convention: `bins` levels v = 0..bins-1 rescaled to [-1, 1] (x = 2v/(bins-1) - 1; 8-bit:
    v / 127.5 - 1), so a bin has half-width 1/(bins-1). The outer bins are open:
    (-inf, -1 + 1/(bins-1)] and [1 - 1/(bins-1), +inf), as in DDPM.
    `log_scales` is the log standard deviation.
    """
    half = 1.0 / (bins - 1)
    centered = x - means
    inv_stdv = torch.exp(-log_scales)
    cdf_plus = standard_normal_cdf(inv_stdv * (centered + half))
    cdf_min = standard_normal_cdf(inv_stdv * (centered - half))
    log_cdf_plus = torch.log(cdf_plus.clamp(min=1e-12))
    log_one_minus_cdf_min = torch.log((1.0 - cdf_min).clamp(min=1e-12))
    cdf_delta = cdf_plus - cdf_min
    edge = 1.0 - half / 2  # a value above this is the top bin, below its negative the bottom bin
    return torch.where(
        x < -edge,
        log_cdf_plus,
        torch.where(x > edge, log_one_minus_cdf_min, torch.log(cdf_delta.clamp(min=1e-12))),
    )
