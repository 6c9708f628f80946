"""Sohl-Dickstein et al. 2015 binomial diffusion for binary data, its exact bound, and r(x) perturbation.

Steps follow the project convention: t is a LongTensor `[N]` of 0-based indices, index i is the
paper's step i + 1, and `q_sample(x_start, i)` draws the state x_{i+1}.

Forward:  q(x_t = 1 | x_{t-1}) = x_{t-1} (1 - β_t) + p β_t,  β_t = 1 / (T - t + 1),  π = B(p).
Then ᾱ_t = Π_{s<=t} (1 - β_s) = 1 - t/T exactly, q(x_t = 1 | x_0) = ᾱ_t x_0 + (1 - ᾱ_t) p, and
β_T = 1 makes x_T ~ π exactly, so the prior term KL(q(x_T | x_0) ‖ π) is 0.
Posterior q(x_{t-1} | x_t, x_0) is Bernoulli by Bayes' rule over x_{t-1} in {0, 1}.
Reverse p(x_{t-1} | x_t) = B(rate), per dimension (`BinomialReverse`):
  X0_MIXTURE  the network outputs x_0 logits; rate = Σ_{x0} p̂(x0 | x_t) q(x_{t-1} = 1 | x_t, x0),
              the exact posterior mixed over the prediction (the parametrisation DDPM §3.2 uses for ε:
              predict the clean data, keep the posterior exact; it trains much better here);
  DIRECT_RATE the network outputs logit(rate) (the paper's f_b(x_t, t)).
At index 0 the posterior is x_0 itself, so the X0_MIXTURE rate is p̂(x_0 = 1 | x_1).

The bound (exact, a true bound on log p(x_0)), in nats per example:
    -ELBO = prior + Σ_i terms[:, i],  prior = KL(q(x_T | x_0) ‖ π) = 0,
    terms[:, 0] = -log p(x_0 | x_1)  (x_1 drawn),   terms[:, i] = KL(q(x_i | x_{i+1}, x_0) ‖ p(x_i | x_{i+1})).
Both are one Bernoulli KL (a degenerate posterior at index 0 makes the KL an NLL). They are
computed in float64; evaluating long trajectories makes subnormal numbers, so call
`torch.set_flush_denormal(True)` in the script that evaluates (about 30x faster on a CPU).
"""
from __future__ import annotations

import torch

from diffrepro.choices import Choice
from diffrepro.diffusion.draws import rand, randint
from diffrepro.diffusion.entropy import entropy_bounds_binomial
from diffrepro.diffusion.likelihood import sum_flat
from diffrepro.diffusion.protocol import BoundResult, DiffusionProcess, ReverseStep
from diffrepro.diffusion.schedules import extract


class BinomialReverse(Choice):
    """What the network's output parameterises."""

    X0_MIXTURE = "x0_mixture"
    DIRECT_RATE = "direct_rate"



def bernoulli_kl(q1, p1, q0=None, p0=None) -> torch.Tensor:
    """Elementwise KL(B(q1) ‖ B(p1)) in nats, with 0·log 0 = 0. q0 = 1 - q1 and p0 = 1 - p1 may be
    passed when they are known more precisely than by subtraction."""
    q0 = 1.0 - q1 if q0 is None else q0
    p0 = 1.0 - p1 if p0 is None else p0
    return (torch.xlogy(q1, q1) - torch.xlogy(q1, p1) + torch.xlogy(q0, q0) - torch.xlogy(q0, p0))


def perturbed_flip_rate(rate, r1, r0, exponent=1.0):
    """SD-2015 §2.5 for binary data: the rate of B(rate) multiplied by a factorised r and renormalised.

    r(x) = Π_j r1_j^{x_j} r0_j^{1 - x_j}, optionally raised to `exponent` (the paper's (T - t)/T
    to leave the start distribution untouched): p̃(x_j = 1) = rate r1^e / (rate r1^e + (1 - rate) r0^e).
    Pure function of broadcastable tensors or floats.
    """
    rate, r1, r0 = (torch.as_tensor(v, dtype=torch.float64) for v in (rate, r1, r0))
    a = rate * r1 ** exponent
    b = (1.0 - rate) * r0 ** exponent
    return a / (a + b)


