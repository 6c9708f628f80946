#!/usr/bin/env bash
# GPU speed check of the trainer (issue 11): the ddpm-cifar10 preset (35.7M parameters) on random
# CIFAR-shaped data at batch 128, T = 1000, eager vs compiled, fp32 vs bf16, through
# benchmarks/speed.py: training and sampling images/s, train/sample overheads, peak memory
# (torch.cuda.max_memory_allocated), host-device syncs inside the training step, and the ratio to
# diffusers' UNet2DModel + DDPMScheduler at the same parameter count (pip install -e '.[bench]').
# At most 5 minutes on one GPU (most of it torch.compile): each run has its own time limit, 300 s in all.
# Usage: bash benchmarks/gpu_check.sh [--batch 128 ...]   (extra flags go to every speed.py run)
# Writes results/benchmarks/gpu_check/<config>.json and prints a markdown table for docs/benchmarks.md.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
export OMP_WAIT_POLICY=PASSIVE

if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
    echo "gpu_check.sh: no CUDA device is visible to torch ($("$PY" -c 'import torch; print(torch.__version__)' 2>&1 | tail -1)); this check needs one GPU. For the CPU figures run: python benchmarks/speed.py" >&2
    exit 1
fi

out=results/benchmarks/gpu_check
mkdir -p "$out"
common=(--preset ddpm-cifar10 --device cuda --threads 8 --json "$@")
# name | time limit (s) | speed.py flags
configs=(
    "eager-bf16|80|--precision bf16 --bound-repeats 1"
    "eager-fp32|50|--precision fp32 --no-bound"
    "compiled-bf16|100|--precision bf16 --compile --no-bound --repeats 3"
    "compiled-fp32|70|--precision fp32 --compile --no-bound --repeats 3 --no-diffusers"
)   # the limits add up to 300 s: the whole check stays under 5 minutes
for entry in "${configs[@]}"; do
    IFS='|' read -r name limit flags <<< "$entry"
    echo "gpu_check.sh: $name (at most ${limit} s)" >&2
    # shellcheck disable=SC2086
    if ! timeout "$limit" "$PY" benchmarks/speed.py "${common[@]}" $flags > "$out/$name.json" 2> "$out/$name.log"; then
        echo "gpu_check.sh: $name failed or ran past ${limit} s; see $out/$name.log" >&2
        rm -f "$out/$name.json"
    fi
done

"$PY" - "$out" <<'EOF'
import json, sys
from pathlib import Path

rows, ddim = [], {}
for name in ("eager-bf16", "eager-fp32", "compiled-bf16", "compiled-fp32"):
    path = Path(sys.argv[1]) / f"{name}.json"
    if not path.exists():
        rows.append(f"| {name} | failed or timed out | | | | | | | | | | |")
        continue
    r = json.loads(path.read_text())
    f = lambda v, fmt="{:.2f}": "n/a" if v is None else fmt.format(v)
    rows.append(f"| {name} | {f(r['train_images_per_s'], '{:.0f}')} | {f(r['train_overhead'])} | "
                f"{f(r['train_peak_mem_mb'], '{:.0f}')} | {r.get('train_step_host_syncs', 'n/a')} | "
                f"{f(r['sample_images_per_s'])} | {f(r['sample_overhead'])} | {f(r['train_vs_diffusers'])} | "
                f"{f(r.get('train_vs_diffusers_same_step'))} | {r.get('sample_precision', 'fp32')} | "
                f"{f(r['sample_vs_diffusers'])} | {f(r.get('sample_vs_diffusers_same_precision'))} |")
    # the network dominates a reverse step, so a 50-step DDIM chain costs 50/T of a full chain
    ddim[name] = 50_000 / (r["sample_images_per_s"] * r["T"] / 50)
    head = r
print(f"{head['device_name']}, torch {head['torch']}, batch {head['batch']}, T {head['T']}, "
      f"params ours {head['params_ours']:,} / diffusers {head['params_diffusers'] or 'n/a'}, "
      f"channels_last {head['channels_last']}, diffusers {head['diffusers_version']}"
      if any(Path(sys.argv[1], f"{n}.json").exists() for n in ("eager-bf16", "eager-fp32", "compiled-bf16",
                                                               "compiled-fp32")) else "no run finished")
print("| config | train img/s | train overhead | train peak MB | syncs in 9 steps | sample img/s (T) | "
      "sample overhead | train vs diffusers (its example script) | train vs diffusers (same step) | "
      "sampler precision (sample.precision auto) | sample vs diffusers (its fp32 loop) | "
      "sample vs diffusers (its loop at our precision) |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|")
print("\n".join(rows))
print("training goal: >= 2700 images/s (DDPM's TPU v3-8); 50,000 samples with 50 DDIM steps (goal <= 300 s), "
      "estimated from the sampler's images/s: " + (", ".join(f"{k} {v:.0f} s" for k, v in ddim.items()) or "n/a"))
if "eager-bf16" in [p.stem for p in Path(sys.argv[1]).glob("*.json")]:
    r = json.loads((Path(sys.argv[1]) / "eager-bf16.json").read_text())
    print(f"bound (all T terms, eager): {r['bound_images_per_s']:.2f} images/s; sync kinds: "
          f"{r.get('train_step_host_sync_kinds')}")
EOF
