"""benchmarks/speed.py at a tiny size: every figure it reports is there, finite and positive; the
diffusers side only where diffusers (the `bench` extra, not in CI's `dev`) is installed. And the GPU
check built on it (benchmarks/gpu_check.sh and .py): every configuration's flags are speed.py's, its
limits fit 5 minutes, its table reads speed.py's JSON, and without CUDA it stops in one line."""
from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys

import pytest

from .conftest import ROOT

OURS = ("train_overhead", "sample_overhead", "train_images_per_s", "sample_images_per_s", "bound_images_per_s",
        "train_step_ms", "net_fwd_bwd_ms", "sample_step_ms", "net_fwd_ms", "params_ours", "batch", "T", "threads")
THEIRS = ("train_vs_diffusers", "train_vs_diffusers_same_step", "sample_vs_diffusers", "diffusers_train_images_per_s",
          "diffusers_same_step_train_images_per_s", "diffusers_sample_images_per_s", "params_diffusers")
HAS_DIFFUSERS = importlib.util.find_spec("diffusers") is not None


@pytest.fixture(scope="module")
def quick():
    """One `speed.py --preset digits-cpu --quick --ddim-steps 3 --json` run: (its JSON, its stderr)."""
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "speed.py"), "--preset", "digits-cpu", "--quick",
                           "--threads", "1", "--ddim-steps", "3", "--json"],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout), proc.stderr


def _positive(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def test_our_figures_are_reported_finite_and_positive(quick):
    r, stderr = quick
    assert r["device"] in ("cpu", "cuda") and r["threads"] == 1 and r["torch"]
    assert {k: r[k] for k in OURS if not _positive(r[k])} == {}
    assert r["params_ours"] == 284_513 and r["T"] == 200 and r["batch"] == 8
    assert (r["ddim_steps"], r["ddim_batch"]) == (3, 8) and _positive(r["ddim_images_per_s"])
    assert set(r["targets"]) == {"train_overhead", "sample_overhead"}
    assert "scaled to a full chain" in r["note"]
    if not HAS_DIFFUSERS:  # one clear line, and our own figures still printed
        assert "diffusers is not installed" in stderr
        assert all(r[k] is None for k in THEIRS)


def test_diffusers_side_at_the_same_parameter_count(quick):
    pytest.importorskip("diffusers")
    r, _ = quick
    assert {k: r[k] for k in THEIRS if not _positive(r[k])} == {}
    assert abs(r["params_diffusers"] - r["params_ours"]) <= 0.1 * r["params_ours"]
    # a median of per-repeat ratios, near the ratio of the median images/s
    assert r["train_vs_diffusers"] == pytest.approx(r["train_images_per_s"] / r["diffusers_train_images_per_s"],
                                                    rel=0.2)
    assert r["train_vs_diffusers_same_step"] == pytest.approx(
        r["train_images_per_s"] / r["diffusers_same_step_train_images_per_s"], rel=0.2)


def _benchmark(name: str):
    spec = importlib.util.spec_from_file_location(f"{name}_bench", ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_diffusers_unet_mirrors_each_preset():
    pytest.importorskip("diffusers")
    from diffusers import UNet2DModel

    from diffrepro.nets.unet import UNet, unet_preset

    speed = _benchmark("speed")
    for preset, (_, _, shape) in speed.PRESETS.items():
        ours = sum(p.numel() for p in UNet(shape, preset=preset).parameters())
        theirs_net = UNet2DModel(**speed.diffusers_unet_config(unet_preset(preset), shape))
        theirs = sum(p.numel() for p in theirs_net.parameters())
        assert theirs == ours, preset


def _gpu_check_configs() -> list:
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "configs"],
                          capture_output=True, text=True, check=True)
    return [line.split("|") for line in proc.stdout.splitlines()]


