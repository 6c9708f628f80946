"""Benchmark: the real trainer's, sampler's and bound's images/s for a U-Net preset, their overheads
over the bare network, and diffusers' UNet2DModel + DDPMScheduler at the same parameter count, all
in one process with the same batch, T, threads and device.

What is timed (medians over --repeats, after --warmup untimed rounds; each repeat times every round
below back to back, and each ratio is the median of its per-repeat ratios, so a busy machine slows
both sides of a ratio alike):
  train       training.train_step, the step train() takes (lr, batch draw, L_simple, backward,
              clip, Adam, EMA), RECORD_EVERY steps per repeat and then the one read of their losses,
              as the loop does; on the run's settings (T, β, lr, EMA, clip, flips) and random data.
  fwd+bwd     the bare network at the same batch: forward, an MSE against a fixed target, backward
              (no draws, no optimiser): train_overhead = train step / fwd+bwd (target <= 1.10).
  sample      sampling.sample, the sample stage's loop, over a K-step process (--sample-steps; the
              per-step work is that of the full-T process) with the run's reverse step;
              sample_overhead = one step of that loop / the bare network forward (target <= 1.05);
              sample images/s are per full-T chain: batch / (step time x T).
  bound       metrics.bound.evaluate_bound, the nll stage's evaluation over all T terms, one batch.
  diffusers   UNet2DModel of the preset's architecture (same widths, levels, blocks, attention
              resolutions, groups, dropout; parameter counts reported) with DDPMScheduler, trained
              two ways: as diffusers' example script train_unconditional.py trains it with its
              defaults (AdamW, cosine lr, EMAModel, the loss read every step; fp32 on the CPU):
              train_vs_diffusers; and with our step's optimiser (fused Adam), lerp EMA and loss reads
              every RECORD_EVERY steps: train_vs_diffusers_same_step. Sampling: pipeline_ddpm's loop
              (scheduler.step over K steps) as it runs by default, in fp32: sample_vs_diffusers; and,
              where our sampler runs under bf16, the same loop under the same autocast:
              sample_vs_diffusers_same_precision. Ratios = our images/s / theirs.
  adam        the optimiser step alone, reported beside train_overhead (train_overhead_without_adam).
  ddim        with --ddim-steps K: one DDIM chain of K steps (η = 0, the run's clip_denoised) from pure
              noise as the sample stage draws it, at the stage's batch (sample.batch_size, or
              --ddim-batch), after one 2-step warm chain: ddim_images_per_s.
The trainer's own choices apply on every device (train.precision auto: bf16 autocast for DDPM on CUDA,
fp32 on the CPU; channels_last for image networks as runtime.uses_channels_last says; fused Adam),
the bound's network is laid out as TrainedRun.open lays it out (fp32, NHWC for images) and the
sampler's as sampling.for_sampling makes it at the run's sample.precision (auto: the precision it
trained at; bf16 autocast in NCHW on the CPU); diffusers' same-step side trains with our precision and
layout, its example-script side as it runs by default (NCHW; fp32 on the CPU, our precision on CUDA).
--precision, --compile, --no-channels-last change our side and the same-step side, and
train_step_host_syncs counts the host-device syncs in RECORD_EVERY - 1 training steps (expected: 0).
Usage: python benchmarks/speed.py [--preset digits-cpu|ddpm-cifar10] [--device auto] [--threads 2]
         [--batch B] [--sample-steps 20] [--repeats 7] [--warmup 1] [--precision auto|fp32|bf16]
         [--compile] [--no-channels-last] [--no-bound] [--no-diffusers] [--ddim-steps 50 [--ddim-batch N]]
         [--quick] [--json]
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import platform
import statistics
import sys
import time
from pathlib import Path

# OpenMP's wait policy as a pipeline job with these threads gets it (runtime.set_omp_wait_policy):
# OpenMP's default when the threads cover every CPU, else PASSIVE; OMP_WAIT_POLICY in the environment
# wins (OMP_WAIT_POLICY=PASSIVE measures jobs that share the cores). Read when torch loads: set first.
from diffrepro.runtime import set_omp_wait_policy, threads_from_argv  # noqa: E402

DEFAULT_THREADS = 2
OMP_WAIT = set_omp_wait_policy(threads_from_argv(sys.argv[1:]) or DEFAULT_THREADS)

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from diffrepro import build  # noqa: E402
from diffrepro.config import parse_params, read_params  # noqa: E402
from diffrepro.metrics.bound import evaluate_bound  # noqa: E402
from diffrepro.runs import training  # noqa: E402
from diffrepro.runs.checkpoint import TrainedRun  # noqa: E402
from diffrepro.runs.precision import Bf16Net  # noqa: E402
from diffrepro.runs.sampling import for_sampling, sample  # noqa: E402
from diffrepro.runtime import configure_threads, pick_device, uses_channels_last  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
# preset -> (params file, run whose settings are used, one example's shape)
PRESETS = {
    "digits-cpu": ("params.yaml", "digits-ddpm", (1, 8, 8)),
    "ddpm-cifar10": ("configs/ddpm-cifar10.yaml", "cifar10-ddpm", (3, 32, 32)),
}
TARGETS = {"train_overhead": 1.10, "sample_overhead": 1.05}


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", choices=sorted(PRESETS), default="digits-cpu")
    ap.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    ap.add_argument("--threads", type=int, default=DEFAULT_THREADS, help="torch CPU threads")
    ap.add_argument("--batch", type=int,
                    help="training, sampling and bound batch (default: the run's train.batch_size)")
    ap.add_argument("--sample-steps", type=int, default=20, help="reverse steps timed per sampling repeat")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--warmup", type=int, default=1, help="untimed rounds before the timed ones")
    ap.add_argument("--bound-repeats", type=int, default=1, help="timed passes of the bound (each T network calls)")
    ap.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto",
                    help="training autocast: auto = the trainer's own (bf16 for DDPM on CUDA)")
    ap.add_argument("--compile", action="store_true", help="train.compile: true (and compile diffusers' net too)")
    ap.add_argument("--no-channels-last", action="store_true", help="train image networks in NCHW")
    ap.add_argument("--no-bound", action="store_true")
    ap.add_argument("--no-diffusers", action="store_true")
    ap.add_argument("--ddim-steps", type=int, default=0,
                    help="also time one DDIM chain of this many steps at the sample stage's batch (0: not)")
    ap.add_argument("--ddim-batch", type=int, help="that chain's batch (default: the run's sample.batch_size)")
    ap.add_argument("--quick", action="store_true", help="batch 8, 2 repeats, 1 warm-up, 3 sample steps (tests)")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args(argv)
    if args.quick:
        args.batch, args.repeats, args.warmup, args.sample_steps, args.bound_repeats = (args.batch or 8), 2, 1, 3, 1
        args.ddim_batch = args.ddim_batch or 8
    if args.ddim_steps < 0 or (args.ddim_batch is not None and args.ddim_batch < 1):
        ap.error("--ddim-steps must be >= 0 and --ddim-batch >= 1")
    return args


def bench_run(args):
    """The preset's run config (from its params file) at the benchmark's batch and compile setting."""
    path, name, shape = PRESETS[args.preset]
    run = parse_params(read_params(ROOT / path), str(path)).run(name)
    train = dataclasses.replace(run.train, batch_size=args.batch or run.train.batch_size, compile=args.compile)
    return dataclasses.replace(run, train=train), shape


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def paired_medians(fns: dict, per_call: dict, repeats: int, warmup: int, device) -> dict:
    """Seconds per unit of each fn (its time / per_call[name]), median over repeats; the fns are timed
    back to back within each repeat. Also 'ratio:a/b' medians of the per-repeat ratios."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
        _sync(device)
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            _sync(device)
            start = time.perf_counter()
            fn()
            _sync(device)
            times[name].append((time.perf_counter() - start) / per_call[name])
    out = {name: statistics.median(v) for name, v in times.items()}
    names = list(fns)
    for a in names[1:]:
        out[f"ratio:{names[0]}/{a}"] = statistics.median(x / y for x, y in zip(times[names[0]], times[a]))
    out["times"] = times
    return out


