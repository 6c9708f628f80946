"""SD-2015 Gaussian diffusion: the bound against a direct Monte-Carlo ELBO, learned β, and the SD networks."""
import math

import pytest
import torch

from diffrepro.diffusion.sd_gaussian import SDGaussianDiffusion, l_null_gaussian, sd_schedule
from diffrepro.nets import build_net
from diffrepro.nets.sd_nets import SDBumpMLP, gaussian_bumps

T_SMALL = 5


def toy_model(x, t):
    """A fixed, deliberately imperfect reverse network: (f_μ, f_Σ) `[N x 2D]`."""
    tt = t.to(x.dtype)[:, None]
    return torch.cat([0.7 * torch.tanh(x) - 0.1 * tt, 2.0 * torch.sin(x + tt)], dim=1)


def normal_logpdf(x, mean, var):
    return torch.distributions.Normal(mean, var.sqrt()).log_prob(x).sum(dim=1)


def direct_log_ratio(process, x0, gen):
    """log p(x_0..T) - log q(x_1..T | x_0) along one forward trajectory per row, from the
    documented kernels, written out here independently of the process's bound code."""
    betas = process.betas.detach()
    T = len(betas)
    xs = [x0]
    for i in range(T):
        b = betas[i]
        xs.append(torch.sqrt(1 - b) * xs[-1] + b.sqrt() * torch.randn(x0.shape, generator=gen, dtype=torch.float64))
    log_q = sum(normal_logpdf(xs[i + 1], torch.sqrt(1 - betas[i]) * xs[i], betas[i].expand_as(x0))
                for i in range(T))
    log_p = normal_logpdf(xs[T], torch.zeros_like(x0), torch.ones_like(x0))
    log_p = log_p + normal_logpdf(xs[0], torch.sqrt(1 - betas[0]) * xs[1], betas[0].expand_as(x0))
    for i in range(1, T):
        b = betas[i]
        t = torch.full((x0.shape[0],), i, dtype=torch.long)
        f_mu, f_sigma = toy_model(xs[i + 1], t).chunk(2, dim=1)
        mean = torch.sqrt(1 - b) * xs[i + 1] + b.sqrt() * f_mu
        var = torch.sigmoid(f_sigma / math.sqrt(T) + torch.log(b / (1 - b)))
        log_p = log_p + normal_logpdf(xs[i], mean, var)
    return log_p - log_q


def per_point_mean_se(values, points, reps):
    v = values.reshape(points, reps)
    return v.mean(dim=1), v.std(dim=1) / math.sqrt(reps)


def test_bound_equals_direct_monte_carlo_elbo():
    process = SDGaussianDiffusion(T_SMALL, beta_1=0.05, beta_schedule_init="geometric", beta_end=0.7)
    points = torch.tensor([[0.0, 0.5], [1.2, -0.7], [-1.5, 2.0]], dtype=torch.float64)
    reps = 40000
    x0 = points.repeat_interleave(reps, dim=0)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        bound = process.bound_terms(toy_model, x0, gen)
        mc = direct_log_ratio(process, x0, gen)
    elbo, elbo_se = per_point_mean_se(-bound.total, 3, reps)
    direct, direct_se = per_point_mean_se(mc, 3, reps)
    tol = 5 * torch.sqrt(elbo_se ** 2 + direct_se ** 2)
    assert torch.all((elbo - direct).abs() < tol), (elbo, direct, tol)
    # the check has teeth: the terms are far from the forward-kernel baseline
    assert float(bound.terms[:, 1:].sum(1).mean()) > 0.05