def test_gpu_check_configs_are_speed_flags_within_five_minutes():
    speed, gpu_check = _benchmark("speed"), _benchmark("gpu_check")
    configs = _gpu_check_configs()
    assert [name for name, _, _ in configs] == ["eager-bf16", "eager-fp32", "compiled-bf16", "compiled-fp32"]
    assert sum(int(limit) for _, limit, _ in configs) <= gpu_check.TOTAL_LIMIT_S <= 300
    seen = set()
    for name, _, flags in configs:
        args = speed.parse_args(flags.split())  # an unknown flag or value exits here
        assert (args.preset, args.device, args.json) == ("ddpm-cifar10", "cuda", True), name
        seen.add((args.precision, args.compile))
        assert args.ddim_steps == (gpu_check.DDIM_STEPS if name == "eager-bf16" else 0), name
        # a flag the user adds after the configuration's own wins (argparse: the last one)
        assert speed.parse_args([*flags.split(), "--batch", "64"]).batch == 64
    assert seen == {("bf16", False), ("fp32", False), ("bf16", True), ("fp32", True)}


def test_gpu_check_table_reads_speed_json_and_names_the_failed(quick, tmp_path):
    gpu_check = _benchmark("gpu_check")
    r, _ = quick
    (tmp_path / "eager-bf16.json").write_text(json.dumps(r))
    (tmp_path / "compiled-fp32.json").write_text(json.dumps({**r, "train_images_per_s": 3000.0, "ddim_steps": None,
                                                             "ddim_images_per_s": None}))
    (tmp_path / "eager-fp32.json").write_text('{"truncated')  # killed mid-write
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "table", str(tmp_path)],
                          capture_output=True, text=True, check=True)
    lines = proc.stdout.splitlines()
    assert lines[0].startswith(f"{r['device_name']}, torch {r['torch']}, batch 8, T 200, params ours 284,513")
    rows = {line.split(" | ")[0].lstrip("| "): line for line in lines if line.startswith("| ") and "config" not in line}
    assert list(rows) == ["eager-bf16", "eager-fp32", "compiled-bf16", "compiled-fp32"]
    assert "failed or timed out" in rows["eager-fp32"] and "failed or timed out" in rows["compiled-bf16"]
    cells = rows["eager-bf16"].strip("| ").split(" | ")
    assert len(cells) == lines[1].count(" | ") + 1 == 12 and lines[2].count("---") == 12
    assert cells[1] == f"{r['train_images_per_s']:.0f}" and cells[2] == f"{r['train_overhead']:.2f}"
    goal = next(line for line in lines if line.startswith("training goal"))
    assert "best 3000;" in goal
    # 50,000 samples of 50 steps: from the timed 3-step DDIM chain at its batch (8), or else from the
    # sampler's images/s per T-step chain x T / 50
    timed = 50_000 / r["ddim_images_per_s"] * 50 / 3
    estimated = 50_000 / (r["sample_images_per_s"] * r["T"] / 50)
    assert f"eager-bf16 {timed:.0f} s (timed at batch 8)" in goal
    assert f"compiled-fp32 {estimated:.0f} s (from batch 8)" in goal
    assert f"bound (all T terms, eager-bf16): {r['bound_images_per_s']:.2f} images/s" in proc.stdout
    assert gpu_check.ddim_seconds({**r, "sample_images_per_s": None, "ddim_images_per_s": None}) == (None, "n/a")


def test_gpu_check_without_cuda_stops_in_one_line():
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is visible: the check would run")
    proc = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh")], capture_output=True, text=True,
                          env={**os.environ, "PYTHON": sys.executable}, timeout=120)
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and "no CUDA device is visible" in proc.stderr


def test_gpu_check_names_a_missing_package_before_any_gpu_time(tmp_path):
    """A lent GPU machine's own Python lacks jsonschema (the params check) unless its wheel is carried:
    the preflight says so in one line, before looking for CUDA."""
    (tmp_path / "sitecustomize.py").write_text(
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'jsonschema':\n"
        "            raise ModuleNotFoundError(f'No module named {name!r}')\n"
        "sys.meta_path.insert(0, Block())\n")
    env = {**os.environ, "PYTHON": sys.executable, "PYTHONPATH": str(tmp_path)}
    proc = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh")], capture_output=True, text=True,
                          env=env, timeout=120)
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1, proc.stderr
    assert "speed.py cannot start" in proc.stderr and "'jsonschema'" in proc.stderr
    assert "benchmarks/gpu_wheels.sh" in proc.stderr
