"""The warm interpreter (diffrepro.warm): a stage's command run as a fork of a process that imported
torch already writes what it writes as its own process, byte for byte, fails with the same one line,
is refused for an environment read at import (and served by a warm process of its own thereafter),
passes signals on, and dies with its command; Snakemake and `diffrepro warm` start and stop one."""
from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from diffrepro import warm

from .conftest import BIN, TINY_PARAMS, copy_pipeline_files, run_cli, stage_args


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k != warm.ENV}
    return {**env, "PATH": f"{BIN}{os.pathsep}{env['PATH']}", "OMP_WAIT_POLICY": "PASSIVE",
            "DIFFREPRO_PROGRESS": "off", **extra}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The tiny swiss roll prepared and its DDPM run trained (in this process), and its params."""
    root = tmp_path_factory.mktemp("warm")
    raw = yaml.safe_load(TINY_PARAMS.read_text())
    raw["runs"]["toyroll-ddpm"]["train"].update(steps=20, checkpoint_every=20)
    params = root / "params.yaml"
    params.write_text(yaml.safe_dump(raw))
    run_cli("prepare", *stage_args("prepare", "toyroll", root, params), check=True)
    run_cli("train", *stage_args("train", "toyroll-ddpm", root, params), check=True)
    return root, params, raw


@pytest.fixture(scope="module")
def server():
    """A warm process of this module's own, for the environment _env() gives."""
    w = warm.start(_env())
    assert w.ready(60), "the warm process did not start"
    yield w
    w.stop()


def _sample(root, params, out: Path, env, run="toyroll-ddpm") -> subprocess.CompletedProcess:
    args = stage_args("sample", "toyroll-ddpm", root, params)
    for flag, name in (("--samples", "samples.npz"), ("--picture", "samples.png"), ("--progressive", "prog.png")):
        args[args.index(flag) + 1] = str(out / name)
    args[args.index("--run") + 1] = run
    return subprocess.run([str(BIN / "diffrepro"), "sample", *args, "--log", str(out / "sample.log")], env=env,
                          capture_output=True, text=True, timeout=300)


