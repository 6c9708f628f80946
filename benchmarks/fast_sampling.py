"""Benchmark: FID against the number of reverse steps of a trained DDPM run, for ancestral sampling on
a respaced chain (Improved DDPM) and DDIM with η = 0 (Song et al.).

Reads a run's model.pt (the train stage's), its data set's feature network (the features stage's
results/features/<dataset>.pt) and test split (the prepare stage's). For each seed, every setting draws
n samples from that seed (so all start from the same x_T), is timed, and is scored as the fid stage
scores a run: FID and KID of the first m = min(n, test examples) samples against the first m test
examples, in the data set's feature space. With --train, the train-vs-test floor at m is printed too.
Prints a markdown table of means (± std over the seeds); --json also writes every row.
Usage: python benchmarks/fast_sampling.py --model results/runs/digits-ddpm/model.pt
         --extractor results/features/digits.pt --test results/data/digits/test.npz
         [--train results/data/digits/train.npz] [--n 360] [--steps 10 25 50 100] [--seeds 0 1 2]
         [--threads 1] [--json F]
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from diffrepro.io import load_data
from diffrepro.metrics import fid
from diffrepro.runs.checkpoint import TrainedRun
from diffrepro.runs.sampling import Sampler, sample
from diffrepro.runtime import configure_threads
from diffrepro.stages.fid import feature_space

SAMPLERS = (("ancestral", Sampler.ANCESTRAL, 0.0), ("ddim η=0", Sampler.DDIM, 0.0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a DDPM run's model.pt")
    parser.add_argument("--extractor", required=True, help="the data set's feature network (features stage)")
    parser.add_argument("--test", required=True, help="the data set's test.npz (prepare stage)")
    parser.add_argument("--train", help="the data set's train.npz: also print the train-vs-test FID floor")
    parser.add_argument("--n", type=int, default=360, help="samples per setting and test examples (FID's n)")
    parser.add_argument("--steps", type=int, nargs="+", default=[10, 25, 50, 100],
                        help="reverse step counts besides T (those above T are dropped)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="one sweep per seed")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", help="also write the rows here")
    args = parser.parse_args()

    configure_threads(args.threads)
    device = torch.device("cpu")
    trained = TrainedRun.open(args.model, device)
    run, model, process = trained.run, trained.model, trained.process
    test = load_data(args.test, "test data", run.dataset.data_type)["x"][: args.n]
    m = len(test)  # the fid stage's count: at most the test split (digits: 359)
    net, meta = fid.load_extractor(args.extractor, device)
    f_test = fid.extract_features(net, test)
    T = process.num_timesteps
    steps = sorted({k for k in args.steps if 1 <= k < T} | {T})
    shape = (args.n, *trained.data_shape)

    rows = []  # one per sampler, step count and seed
    for seed in args.seeds:
        for name, sampler, eta in SAMPLERS:
            for k in steps:
                start = time.perf_counter()
                x = sample(process, model, shape, torch.Generator(device=device).manual_seed(seed), device=device,
                           progress=False, clip_denoised=run.sample.clip_denoised, sampler=sampler, steps=k, eta=eta)
                seconds = time.perf_counter() - start
                scores = fid.fid_kid_from_features(fid.extract_features(net, x[:m]), f_test, seed=seed)
                rows.append({"sampler": name, "steps": k, "seed": seed, "seconds": seconds, "fid": scores["fid"],
                             "kid": scores["kid_mean"]})
                print(f"seed {seed}, {name}, {k} steps: FID {scores['fid']:.3f} in {seconds:.1f} s", flush=True)

    def mean(name, k, key):
        return statistics.mean(r[key] for r in rows if r["sampler"] == name and r["steps"] == k)

    def spread(name, k):
        fids = [r["fid"] for r in rows if r["sampler"] == name and r["steps"] == k]
        return statistics.stdev(fids) if len(fids) > 1 else float("nan")

    baseline = mean("ancestral", T, "fid")
    space = feature_space(meta["kind"], run.dataset.name)
    print(f"\nrun {run.name} (T = {T}, {run.diffusion.var_type} variances): {args.n} samples per setting and seed, "
          f"FID/KID of {m} of them against {m} test examples in {space}; seeds {', '.join(map(str, args.seeds))} "
          f"(one x_T per seed, shared by every setting); mean (± std over seeds)\n")
    print("| sampler | steps | seconds | FID | FID / ancestral T | KID ×10³ |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, _, _ in SAMPLERS:
        for k in steps:
            print(f"| {name} | {k} | {mean(name, k, 'seconds'):.1f} | {mean(name, k, 'fid'):.3f} ± "
                  f"{spread(name, k):.3f} | {mean(name, k, 'fid') / baseline:.2f} | {1e3 * mean(name, k, 'kid'):.1f} |")
    floor = None
    if args.train:
        train = load_data(args.train, "training data", run.dataset.data_type)["x"][:m]
        floor = fid.fid_kid_from_features(fid.extract_features(net, train), f_test, seed=args.seeds[0])["fid"]
        print(f"\ntrain-vs-test floor at {m}: FID {floor:.3f}")
    quarter = max(1, T // 4)
    if quarter in steps:
        ddim = mean("ddim η=0", quarter, "fid")
        verdict = "met" if ddim <= 1.5 * baseline else "NOT met"
        print(f"target (DDIM with T/4 = {quarter} steps within 1.5x of ancestral at T): FID {ddim:.3f} vs "
              f"{baseline:.3f}, ratio {ddim / baseline:.2f}: {verdict}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"run": run.name, "timesteps": T, "n": args.n, "fid_n": m, "feature_space": space,
                       "seeds": args.seeds, "floor_fid": floor, "rows": rows}, f, indent=2)

if __name__ == "__main__":
    main()
