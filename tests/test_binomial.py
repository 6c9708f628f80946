"""SD-2015 binomial diffusion: kernels and posterior against Bayes' rule, the bound against a direct
Monte-Carlo ELBO, an oracle heartbeat bound, and the r(x)-perturbed flip rate."""
import itertools
import math

import pytest
import torch

from diffrepro.diffusion.binomial import BinomialDiffusion, l_null_bernoulli, perturbed_flip_rate
from diffrepro.diffusion.likelihood import nats_to_bits

torch.set_flush_denormal(True)


def transition(beta, p):
    """2x2 matrix M[a, b] = q(x_t = b | x_{t-1} = a) of one forward step, written from the paper."""
    stay = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    to_pi = torch.tensor([[1 - p, p], [1 - p, p]], dtype=torch.float64)
    return (1 - beta) * stay + beta * to_pi


def paper_betas(T):
    return [1.0 / (T - t + 1) for t in range(1, T + 1)]


def test_schedule_kernels_and_posterior_against_bayes():
    T, p = 7, 0.3
    proc = BinomialDiffusion(T, p=p)
    torch.testing.assert_close(proc.betas, torch.tensor(paper_betas(T), dtype=torch.float64))
    assert proc.betas[-1] == 1.0
    torch.testing.assert_close(torch.cumprod(1 - proc.betas, 0), proc.alphas_cumprod)
    mats = [transition(b, p) for b in paper_betas(T)]
    for M in mats:
        torch.testing.assert_close(M.sum(1), torch.ones(2, dtype=torch.float64))
    marg = torch.eye(2, dtype=torch.float64)  # row x0: q(x_s | x_0), s = 0
    margs = [marg]
    for M in mats:
        marg = marg @ M
        margs.append(marg)
    for i in range(T):
        for x0, xt in itertools.product([0.0, 1.0], repeat=2):
            t = torch.tensor([i])
            a, b = torch.tensor([[x0]]), torch.tensor([[xt]])
            assert float(proc.q_rate(a, t)) == pytest.approx(float(margs[i + 1][int(x0), 1]), abs=1e-12)
            assert float(proc.q_step_rate(a, t)) == pytest.approx(float(mats[i][int(x0), 1]), abs=1e-12)
            joint = margs[i][int(x0), :] * mats[i][:, int(xt)]  # over x_{t-1} in {0, 1}
            bayes = joint / joint.sum()
            post1, post0 = proc.q_posterior_rate(a, b, t)
            assert float(post1) == pytest.approx(float(bayes[1]), abs=1e-12)
            assert float(post1 + post0) == pytest.approx(1.0, abs=1e-14)


@pytest.mark.parametrize("T", [1, 2, 50])
def test_reverse_rate_from_the_posterior_table_equals_the_mixture_formula(T):
    """p_rate looks the posterior up in a [2T x 2] table: bit for bit the X0_MIXTURE rate written
    out, Σ_x0 p̂(x0 | x_t) q(x_{t-1} | x_t, x0), for images ([N x C x H x W]) as for vectors."""
    torch.manual_seed(0)
    proc = BinomialDiffusion(T, p=0.2)
    for shape in ((64, 20), (16, 1, 3, 3)):
        x = (torch.rand(shape) < 0.4).float()
        t = torch.randint(0, T, (shape[0],))
        t[0], t[-1] = 0, T - 1
        logits = torch.randn(shape) * 3
        one, zero = proc.p_rate(lambda xt, tt: logits, x, t)
        ones = torch.ones_like(x, dtype=torch.float64)
        p11, p01 = proc.q_posterior_rate(ones, x, t)
        p10, p00 = proc.q_posterior_rate(0 * ones, x, t)
        hat1, hat0 = torch.sigmoid(logits.double()), torch.sigmoid(-logits.double())
        assert one.shape == shape and one.dtype == torch.float64
        assert torch.equal(one, hat1 * p11 + hat0 * p10)
        assert torch.equal(zero, hat1 * p01 + hat0 * p00)
        if T > 2:  # x_t matters (not at index 0, where the posterior is x_0, nor at T - 1, where β_T = 1)
            assert not torch.equal(one, proc.p_rate(lambda xt, tt: logits, 1 - x, t)[0])


