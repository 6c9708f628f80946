"""Multi-process training: 2 gloo processes with a batch of B end where 1 process with B does, and resume.

The 2-process run goes through the CLI, which starts itself again under torchrun (train.processes: 2);
the interrupted and the resumed runs are 2 processes forked here with torchrun's variables, calling
the same entry point (diffrepro.cli.main): forked, they need not import torch again.
"""
from __future__ import annotations

import os
import socket
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.multiprocessing as mp
import yaml

from .conftest import TINY_PARAMS, run_cli, stage_args

RUN = "toyroll-sd"  # SD-2015 with learned β: the process's own parameters are averaged as well
STEPS, EVERY = 20, 10


def _params(folder: Path, processes: int) -> Path:
    raw = yaml.safe_load(TINY_PARAMS.read_text())
    raw["runs"][RUN]["train"].update(steps=STEPS, checkpoint_every=EVERY, processes=processes)
    path = folder / f"params-{processes}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _train_args(root: Path, params: Path, folder: str) -> list:
    """The train job's flags, its outputs under runs/<folder> (the training data stays where prepare put it)."""
    args = [str(a) for a in stage_args("train", RUN, root, params)]
    run_dir = str(root / "results" / "runs" / RUN)
    return [a.replace(run_dir, str(root / folder)) for a in args]


def _weights(folder: Path) -> dict:
    return torch.load(folder / "model.pt", weights_only=True)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One prepared data set, and the run trained by 1 process and by 2 (through the CLI)."""
    root = tmp_path_factory.mktemp("ddp")
    one, two = _params(root, 1), _params(root, 2)
    run_cli("prepare", *stage_args("prepare", "toyroll", root, one), check=True)
    run_cli("train", *_train_args(root, one, "one"), check=True)
    run_cli("train", *_train_args(root, two, "two"), "--log", root / "two.log", check=True)
    return root


def test_two_processes_train_as_one_with_the_whole_batch(trained):
    a, b = _weights(trained / "one"), _weights(trained / "two")
    assert b["config"]["train"]["processes"] == 2
    for key in ("model", "model_raw", "process"):  # EMA, raw weights, learned β
        assert a[key].keys() == b[key].keys()
        for name in a[key]:
            torch.testing.assert_close(b[key][name], a[key][name], rtol=0, atol=1e-5, msg=f"{key}.{name}")
    loss_a, loss_b = pd.read_csv(trained / "one" / "loss.csv"), pd.read_csv(trained / "two" / "loss.csv")
    assert list(loss_a["step"]) == list(loss_b["step"])
    np.testing.assert_allclose(loss_b["loss"], loss_a["loss"], rtol=1e-5)  # the whole batch's loss, not rank 0's
    assert torch.load(trained / "two" / "train_state.pt", weights_only=True)["step"] == loss_a["step"].iloc[-1]
    log = (trained / "two.log").read_text()
    assert log.count("final loss") == 1 and "--nproc_per_node=2" in log  # rank 0 alone logs to the file


def _job(argv: list, stop: bool) -> None:
    """2 processes of one torchrun-like job, forked from this one (spawned once it has used CUDA)."""
    method = "spawn" if torch.cuda.is_initialized() else "fork"  # a forked child cannot use its parent's CUDA
    mp.start_processes(_worker, args=(2, _free_port(), argv, stop), nprocs=2, join=True, start_method=method)


def _worker(rank: int, world: int, port: int, argv: list, stop: bool) -> None:
    """One process of a torchrun job: its variables, then the CLI; `stop`: fail right after the first saved state."""
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), LOCAL_WORLD_SIZE=str(world),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    from diffrepro.cli import main
    from diffrepro.runs import training

    if stop:
        save = training._save_state

        def save_then_stop(*args, **kwargs):
            save(*args, **kwargs)
            raise RuntimeError("stopped after the first saved state")

        training._save_state = save_then_stop
    assert main(argv) == (2 if stop else 0)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_resume_from_rank_zeros_state(trained):
    args = _train_args(trained, trained / "params-2.yaml", "stopped")
    _job(["train", *args], stop=True)
    stopped = trained / "stopped"
    state = torch.load(stopped / "train_state.pt", weights_only=True)
    assert state["step"] == EVERY and len(state["rank_rng"]) == 2 and not (stopped / "model.pt").exists()

    _job(["train", *args, "--log", str(trained / "resumed.log")], stop=False)
    assert f"from step {EVERY}" in (trained / "resumed.log").read_text()
    a, b = _weights(trained / "two"), _weights(stopped)
    for key in ("model", "model_raw", "process"):
        for name in a[key]:
            assert torch.equal(a[key][name], b[key][name]), (key, name)


def test_processes_split_the_batch_and_set_the_rules_threads():
    from diffrepro.config import ParamsError, parse_params
    from diffrepro.wiring import engines, pipeline

    raw = yaml.safe_load(TINY_PARAMS.read_text())
    raw["runs"][RUN]["train"]["processes"] = 3
    with pytest.raises(ParamsError, match=r"runs\.toyroll-sd\.train\.batch_size = 128 cannot be split evenly "
                                          r"over runs\.toyroll-sd\.train\.processes = 3; allowed: a batch_size "
                                          r"divisible by 3"):
        parse_params(raw)
    raw["runs"][RUN]["train"]["processes"] = 2
    train = pipeline.stage("train")
    params = parse_params(raw)
    assert params.run(RUN).train.processes == 2 and params.run("toyroll-ddpm").train.processes == 1
    assert engines.job_processes(train, raw, RUN) == 2 and engines.job_processes(train, raw, "toyroll-ddpm") == 1
    assert engines.snakemake_threads(train, raw, 3)({"run": RUN}) == 6  # threads for each process
    assert engines.snakemake_threads(pipeline.stage("sample"), raw, 3) == 3