def host_syncs(fn) -> list:
    """The operations in fn() that made the host wait for the GPU (torch's sync debug mode)."""
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            fn()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    torch.cuda.synchronize()
    return [str(w.message).splitlines()[0][:160] for w in caught if "synchroniz" in str(w.message)]


def _ratio_range(a: list, b: list) -> list:
    """[min, max] over the repeats of a / b: how far one repeat strays on a busy machine."""
    ratios = [x / y for x, y in zip(a, b)]
    return [min(ratios), max(ratios)]


def _peak_mb(device):
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None


def _reset_peak(device):
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def random_images(n: int, shape, levels: int, seed: int = 0) -> np.ndarray:
    """n random images on the data's levels, rescaled to [-1, 1] as the prepare stage stores them."""
    rng = np.random.default_rng(seed)
    return (rng.integers(0, levels, (n, *shape)) * (2.0 / (levels - 1)) - 1.0).astype(np.float32)


class Side:
    """One implementation's timed rounds: `train` (RECORD_EVERY training steps, then the one read of
    their losses the loop makes) and `sample` (K reverse steps), plus what it reports about itself."""
    train = sample = example = sample_same = None
    info: dict


def build_ours(args, run, shape, device) -> Side:
    """diffrepro's trainer (training.prepare + train_step), sample loop and bound, with the bare-network
    rounds the overheads divide by."""
    side = Side()
    batch, T, K = run.train.batch_size, run.diffusion.timesteps, args.sample_steps
    levels = run.dataset.levels or 256
    bf16 = None if args.precision == "auto" else args.precision == "bf16"
    nhwc = False if args.no_channels_last else None
    _reset_peak(device)
    loop = training.prepare(run, random_images(max(1024, 8 * batch), shape, levels), device=device, seed=0,
                            bf16=bf16, channels_last=nhwc)
    model = loop.model.train()
    k = training.RECORD_EVERY
    step = iter(range(10**9))

    def train_round():
        losses = [training.train_step(loop, next(step)) for _ in range(k)]
        torch.stack(losses).tolist()

    gen = torch.Generator(device=device).manual_seed(1)
    fmt = torch.channels_last if loop.channels_last else torch.contiguous_format
    x_t = torch.randn((batch, *shape), generator=gen, device=device).contiguous(memory_format=fmt)
    t = torch.randint(0, T, (batch,), generator=gen, device=device)
    target = torch.randn((batch, *shape), generator=gen, device=device)

    def fwd_bwd_round():
        for _ in range(k):
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=loop.use_bf16):
                out = model(x_t, t)
            (out.float() - target).square().mean().backward()
            model.zero_grad(set_to_none=True)

    def adam_round():  # the optimiser alone (on zero gradients: the same work), for the record
        for p in loop.params:
            p.grad = torch.zeros_like(p) if p.grad is None else p.grad
        for _ in range(k):
            loop.optimizer.step()
        loop.optimizer.zero_grad(set_to_none=True)

    train_round()  # warm, and the peak memory of training alone
    side.info = {"params_ours": sum(p.numel() for p in model.parameters()),
                 "precision": "bf16" if loop.use_bf16 else "fp32", "channels_last": loop.channels_last,
                 "compile": run.train.compile, "train_peak_mem_mb": _peak_mb(device)}
    if device.type == "cuda":  # the loop should wait for the GPU only where it reads the losses
        syncs = host_syncs(lambda: [training.train_step(loop, next(step)) for _ in range(k - 1)])
        side.info.update(train_step_host_syncs=len(syncs), train_step_host_sync_kinds=sorted(set(syncs))[:3])

    # the bound as the nll stage runs it: the EMA net as TrainedRun.open rebuilds it (eval, fp32, image networks
    # in NHWC); sampling as the sample stage runs it: that net as sampling.for_sampling makes it at
    # sample.precision (auto: the precision the run trained at, here the trainer's just measured)
    net = copy.deepcopy(loop.ema).to(memory_format=torch.channels_last if uses_channels_last(device, len(shape))
                                     else torch.contiguous_format).eval()
    trained_at = dataclasses.replace(run, train=dataclasses.replace(run.train, precision=side.info["precision"]))
    trained = TrainedRun(run=trained_at, model=net, process=None, data_map=None, data_shape=tuple(shape),
                         path=Path("model.pt"), digest="")
    bound_net, net = net, for_sampling(trained, run.sample.precision).model
    side.info["sample_precision"] = "bf16" if isinstance(net, Bf16Net) else "fp32"
    short = build.build(dataclasses.replace(run, diffusion=dataclasses.replace(run.diffusion, timesteps=K)),
                        shape)[1].to(device)
    xs = torch.randn((batch, *shape), generator=gen, device=device)
    ts = torch.full((batch,), K // 2, dtype=torch.long, device=device)

    def sample_round():
        sample(short, net, (batch, *shape), generator=gen, device=device, progress=False)

    @torch.no_grad()
    def fwd_round():
        for _ in range(K):
            net(xs, ts)

    process = build.build(run, shape)[1].to(device)
    x_eval = random_images(batch, shape, levels, seed=1)

    def bound_round():
        evaluate_bound(process, bound_net, x_eval, batch_size=batch, seed=0, device=device)

    ddim_batch = args.ddim_batch or run.sample.batch_size

    def ddim_chain(steps):  # the sample stage's draw with sampler: ddim, at its batch, from pure noise
        sample(process, net, (ddim_batch, *shape), generator=gen, device=device, progress=False,
               clip_denoised=run.sample.clip_denoised, sampler="ddim", steps=steps, eta=0.0)

    side.train, side.fwd_bwd, side.adam = train_round, fwd_bwd_round, adam_round
    side.sample, side.fwd, side.bound, side.ddim, side.ddim_batch = (sample_round, fwd_round, bound_round, ddim_chain,
                                                                     ddim_batch)
    return side


def diffusers_unet_config(preset_cfg: dict, shape) -> dict:
    """UNet2DModel keywords for the DDPM U-Net of `preset_cfg` (nets/unet.py): the mapping the diffusers
    export uses (interop/diffusers.py), so the side-by-side runs the very network an export holds."""
    from diffrepro.interop.diffusers import unet_config

    return unet_config(preset_cfg, shape, out_mult=1)


def build_diffusers(args, run, shape, device, precision: str, channels_last: bool, sample_precision: str) -> Side:
    """UNet2DModel + DDPMScheduler: the same training step (add_noise, L_simple, clip, Adam, EMA,
    losses read every RECORD_EVERY steps) and DDPMPipeline's sampling loop, as it runs by default (fp32
    on the CPU) and, where ours samples under bf16, under the same autocast (`sample_same`)."""
    import diffusers
    from diffusers import DDPMScheduler, UNet2DModel

    from diffrepro.nets.unet import unet_preset

    side = Side()
    batch, T, K = run.train.batch_size, run.diffusion.timesteps, args.sample_steps
    levels = run.dataset.levels or 256
    preset_cfg = {**unet_preset(run.model.options["preset"]),
                  **{k: v for k, v in run.model.options.items() if k != "preset"}}
    cfg = diffusers_unet_config(preset_cfg, shape)
    resident = torch.cuda.memory_allocated(device) if device.type == "cuda" else 0  # our side's, kept
    _reset_peak(device)
    torch.manual_seed(0)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    unet = UNet2DModel(**cfg).to(device).to(memory_format=fmt).train()
    ema = copy.deepcopy(unet).requires_grad_(False)
    ema_params, params = list(ema.parameters()), list(unet.parameters())
    if run.train.compile:
        unet.compile()
    # the trainer's own optimiser settings, so the ratio compares the networks and the step loops
    opt = torch.optim.Adam(params, lr=run.train.lr, fused=True)
    d = run.diffusion
    scheduler_kw = dict(beta_start=d.beta_start, beta_end=d.beta_end, beta_schedule="linear",
                        variance_type="fixed_large" if d.var_type == "fixed_large" else "fixed_small",
                        clip_sample=run.sample.clip_denoised is not False)
    sched = DDPMScheduler(num_train_timesteps=T, **scheduler_kw)
    data = torch.as_tensor(random_images(max(1024, 8 * batch), shape, levels), device=device)
    gen = torch.Generator(device=device).manual_seed(0)
    bf16 = precision == "bf16"
    k = training.RECORD_EVERY

    def train_step():
        x0 = data[torch.randint(0, len(data), (batch,), generator=gen, device=device)].contiguous(memory_format=fmt)
        t = torch.randint(0, T, (batch,), generator=gen, device=device)
        noise = torch.randn(x0.shape, generator=gen, device=device)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=bf16):
            pred = unet(sched.add_noise(x0, noise, t), t, return_dict=False)[0]
        loss = F.mse_loss(pred.float(), noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, run.train.grad_clip)
        opt.step()
        with torch.no_grad():
            torch._foreach_lerp_(ema_params, params, 1.0 - run.train.ema_decay)
        return loss.detach()

    def train_round():
        torch.stack([train_step() for _ in range(k)]).tolist()

    # the step as diffusers' own examples/unconditional_image_generation/train_unconditional.py takes it
    # with its defaults (mixed_precision "no", AdamW betas (0.95, 0.999), weight decay 1e-6, eps 1e-8,
    # cosine lr schedule with 500 warm-up steps, EMAModel with warm-up, clip 1.0, the loss read every
    # step for the progress bar); its data loader and accelerate's wrapper are left out (they only add)
    from diffusers.optimization import get_scheduler
    from diffusers.training_utils import EMAModel

    example_unet = copy.deepcopy(unet).to(memory_format=torch.contiguous_format)  # the script's NCHW
    example_bf16 = bf16 and device.type == "cuda"  # the script's default on the CPU is fp32 (mixed_precision "no")
    example_params = list(example_unet.parameters())
    example_opt = torch.optim.AdamW(example_params, lr=run.train.lr, betas=(0.95, 0.999), weight_decay=1e-6,
                                    eps=1e-8)
    example_lr = get_scheduler("cosine", optimizer=example_opt, num_warmup_steps=500, num_training_steps=10**6)
    example_ema = EMAModel(example_params, decay=0.9999, use_ema_warmup=True, inv_gamma=1.0, power=0.75)

    def example_step():
        x0 = data[torch.randint(0, len(data), (batch,), generator=gen, device=device)]
        noise = torch.randn(x0.shape, generator=gen, device=device)
        t = torch.randint(0, T, (batch,), generator=gen, device=device)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=example_bf16):
            pred = example_unet(sched.add_noise(x0, noise, t), t).sample
        loss = F.mse_loss(pred.float(), noise.float())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(example_params, 1.0)
        example_opt.step()
        example_lr.step()
        example_opt.zero_grad()
        example_ema.step(example_params)
        return loss.detach().item()

    def example_round():
        for _ in range(k):
            example_step()

    train_round()  # warm, and the peak memory of training alone (less our side's resident memory)
    peak = _peak_mb(device)
    net = copy.deepcopy(ema).to(memory_format=torch.contiguous_format).eval()  # DDPMPipeline's NCHW
    short = DDPMScheduler(num_train_timesteps=K, **scheduler_kw)

    @torch.no_grad()
    def sample_round(bf16: bool = False):  # pipeline_ddpm.DDPMPipeline.__call__'s loop (fp32 by default)
        short.set_timesteps(K)
        image = torch.randn((batch, *shape), generator=gen, device=device)
        for t in short.timesteps:
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=bf16):
                eps = net(image, t).sample
            image = short.step(eps.float(), t, image, generator=gen).prev_sample

    side.train, side.sample, side.example = train_round, sample_round, example_round
    if sample_precision == "bf16":  # the same loop at our sampler's precision
        side.sample_same = lambda: sample_round(bf16=True)
    side.info = {"diffusers_version": diffusers.__version__,
                 "diffusers_unet": {k: list(v) if isinstance(v, tuple) else v for k, v in cfg.items()},
                 "params_diffusers": sum(p.numel() for p in params),
                 "diffusers_train_peak_mem_mb": None if peak is None else peak - resident / 2**20}
    return side


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def run_benchmark(args) -> dict:
    configure_threads(args.threads)
    device = pick_device(args.device)
    run, shape = bench_run(args)
    batch, T, K = run.train.batch_size, run.diffusion.timesteps, args.sample_steps
    out = {"preset": args.preset, "run": run.name, "device": device.type,
           "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_model(),
           "torch": torch.__version__, "threads": torch.get_num_threads(), "omp_wait": OMP_WAIT, "batch": batch, "T": T,
           "sample_steps_timed": K, "repeats": args.repeats, "warmup": args.warmup,
           "note": (f"sampling timed over {K} reverse steps and scaled to a full chain of T = {T}: images/s = "
                    f"batch / (step time x T); medians of {args.repeats} repeats, each timing every side "
                    f"back to back")}
    ours = build_ours(args, run, shape, device)
    out.update(ours.info)
    theirs = None
    if not args.no_diffusers:
        try:
            import diffusers  # noqa: F401
        except ImportError:
            print("speed.py: diffusers is not installed (pip install -e '.[bench]'); the diffusers comparison is "
                  "skipped", file=sys.stderr)
        else:
            theirs = build_diffusers(args, run, shape, device, out["precision"], out["channels_last"],
                                     out["sample_precision"])
            out.update(theirs.info)
    k = training.RECORD_EVERY
    fns = {"step": ours.train, "fwd_bwd": ours.fwd_bwd, "adam": ours.adam}
    if theirs is not None:
        fns["diffusers"] = theirs.train
        fns["diffusers_example"] = theirs.example
    tr = paired_medians(fns, dict.fromkeys(fns, k), args.repeats, args.warmup, device)
    times = tr["times"]
    out.update({
        "train_step_ms": 1e3 * tr["step"], "net_fwd_bwd_ms": 1e3 * tr["fwd_bwd"],
        "train_overhead": tr["ratio:step/fwd_bwd"],
        "train_overhead_range": _ratio_range(times["step"], times["fwd_bwd"]),
        "adam_step_ms": 1e3 * tr["adam"],
        "train_overhead_without_adam": statistics.median((a - o) / b for a, b, o in
                                                         zip(times["step"], times["fwd_bwd"], times["adam"])),
        "train_images_per_s": batch / tr["step"]})
    fns = {"step": ours.sample, "fwd": ours.fwd}
    if theirs is not None:
        fns["diffusers"] = theirs.sample
        if theirs.sample_same is not None:
            fns["diffusers_same_precision"] = theirs.sample_same
    sm = paired_medians(fns, dict.fromkeys(fns, K), args.repeats, args.warmup, device)
    out.update({
        "sample_step_ms": 1e3 * sm["step"], "net_fwd_ms": 1e3 * sm["fwd"],
        "sample_overhead": sm["ratio:step/fwd"], "sample_overhead_range": _ratio_range(sm["times"]["step"],
                                                                                      sm["times"]["fwd"]),
        "sample_images_per_s": batch / (sm["step"] * T)})
    out["bound_images_per_s"] = None
    if not args.no_bound:
        out["bound_images_per_s"] = batch / paired_medians({"bound": ours.bound}, {"bound": 1}, args.bound_repeats,
                                                           0, device)["bound"]
    out.update(ddim_steps=args.ddim_steps or None, ddim_batch=None, ddim_images_per_s=None)
    if args.ddim_steps:  # one warm chain of 2 steps (cudnn picks its kernels for this batch), then one timed
        ours.ddim(2)
        chain = paired_medians({"ddim": lambda: ours.ddim(args.ddim_steps)}, {"ddim": 1}, 1, 0, device)["ddim"]
        out.update(ddim_batch=ours.ddim_batch, ddim_images_per_s=ours.ddim_batch / chain)
    for key in ("diffusers_version", "params_diffusers", "diffusers_train_images_per_s",
                "diffusers_same_step_train_images_per_s", "diffusers_sample_images_per_s", "train_vs_diffusers",
                "train_vs_diffusers_same_step", "sample_vs_diffusers", "sample_vs_diffusers_same_precision"):
        out.setdefault(key, None)
    if theirs is not None:
        def ratio(ours_times, theirs_times):  # median of the per-repeat ratios: our images/s / theirs
            return statistics.median(b / a for a, b in zip(ours_times, theirs_times))

        out.update({
            "diffusers_train_step_ms": 1e3 * tr["diffusers_example"],
            "diffusers_train_images_per_s": batch / tr["diffusers_example"],
            "diffusers_same_step_train_step_ms": 1e3 * tr["diffusers"],
            "diffusers_same_step_train_images_per_s": batch / tr["diffusers"],
            "diffusers_sample_step_ms": 1e3 * sm["diffusers"],
            "diffusers_sample_images_per_s": batch / (sm["diffusers"] * T),
            "train_vs_diffusers": ratio(times["step"], times["diffusers_example"]),
            "train_vs_diffusers_same_step": ratio(times["step"], times["diffusers"]),
            "sample_vs_diffusers": ratio(sm["times"]["step"], sm["times"]["diffusers"])})
        if "diffusers_same_precision" in sm:
            out.update({"diffusers_same_precision_sample_images_per_s": batch / (sm["diffusers_same_precision"] * T),
                        "sample_vs_diffusers_same_precision": ratio(sm["times"]["step"],
                                                                    sm["times"]["diffusers_same_precision"])})
    out["targets"] = {k: {"max": v, "met": bool(out[k] <= v)} for k, v in TARGETS.items()}
    return out


