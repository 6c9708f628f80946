"""SD-2015 §2.6 entropy bounds against reverse-step entropies computed independently (joint Gaussian
covariances; enumerated two-state chains)."""
import math

import numpy as np
import pytest
import torch

from diffrepro.diffusion.entropy import entropy_bounds_binomial, entropy_bounds_gaussian

BETAS = torch.logspace(-3, math.log10(0.5), 12, dtype=torch.float64)


def gaussian_chain_covariance(betas, s):
    """Covariance of (x_0, x_1, ..., x_T) for 1-D x_0 ~ N(0, s²), built step by step."""
    T = len(betas)
    A = np.zeros((T + 1, T + 1))  # x = A @ (x_0/s, ε_1, ..., ε_T): each state as a linear map of iid N(0,1)
    A[0, 0] = s
    for t in range(1, T + 1):
        b = float(betas[t - 1])
        A[t] = math.sqrt(1 - b) * A[t - 1]
        A[t, t] += math.sqrt(b)
    return A @ A.T


def conditional_entropy(cov, target, given):
    """Differential entropy of the target coordinate given others, from the Schur complement."""
    c_tg = cov[np.ix_([target], given)]
    c_gg = cov[np.ix_(given, given)]
    var = cov[target, target] - (c_tg @ np.linalg.solve(c_gg, c_tg.T))[0, 0]
    return 0.5 * math.log(2 * math.pi * math.e * var)


@pytest.mark.parametrize("s", [0.3, 1.0])
def test_gaussian_bounds_bracket_the_exact_reverse_entropy(s):
    lower, upper = entropy_bounds_gaussian(BETAS)
    cov = gaussian_chain_covariance(BETAS, s)
    assert lower[0] == -math.inf
    for t in range(1, len(BETAS) + 1):  # paper step t; state indices t-1, t
        exact = conditional_entropy(cov, t - 1, [t])
        assert float(upper[t - 1]) == pytest.approx(0.5 * math.log(2 * math.pi * math.e * float(BETAS[t - 1])))
        assert float(lower[t - 1]) <= exact + 1e-9
        assert exact <= float(upper[t - 1]) + 1e-9
        if t > 1:  # the lower bound is H(X_{t-1} | X_t, X_0)
            assert float(lower[t - 1]) == pytest.approx(conditional_entropy(cov, t - 1, [t, 0]), abs=1e-8)
        if s == 1.0:  # stationary data: H(X_t) = H(X_{t-1}), so the upper bound is attained
            assert exact == pytest.approx(float(upper[t - 1]), abs=1e-8)


def binary_chain_entropies(betas, p, m):
    """Exact H(X_{t-1}|X_t), H(X_{t-1}|X_t,X_0), H(X_t|X_{t-1}) per step of a 1-D binomial chain,
    from the enumerated joint q(x_0, x_{t-1}, x_t)."""
    def H(joint, cond_axes):
        cond = joint.sum(axis=tuple(a for a in range(joint.ndim) if a not in cond_axes), keepdims=True)
        mask = joint > 0
        return -float((joint[mask] * np.log((joint / np.broadcast_to(cond, joint.shape))[mask])).sum())

    marg = np.array([[1.0, 0.0], [0.0, 1.0]])  # q(x_s | x_0), rows x_0
    prior = np.array([1 - m, m])
    out = []
    for b in betas:
        M = (1 - b) * np.eye(2) + b * np.array([[1 - p, p], [1 - p, p]])
        joint = prior[:, None, None] * marg[:, :, None] * M[None, :, :]  # (x_0, x_{t-1}, x_t)
        out.append((H(joint.sum(0), (1,)), H(joint, (0, 2)), H(joint.sum(0), (0,))))
        marg = marg @ M
    return np.array(out)


@pytest.mark.parametrize("p, m", [(0.5, 0.1), (0.5, 0.5), (0.2, 0.2), (0.3, 0.05)])
def test_binomial_bounds_bracket_the_exact_reverse_entropy(p, m):
    T = 15
    betas = np.array([1.0 / (T - t + 1) for t in range(1, T + 1)])
    lower, upper = entropy_bounds_binomial(torch.tensor(betas), p, m)
    exact = binary_chain_entropies(betas, p, m)
    np.testing.assert_allclose(lower.numpy(), exact[:, 1], atol=1e-12)  # H(X_{t-1} | X_t, X_0)
    np.testing.assert_allclose(upper.numpy(), exact[:, 2], atol=1e-12)  # H(X_t | X_{t-1})
    assert np.all(lower.numpy() <= exact[:, 0] + 1e-12)
    assert np.all(exact[:, 0] <= upper.numpy() + 1e-12)
    assert float(lower[0]) == pytest.approx(0.0, abs=1e-15)


def test_binomial_bounds_take_per_dimension_marginals():
    T = 10
    betas = torch.tensor([1.0 / (T - t + 1) for t in range(1, T + 1)], dtype=torch.float64)
    marginals = torch.tensor([0.1, 0.2, 0.4])
    lower, upper = entropy_bounds_binomial(betas, 0.5, marginals)
    assert lower.shape == upper.shape == (T, 3)
    for j, m in enumerate(marginals.tolist()):
        lo, up = entropy_bounds_binomial(betas, 0.5, m)
        torch.testing.assert_close(lower[:, j], lo)
        torch.testing.assert_close(upper[:, j], up)