def test_paper_k_differs_from_exact_elbo_by_the_edge_terms():
    process = SDGaussianDiffusion(T_SMALL, beta_1=0.05, beta_end=0.7)
    x0 = torch.randn(64, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 1.7
    with torch.no_grad():
        out = process.bound_terms(toy_model, x0, torch.Generator().manual_seed(2))
    betas = process.betas.detach()
    alpha_bar_T = torch.prod(1 - betas)
    edge = 0.5 * (alpha_bar_T + betas[0]) * (1 - x0 ** 2).sum(dim=1)
    torch.testing.assert_close(out.extras["k_paper"] + edge, -out.total, rtol=0, atol=1e-9)
    torch.testing.assert_close(out.terms.sum(1) + out.prior, out.total)
    assert out.terms.shape == (64, T_SMALL) and out.extras["kl"].shape == (64, T_SMALL - 1)


def test_training_loss_is_unbiased_for_the_bound():
    process = SDGaussianDiffusion(T_SMALL, beta_1=0.05, beta_end=0.7)
    x0 = torch.tensor([[0.3, -1.0]], dtype=torch.float64).repeat(60000, 1)
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        loss = process.training_loss(toy_model, x0, gen)
        total = process.bound_terms(toy_model, x0[:20000], gen).total
    se = math.sqrt(loss.var() / len(loss) + total.var() / len(total))
    assert abs(float(loss.mean() - total.mean())) < 5 * se


def test_learned_betas_stay_in_unit_interval_with_beta_1_fixed():
    torch.manual_seed(0)
    T = 8
    process = SDGaussianDiffusion(T, beta_1=1e-4, beta_schedule_init="sd")
    net = SDBumpMLP(data_shape=(2,), out_mult=2, num_timesteps=T, hidden=(16,), num_bumps=4)
    before = process.betas.detach().clone()
    opt = torch.optim.Adam(list(net.parameters()) + list(process.parameters()), lr=0.5)
    gen = torch.Generator().manual_seed(0)
    x0 = torch.randn(256, 2, generator=gen)
    for _ in range(20):
        opt.zero_grad()
        process.training_loss(net, x0, gen).mean().backward()
        assert process.beta_logits.grad.abs().sum() > 0
        opt.step()
    after = process.betas.detach()
    assert after[0] == before[0] == 1e-4
    assert torch.all((after > 0) & (after < 1))
    assert not torch.allclose(after[1:], before[1:])

    fixed = SDGaussianDiffusion(T, beta_1=1e-4, learn_betas=False)
    assert list(fixed.parameters()) == []


def test_small_beta_1_posterior_variance_is_exact_in_float64():
    b1, b2 = 1e-5, 1.3e-5
    sched = sd_schedule(torch.tensor([b1, b2, 0.1], dtype=torch.float64))
    exact = math.log(b2 * b1 / (b1 + b2 - b1 * b2))  # β̃_2 = β_2 (1 - ᾱ_1)/(1 - ᾱ_2)
    assert abs(float(sched.posterior_log_variance[1]) - exact) < 1e-10


def test_q_sample_and_first_step_moments():
    process = SDGaussianDiffusion(T_SMALL, beta_1=0.05, beta_end=0.7, learn_betas=False)
    gen = torch.Generator().manual_seed(4)
    n = 200000
    x0 = torch.full((n, 1), 1.5, dtype=torch.float64)
    t = torch.full((n,), 2, dtype=torch.long)
    alpha_bar = torch.prod(1 - process.betas[:3])
    xt = process.q_sample(x0, t, generator=gen)
    assert abs(float(xt.mean()) - 1.5 * math.sqrt(alpha_bar)) < 0.01
    assert abs(float(xt.var()) - (1 - alpha_bar)) < 0.01
    # the fixed first reverse step: N(sqrt(1 - β_1) x_1, β_1), whatever the network says
    b1 = float(process.betas[0])
    x_prev = process.p_sample(toy_model, x0, torch.zeros(n, dtype=torch.long), gen)
    assert abs(float(x_prev.mean()) - 1.5 * math.sqrt(1 - b1)) < 0.005
    assert abs(float(x_prev.var()) - b1) < 0.002


def test_l_null_gaussian_matches_fitted_isotropic_gaussian():
    gen = torch.Generator().manual_seed(5)
    x_train = torch.randn(500, 3, generator=gen) * torch.tensor([1.0, 2.0, 0.5]) + 3.0
    x_eval = torch.randn(7, 3, generator=gen)
    mean = x_train.double().mean(0)
    var = float(((x_train.double() - mean) ** 2).mean())
    ref = torch.distributions.MultivariateNormal(mean, var * torch.eye(3, dtype=torch.float64))
    torch.testing.assert_close(l_null_gaussian(x_train, x_eval), ref.log_prob(x_eval.double()))


def test_bad_schedule_name_is_named_in_the_error():
    with pytest.raises(ValueError, match="cosine.*allowed: geometric, linear, sd"):
        SDGaussianDiffusion(10, beta_1=1e-4, beta_schedule_init="cosine")


def test_sd_networks_shapes_and_bumps():
    bumps = gaussian_bumps(50, 7)
    torch.testing.assert_close(bumps.sum(1), torch.ones(50))
    assert int(bumps[0].argmax()) == 0 and int(bumps[-1].argmax()) == 6
    t = torch.tensor([0, 49, 10])
    mlp = build_net("sd_mlp", data_shape=(20,), out_mult=1, num_timesteps=50, hidden=(8, 8), num_bumps=5)
    assert mlp(torch.rand(3, 20), t).shape == (3, 20)
    rbf = build_net("sd_mlp", data_shape=(2,), out_mult=2, num_timesteps=50, hidden=(16,),
                    hidden_kind="rbf", num_bumps=50)
    assert rbf(torch.randn(3, 2), t).shape == (3, 4)
    conv = build_net("sd_multiscale", data_shape=(3, 8, 8), out_mult=2, num_timesteps=50, num_scales=3,
                     conv_layers=2, global_dense_hidden=8)
    out = conv(torch.randn(3, 3, 8, 8), t)
    assert out.shape == (3, 6, 8, 8) and torch.all(out == 0)  # zero-initialised readout
    with pytest.raises(ValueError, match="unknown activation 'swish'"):
        SDBumpMLP(data_shape=(2,), activation="swish")
    with pytest.raises(ValueError, match="divisible by 4"):
        build_net("sd_multiscale", data_shape=(1, 6, 6), out_mult=2, num_timesteps=5, num_scales=3)


def test_multiscale_conv_pyramid_is_the_sum_over_scales():
    """The pyramid (pool by 2 again and again, gather the sum from the coarsest scale up) computes
    the paper's definition: Σ_s upsample_{2^s}(conv_s(mean-pool_{2^s}(x))), then the activation;
    values and gradients to float rounding, in NCHW and NHWC alike."""
    import torch.nn.functional as F

    from diffrepro.nets.sd_nets import MultiScaleConv

    torch.manual_seed(0)
    layer = MultiScaleConv(3, 5, num_scales=3, kernel_size=3, activation="softplus")
    for p in layer.parameters():
        torch.nn.init.normal_(p, std=0.3)
    x = torch.randn(4, 3, 16, 8, dtype=torch.float64)
    layer = layer.double()

    def definition(x):
        total = 0.0
        for s, conv in enumerate(layer.convs):
            f = 2 ** s
            y = conv(F.avg_pool2d(x, f) if f > 1 else x)
            total = total + (F.interpolate(y, scale_factor=f, mode="nearest") if f > 1 else y)
        return layer.act(total)

    for fmt in (torch.contiguous_format, torch.channels_last):
        a = x.contiguous(memory_format=fmt).requires_grad_(True)
        b = x.clone().requires_grad_(True)
        ours, ref = layer(a), definition(b)
        torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)
        g = torch.randn_like(ref)
        (ga,) = torch.autograd.grad(ours, a, g)
        (gb,) = torch.autograd.grad(ref, b, g)
        torch.testing.assert_close(ga, gb, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("arch", ["sd_mlp", "sd_multiscale"])
def test_a_batch_of_one_t_mixes_the_bumps_into_the_last_layer_with_the_same_outputs_and_gradients(arch):
    """Every reverse step and every term of the bound has one t for the whole batch: the readout is
    then folded into the last layer (TemporalReadout.of_layer). Same values and gradients as the
    readout of all K*J outputs, to float32 rounding; a batch of several t's takes the readout."""
    torch.manual_seed(0)
    if arch == "sd_mlp":
        net = build_net("sd_mlp", data_shape=(20,), out_mult=1, num_timesteps=30, hidden=(16, 16), num_bumps=6)
        x = torch.rand(9, 20)
    else:
        net = build_net("sd_multiscale", data_shape=(1, 8, 8), out_mult=2, num_timesteps=30, num_scales=2,
                        conv_layers=2, num_bumps=6)
        x = torch.randn(9, 1, 8, 8)
    for p in net.out.parameters():  # the readout starts at zero: give it values
        torch.nn.init.normal_(p)
    head = (lambda h: net.upper(net.convs(h))) if arch == "sd_multiscale" else net.body

    def both(t):
        folded = net(x, t)
        full = net.readout(net.out(head(x)), t)
        return folded, full

    calls = []
    net.out.register_forward_hook(lambda *args: calls.append(1))
    one_t = torch.full((9,), 17)
    folded, full = both(one_t)
    assert len(calls) == 1  # the K*J outputs were computed for `full` alone
    torch.testing.assert_close(folded, full, rtol=1e-5, atol=1e-5)
    grads = [torch.autograd.grad(out.square().sum(), net.out.weight)[0] for out in both(one_t)]
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-4, atol=1e-4)
    several = torch.tensor([0, 3, 17, 29, 5, 5, 5, 5, 5])
    folded, full = both(several)
    assert torch.equal(folded, full)  # the readout itself


