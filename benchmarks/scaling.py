"""Benchmark: what the CIFAR-10 paper config (configs/ddpm-cifar10.yaml) costs, from one measurement and
the FLOP count of its network, on 1, 4 and 32 GPUs (docs/scaling.md records a run of it).

Measured here: the 35.7M U-Net's forward FLOPs per 32x32 image (torch.utils.flop_counter), and its
images/s on this machine's CPU for a forward (sampling, the bound) and a training step (forward,
backward, Adam). The GPU figures are a model, stated as one: FLOPs / (the card's dense bf16 peak x a
utilisation), divided by the GPU count (shards of sampling and the bound are independent jobs;
DDP training is taken as linear, which it nearly is at batch 128 per 8 GPUs and not beyond that
global batch: the paper's recipe fixes batch 128, so past 8 GPUs per-GPU batches shrink below 16).
Usage: python benchmarks/scaling.py [--gpu-tflops 989] [--utilisation 0.3] [--batch 8] [--json]
"""
from __future__ import annotations

import argparse
import json
import time

import torch

from diffrepro.nets.unet import UNet

STEPS, BATCH = 800_000, 128           # DDPM §4 / Appendix B: CIFAR-10 training
T, SAMPLES, DDIM_STEPS, TEST = 1000, 50_000, 50, 10_000
TRAIN_FACTOR = 3                      # a training step: forward + backward (about twice the forward)


def forward_flops(net, shape) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    x, t = torch.zeros(1, *shape), torch.zeros(1, dtype=torch.long)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        net(x, t)
    return counter.get_total_flops()


def cpu_rates(net, shape, batch: int, repeats: int = 3) -> dict:
    x = torch.randn(batch, *shape)
    t = torch.randint(0, T, (batch,))
    net.eval()
    with torch.no_grad():
        net(x, t)
        start = time.perf_counter()
        for _ in range(repeats):
            net(x, t)
        fwd = repeats * batch / (time.perf_counter() - start)
    net.train()
    opt = torch.optim.Adam(net.parameters(), lr=2e-4)

    def step():
        opt.zero_grad(set_to_none=True)
        (net(x, t) - x).square().mean().backward()
        opt.step()

    step()
    start = time.perf_counter()
    for _ in range(repeats):
        step()
    return {"forward_images_per_s": fwd, "train_images_per_s": repeats * batch / (time.perf_counter() - start)}


def hours(flops: float, rate_flops: float) -> float:
    return flops / rate_flops / 3600


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gpu-tflops", type=float, default=989.0, help="the card's dense bf16 peak (H100 SXM: 989)")
    ap.add_argument("--utilisation", type=float, default=0.15,
                    help="the share of that peak a step reaches (DDPM's TPU v3-8 figure, 2,700 training images/s, "
                         "is about 0.24 of that pod's peak; 0.15 is a cautious guess for one GPU)")
    ap.add_argument("--batch", type=int, default=8, help="CPU measurement batch")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    shape = (3, 32, 32)
    torch.manual_seed(0)
    net = UNet(shape, preset="ddpm-cifar10")
    flops = forward_flops(net, shape)
    rates = cpu_rates(net, shape, args.batch)
    work = {  # forward-equivalent FLOPs of each piece of the paper's chain
        "train 800k steps x 128": STEPS * BATCH * TRAIN_FACTOR * flops,
        "50k samples, 1000 ancestral steps": SAMPLES * T * flops,
        "50k samples, 50 DDIM steps": SAMPLES * DDIM_STEPS * flops,
        "bound over 10k test images (1000 terms)": TEST * T * flops,
    }
    cpu_flops = {"train 800k steps x 128": rates["train_images_per_s"] * TRAIN_FACTOR * flops}
    gpu = args.gpu_tflops * 1e12 * args.utilisation
    out = {"params": sum(p.numel() for p in net.parameters()), "forward_gflops_per_image": flops / 1e9,
           "cpu_threads": torch.get_num_threads(), **rates, "gpu_tflops": args.gpu_tflops,
           "utilisation": args.utilisation, "rows": {}}
    for name, f in work.items():
        cpu_rate = cpu_flops.get(name, rates["forward_images_per_s"] * flops)
        out["rows"][name] = {"pflop": f / 1e15, "cpu_hours": hours(f, cpu_rate),
                             **{f"gpu{n}_hours": hours(f, n * gpu) for n in (1, 4, 32)}}
    if args.json:
        print(json.dumps(out, indent=1))
        return 0
    print(f"U-Net {out['params']:,} parameters, {out['forward_gflops_per_image']:.2f} GFLOP per 32x32 forward")
    print(f"this CPU ({out['cpu_threads']} threads): {rates['forward_images_per_s']:.1f} forward images/s, "
          f"{rates['train_images_per_s']:.2f} training images/s")
    print(f"GPU model: {args.gpu_tflops:.0f} TFLOP/s x {args.utilisation:.0%} = {gpu / 1e12:.0f} TFLOP/s per GPU")
    print(f"{'piece':42s} {'PFLOP':>7s} {'this CPU':>11s} {'1 GPU':>8s} {'4 GPUs':>8s} {'32 GPUs':>8s}")
    for name, row in out["rows"].items():
        print(f"{name:42s} {row['pflop']:7.0f} {row['cpu_hours'] / 24:9.0f} d {row['gpu1_hours']:7.2f}h "
              f"{row['gpu4_hours']:7.2f}h {row['gpu32_hours']:7.3f}h")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
