"""Sharded sampling and bound (runs/shards.py): a run's batches split over scatter jobs and gathered
byte-identical to one job's, in both engines; a killed shard is the only one redone; bad shard
counts get one line before any work."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from .conftest import BIN, TINY_PARAMS, run_cli, snakemake_here, stage_args
from .test_pipeline import ENV, here, make_project, sh

RUN = "digits-tiny"
DIR = Path("results/runs") / RUN
RESULTS = ("samples.npz", "nll.json", "nll_terms.csv")
TARGETS = [str(DIR / name) for name in RESULTS]


def write_params(project: Path, sample_shards: int, nll_shards: int, timesteps: int = 10) -> None:
    raw = yaml.safe_load(TINY_PARAMS.read_text())
    run = raw["runs"][RUN]
    run["diffusion"]["timesteps"] = timesteps
    run["sample"]["shards"] = sample_shards
    run["eval"]["nll_shards"] = nll_shards
    (project / "params.yaml").write_text(yaml.safe_dump(raw))


def ran(out: str) -> dict:
    """{rule: count} from Snakemake's job stats."""
    stats = out.split("Job stats:", 1)[1].split("\n\n", 1)[0] if "Job stats:" in out else ""
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", stats, re.M) if m.group(1) != "total"}


def results(project: Path) -> dict:
    return {name: (project / DIR / name).read_bytes() for name in RESULTS}


def test_shards_gather_byte_identical_to_one_job_in_both_engines(tmp_path):
    project = make_project(tmp_path)
    write_params(project, 1, 1)
    sh(BIN / "snakemake", "--cores", "2", *TARGETS, cwd=project)
    single = results(project)

    write_params(project, 3, 2)
    out = sh(BIN / "snakemake", "--cores", "2", *TARGETS, cwd=project)
    jobs = ran(out)
    assert jobs.get("sample_shard") == 3 and jobs.get("nll_shard") == 2 and "train" not in jobs, jobs
    assert results(project) == single  # byte-identical, shards or not
    assert not list((project / DIR / "shards").glob("*.pt"))  # temporary: removed once gathered
    shard_log = (project / "logs" / "sample" / f"{RUN}-shard2-of-3.log").read_text()
    assert "shard 2 of 3: batches [2, 3]" in shard_log  # 4 batches of 8: the last shard takes two
    assert "gathered 3 of 3 shard(s)" in (project / "logs" / "sample" / f"{RUN}.log").read_text()
    assert "Nothing to be done" in here(snakemake_here("-n", "--cores", "1", *TARGETS, cwd=project))

    # DVC runs each stage as one job, which computes every batch itself: the same bytes
    for name in RESULTS:
        (project / DIR / name).unlink()
    sh(BIN / "dvc", "repro", "--single-item", f"sample@{RUN}", f"nll@{RUN}", cwd=project)
    assert results(project) == single


def _pid_of(needle: str) -> int | None:
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if needle in cmd and "diffrepro" in cmd and "snakemake" not in cmd.split()[0]:
                return int(proc.name)
    return None


def test_a_killed_shard_is_the_only_one_redone(tmp_path):
    project = make_project(tmp_path, dvc=False)
    write_params(project, 1, 1, timesteps=200)  # a batch takes about a second
    sh(BIN / "snakemake", "--cores", "2", str(DIR / "samples.npz"), cwd=project)
    single = (project / DIR / "samples.npz").read_bytes()
    (project / DIR / "samples.npz").unlink()

    write_params(project, 2, 1, timesteps=200)  # 4 batches: shard 1 holds batches 2 and 3
    victim = "sample-1-of-2.pt"
    first_part = project / DIR / "shards" / "sample-1-of-2.parts" / "part-000002.pt"
    smk = subprocess.Popen([str(BIN / "snakemake"), "--cores", "2", str(DIR / "samples.npz")], cwd=project, env=ENV,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline, pid = time.time() + 300, None
    while time.time() < deadline and smk.poll() is None:
        if first_part.exists():
            pid = _pid_of(victim)
            if pid is not None:
                os.kill(pid, signal.SIGKILL)
                break
        time.sleep(0.01)
    out = smk.communicate(timeout=300)[0]
    assert pid is not None, f"shard 1 was not caught mid-work:\n{out[-2000:]}"
    assert smk.returncode != 0 and not (project / DIR / "samples.npz").exists()
    assert (project / DIR / "shards" / "sample-0-of-2.pt").exists()  # the other shard finished and is kept

    out = sh(BIN / "snakemake", "--cores", "2", str(DIR / "samples.npz"), cwd=project)
    assert ran(out) == {"sample_shard": 1, "sample": 1}, out[-2000:]
    log = (project / "logs" / "sample" / f"{RUN}-shard1-of-2.log").read_text()
    assert "resuming after 1 of 2 batches" in log  # the killed shard kept its finished batch
    assert (project / DIR / "samples.npz").read_bytes() == single


@pytest.mark.parametrize("section, key, value, expected", [
    ("sample", "shards", 0, "runs.digits-tiny.sample.shards: 0 is less than the minimum of 1"),
    ("sample", "shards", 5, "runs.digits-tiny.sample.shards = 5 is more than the 4 batch(es) of 32 items at "
                            "batch size 8"),
    ("eval", "nll_shards", 3, "runs.digits-tiny.eval.nll_shards = 3 is more than the 2 batch(es)"),
])
def test_bad_shard_counts_get_one_line(tmp_path, tiny_raw, section, key, value, expected):
    tiny_raw["runs"][RUN][section][key] = value
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(tiny_raw))
    proc = run_cli("sample", *stage_args("sample", RUN, tmp_path, params))
    assert not (tmp_path / "results").exists()
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(lines) == 1 and expected in lines[0], lines
    assert not (tmp_path / "results").exists()


def test_a_shard_index_outside_the_count_gets_one_line(tmp_path, tiny_raw):
    tiny_raw["runs"][RUN]["sample"]["shards"] = 2
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(tiny_raw))
    args = stage_args("sample", RUN, tmp_path, params)
    head = args[:args.index("--samples")]
    proc = run_cli("sample", *head, "--shard", "2", "--shard-file", tmp_path / "s.pt")
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(lines) == 1, lines
    assert "--shard 2 is not a shard of runs.digits-tiny.sample.shards = 2; allowed: 0 to 1" in lines[0]
    proc = run_cli("sample", *head)  # neither the outputs nor a shard
    assert proc.returncode == 2 and "needs every output flag (missing: --samples" in proc.stderr


def test_shards_split_batches_evenly_and_whole():
    from diffrepro.runs.shards import Batches

    plan = Batches(n=50_000, batch_size=1000, shards=8)
    parts = [plan.shard(k) for k in range(8)]
    assert sum(parts, []) == list(range(50))  # every batch once, in order
    assert {len(p) for p in parts} <= {6, 7}
    assert plan.bounds(49) == (49_000, 50_000) and Batches(10, 4).bounds(2) == (8, 10)
    with pytest.raises(ValueError, match="more than the 3 batch"):
        Batches(10, 4, shards=4).check("k")