def _descendants(pid: int) -> list:
    """The processes below `pid` (Linux /proc)."""
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                parents[int(entry)] = int(open(f"/proc/{entry}/stat").read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                pass
    found, frontier = [], [pid]
    while frontier:
        children = [p for p, parent in parents.items() if parent in frontier]
        found += children
        frontier = children
    return found


def test_a_warm_job_writes_what_its_own_process_writes_and_fails_the_same_way(trained, server, tmp_path):
    root, params, _ = trained
    alone, warmed = tmp_path / "alone", tmp_path / "warm"
    for out in (alone, warmed):
        out.mkdir()
    first = _sample(root, params, alone, _env(**{warm.ENV: "off"}))
    second = _sample(root, params, warmed, _env(**{warm.ENV: server.path}))
    assert first.returncode == second.returncode == 0, (first.stderr, second.stderr)
    for name in ("samples.npz", "samples.png", "prog.png"):
        assert (alone / name).read_bytes() == (warmed / name).read_bytes(), name
    alone_log, warm_log = (alone / "sample.log").read_text(), (warmed / "sample.log").read_text()
    assert "(warm)" in warm_log and "warm" not in alone_log
    assert "64 samples of shape (2,)" in warm_log  # the job's own log lines
    # a bad run name: the same single line and exit code, whether warm or not
    bad = [_sample(root, params, out, _env(**{warm.ENV: path}), run="nope")
           for out, path in ((alone, "off"), (warmed, server.path))]
    assert bad[0].returncode == bad[1].returncode == 2
    assert bad[0].stderr == bad[1].stderr and len(bad[1].stderr.strip().splitlines()) == 1, bad[1].stderr
    assert "nope" in bad[1].stderr and "Traceback" not in bad[1].stderr


def test_another_environment_is_refused_then_served_by_a_warm_process_of_its_own(trained, server, tmp_path):
    root, params, _ = trained
    env = _env(**{warm.ENV: server.path, "OMP_NUM_THREADS": "7"})  # read by OpenMP when torch loads
    proc = _sample(root, params, tmp_path, env)
    assert proc.returncode == 0, proc.stderr
    assert "(not warm: warming up for OMP_NUM_THREADS)" in (tmp_path / "sample.log").read_text()
    deadline = time.time() + 60
    while not _warm_lines(tmp_path / "sample.log") and time.time() < deadline:  # its own warm process
        time.sleep(0.5)                                                          # starts; then it serves
        proc = _sample(root, params, tmp_path, env)
        assert proc.returncode == 0, proc.stderr
    assert _warm_lines(tmp_path / "sample.log")
    assert server.proc.poll() is None


def _warm_lines(log: Path) -> list:
    return [ln for ln in log.read_text().splitlines() if ln.endswith("(warm)")]


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGINT, signal.SIGKILL])
def test_a_signal_reaches_the_job_and_a_killed_command_takes_its_job_with_it(trained, server, tmp_path, how):
    root, params, raw = trained
    raw = yaml.safe_load(yaml.safe_dump(raw))
    raw["runs"]["toyroll-ddpm"]["train"].update(steps=1_000_000, log_every=25, checkpoint_every=1_000_000)
    long = tmp_path / "long.yaml"
    long.write_text(yaml.safe_dump(raw))
    args = stage_args("train", "toyroll-ddpm", tmp_path, long)
    args[args.index("--train") + 1] = stage_args("train", "toyroll-ddpm", root, params)[args.index("--train") + 1]
    loss = Path(args[args.index("--loss") + 1])
    before = set(_descendants(server.proc.pid))  # another environment's warm process, if started
    proc = subprocess.Popen([str(BIN / "diffrepro"), "train", *args], env=_env(**{warm.ENV: server.path}),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while not loss.exists() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        assert proc.poll() is None and loss.exists(), "the job did not start training"
        jobs = [p for p in _descendants(server.proc.pid) if p not in before]
        assert len(jobs) == 2, jobs  # the handler that watches, and the job
        proc.send_signal(how)
        assert proc.wait(30) == -how  # the command ends the way the job ended, or is killed itself
        deadline = time.time() + 30
        while any(os.path.exists(f"/proc/{p}") and _state(p) != "Z" for p in jobs) and time.time() < deadline:
            time.sleep(0.05)
        assert not any(os.path.exists(f"/proc/{p}") and _state(p) != "Z" for p in jobs), "the job outlived it"
    finally:
        if proc.poll() is None:
            proc.kill()
    rows = loss.read_text()
    time.sleep(1.0)
    assert loss.read_text() == rows  # nothing writes any more
    assert server.proc.poll() is None  # the warm process serves on


def _state(pid: int) -> str:
    try:
        return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "Z"


def test_snakemake_starts_a_warm_process_for_its_jobs_and_stops_it(tmp_path):
    project = tmp_path / "p"
    project.mkdir()
    copy_pipeline_files(project, TINY_PARAMS)
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    # one core: Snakemake leaves OpenMP's wait policy to each job, whose command sets PASSIVE (its one
    # thread is fewer than the CPUs): the warm process starts with the same, and every job finds it
    env = {k: v for k, v in _env(TMPDIR=str(tmp)).items() if k != "OMP_WAIT_POLICY"}
    proc = subprocess.run([str(BIN / "snakemake"), "--cores", "1", "results/runs/toyroll-ddpm/samples.npz"],
                          cwd=project, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for stage in ("prepare", "train", "sample"):
        log = next((project / "logs" / stage).glob("*.log")).read_text()
        assert "start-up" in log and "(warm)" in log, (stage, log)
    assert not list(tmp.glob("diffrepro-warm-*"))  # its folder and socket are gone: it was stopped
    assert not any(str(tmp) in open(f"/proc/{p}/cmdline").read() for p in os.listdir("/proc")
                   if p.isdigit() and os.path.exists(f"/proc/{p}/cmdline"))


def test_the_warm_command_runs_a_command_with_one_and_returns_its_exit_code(trained, tmp_path):
    root, params, _ = trained
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    args = stage_args("sample", "toyroll-ddpm", tmp_path, params)
    args[args.index("--model") + 1] = stage_args("sample", "toyroll-ddpm", root, params)[args.index("--model") + 1]
    args[args.index("--test") + 1] = stage_args("sample", "toyroll-ddpm", root, params)[args.index("--test") + 1]
    script = f"diffrepro sample {' '.join(args)} --log {tmp_path / 'sample.log'} && exit 3"
    proc = subprocess.run([str(BIN / "diffrepro"), "warm", "sh", "-c", script], env=_env(TMPDIR=str(tmp)),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 3, proc.stderr[-3000:]
    assert "(warm)" in (tmp_path / "sample.log").read_text()
    assert not list(tmp.glob("diffrepro-warm-*"))
    missing = subprocess.run([str(BIN / "diffrepro"), "warm", "no-such-command"], env=_env(TMPDIR=str(tmp)),
                             capture_output=True, text=True, timeout=120)
    assert missing.returncode == 127 and missing.stderr.strip() == \
        "diffrepro warm: error: command not found: no-such-command"
