"""The long run: a live loss record, samples and kept checkpoints along training, the quality curve,
extending a finished run, starting from another model, and progress a person can read."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from .conftest import BIN, NOT_WARM, run_cli, stage_args

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _write(tmp_path, raw, name="params.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(raw))
    return path


def _prepare(tmp_path, params, dataset):
    run_cli("prepare", *stage_args("prepare", dataset, tmp_path, params), check=True)


def _train(tmp_path, params, run, root=None, log=None, cwd=None):
    """The train job of `run` with its outputs under `root` (default tmp_path), reading the data
    prepared under tmp_path; returns the run's folder."""
    args = stage_args("train", run, root or tmp_path, params)
    i = args.index("--train")
    args[i + 1] = stage_args("train", run, tmp_path, params)[i + 1]
    run_cli("train", *args, *(["--log", log] if log else []), cwd=cwd, check=True)
    return Path(args[args.index("--model") + 1]).parent


def test_loss_csv_grows_while_training_runs_and_a_killed_run_keeps_its_rows(tmp_path, tiny_raw):
    tiny_raw["runs"]["toyroll-ddpm"]["train"].update(steps=100_000, log_every=25, checkpoint_every=100_000)
    params = _write(tmp_path, tiny_raw)
    _prepare(tmp_path, params, "toyroll")
    args = stage_args("train", "toyroll-ddpm", tmp_path, params)
    loss = Path(args[args.index("--loss") + 1])
    log = tmp_path / "train.log"
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "DIFFREPRO_PROGRESS": "off", **NOT_WARM}
    proc = subprocess.Popen([str(BIN / "diffrepro"), "train", *args, "--log", str(log)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        seen = []
        while len(seen) < 3 and proc.poll() is None and time.time() < deadline:  # read from another process
            if loss.exists():
                seen = list(pd.read_csv(loss)["step"])
            time.sleep(0.05)
        assert proc.poll() is None, "the job ended before its loss record could be read mid-run"
        assert len(seen) >= 3 and seen == list(range(25, 25 * len(seen) + 1, 25))
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    kept = pd.read_csv(loss)  # every row up to the last flush, whole (written atomically)
    assert list(kept["step"]) == list(range(25, 25 * len(kept) + 1, 25)) and len(kept) >= len(seen)
    assert np.isfinite(kept[["loss", "lr", "images_per_s"]].to_numpy()).all()
    assert not Path(args[args.index("--model") + 1]).exists()
    lines = [ln for ln in log.read_text().splitlines() if "images/s | ETA" in ln]
    assert len(lines) >= len(seen) and "step 25/100000" in lines[0]


@pytest.mark.parametrize("schedule", ["constant", "linear_decay"])
def test_raising_steps_continues_a_finished_run_where_the_schedule_allows(tmp_path, tiny_raw, schedule):
    tiny_raw["runs"]["toyroll-ddpm"]["train"].update(steps=40, log_every=15, checkpoint_every=1000,
                                                     warmup_steps=10, lr_schedule=schedule, sample_every=20)
    _prepare(tmp_path, _write(tmp_path, tiny_raw), "toyroll")
    short = _write(tmp_path, tiny_raw, "short.yaml")
    tiny_raw["runs"]["toyroll-ddpm"]["train"]["steps"] = 70
    long = _write(tmp_path, tiny_raw, "long.yaml")
    direct = _train(tmp_path, long, "toyroll-ddpm", root=tmp_path / "direct")
    extended = _train(tmp_path, short, "toyroll-ddpm", root=tmp_path / "extended")
    assert torch.load(extended / "train_state.pt", weights_only=True)["step"] == 40
    log = tmp_path / "extend.log"
    _train(tmp_path, long, "toyroll-ddpm", root=tmp_path / "extended", log=log)
    train_json = json.loads((extended / "train.json").read_text())
    if schedule == "constant":
        assert "continuing from step 40" in log.read_text()
        assert train_json["resumed_from_step"] == 40
        assert (extended / "model.pt").read_bytes() == (direct / "model.pt").read_bytes()
    else:  # the decay is spread over train.steps: said in one line, trained from the start
        assert "linear_decay spreads its decay over train.steps" in log.read_text()
        assert train_json["resumed_from_step"] == 0
        a, b = (torch.load(d / "model.pt", weights_only=True) for d in (direct, extended))
        assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    rows = pd.read_csv(extended / "loss.csv")
    assert list(rows["step"]) == [15, 30, 45, 60, 70]
    assert (extended / "training_samples.png").read_bytes()[:8] == PNG_MAGIC


def test_kept_checkpoints_and_the_curve_stage_give_one_row_per_kept_step(tmp_path, tiny_raw):
    run = tiny_raw["runs"]["digits-tiny"]
    run["train"].update(steps=12, keep_steps=[4, 8], sample_every=4, log_every=4)
    params = _write(tmp_path, tiny_raw)
    for stage in ("prepare", "features", "reference"):
        run_cli(stage, *stage_args(stage, "tinydigits", tmp_path, params), check=True)
    out = _train(tmp_path, params, "digits-tiny")
    kept = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert kept == ["step-00000004.pt", "step-00000008.pt"]
    ckpt = torch.load(out / "checkpoints" / kept[0], weights_only=True)
    assert ckpt["step"] == 4 and ckpt["history"]["step"] == [4] and "model_raw" not in ckpt
    run_cli("curve", *stage_args("curve", "digits-tiny", tmp_path, params), check=True)
    curve = pd.read_csv(out / "curve.csv")
    assert list(curve["step"]) == [4, 8, 12] and set(curve["unit"]) == {"bits/dim"}
    assert np.isfinite(curve[["fid", "nll"]].to_numpy()).all() and (curve["fid_n"] == 16).all()
    assert curve["fid"].nunique() == 3  # the weights differ along training, the draws do not
    assert (out / "curve.png").read_bytes()[:8] == PNG_MAGIC
    # dropping a kept step from params drops its file when the run is trained again
    run["train"].update(keep_steps=[8])
    params = _write(tmp_path, tiny_raw)
    _train(tmp_path, params, "digits-tiny")
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-00000008.pt"]


def test_init_from_starts_from_another_runs_ema_weights_and_refuses_a_mismatch(tmp_path, tiny_raw):
    from diffrepro.config import parse_params
    from diffrepro.runs import training
    from diffrepro.runs.checkpoint import load_init

    source = tiny_raw["runs"]["toyroll-ddpm"]
    tiny_raw["runs"]["toyroll-ft"] = {**source, "train": {**source["train"], "init_from": "toyroll-ddpm",
                                                          "steps": 10}}
    params = _write(tmp_path, tiny_raw)
    _prepare(tmp_path, params, "toyroll")
    src_dir = _train(tmp_path, params, "toyroll-ddpm")
    cfg = parse_params(tiny_raw).run("toyroll-ft")
    init = load_init(cfg, (2,), src_dir.parent)
    loop = training.prepare(cfg, np.zeros((64, 2), np.float32), device=torch.device("cpu"), seed=1, init=init)
    src = torch.load(src_dir / "model.pt", weights_only=True)
    assert all(torch.equal(loop.model.state_dict()[k], src["model"][k]) for k in src["model"])  # the EMA's
    ft = _train(tmp_path, params, "toyroll-ft")
    provenance = torch.load(ft / "model.pt", weights_only=True)["provenance"]
    assert provenance["init_from"] == "toyroll-ddpm" and provenance["weights"] == "ema"
    assert provenance["sha256"] == json.loads((ft / "train.json").read_text())["init_from"]["sha256"]

    # another family, another network: one line naming both, nothing written
    tiny_raw["runs"]["toyroll-sd"]["train"]["init_from"] = str(src_dir / "model.pt")
    tiny_raw["models"]["mlp-wide"] = {"arch": "mlp", "hidden": 48, "layers": 2, "time_embed_dim": 16}
    tiny_raw["runs"]["toyroll-ft"].update(model="mlp-wide")
    tiny_raw["runs"]["toyroll-ft"]["train"]["init_from"] = str(src_dir / "model.pt")
    params = _write(tmp_path, tiny_raw)
    for run, words in (("toyroll-sd", ["a ddpm model", "this run is sd_gaussian"]),
                       ("toyroll-ft", ["does not fit", "'mlp-wide'", "'mlp-tiny'"])):
        args = stage_args("train", run, tmp_path / "refused", params)
        i = args.index("--train")
        args[i + 1] = stage_args("train", run, tmp_path, params)[i + 1]
        proc = run_cli("train", *args)
        err = [line for line in proc.stderr.splitlines() if "error" in line]
        assert proc.returncode != 0 and len(err) == 1 and "Traceback" not in proc.stderr, proc.stderr
        assert "init_from" in err[0] and all(w in err[0] for w in words), err[0]
        assert not (tmp_path / "refused").exists()


def test_init_from_and_keep_steps_are_checked_with_the_params(tiny_raw):
    from diffrepro.config import ParamsError, parse_params

    for change, words in (({"init_from": "toyroll-ddpm"}, ["names the run itself"]),
                          ({"init_from": "nowhere"}, ["neither a run nor a .pt file"]),
                          ({"keep_steps": [10, 61]}, ["keep_steps holds 61", "train.steps = 60"])):
        raw = {**tiny_raw, "runs": {**tiny_raw["runs"]}}
        raw["runs"]["toyroll-ddpm"] = {**tiny_raw["runs"]["toyroll-ddpm"],
                                       "train": {**tiny_raw["runs"]["toyroll-ddpm"]["train"], **change}}
        with pytest.raises(ParamsError) as err:
            parse_params(raw)
        assert all(w in str(err.value) for w in words), str(err.value)


def test_sampling_and_the_bound_show_one_bar_for_the_whole_job_and_log_a_line_per_chunk(tmp_path, tiny_raw):
    run = tiny_raw["runs"]["toyroll-ddpm"]
    run["train"]["steps"] = 10
    run["sample"].update(n=64, batch_size=16)
    run["eval"].update(nll_n=64, batch_size=16)
    params = _write(tmp_path, tiny_raw)
    _prepare(tmp_path, params, "toyroll")
    _train(tmp_path, params, "toyroll-ddpm")
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "DIFFREPRO_PROGRESS": "lines"}
    for stage, bar, words in (("sample", "sample", "sampling: chunk"), ("nll", "bound", "the bound: chunk")):
        log = tmp_path / f"{stage}.log"
        proc = subprocess.run([str(BIN / "diffrepro"), stage, *stage_args(stage, "toyroll-ddpm", tmp_path, params),
                               "--log", str(log)], env=env, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        assert "\r" not in proc.stderr  # whole lines: two jobs on one terminal cannot garble them
        bars = [ln for ln in proc.stderr.splitlines() if ln.startswith(f"{bar} toyroll-ddpm:")]
        assert bars and "100%" in bars[-1] and ("80/80" in bars[-1] or "64/64" in bars[-1]), proc.stderr
        lines = [ln for ln in log.read_text().splitlines() if words in ln]
        assert [ln.split("chunk ")[1].split(",")[0] for ln in lines] == ["1/4", "2/4", "3/4", "4/4"]
        assert all("ETA" in ln and "/s)" in ln for ln in lines)


def test_the_dvclive_logger_writes_the_live_step_and_loss_offline(tmp_path, tiny_raw):
    pytest.importorskip("dvclive")  # in the dev extra; optional for users (pip install -e '.[live]')
    tiny_raw["runs"]["toyroll-ddpm"]["train"].update(steps=40, log_every=10, logger="dvclive")
    params = _write(tmp_path, tiny_raw)
    _prepare(tmp_path, params, "toyroll")
    out = _train(tmp_path, params, "toyroll-ddpm", cwd=tmp_path)
    live_dir = tmp_path / "dvclive" / "toyroll-ddpm"  # DVCLive's own place in the project, not results/
    live = pd.read_csv(live_dir / "plots" / "metrics" / "train" / "loss.tsv", sep="\t")
    assert list(live["step"]) == [10, 20, 30, 40]
    np.testing.assert_allclose(live["loss"], pd.read_csv(out / "loss.csv")["loss"], rtol=1e-6)
    assert json.loads((live_dir / "metrics.json").read_text())["step"] == 40
