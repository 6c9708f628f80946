"""The GPU check's configurations and its table (benchmarks/gpu_check.sh runs them; issue 21, point 5).

Each configuration is one benchmarks/speed.py run of the ddpm-cifar10 preset with its own time limit;
the limits add up to at most TOTAL_LIMIT_S, so the whole check stays under 5 minutes.
Usage: python benchmarks/gpu_check.py preflight        exit 1, in one line, where the check cannot run here
       python benchmarks/gpu_check.py configs          one line per configuration: name|limit|flags
       python benchmarks/gpu_check.py table DIR         the markdown table of DIR/<name>.json
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

TOTAL_LIMIT_S = 300
TRAIN_GOAL = 2700        # training images/s: DDPM's TPU v3-8 figure (Ho et al. 2020, Appendix B)
DDIM_N, DDIM_STEPS, DDIM_GOAL_S = 50_000, 50, 300   # FID's 50k samples, DDIM's 50 steps (Song et al. 2021)
# name, time limit (s), speed.py flags (beside COMMON and the user's own). A run past its limit reports
# nothing, so the limits follow each run's work: eager-bf16 also walks the bound's 1000 terms and one
# 50-step DDIM chain at batch 1000; the compiled runs leave diffusers out (compiling our U-Net alone
# took about 90 s of a 143 s --quick run on 2 CPU cores), and the eager runs compare with diffusers.
CONFIGS = (
    ("eager-bf16", 100, f"--precision bf16 --bound-repeats 1 --ddim-steps {DDIM_STEPS}"),
    ("eager-fp32", 50, "--precision fp32 --no-bound"),
    ("compiled-bf16", 85, "--precision bf16 --compile --no-bound --repeats 3 --no-diffusers"),
    ("compiled-fp32", 65, "--precision fp32 --compile --no-bound --repeats 3 --no-diffusers"),
)
COMMON = "--preset ddpm-cifar10 --device cuda --threads 8 --json"

HEADER = ("| config | train img/s | train overhead | train peak MB | syncs in 9 steps | sample img/s (T) | "
          "sample overhead | train vs diffusers (its example script) | train vs diffusers (same step) | "
          "sampler precision (sample.precision auto) | sample vs diffusers (its fp32 loop) | "
          "sample vs diffusers (its loop at our precision) |")


def _f(value, fmt="{:.2f}") -> str:
    return "n/a" if value is None else fmt.format(value)


def ddim_seconds(r: dict) -> tuple:
    """(seconds for DDIM_N samples with DDIM_STEPS steps, how they were found) from speed.py's JSON: its
    timed DDIM chain at the sample stage's batch where it ran one (--ddim-steps), else the sampler's
    images/s per full T-step chain at the training batch (the network dominates a reverse step, so a
    DDIM_STEPS-step chain costs DDIM_STEPS / T of it); (None, "n/a") where neither is there."""
    if r.get("ddim_images_per_s"):
        return DDIM_N / r["ddim_images_per_s"] * DDIM_STEPS / r["ddim_steps"], f"timed at batch {r['ddim_batch']}"
    if r.get("sample_images_per_s"):
        return DDIM_N / (r["sample_images_per_s"] * r["T"] / DDIM_STEPS), f"from batch {r['batch']}"
    return None, "n/a"


def row(name: str, r: dict | None) -> str:
    if r is None:
        return f"| {name} | failed or timed out |" + " |" * 10
    return (f"| {name} | {_f(r['train_images_per_s'], '{:.0f}')} | {_f(r['train_overhead'])} | "
            f"{_f(r.get('train_peak_mem_mb'), '{:.0f}')} | {r.get('train_step_host_syncs', 'n/a')} | "
            f"{_f(r['sample_images_per_s'])} | {_f(r['sample_overhead'])} | {_f(r.get('train_vs_diffusers'))} | "
            f"{_f(r.get('train_vs_diffusers_same_step'))} | {r.get('sample_precision', 'fp32')} | "
            f"{_f(r.get('sample_vs_diffusers'))} | {_f(r.get('sample_vs_diffusers_same_precision'))} |")


def table(results: dict) -> str:
    """The check's report: {config name: speed.py's JSON, or None where it failed} -> markdown lines."""
    done = {name: r for name, r in results.items() if r is not None}
    if done:
        head = next(iter(done.values()))
        lines = [f"{head['device_name']}, torch {head['torch']}, batch {head['batch']}, T {head['T']}, "
                 f"params ours {head['params_ours']:,} / diffusers {_f(head.get('params_diffusers'), '{:,}')}, "
                 f"channels_last {head['channels_last']}, diffusers {head.get('diffusers_version') or 'n/a'}"]
    else:
        lines = ["no run finished"]
    lines += [HEADER, "|---" * HEADER.count(" | ") + "|---|"]
    lines += [row(name, r) for name, r in results.items()]
    best = max((r["train_images_per_s"] for r in done.values()), default=None)
    ddim = [(name, *ddim_seconds(r)) for name, r in done.items()]
    lines.append(f"training goal: >= {TRAIN_GOAL} images/s (DDPM's TPU v3-8): best {_f(best, '{:.0f}')}; "
                 f"{DDIM_N:,} samples with {DDIM_STEPS} DDIM steps (goal <= {DDIM_GOAL_S} s): "
                 + (", ".join(f"{name} {_f(s, '{:.0f}')} s ({how})" for name, s, how in ddim) or "n/a"))
    for name, r in done.items():
        if r.get("bound_images_per_s"):
            lines.append(f"bound (all T terms, {name}): {r['bound_images_per_s']:.2f} images/s; "
                         f"sync kinds: {r.get('train_step_host_sync_kinds')}")
    return "\n".join(lines)


def read_results(folder: Path) -> dict:
    """{name: the JSON in folder/<name>.json, or None where it is missing or unreadable} for every config."""
    results = {}
    for name, _, _ in CONFIGS:
        try:
            results[name] = json.loads((folder / f"{name}.json").read_text())
        except (OSError, ValueError):
            results[name] = None
    return results


def preflight() -> int:
    """0 where the check can run: speed.py imports and reads the preset's params (jsonschema checks them),
    and torch sees a CUDA device; else 1 after one line saying what is missing. diffusers missing is a
    warning: our figures come without its ratios. A lent GPU machine has its own Python and torch and
    lacks some packages: benchmarks/gpu_wheels.sh fetches them."""
    import importlib.util

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    try:
        import speed

        speed.bench_run(speed.parse_args(["--preset", "ddpm-cifar10"]))
    except Exception as e:  # noqa: BLE001 (an ImportError above all: one line, not a traceback)
        print(f"gpu_check: speed.py cannot start with {sys.executable}: {type(e).__name__}: {e}; the packages "
              "a lent GPU machine lacks: bash benchmarks/gpu_wheels.sh", file=sys.stderr)
        return 1
    if importlib.util.find_spec("diffusers") is None:
        print(f"gpu_check: diffusers is not importable with {sys.executable}: no diffusers ratios "
              "(bash benchmarks/gpu_wheels.sh)", file=sys.stderr)
    if not speed.torch.cuda.is_available():
        print(f"gpu_check: no CUDA device is visible to torch {speed.torch.__version__}; this check needs one GPU. "
              "For the CPU figures run: python benchmarks/speed.py", file=sys.stderr)
        return 1
    return 0


def main(argv: list) -> int:
    if argv == ["preflight"]:
        return preflight()
    if argv[:1] == ["configs"] and len(argv) == 1:
        print("\n".join(f"{name}|{limit}|{COMMON} {flags}" for name, limit, flags in CONFIGS))
        return 0
    if argv[:1] == ["table"] and len(argv) == 2:
        print(table(read_results(Path(argv[1]))))
        return 0
    print(f"gpu_check.py: expected `preflight`, `configs` or `table DIR`, got {' '.join(argv) or 'nothing'}",
          file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