def test_prior_term_is_exactly_zero():
    proc = BinomialDiffusion(10, p=0.2)
    x0 = torch.randint(0, 2, (32, 5), generator=torch.Generator().manual_seed(0)).float()
    assert torch.all(proc.prior_kl(x0) == 0.0)
    out = proc.bound_terms(lambda x, t: torch.zeros_like(x), x0, torch.Generator().manual_seed(1))
    assert torch.all(out.prior == 0.0)


def toy_logits(x, t):
    return 1.5 * (x - 0.5) - 0.8 * x.roll(1, dims=1) + 0.3 * t[:, None].to(x.dtype) - 0.4


@pytest.mark.parametrize("reverse_type", ["x0_mixture", "direct_rate"])
def test_bound_equals_direct_monte_carlo_elbo(reverse_type):
    T, p = 6, 0.3
    proc = BinomialDiffusion(T, p=p, reverse_type=reverse_type)
    points = torch.tensor([[0.0, 1.0, 1.0], [1.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
    reps = 30000
    x0 = points.repeat_interleave(reps, dim=0)
    gen = torch.Generator().manual_seed(2)
    betas = paper_betas(T)

    def log_bern(x, rate):
        return (torch.xlogy(x, rate) + torch.xlogy(1 - x, 1 - rate)).sum(dim=1)

    xs = [x0.double()]
    for b in betas:
        rate = xs[-1] * (1 - b) + p * b
        xs.append((torch.rand(x0.shape, generator=gen, dtype=torch.float64) < rate).double())
    log_q = sum(log_bern(xs[i + 1], xs[i] * (1 - b) + p * b) for i, b in enumerate(betas))
    log_p = log_bern(xs[T], torch.full_like(x0, p, dtype=torch.float64))
    for i in range(T):
        rate1, _ = proc.p_rate(toy_logits, xs[i + 1].float(), torch.full((len(x0),), i))
        log_p = log_p + log_bern(xs[i], rate1)
    direct = (log_p - log_q).reshape(3, reps)
    elbo = (-proc.bound_terms(toy_logits, x0, gen).total).reshape(3, reps)
    se = torch.sqrt(direct.var(1) / reps + elbo.var(1) / reps)
    assert torch.all((direct.mean(1) - elbo.mean(1)).abs() < 5 * se), (direct.mean(1), elbo.mean(1), se)


HEARTBEAT = torch.tensor([[1.0 if (j - phase) % 5 == 0 else 0.0 for j in range(20)] for phase in range(5)],
                         dtype=torch.float64)


def heartbeat_oracle(T, p):
    """Exact x_0 logits P(x_0j = 1 | x_t) by enumerating the 5 heartbeat sequences (ᾱ = 1 - t/T)."""
    log_s1, log_s0 = torch.log(HEARTBEAT), torch.log(1 - HEARTBEAT)

    def model(x_t, t):
        x = x_t.double()[:, None, :]
        ab = (1 - (t.double() + 1) / T)[:, None, None]
        r1 = ab * HEARTBEAT[None] + (1 - ab) * p
        w = torch.log_softmax((torch.xlogy(x, r1) + torch.xlogy(1 - x, 1 - r1)).sum(-1), dim=1)
        return (torch.logsumexp(w[:, :, None] + log_s1, 1) - torch.logsumexp(w[:, :, None] + log_s0, 1)).float()

    return model


def test_oracle_heartbeat_bound_never_beats_the_true_entropy():
    T, p = 100, 0.2
    proc = BinomialDiffusion(T, p=p)
    gen = torch.Generator().manual_seed(3)
    x0 = HEARTBEAT[torch.randint(0, 5, (3000,), generator=gen)].float()
    bits = nats_to_bits(proc.bound_terms(heartbeat_oracle(T, p), x0, gen).total)
    se = float(bits.std() / math.sqrt(len(bits)))
    assert se < 0.01
    assert float(bits.mean()) > math.log2(5) + 3 * se
    # the best factorised reverse process at T = 100 has a bound of 2.370 bits/seq (the
    # heartbeat's one-in-five spikes; SD-2015 Table 1 reports 2.414 for its trained network)
    assert abs(float(bits.mean()) - 2.370) < 0.03


def test_samples_follow_the_reverse_rate_and_prior():
    proc = BinomialDiffusion(20, p=0.2)
    gen = torch.Generator().manual_seed(4)
    assert abs(float(proc.prior_sample((40000, 2), gen).mean()) - 0.2) < 0.01
    x = torch.tensor([[0.0, 1.0]]).repeat(40000, 1)
    t = torch.full((40000,), 5)
    rate1, rate0 = proc.p_rate(toy_logits, x, t)
    torch.testing.assert_close(rate1 + rate0, torch.ones_like(rate1))
    torch.testing.assert_close(proc.p_sample(toy_logits, x, t, gen).double().mean(0), rate1[0], atol=0.01, rtol=0)


def test_perturbed_flip_rate_is_bayes_on_the_enumerated_product():
    rate = torch.tensor([0.3, 0.8], dtype=torch.float64)
    r1, r0 = torch.tensor([2.0, 0.5], dtype=torch.float64), torch.tensor([1.0, 3.0], dtype=torch.float64)
    for e in (1.0, 0.4):
        states = torch.tensor(list(itertools.product([0.0, 1.0], repeat=2)), dtype=torch.float64)
        p_x = torch.prod(torch.where(states > 0, rate, 1 - rate), dim=1)
        r_x = torch.prod(torch.where(states > 0, r1, r0), dim=1) ** e
        post = p_x * r_x / (p_x * r_x).sum()
        marginal1 = (post[:, None] * states).sum(0)
        torch.testing.assert_close(perturbed_flip_rate(rate, r1, r0, exponent=e), marginal1)


def test_l_null_bernoulli_and_bad_reverse_type():
    x_train = HEARTBEAT[torch.arange(100) % 5]
    ll = l_null_bernoulli(x_train, HEARTBEAT)
    h = -(0.2 * math.log(0.2) + 0.8 * math.log(0.8))
    assert float(nats_to_bits(ll.mean())) == pytest.approx(-20 * h / math.log(2))  # paper: 14.44 bits
    with pytest.raises(ValueError, match="'rates'.*allowed: x0_mixture, direct_rate"):
        BinomialDiffusion(10, reverse_type="rates")


@pytest.mark.parametrize("T", [1, 2, 50])
def test_the_posterior_lookup_equals_the_posterior_formula_bit_for_bit(T):
    """term() reads q(x_{t-1} | x_t, x_0) from the [2T x 2] table: the very values q_posterior_rate
    computes, for every index, both states and both starts, for vectors and images."""
    torch.manual_seed(1)
    proc = BinomialDiffusion(T, p=0.2)
    for shape in ((64, 20), (16, 1, 3, 3)):
        x0 = (torch.rand(shape) < 0.5).float()
        xt = (torch.rand(shape) < 0.4).float()
        t = torch.randint(0, T, (shape[0],))
        t[0], t[-1] = 0, T - 1
        one, zero = proc.q_posterior_lookup(x0, xt, t)
        want_one, want_zero = proc.q_posterior_rate(x0, xt, t)
        assert one.shape == shape and one.dtype == torch.float64
        assert torch.equal(one, want_one) and torch.equal(zero, want_zero)
        if T > 2:  # x_0 matters away from the ends
            assert not torch.equal(one, proc.q_posterior_lookup(1 - x0, xt, t)[0])