class BinomialDiffusion(DiffusionProcess):
    """SD-2015 binomial diffusion over {0, 1}-valued data `[N x ...]`; see the module docstring.

    The model is `model(x_t [N x ...] float in {0, 1}, t [N]) -> [N x ...]` logits (x_0 logits for
    X0_MIXTURE, rate logits for DIRECT_RATE).
    """

    def __init__(self, num_timesteps: int, p: float = 0.5, reverse_type: str | BinomialReverse = "x0_mixture"):
        super().__init__()
        if num_timesteps < 1:
            raise ValueError(f"num_timesteps must be >= 1, got {num_timesteps}")
        if not 0.0 < p < 1.0:
            raise ValueError(f"binomial p must lie in (0, 1), got {p}")
        self.num_timesteps = T = int(num_timesteps)
        self.p = float(p)
        self.reverse_type = BinomialReverse.from_str(reverse_type)
        i = torch.arange(T, dtype=torch.float64)
        self.betas = 1.0 / (T - i)                   # β_{i+1} = 1/(T - (i+1) + 1); β_T = 1
        self.alphas_cumprod = (T - 1 - i) / T        # ᾱ_{i+1} = 1 - (i+1)/T
        self.alphas_cumprod_prev = (T - i) / T       # ᾱ_i, with ᾱ_0 = 1
        self._posterior_tables: dict = {}            # device -> _posterior_table's tables, built on first use

    # ----- the process protocol (protocol.DiffusionProcess) ------------------------------------
    def forward_betas(self):
        return self.betas.detach().double().cpu().numpy()

    def signal_fraction(self):
        return self.alphas_cumprod.double().cpu().numpy()

    def entropy_bounds(self, x_train) -> tuple:
        lower, upper = entropy_bounds_binomial(self.forward_betas(), self.p, float(x_train.mean()))
        return lower.numpy(), upper.numpy()

    def reverse_step(self, model, x_t, t, clip_denoised=None) -> ReverseStep:
        """float64 p(x_t = 1 | x_{t+1}) and p(x_t = 0 | x_{t+1}) (see p_rate)."""
        self._check_clip(clip_denoised, "binomial diffusion")
        one, zero = self.p_rate(model, x_t, t)
        return ReverseStep(prob_one=one, prob_zero=zero)

    def _observation_rates(self, y, noise_level):
        """r(x_j = 1), r(x_j = 0) of a bit-flipped observation y (flip probability noise_level)."""
        r1 = torch.where(y > 0.5, 1.0 - noise_level, noise_level).double()
        return r1, 1.0 - r1

    def multiply_prior(self, x_T, y, noise_level, weight, generator=None):
        r1, r0 = self._observation_rates(y, noise_level)
        rate = perturbed_flip_rate(torch.full_like(r1, float(self.p)), r1, r0, weight)
        return (rand(y.shape, generator, y.device) < rate).to(y.dtype)

    def multiply_step(self, model, x_t, t, y, noise_level, weight, generator=None):
        r1, r0 = self._observation_rates(y, noise_level)
        rate1, _ = self.p_rate(model, x_t, t)
        return (rand(y.shape, generator, y.device) < perturbed_flip_rate(rate1, r1, r0, weight)).to(y.dtype)

    # ----- forward process ------------------------------------------------------------------
    def prior_sample(self, shape, generator=None, device=None) -> torch.Tensor:
        """x_T ~ B(p), float32 `shape`."""
        return (rand(tuple(shape), generator, device, dtype=torch.float64) < self.p).float()

    def q_step_rate(self, x_prev, t) -> torch.Tensor:
        """float64 q(x_{t+1} = 1 | x_t = x_prev) for index t (one forward step)."""
        beta = extract(self.betas, t, x_prev.shape, torch.float64)
        return x_prev.double() * (1.0 - beta) + self.p * beta

    def q_rate(self, x_start, t) -> torch.Tensor:
        """float64 q(x_{t+1} = 1 | x_0) for index t."""
        ac = extract(self.alphas_cumprod, t, x_start.shape, torch.float64)
        return ac * x_start.double() + (1.0 - ac) * self.p

    def q_sample(self, x_start, t, noise=None, generator=None) -> torch.Tensor:
        """x_{t+1} ~ q(x_{t+1} | x_0) in x_start's dtype; `noise` (optional) are U[0, 1) draws."""
        u = rand(x_start.shape, generator, x_start.device, dtype=torch.float64) if noise is None else noise.double()
        return (u < self.q_rate(x_start, t)).to(x_start.dtype)

    def q_posterior_rate(self, x_start, x_t, t) -> tuple[torch.Tensor, torch.Tensor]:
        """float64 (q(x_t = 1 | x_{t+1}, x_0), q(x_t = 0 | x_{t+1}, x_0)) for index t, where the
        argument `x_t` is the state x_{t+1}; both returned so neither loses precision to 1 - r."""
        shape = x_t.shape
        beta = extract(self.betas, t, shape, torch.float64)
        ac_prev = extract(self.alphas_cumprod_prev, t, shape, torch.float64)
        x0, xt = x_start.double(), x_t.double()
        prev1 = ac_prev * x0 + (1.0 - ac_prev) * self.p          # q(x_{t-1} = 1 | x_0)
        prev0 = ac_prev * (1.0 - x0) + (1.0 - ac_prev) * (1.0 - self.p)
        k1 = 1.0 - beta + self.p * beta                          # q(x_t = 1 | x_{t-1} = 1)
        k0 = self.p * beta                                       # q(x_t = 1 | x_{t-1} = 0)
        like1 = torch.where(xt > 0.5, k1, 1.0 - k1)              # q(x_t | x_{t-1} = 1)
        like0 = torch.where(xt > 0.5, k0, 1.0 - k0)
        joint1, joint0 = like1 * prev1, like0 * prev0
        return joint1 / (joint1 + joint0), joint0 / (joint1 + joint0)

    # ----- reverse process ------------------------------------------------------------------
    def p_rate(self, model, x_t, t) -> tuple[torch.Tensor, torch.Tensor]:
        """float64 (p(x_t = 1 | x_{t+1}), p(x_t = 0 | x_{t+1})) for index t, x_t being x_{t+1}."""
        logits = model(x_t, t).double()
        if self.reverse_type is BinomialReverse.DIRECT_RATE:
            return torch.sigmoid(logits), torch.sigmoid(-logits)
        hat1, hat0 = torch.sigmoid(logits), torch.sigmoid(-logits)
        # q(x_{t-1} | x_t, x_0) for x_0 = 0 and 1 at each element's (t, x_t): two table lookups
        one, zero = self._posterior_table(x_t.device)
        row = self._table_rows(x_t, t)
        # index_select rather than one[row]: the same values, in half the time of advanced indexing
        post1_if0, post1_if1 = one.index_select(0, row).reshape(*x_t.shape, 2).unbind(-1)
        post0_if0, post0_if1 = zero.index_select(0, row).reshape(*x_t.shape, 2).unbind(-1)
        return hat1 * post1_if1 + hat0 * post1_if0, hat1 * post0_if1 + hat0 * post0_if0

    def q_posterior_lookup(self, x_start, x_t, t) -> tuple[torch.Tensor, torch.Tensor]:
        """q_posterior_rate for binary x_start, read from _posterior_table: the same float64 values
        (the table holds the formula's results at x_0 in {0, 1}), one lookup per output instead of
        its elementwise operations (each training step and every term of the bound)."""
        one, zero = self._posterior_table(x_t.device)
        cell = 2 * self._table_rows(x_t, t) + (x_start > 0.5).reshape(-1)
        return (one.reshape(-1).index_select(0, cell).reshape(x_t.shape),
                zero.reshape(-1).index_select(0, cell).reshape(x_t.shape))

    @staticmethod
    def _table_rows(x_t, t) -> torch.Tensor:
        """Each element's row 2t + x_t of _posterior_table, flat `[x_t.numel()]`."""
        return ((2 * t).reshape(-1, *([1] * (x_t.dim() - 1))) + (x_t > 0.5)).reshape(-1)

    def _posterior_table(self, device) -> tuple[torch.Tensor, torch.Tensor]:
        """q_posterior_rate at every (t, x_t, x_0) in {0..T-1} x {0, 1} x {0, 1}, as two float64 tables
        `[2T x 2]` (row 2t + x_t, column x_0): the same values, one lookup instead of some twenty
        elementwise operations per call (the reverse step and every term of the bound)."""
        tables = self._posterior_tables
        if device not in tables:
            T = self.num_timesteps
            t = torch.arange(T).repeat_interleave(4)
            x_t = torch.tensor([0.0, 0.0, 1.0, 1.0], dtype=torch.float64).repeat(T)
            x_0 = torch.tensor([0.0, 1.0, 0.0, 1.0], dtype=torch.float64).repeat(T)
            one, zero = self.q_posterior_rate(x_0, x_t, t)
            tables[device] = (one.reshape(2 * T, 2).to(device), zero.reshape(2 * T, 2).to(device))
        return tables[device]

    def p_sample(self, model, x_t, t, generator=None, clip_denoised=None) -> torch.Tensor:
        """x_t ~ p(x_t | x_{t+1}) for index t `[N]` (index 0 gives x_0), in x_t's dtype."""
        self._check_clip(clip_denoised, "binomial diffusion")
        rate1, _ = self.p_rate(model, x_t, t)
        return (rand(x_t.shape, generator, x_t.device, dtype=torch.float64) < rate1).to(x_t.dtype)

    # ----- the bound ------------------------------------------------------------------------
    def prior_kl(self, x_start) -> torch.Tensor:
        """KL(q(x_T | x_0) ‖ B(p)) `[N]` nats; exactly 0 because β_T = 1."""
        q1 = self.alphas_cumprod[-1] * x_start.double() + (1.0 - self.alphas_cumprod[-1]) * self.p
        return sum_flat(bernoulli_kl(q1, torch.full_like(q1, self.p)))

    def term(self, model, x_start, t, generator=None) -> torch.Tensor:
        """`[N]` nats at index t: KL(q(x_t | x_{t+1}, x_0) ‖ p(x_t | x_{t+1})) with x_{t+1} drawn
        from q(x_{t+1} | x_0); at index 0 this is -log p(x_0 | x_1)."""
        x_next = self.q_sample(x_start, t, generator=generator)
        q1, q0 = self.q_posterior_lookup(x_start, x_next, t)  # x_0 in {0, 1}: io.load_data refuses other bits
        p1, p0 = self.p_rate(model, x_next, t)
        return sum_flat(bernoulli_kl(q1, p1, q0, p0))

    def training_loss(self, model, x_start, generator=None) -> torch.Tensor:
        """Unbiased one-sample estimate of -ELBO `[N]` nats: T · term at one uniform index per example."""
        t = randint(0, self.num_timesteps, (x_start.shape[0],), generator, x_start.device)
        return self.num_timesteps * self.term(model, x_start, t, generator)

    def bound_terms(self, model, x_start, generator=None) -> BoundResult:
        """terms `[N x T]` (col 0 = -log p(x_0 | x_1), col i = KL at paper step i + 1), prior `[N]`
        (= 0), total `[N]` = prior + terms.sum(1) = -ELBO >= -log p(x_0), all nats per example.
        Bits per sequence = nats_to_bits(total). Each column draws its own x_{i+1} ~ q(x_{i+1} | x_0).
        """
        n = x_start.shape[0]
        terms = torch.stack([
            self.term(model, x_start, torch.full((n,), i, dtype=torch.long, device=x_start.device), generator)
            for i in range(self.num_timesteps)], dim=1)
        prior = self.prior_kl(x_start)
        return BoundResult(prior=prior, terms=terms, total=prior + terms.sum(dim=1))


def l_null_bernoulli(x_train: torch.Tensor, x_eval: torch.Tensor) -> torch.Tensor:
    """SD-2015's binary baseline L_null: log-likelihood `[N_eval]` (nats per example) of x_eval
    under independent Bernoullis fitted to x_train (per-dimension firing rate)."""
    xt = x_train.double().reshape(x_train.shape[0], -1)
    xe = x_eval.double().reshape(x_eval.shape[0], -1)
    rate = xt.mean(dim=0)
    return (torch.xlogy(xe, rate) + torch.xlogy(1.0 - xe, 1.0 - rate)).sum(dim=1)
