"""Start-up: a job imports its own stage's code and what that code uses, nothing else. The stages that
compute with numpy and pandas alone (check, prepare, report) never import torch, and the digits never import
scikit-learn (its data file is read directly): each saves seconds per job (benchmarks/pipeline_time.py)."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from .conftest import TINY_PARAMS, stage_args

PROBE = """
import sys
from diffrepro.cli import main
code = main(sys.argv[1:])
print("LOADED", " ".join(m for m in ("torch", "sklearn", "diffrepro.stages.train", "diffrepro.stages.fid")
                        if m in sys.modules))
sys.exit(code)
"""


@pytest.mark.slow
def test_prepare_imports_neither_torch_nor_sklearn_nor_other_stages(tmp_path):
    args = stage_args("prepare", "tinydigits", tmp_path, TINY_PARAMS)
    proc = subprocess.run([sys.executable, "-c", PROBE, "prepare", *map(str, args)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    loaded = next(line for line in proc.stdout.splitlines() if line.startswith("LOADED")).split()[1:]
    assert loaded == [], loaded
    assert "start-up " in proc.stderr and "prepare on cpu (numpy)" in proc.stderr
    assert np.load(tmp_path / "results" / "data" / "tinydigits" / "train.npz")["x"].shape[1:] == (1, 8, 8)


@pytest.mark.slow
def test_the_params_check_imports_no_torch_and_writes_every_runs_whole_config(tmp_path):
    """`diffrepro check` (the first stage of dvc.yaml): no torch; results/plan.json holds each run's
    configuration with the defaults params.yaml leaves out written in, and every dataset."""
    import json

    import yaml

    args = stage_args("check", None, tmp_path, TINY_PARAMS)
    proc = subprocess.run([sys.executable, "-c", PROBE, "check", *map(str, args)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    loaded = next(line for line in proc.stdout.splitlines() if line.startswith("LOADED")).split()[1:]
    assert loaded == [], loaded
    raw = yaml.safe_load(TINY_PARAMS.read_text())
    plan = json.loads((tmp_path / "results" / "plan.json").read_text())
    assert set(plan["runs"]) == set(raw["runs"]) and set(plan["datasets"]) == set(raw["datasets"])
    assert plan["seed"] == raw["seed"]
    for name, run in raw["runs"].items():
        assert plan["runs"][name]["dataset"]["name"] == run["dataset"]
        assert plan["runs"][name]["model"]["name"] == run["model"]
        assert plan["runs"][name]["train"]["steps"] == run["train"]["steps"]
        left_out = set(plan["runs"][name]["diffusion"]) - set(run["diffusion"])
        assert left_out, name  # defaults the params file does not write, written out here


def test_the_report_stage_module_does_not_import_torch():
    proc = subprocess.run([sys.executable, "-c", "import sys, diffrepro.stages.report as r; "
                           "print(r.USES_TORCH, 'torch' in sys.modules)"], capture_output=True, text=True)
    assert proc.stdout.split() == ["False", "False"], proc.stderr[-2000:]


def test_digits_read_directly_equal_sklearns_load_digits():
    from sklearn.datasets import load_digits

    from diffrepro.data.images import digits

    split = digits(np.random.default_rng(0), test_fraction=0.2)
    bunch = load_digits()
    x = np.concatenate([split.x_train, split.x_test])
    # the same 1,797 images in the same 17 levels, every class present in both parts
    assert len(x) == len(bunch.images) == 1797
    ours = sorted(map(tuple, np.round((x.reshape(len(x), -1) + 1) * 8).astype(int)))
    assert ours == sorted(map(tuple, bunch.data.astype(int)))
    assert set(split.y_train) == set(split.y_test) == set(bunch.target)


def test_the_openmp_wait_policy_follows_the_jobs_share_of_the_cpus(monkeypatch):
    """A job whose threads cover every CPU it may use runs alone (Snakemake counts cores, DVC runs one
    stage at a time): OpenMP's default, a short spin; fewer threads, or none given: PASSIVE; a policy
    in the environment is kept."""
    from diffrepro import runtime

    monkeypatch.setattr(runtime, "usable_cpus", lambda: 4)
    for threads, expected, env in ((4, "default", None), (8, "default", None), (3, "passive", "PASSIVE"),
                                   (1, "passive", "PASSIVE"), (None, "passive", "PASSIVE")):
        monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
        assert runtime.set_omp_wait_policy(threads) == expected, threads
        assert os.environ.get("OMP_WAIT_POLICY") == env, threads
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    assert runtime.set_omp_wait_policy(1) == "active" and os.environ["OMP_WAIT_POLICY"] == "ACTIVE"
    assert runtime.threads_from_argv(["train", "--params", "p.yaml", "--threads", "2"]) == 2
    assert runtime.threads_from_argv(["train", "--threads=3"]) == 3
    assert runtime.threads_from_argv(["train", "--threads", "two"]) is None
    assert runtime.threads_from_argv(["train", "--params", "p.yaml"]) is None


@pytest.mark.slow
@pytest.mark.parametrize("share", ["all", "fewer"])
def test_openmp_reads_the_policy_the_cli_chose_before_torch_loaded(share):
    """What libgomp itself says it read (OMP_DISPLAY_ENV), when `diffrepro train --threads N` loads
    torch: spin count 300000 (its default) for a job with every CPU, 0 (PASSIVE) for one with fewer."""
    from diffrepro.runtime import usable_cpus

    cpus = usable_cpus()
    if share == "fewer" and cpus == 1:
        pytest.skip("one CPU: no job has fewer threads than CPUs")
    threads = cpus if share == "all" else cpus - 1
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    code = ("import sys; sys.argv = ['diffrepro', 'train', '--threads', sys.argv[1]]\n"
            "from diffrepro import cli\nimport torch\ntorch.ones(2) + 1\nprint('POLICY', cli.OMP_WAIT)")
    proc = subprocess.run([sys.executable, "-c", code, str(threads)], capture_output=True, text=True,
                          env={**env, "OMP_DISPLAY_ENV": "VERBOSE"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    spin = next(line for line in proc.stderr.splitlines() if "GOMP_SPINCOUNT" in line)
    policy = next(line for line in proc.stdout.splitlines() if line.startswith("POLICY")).split()[1]
    if share == "all":
        assert policy == "default" and "'300000'" in spin, (policy, spin)
    else:
        assert policy == "passive" and "'0'" in spin, (policy, spin)


def test_dvc_reads_yaml_with_the_c_parser():
    """DVC parses params.yaml once per stage and all of dvc.lock on every `dvc status` and `dvc repro`:
    through ruamel.yaml's C parser (ruamel.yaml.clib, a dependency), not its pure-Python one."""
    from dvc.utils.serialize._yaml import parse_yaml
    from ruamel.yaml import YAML
    from ruamel.yaml.main import CParser

    assert CParser is not None and YAML(typ="safe").Parser is CParser
    assert parse_yaml("stages: {a: {cmd: x, deps: [p]}}", "dvc.yaml") == {"stages": {"a": {"cmd": "x", "deps": ["p"]}}}


