"""The tests' in-process runner (conftest.in_this_process) gives what the command's process would:
its exit code and output, a traceback for an escaping exception, and leaves this process as it was."""
from __future__ import annotations

import os
import random
import sys

import numpy as np
import torch

from .conftest import COMMAND_ENV, TINY_PARAMS, in_this_process, run_cli, stage_args


def _messy(args):
    """A command that changes what a process owns, then ends as told."""
    os.chdir("/")
    os.environ["DIFFREPRO_LEFT_BEHIND"] = "1"
    torch.set_num_threads(1)
    torch.manual_seed(123)
    np.random.seed(123)
    random.seed(123)
    print("to stdout", os.environ["PATH"] == COMMAND_ENV["PATH"])
    print("to stderr", file=sys.stderr)
    if args[0] == "raise":
        raise RuntimeError("escaped")
    if args[0] == "exit":
        raise SystemExit(int(args[1]))
    return int(args[0])


def test_exit_codes_output_and_tracebacks_are_the_processs(tmp_path):
    assert in_this_process(_messy, "messy", [0]).returncode == 0
    assert in_this_process(_messy, "messy", [3]).returncode == 3
    done = in_this_process(_messy, "messy", ["exit", 2], cwd=tmp_path)
    assert done.returncode == 2 and done.stdout == "to stdout True\n" and done.stderr == "to stderr\n"
    died = in_this_process(_messy, "messy", ["raise"])
    assert died.returncode == 1 and "Traceback" in died.stderr and "RuntimeError: escaped" in died.stderr


def test_the_process_is_left_as_it_was(tmp_path):
    cwd, env, threads = os.getcwd(), dict(os.environ), torch.get_num_threads()
    draws = torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate()
    in_this_process(_messy, "messy", ["raise"], cwd=tmp_path)
    assert os.getcwd() == cwd and dict(os.environ) == env and torch.get_num_threads() == threads
    assert torch.equal(torch.get_rng_state(), draws[0]) and np.array_equal(np.random.get_state()[1], draws[1])
    assert random.getstate() == draws[2]


def test_the_cli_refuses_in_one_line_as_its_command_does(tmp_path):
    args = stage_args("prepare", "toyroll", tmp_path, TINY_PARAMS)
    args[args.index("--params") + 1] = str(tmp_path / "nowhere.yaml")
    proc = run_cli("prepare", *args, cwd=tmp_path)
    assert proc.returncode == 2 and proc.args[:2] == ["diffrepro", "prepare"]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("diffrepro prepare: error:") and "nowhere.yaml" in lines[0]
    assert not list(tmp_path.rglob("*.npz"))
