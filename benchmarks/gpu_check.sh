#!/usr/bin/env bash
# GPU speed check of the trainer (issue 11): the ddpm-cifar10 preset (35.7M parameters) on random
# CIFAR-shaped data at batch 128, T = 1000, eager vs compiled, fp32 vs bf16, through
# benchmarks/speed.py: training and sampling images/s, train/sample overheads, peak memory
# (torch.cuda.max_memory_allocated), host-device syncs inside the training step, and the ratio to
# diffusers' UNet2DModel + DDPMScheduler at the same parameter count (pip install -e '.[bench]').
# At most 5 minutes on one GPU (most of it torch.compile): each run has its own time limit, 300 s in all.
# Usage: bash benchmarks/gpu_check.sh [--batch 128 ...]   (extra flags go to every speed.py run)
# Writes results/benchmarks/gpu_check/<config>.json and prints a markdown table for docs/benchmarks.md;
# the configurations, their limits and the table are in benchmarks/gpu_check.py.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
export OMP_WAIT_POLICY=PASSIVE

# this tree's code, installed or not (a lent GPU machine has its own Python and torch: benchmarks/gpu_wheels.sh)
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"

# speed.py's imports, the preset's params check and a CUDA device, before any GPU time is spent
"$PY" benchmarks/gpu_check.py preflight || exit 1

out=results/benchmarks/gpu_check
mkdir -p "$out"
# name|time limit (s)|speed.py flags, from benchmarks/gpu_check.py (the limits add up to 300 s)
mapfile -t configs < <("$PY" benchmarks/gpu_check.py configs)
for entry in "${configs[@]}"; do
    IFS='|' read -r name limit flags <<< "$entry"
    echo "gpu_check.sh: $name (at most ${limit} s)" >&2
    # shellcheck disable=SC2086
    if ! timeout "$limit" "$PY" benchmarks/speed.py $flags "$@" > "$out/$name.json" 2> "$out/$name.log"; then
        echo "gpu_check.sh: $name failed or ran past ${limit} s; see $out/$name.log" >&2
        rm -f "$out/$name.json"
    fi
done
"$PY" benchmarks/gpu_check.py table "$out"