def test_discretized_first_step_matches_the_density_times_the_bin_width_when_the_bin_is_small():
    """With σ_1 = sqrt(β_1) much wider than an 8-bit bin (2/255), P(bin) ≈ density · bin width, so the
    discretised first-step NLL ≈ the continuous one − D·log(2/255); and it is never negative."""
    import math

    from diffrepro.diffusion.sd_gaussian import SDGaussianDiffusion

    g = torch.Generator().manual_seed(0)
    x0 = (torch.randint(30, 226, (4000, 1, 2, 2), generator=g).float() / 127.5 - 1.0)
    cont = SDGaussianDiffusion(10, beta_1=0.01, decoder="gaussian")
    disc = SDGaussianDiffusion(10, beta_1=0.01, decoder="discretized")
    sched = cont.schedule()
    c = cont.first_step_nll(x0, sched).mean().item()
    d = disc.first_step_nll(x0, sched, generator=g).mean().item()
    assert d == pytest.approx(c - 4 * math.log(2 / 255), abs=0.05)
    tiny = SDGaussianDiffusion(10, beta_1=1e-6, decoder="discretized")
    assert (tiny.first_step_nll(x0, tiny.schedule(), generator=g) >= 0).all()
    with pytest.raises(ValueError, match="gaussian, discretized"):
        SDGaussianDiffusion(10, decoder="bins")