def table(r: dict) -> str:
    def f(v, fmt="{:.1f}"):
        return "n/a" if v is None else fmt.format(v)

    rows = [
        ("training images/s (diffusers: its example script's step)", f(r["train_images_per_s"]),
         f(r["diffusers_train_images_per_s"]), f(r["train_vs_diffusers"], "{:.2f}")),
        ("training images/s (diffusers: our optimiser, EMA and loss reads)", f(r["train_images_per_s"]),
         f(r["diffusers_same_step_train_images_per_s"]), f(r["train_vs_diffusers_same_step"], "{:.2f}")),
        (f"sampling images/s (full T = {r['T']})", f(r["sample_images_per_s"], "{:.2f}"),
         f(r["diffusers_sample_images_per_s"], "{:.2f}"), f(r["sample_vs_diffusers"], "{:.2f}")),
        (f"sampling images/s (diffusers' loop at our {r['sample_precision']})", f(r["sample_images_per_s"], "{:.2f}"),
         f(r.get("diffusers_same_precision_sample_images_per_s"), "{:.2f}"),
         f(r.get("sample_vs_diffusers_same_precision"), "{:.2f}")),
        ("bound images/s (all T terms)", f(r.get("bound_images_per_s"), "{:.2f}"), "", ""),
        (f"DDIM images/s ({r['ddim_steps']} steps, batch {r['ddim_batch']})", f(r.get("ddim_images_per_s"), "{:.1f}"),
         "", "") if r.get("ddim_steps") else None,
        ("parameters", f"{r['params_ours']:,}", f(r["params_diffusers"], "{:,}"), ""),
    ]
    lines = ["| | diffrepro | diffusers | ratio |", "|---|---|---|---|"]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in filter(None, rows)]
    t, s = r["targets"]["train_overhead"], r["targets"]["sample_overhead"]
    tr, sr = r["train_overhead_range"], r["sample_overhead_range"]
    lines += ["", f"train_overhead {r['train_overhead']:.3f} (step {r['train_step_ms']:.2f} ms / net fwd+bwd "
              f"{r['net_fwd_bwd_ms']:.2f} ms; repeats {tr[0]:.3f}-{tr[1]:.3f}; target <= {t['max']}: "
              f"{'met' if t['met'] else 'NOT met'}); without Adam's {r['adam_step_ms']:.2f} ms: "
              f"{r['train_overhead_without_adam']:.3f}",
              f"sample_overhead {r['sample_overhead']:.3f} (step {r['sample_step_ms']:.2f} ms / net fwd "
              f"{r['net_fwd_ms']:.2f} ms; repeats {sr[0]:.3f}-{sr[1]:.3f}; target <= {s['max']}: "
              f"{'met' if s['met'] else 'NOT met'})"]
    return "\n".join(lines)


def main(argv=None) -> dict:
    args = parse_args(argv)
    r = run_benchmark(args)
    if args.json:
        print(json.dumps(r, indent=1))
    else:
        print(f"{r['preset']} ({r['run']}), {r['device']} ({r['device_name']}), torch {r['torch']}, "
              f"{r['threads']} thread(s) (OpenMP wait: {r['omp_wait']}), batch {r['batch']}, T {r['T']}, "
              f"{r['precision']}"
              f"{', channels_last' if r['channels_last'] else ''}{', compiled' if r['compile'] else ''}; "
              f"{r['note']}")
        print(table(r))
    return r


if __name__ == "__main__":
    main()
