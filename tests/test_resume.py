"""A killed training run, re-run, resumes from its last state and ends with the uninterrupted run's weights."""
from __future__ import annotations

import os
import signal
import subprocess
import time

import torch
import yaml

from pathlib import Path

from .conftest import BIN, TINY_PARAMS, run_cli, stage_args


def _params(tmp_path, tiny_raw):
    run = tiny_raw["runs"]["toyroll-ddpm"]
    run["train"].update(steps=600, checkpoint_every=50, warmup_steps=30)
    tiny_raw["models"]["mlp-tiny"]["hidden"] = 64
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(tiny_raw))
    return path


def test_killed_training_resumes_to_identical_weights(tmp_path, tiny_raw):
    params = _params(tmp_path, tiny_raw)
    run_cli("prepare", *stage_args("prepare", "toyroll", tmp_path, params), check=True)
    full_args = stage_args("train", "toyroll-ddpm", tmp_path, params)
    run_cli("train", *full_args, check=True)
    full = Path(full_args[full_args.index("--model") + 1]).parent
    killed = tmp_path / "killed"  # the same job with its outputs in another folder
    killed_args = [a.replace(str(full), str(killed)) for a in full_args]

    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    proc = subprocess.Popen([str(BIN / "diffrepro"), "train", *killed_args],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state = killed / "train_state.pt"
    deadline = time.time() + 120
    while not state.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert state.exists() and not (killed / "model.pt").exists(), "the run was not killed mid-training"
    saved_step = torch.load(state, weights_only=False)["step"]
    assert 0 < saved_step < 600

    log = tmp_path / "resume.log"
    run_cli("train", *killed_args, "--log", log, check=True)
    assert f"from step {saved_step}" in log.read_text()
    a = torch.load(full / "model.pt", weights_only=False)
    b = torch.load(killed / "model.pt", weights_only=False)
    for key in ("model", "model_raw"):
        assert a[key].keys() == b[key].keys()
        for name in a[key]:
            assert torch.equal(a[key][name], b[key][name]), (key, name)
    assert a["history"] == b["history"]  # checkpoints fall on loss-record boundaries
    assert not state.exists()


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
    assert torch.load(out / "model.pt", weights_only=False)["history"]["step"][0] == 10
