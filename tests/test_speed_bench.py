"""benchmarks/speed.py at a tiny size: every figure it reports is there, finite and positive; the
diffusers side only where diffusers (the `bench` extra, not in CI's `dev`) is installed."""
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
    """One `speed.py --preset digits-cpu --quick --json` run: (its JSON, its stderr)."""
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "speed.py"), "--preset", "digits-cpu", "--quick",
                           "--threads", "1", "--json"], capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout), proc.stderr


def _positive(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def test_our_figures_are_reported_finite_and_positive(quick):
    r, stderr = quick
    assert r["device"] in ("cpu", "cuda") and r["threads"] == 1 and r["torch"]
    assert {k: r[k] for k in OURS if not _positive(r[k])} == {}
    assert r["params_ours"] == 284_513 and r["T"] == 200 and r["batch"] == 8
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


def test_the_diffusers_unet_mirrors_each_preset():
    pytest.importorskip("diffusers")
    from diffusers import UNet2DModel

    from diffrepro.nets.unet import UNet, unet_preset

    spec = importlib.util.spec_from_file_location("speed_bench", ROOT / "benchmarks" / "speed.py")
    speed = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(speed)
    for preset, (_, _, shape) in speed.PRESETS.items():
        ours = sum(p.numel() for p in UNet(shape, preset=preset).parameters())
        theirs_net = UNet2DModel(**speed.diffusers_unet_config(unet_preset(preset), shape))
        theirs = sum(p.numel() for p in theirs_net.parameters())
        assert theirs == ours, preset
