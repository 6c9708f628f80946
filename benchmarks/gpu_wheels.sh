#!/usr/bin/env bash
# The Python packages benchmarks/gpu_check.sh needs that a lent GPU machine lacks, as wheels in .whl/
# (git-ignored), fetched here from the package registry: that machine reaches none. Its image has
# Python 3.12 with its own torch (2.11 when last read), torchvision, numpy, PyYAML, tqdm, tabulate,
# safetensors, huggingface_hub, Pillow, attrs and requests; diffrepro also needs jsonschema (its
# params check) and speed.py diffusers (the side-by-side baseline). On that machine:
#   python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl &&
#   PYTHONPATH=/tmp/site bash benchmarks/gpu_check.sh
# (gpu_check.sh puts this tree's src/ on the path itself.) Usage: bash benchmarks/gpu_wheels.sh [PYTHON_VERSION]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
version=${1:-3.12}
# pure-Python wheels, and rpds-py's compiled one for that Python; diffusers at pyproject.toml's pin
packages=(diffusers==0.42.1 jsonschema jsonschema-specifications referencing rpds-py)
rm -rf .whl
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version "$version" --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .whl "${packages[@]}"
ls .whl >&2
du -sh .whl >&2
