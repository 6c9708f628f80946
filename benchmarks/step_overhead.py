"""Benchmark: how much a training step and a sampling step cost beyond the network itself.

Prints medians over several repeats of
  - network forward+backward alone vs a full training step (t/noise draw, loss, backward, Adam, EMA);
  - network forward alone vs one reverse step p_sample (mean/variance maths + noise),
for the default runs' networks (digits U-Net, 2-D MLP), one CPU thread unless --threads says more.
Ratios near 1 mean the diffusion bookkeeping is negligible next to the network.
Usage: python benchmarks/step_overhead.py [--params params.yaml] [--repeats 7] [--threads 1]
"""
from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch

from diffrepro.build import build
from diffrepro.config import load_params
from diffrepro.runtime import configure_threads, pick_device


def median_time(fn, repeats: int, inner: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(inner):
            fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append((time.perf_counter() - start) / inner)
    return statistics.median(times)


def bench_run(run, device, repeats: int, inner: int, shape) -> dict:
    torch.manual_seed(0)
    model, process = build(run, shape)  # the run's own process: its data's levels, its convention
    model, process = model.to(device), process.to(device)
    ema = copy.deepcopy(model).requires_grad_(False)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    b = run.train.batch_size
    x = torch.randn(b, *shape, device=device).clamp(-1, 1)
    if run.dataset.data_type == "binary":
        x = (x > 0).float()
    t = torch.randint(0, process.num_timesteps, (b,), device=device)
    gen = torch.Generator(device=device).manual_seed(0)

    def net_fwd_bwd():
        out = model(x, t)
        out.square().mean().backward()
        model.zero_grad(set_to_none=True)

    def train_step():
        loss = process.training_loss(model, x, generator=gen).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        with torch.no_grad():
            torch._foreach_lerp_(list(ema.parameters()), list(model.parameters()), 0.001)

    model.eval()
    xs = torch.randn(run.sample.batch_size, *shape, device=device)
    if run.dataset.data_type == "binary":
        xs = (xs > 0).float()
    ts = torch.full((xs.shape[0],), process.num_timesteps // 2, dtype=torch.long, device=device)

    @torch.no_grad()
    def net_fwd():
        model(xs, ts)

    @torch.no_grad()
    def reverse_step():
        process.p_sample(model, xs, ts, gen)

    model.train()
    net_train = median_time(net_fwd_bwd, repeats, inner)
    step = median_time(train_step, repeats, inner)
    model.eval()
    net_eval = median_time(net_fwd, repeats, inner)
    rev = median_time(reverse_step, repeats, inner)
    return {"net_fwd_bwd_ms": 1e3 * net_train, "train_step_ms": 1e3 * step, "train_ratio": step / net_train,
            "net_fwd_ms": 1e3 * net_eval, "p_sample_ms": 1e3 * rev, "sample_ratio": rev / net_eval,
            "train_images_per_s": b / step}


def setup(doc: str):
    """The command line both network benchmarks share (--params, --repeats, --inner, --threads):
    (args, params, device), threads configured and the set-up printed."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--inner", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    configure_threads(args.threads)
    params = load_params(args.params)
    device = pick_device(params.device)
    print(f"device {device}, {args.threads} thread(s), median of {args.repeats} x {args.inner}")
    return args, params, device


def main():
    args, params, device = setup(__doc__)
    for name, run in params.runs.items():
        shape = data_shape(run.dataset)
        if shape is None:
            continue
        r = bench_run(run, device, args.repeats, args.inner, shape)
        print(f"{name:16s} train step {r['train_step_ms']:7.2f} ms vs net fwd+bwd {r['net_fwd_bwd_ms']:7.2f} ms "
              f"(ratio {r['train_ratio']:.2f}); p_sample {r['p_sample_ms']:7.2f} ms vs net fwd "
              f"{r['net_fwd_ms']:7.2f} ms (ratio {r['sample_ratio']:.2f})")


def data_shape(ds):
    """One example's shape for the data sets whose shape the params alone decide."""
    o = ds.options
    return {"swissroll": (2,), "heartbeat": (o.get("length", 20),), "digits": (1, 8, 8),
            "mnist5k": (1, 28, 28), "mnist": (1, 28, 28), "cifar10": (3, 32, 32),
            "deadleaves": (1, o.get("image_size", 16), o.get("image_size", 16))}.get(ds.kind)


if __name__ == "__main__":
    main()
