"""Shared fixtures: the repository root, a tiny params file, and the CLI runner."""
from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

# Two workers, and the jobs their tests start, share the cores: OpenMP threads sleep when idle instead
# of spinning (read once when torch loads, so set before any test module imports it; subprocesses
# inherit it). The product's own choice is runtime.set_omp_wait_policy, tested in test_startup.py.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

ROOT = Path(__file__).resolve().parents[1]
TINY_PARAMS = ROOT / "tests" / "params-tiny.yaml"
BIN = Path(sys.executable).parent


PIPELINE_FILES = ("Snakefile", "workflow", "dvc.yaml", "src", ".dvcignore")

# Modules whose tests run the package's commands, an engine (Snakemake, DVC) or a full-size network:
# marked `slow`. The rest, the math and the units, are the fast lane: `pytest -m "not slow"`.
SLOW_MODULES = {
    "test_bad_input_table", "test_bad_inputs", "test_config", "test_convention", "test_dag_agreement", "test_ddp",
    "test_diffusers_interop", "test_dvc_remote", "test_gpu_pool", "test_long_run", "test_paper_chain",
    "test_paper_configs", "test_pipeline", "test_profiles", "test_readme", "test_resume", "test_safe_loading",
    "test_shards",
    "test_snakemake_plugin", "test_speed_bench", "test_user_data", "test_warm",
}


# The longest modules, longest first: `make test` hands whole modules to its two workers in this
# order as each gets free (--dist loadfile), so the long ones do not start last and run alone at the
# end while the other worker idles (the order of one `pytest -v --durations=0` on 2 cores).
LONGEST_FIRST = ("test_pipeline", "test_paper_chain", "test_bad_input_table", "test_warm", "test_shards",
                 "test_resume", "test_long_run", "test_dag_agreement", "test_fid", "test_gpu_pool", "test_ddp",
                 "test_speed_bench", "test_dvc_remote", "test_profiles")


def pytest_configure(config):
    """Under pytest-xdist (`make test`: two workers on two cores) each worker computes with one torch
    thread: two threads each would put four on two cores (the fast lane's CPU time: 8% less)."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        import torch

        torch.set_num_threads(1)
    # The stage jobs the tests start (through Snakemake, DVC or the console script) run as forks of a
    # warm interpreter (diffrepro.warm), one per worker (none in xdist's controller, which runs no
    # test): some 190 jobs start 1.4 s sooner each. Not waited for: the first tests need none.
    if os.environ.get("PYTEST_XDIST_WORKER") or not getattr(config.option, "numprocesses", None):
        from diffrepro import warm

        _WARM.extend(w for w in [warm.start_for_jobs(wait=0)] if w is not None)


_WARM = []
# for a test of what a job's own process does when it is killed (the warm path: test_warm.py)
NOT_WARM = {"DIFFREPRO_WARM": "off"}


def pytest_unconfigure(config):
    while _WARM:
        _WARM.pop().stop()


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.module.__name__.rsplit(".", 1)[-1] in SLOW_MODULES:
            item.add_marker(pytest.mark.slow)

    def rank(item):
        name = item.module.__name__.rsplit(".", 1)[-1]
        return LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST)
    items.sort(key=rank)  # stable: the rest keep their order


def copy_pipeline_files(dest: Path, params: Path) -> None:
    """What a project needs to run the pipeline (Snakefile, rules, dvc.yaml, the package source the
    code deps point at) copied into `dest`, with `params` as its params.yaml."""
    import shutil

    for name in PIPELINE_FILES:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy(src, dest / name)
    shutil.copy(params, dest / "params.yaml")


# What a command's process would have in its environment: the venv's commands first, and OpenMP's
# threads asleep when idle (the tests' jobs share the cores)
COMMAND_ENV = {"PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "OMP_WAIT_POLICY": "PASSIVE"}


def in_this_process(main, name: str, args, cwd=None) -> subprocess.CompletedProcess:
    """`name ARGS` through the function its console script calls (`main`), in this process, as the
    command would run it: in `cwd`, with COMMAND_ENV, its exit code (SystemExit's or main's return)
    and what it writes to stdout and stderr captured. An exception main lets escape is what the
    process would print: a traceback on stderr and exit code 1. The working folder, the environment
    (Snakefiles and stages set variables for the jobs they start), torch's thread count and the global
    random states (training seeds torch's) are put back afterwards. Each command as a process pays
    1.5-2 s of imports (torch, snakemake, dvc); a test that needs the process itself (a kill, a
    signal, a console script) starts one."""
    import contextlib
    import io
    import random
    import traceback

    import numpy as np
    import torch

    args = [str(a) for a in args]
    saved_env, saved_cwd, saved_threads = dict(os.environ), os.getcwd(), torch.get_num_threads()
    saved_random = torch.get_rng_state(), np.random.get_state(), random.getstate()
    out, err = io.StringIO(), io.StringIO()
    try:
        os.environ.update(COMMAND_ENV)
        if cwd is not None:
            os.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(args) or 0
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
                if not isinstance(exc.code, (int, type(None))):
                    print(exc.code, file=sys.stderr)
            except Exception:  # noqa: BLE001 - the process would die with this traceback
                traceback.print_exc()
                code = 1
    finally:
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)
        torch.set_num_threads(saved_threads)
        torch.set_rng_state(saved_random[0])
        np.random.set_state(saved_random[1])
        random.setstate(saved_random[2])
    return subprocess.CompletedProcess([name, *args], code, out.getvalue(), err.getvalue())


def run_cli(*args, cwd=None, check=False) -> subprocess.CompletedProcess:
    """`diffrepro ARGS` as a user would run it, through diffrepro.cli:main (the console script's
    function) in this process (in_this_process)."""
    from diffrepro import cli

    proc = in_this_process(cli.main, "diffrepro", args, cwd=cwd)
    if check and proc.returncode != 0:
        raise AssertionError(f"diffrepro {' '.join(map(str, args))} failed:\n{proc.stderr[-3000:]}")
    return proc


def snakemake_here(*args, cwd) -> subprocess.CompletedProcess:
    """`snakemake ARGS` in `cwd` through snakemake.cli:main, in this process: the Snakefile is parsed
    afresh each call, as by the command."""
    from snakemake.cli import main

    return in_this_process(main, "snakemake", args, cwd=cwd)


@pytest.fixture
def tiny_raw():
    """The tiny test params as a dict (a fresh copy per test)."""
    return copy.deepcopy(yaml.safe_load(TINY_PARAMS.read_text()))


@pytest.fixture
def default_raw():
    return yaml.safe_load((ROOT / "params.yaml").read_text())


def stage_args(stage: str, key, root, params) -> list:
    """`--params P` plus the declared path flags of one job of `stage`, every path under `root`
    (as the engines would pass them, from src/diffrepro/wiring/pipeline.py)."""
    from diffrepro.wiring import engines, pipeline

    raw = yaml.safe_load(Path(params).read_text())
    return ["--params", str(params), *engines.job_arguments(pipeline.stage(stage), raw, key, root)]
