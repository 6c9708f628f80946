"""SD-2015 §2.6: per-step bounds on the reverse-step entropy H_q(X_{t-1} | X_t), from the forward process alone.

    H_q(X_t | X_{t-1}) + H_q(X_{t-1} | X_0) - H_q(X_t | X_0)  <=  H_q(X_{t-1} | X_t)  <=  H_q(X_t | X_{t-1})

The lower bound is H_q(X_{t-1} | X_t, X_0) (conditioning on x_0 cannot raise the entropy; the
chain is Markov) and always holds. The upper bound is H(X_{t-1}|X_t) = H(X_t|X_{t-1}) + H(X_{t-1})
- H(X_t) with the paper's assumption that the marginal entropy does not fall along the chain:
true for Gaussian diffusion when the data variance is at most 1 per dimension, and for binomial
diffusion when p lies between the data marginal q(x_0 = 1) and 1/2 (always for p = 1/2; the
heartbeat's p = 0.2 equals its marginal). Outside those cases the "upper" value can fail.
All results are per dimension, in nats (differential entropy for the Gaussian), float64 `[T]`
(binomial: `[T x *data_marginal.shape]`); index i is the paper's step t = i + 1.
"""
from __future__ import annotations

import torch

from diffrepro.diffusion.likelihood import gaussian_entropy


def _binary_entropy(r: torch.Tensor) -> torch.Tensor:
    """Elementwise entropy of B(r) in nats, 0·log 0 = 0."""
    return -(torch.xlogy(r, r) + torch.xlogy(1.0 - r, 1.0 - r))


def entropy_bounds_gaussian(betas) -> tuple[torch.Tensor, torch.Tensor]:
    """(lower, upper) `[T]` nats per dimension for q(x_t | x_{t-1}) = N(sqrt(1 - β_t) x_{t-1}, β_t).

    upper = ½ log(2πe β_t); lower = ½ log(2πe β̃_t), β̃_t = β_t (1 - ᾱ_{t-1}) / (1 - ᾱ_t), which is
    -inf at t = 1 (x_0 is then known exactly). Neither depends on the data distribution.
    """
    betas = torch.as_tensor(betas, dtype=torch.float64).detach()
    log_cum = torch.cumsum(torch.log1p(-betas), 0)
    one_minus = -torch.expm1(log_cum)
    one_minus_prev = torch.cat([torch.zeros_like(one_minus[:1]), one_minus[:-1]])
    upper = gaussian_entropy(torch.log(betas))
    lower = gaussian_entropy(torch.log(betas) + torch.log(one_minus_prev) - torch.log(one_minus))
    return lower, upper


def entropy_bounds_binomial(betas, p: float, data_marginal) -> tuple[torch.Tensor, torch.Tensor]:
    """(lower, upper) nats per dimension for q(x_t = 1 | x_{t-1}) = x_{t-1}(1 - β_t) + p β_t.

    data_marginal: q(x_0 = 1), a float or a tensor of per-dimension rates `[D]`; results are
    `[T]` or `[T x D]`. The lower bound is 0 at t = 1.
    """
    betas = torch.as_tensor(betas, dtype=torch.float64).detach()
    m = torch.as_tensor(data_marginal, dtype=torch.float64)
    shape = (-1,) + (1,) * m.ndim
    b = betas.reshape(shape)
    ac = torch.cumprod(1.0 - betas, 0)
    ac_prev = torch.cat([torch.ones_like(ac[:1]), ac[:-1]]).reshape(shape)
    ac = ac.reshape(shape)
    marginal_prev = m * ac_prev + (1.0 - ac_prev) * p                    # q(x_{t-1} = 1)
    h_step = (marginal_prev * _binary_entropy(1.0 - b + p * b)
              + (1.0 - marginal_prev) * _binary_entropy(p * b))          # H_q(X_t | X_{t-1})

    def h_given_start(a):                                                # H_q(X_s | X_0)
        return m * _binary_entropy(a + (1.0 - a) * p) + (1.0 - m) * _binary_entropy((1.0 - a) * p)

    lower = h_step + h_given_start(ac_prev) - h_given_start(ac)
    return lower, h_step.expand_as(lower).clone()
