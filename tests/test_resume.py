"""A killed training run, re-run, resumes from its last state and ends with the uninterrupted run's weights."""
from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from .conftest import BIN, NOT_WARM, TINY_PARAMS, run_cli, stage_args


def _params(tmp_path, tiny_raw, run_name="toyroll-ddpm"):
    run = tiny_raw["runs"][run_name]
    run["train"].update(steps=600, checkpoint_every=50, warmup_steps=30, log_every=10)
    tiny_raw["models"]["mlp-tiny"]["hidden"] = 64
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(tiny_raw))
    return path


@pytest.mark.parametrize("run_name", ["toyroll-ddpm", "beat-sd"])  # DDPM, and SD-2015's binomial family
def test_killed_training_resumes_to_identical_weights(tmp_path, tiny_raw, run_name):
    params = _params(tmp_path, tiny_raw, run_name)
    dataset = tiny_raw["runs"][run_name]["dataset"]
    run_cli("prepare", *stage_args("prepare", dataset, tmp_path, params), check=True)
    full_args = stage_args("train", run_name, tmp_path, params)
    run_cli("train", *full_args, check=True)
    full = Path(full_args[full_args.index("--model") + 1]).parent
    killed = tmp_path / "killed"  # the same job with its outputs in another folder
    killed_args = [a.replace(str(full), str(killed)) for a in full_args]

    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", **NOT_WARM}
    proc = subprocess.Popen([str(BIN / "diffrepro"), "train", *killed_args],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state = killed / "train_state.pt"
    deadline = time.time() + 120
    while not state.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert state.exists() and not (killed / "model.pt").exists(), "the run was not killed mid-training"
    saved_step = torch.load(state, weights_only=True)["step"]
    assert 0 < saved_step < 600

    log = tmp_path / "resume.log"
    run_cli("train", *killed_args, "--log", log, check=True)
    assert f"from step {saved_step}" in log.read_text()
    a = torch.load(full / "model.pt", weights_only=True)
    b = torch.load(killed / "model.pt", weights_only=True)
    for key in ("model", "model_raw"):
        assert a[key].keys() == b[key].keys()
        for name in a[key]:
            assert torch.equal(a[key][name], b[key][name]), (key, name)
    assert a["history"] == b["history"]
    assert torch.load(state, weights_only=True)["step"] == 600  # kept: a longer run continues from it


def test_state_of_another_config_is_not_resumed(tmp_path, tiny_raw):
    params = _params(tmp_path, tiny_raw)
    run_cli("prepare", *stage_args("prepare", "toyroll", tmp_path, params), check=True)
    args = stage_args("train", "toyroll-ddpm", tmp_path, params)
    out = Path(args[args.index("--model") + 1]).parent
    out.mkdir(parents=True)
    torch.save({"config_hash": "someone-else", "step": 300}, out / "train_state.pt")
    log = tmp_path / "train.log"
    run_cli("train", *args, "--log", log, check=True)
    assert "another config" in log.read_text()
    assert torch.load(out / "model.pt", weights_only=True)["history"]["step"][0] == 10


def _kill_after_first_part(args, parts: Path) -> None:
    """Start `diffrepro <args>` and SIGKILL it as soon as its first finished chunk is on disk."""
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", **NOT_WARM}
    proc = subprocess.Popen([str(BIN / "diffrepro"), *args], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (parts / "part-000000.pt").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """toyroll-ddpm at T = 200 with many sampling chunks and bound batches, trained once."""
    root = tmp_path_factory.mktemp("loops")
    raw = yaml.safe_load(TINY_PARAMS.read_text())
    raw["datasets"]["toyroll"]["n_test"] = 2000
    run = raw["runs"]["toyroll-ddpm"]
    run["diffusion"]["timesteps"] = 200
    run["sample"].update(n=6000, batch_size=400)
    run["eval"].update(nll_n=2000, batch_size=100)
    params = root / "params.yaml"
    params.write_text(yaml.safe_dump(raw))
    run_cli("prepare", *stage_args("prepare", "toyroll", root, params), check=True)
    run_cli("train", *stage_args("train", "toyroll-ddpm", root, params), check=True)
    return root, params


def _other_folder(stage: str, args: list, run_dir: Path, other: Path) -> list:
    """The same job's arguments with its outputs (not its inputs) moved to `other`."""
    from diffrepro.wiring import pipeline

    inputs = {"--" + i.name.replace("_", "-") for i in pipeline.stage(stage).inputs}
    return [a.replace(str(run_dir), str(other)) if i and args[i - 1] not in inputs else a
            for i, a in enumerate(args)]


@pytest.mark.parametrize("stage, output, parts", [("sample", "--samples", "sample_parts"),
                                                  ("nll", "--metrics", "nll_parts")])
def test_killed_sampling_and_bound_loops_resume_to_the_same_result(trained, stage, output, parts):
    root, params = trained
    args = stage_args(stage, "toyroll-ddpm", root, params)
    run_dir = Path(args[args.index(output) + 1]).parent
    run_cli(stage, *args, check=True)
    assert not (run_dir / parts).exists()  # removed once the outputs are written
    killed = root / f"killed-{stage}"
    killed_args = _other_folder(stage, args, run_dir, killed)
    _kill_after_first_part([stage, *killed_args], killed / parts)
    written = [p.name for p in killed.glob("*") if p.is_file() and not p.name.startswith(".")]
    assert (killed / parts / "part-000000.pt").exists() and written == [], \
        f"the {stage} job was not killed mid-loop, or left outputs an engine would take as complete: {written}"
    log = root / f"{stage}-resume.log"
    run_cli(stage, *killed_args, "--log", log, check=True)
    assert "resuming after" in log.read_text()
    assert not (killed / parts).exists()
    if stage == "sample":
        a, b = np.load(run_dir / "samples.npz")["x"], np.load(killed / "samples.npz")["x"]
        assert a.shape == (6000, 2) and np.array_equal(a, b)
    else:
        assert (killed / "nll.json").read_bytes() == (run_dir / "nll.json").read_bytes()
        assert (killed / "nll_terms.csv").read_bytes() == (run_dir / "nll_terms.csv").read_bytes()


def test_parts_of_other_settings_are_not_resumed(tmp_path):
    from diffrepro.runs.resume import Parts

    Parts(tmp_path / "p", "old").save(0, {"x": torch.zeros(3)})
    assert Parts(tmp_path / "p", "new").done([0, 1], "test") == {}
    parts = Parts(tmp_path / "q", "k")
    parts.save(0, {"x": torch.ones(2)})
    parts.save(2, {"x": torch.zeros(2)})
    (tmp_path / "q" / "part-000001.pt").write_bytes(b"cut short by a kill")
    done = parts.done([0, 1, 2, 3], "test")  # any finished batch counts, not only a leading run of them
    assert sorted(done) == [0, 2] and torch.equal(done[0]["x"], torch.ones(2))
    parts.clear()
    assert not (tmp_path / "q").exists()


def test_a_non_finite_bound_stops_nll_naming_run_stage_and_example(trained, monkeypatch, tmp_path, capsys):
    root, params = trained
    from diffrepro import cli
    from diffrepro.diffusion.gaussian import GaussianDiffusion

    original = GaussianDiffusion.bound_terms

    def poisoned(self, model, x, **kw):
        res = original(self, model, x, **kw)
        res.total[3] = float("nan")
        return res

    monkeypatch.setattr(GaussianDiffusion, "bound_terms", poisoned)
    args = _other_folder("nll", stage_args("nll", "toyroll-ddpm", root, params),
                         root / "results" / "runs" / "toyroll-ddpm", tmp_path)
    assert cli.main(["nll", *args]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(err) == 1 and "run 'toyroll-ddpm', stage nll: the bound is nan for test example 3" in err[0], err
    assert not (tmp_path / "nll.json").exists()


def test_a_killed_fid_job_leaves_no_metrics_and_the_rerun_finishes(trained):
    """fid has no loop worth resuming (seconds), but a kill mid-work must not leave a fid.json an
    engine would take as complete; the re-run writes the uninterrupted run's file."""
    root, params = trained
    for stage, key in (("sample", "toyroll-ddpm"), ("features", "toyroll"), ("reference", "toyroll")):
        run_cli(stage, *stage_args(stage, key, root, params), check=True)
    args = stage_args("fid", "toyroll-ddpm", root, params)
    run_dir = Path(args[args.index("--metrics") + 1]).parent
    run_cli("fid", *args, check=True)
    killed = root / "killed-fid"
    killed_args = _other_folder("fid", args, run_dir, killed)
    log = root / "fid-kill.log"
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", **NOT_WARM}
    proc = subprocess.Popen([str(BIN / "diffrepro"), "fid", *killed_args, "--log", str(log)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (log.exists() and "fid on" in log.read_text()) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.002)
    # at once: inside the work (reading the features, then FID and KID subsets: tens of milliseconds here)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the fid job finished before it could be killed"
    assert not (killed / "fid.json").exists()
    run_cli("fid", *killed_args, check=True)
    assert (killed / "fid.json").read_bytes() == (run_dir / "fid.json").read_bytes()