FAULTS = """
import resource, sys
import torch
from diffrepro.nets.sd_nets import SDMultiScaleConv
from diffrepro.runtime import configure_threads
torch.set_num_threads(1)
if sys.argv[1] == "configured":
    configure_threads(1)
torch.manual_seed(0)
net = SDMultiScaleConv((1, 16, 16), num_timesteps=100, num_scales=3, conv_channels=24, conv_layers=3,
                       dense_hidden=48, dense_layers=2, num_bumps=10)  # the dead-leaves net
x, t = torch.randn(64, 1, 16, 16), torch.randint(0, 100, (64,))
def step():
    net(x, t).square().mean().backward()
    net.zero_grad(set_to_none=True)
for _ in range(3):
    step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    step()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_a_configured_job_reuses_freed_memory_instead_of_faulting_it_in_anew():
    """glibc hands freed blocks of a few MB back to the kernel, so each forward+backward of the
    dead-leaves net faults in fresh pages for its activations and gradients (44,000-71,000 minor
    faults in 10 steps here); a job set up by configure_threads keeps and reuses them
    (runtime.keep_freed_memory: 2-700). Each count from a fresh process."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"}

    def faults(mode: str) -> int:
        proc = subprocess.run([sys.executable, "-c", FAULTS, mode], capture_output=True, text=True, env=env)
        assert proc.returncode == 0, proc.stderr[-2000:]
        return int(proc.stdout.split()[-1])

    default, configured = faults("default"), faults("configured")
    activation = 64 * 24 * 16 * 16 * 4 // 4096  # pages of one activation: 384
    assert configured < 10 * activation and configured * 20 < default, (default, configured)
    # a user's own malloc tunables are left alone
    proc = subprocess.run([sys.executable, "-c", "from diffrepro.runtime import keep_freed_memory as k; print(k())"],
                          capture_output=True, text=True, env={**env, "MALLOC_TRIM_THRESHOLD_": "131072"})
    assert proc.stdout.split()[-1] == "False", proc.stderr[-2000:]
