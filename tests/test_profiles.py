"""Past one machine: the Snakemake profiles under workflow/profiles plan every job with the resources
params.yaml gives it (params `resources`: `default`, then per stage; config.JobResources).

- slurm (snakemake-executor-plugin-slurm, `executor: slurm`): a dry run needs no sbatch, sinfo or
  squeue, and plans each rule with params' mem_mb, runtime (minutes) and gpu over the profile's
  default-resources; without params `resources` the profile's defaults and the declared GPU stages;
- gpu-box: on 4 cores, the jobs that hold the GPU run one at a time (a real run of two trainings);
  a change of params `resources` re-runs nothing in either engine.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from diffrepro.config import JobResources, ParamsError, parse_params
from diffrepro.wiring import engines, pipeline

from .conftest import BIN, ROOT, TINY_PARAMS, copy_pipeline_files, snakemake_here
from .test_pipeline import here, sh

SLURM = "workflow/profiles/slurm"
GPU_BOX = "workflow/profiles/gpu-box"
# params `resources` of the tests: a default, a stage with its own memory and time, a stage moved
# onto the GPU and a declared GPU stage moved off it
RESOURCES = {"default": {"mem_mb": 1500, "runtime_min": 20},
             "train": {"mem_mb": 6000, "runtime_min": 90},
             "sample": {"gpu": 1},
             "reference": {"gpu": 0}}


def make_copy(dest: Path, resources: dict | None) -> Path:
    """The pipeline on the tiny params (with `resources` when given) in `dest`."""
    copy_pipeline_files(dest, TINY_PARAMS)
    raw = yaml.safe_load(TINY_PARAMS.read_text())
    if resources is not None:
        raw["resources"] = resources
    (dest / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    return dest


def _resources(line: str) -> dict:
    """`resources: tmpdir=/tmp, mem_mb=1500, mem=1.5 GB, gpu=0` -> {name: value}."""
    pairs = (item.split("=", 1) for item in line.split(":", 1)[1].strip().split(", "))
    return {k: v for k, v in pairs}


def job_events(out: str) -> list:
    """Snakemake's log as events in order: ("start", jobid, rule, resources) and ("end", jobid)."""
    events, current = [], None
    for line in out.splitlines():
        if m := re.match(r"(?:local)?rule (\S+):$", line):
            current = {"rule": m.group(1)}
        elif current is not None and (m := re.match(r"\s+jobid: (\d+)$", line)):
            current["jobid"] = int(m.group(1))
        elif current is not None and line.strip().startswith("resources:"):
            events.append(("start", current["jobid"], current["rule"], _resources(line)))
            current = None
        elif m := re.match(r"Finished jobid: (\d+)", line):
            events.append(("end", int(m.group(1))))
    return events


def planned(out: str) -> dict:
    """rule -> the resources of each of its planned jobs (rule all left out)."""
    jobs = {}
    for event in job_events(out):
        if event[0] == "start" and event[2] != "all":
            jobs.setdefault(event[2], []).append(event[3])
    return jobs


def expected(resources: dict | None, profile_default: dict) -> dict:
    """rule -> {mem_mb, runtime, gpu} as params (over the profile's default-resources) say."""
    raw = yaml.safe_load(TINY_PARAMS.read_text())
    raw["resources"] = resources or {}
    params = parse_params(raw)
    found = {}
    for st in pipeline.STAGES:
        res = params.job_resources(st.name)
        found[st.name] = {"mem_mb": str(res.mem_mb or profile_default["mem_mb"]),
                          "runtime": str(res.runtime_min or profile_default["runtime"]),
                          "gpu": str(int(st.gpu) if res.gpu is None else res.gpu)}
    return found


def profile_default_resources(profile: str) -> dict:
    return yaml.safe_load((ROOT / profile / "config.yaml").read_text())["default-resources"]


@pytest.mark.parametrize("resources", [RESOURCES, None], ids=["params", "profile-defaults"])
def test_slurm_dry_run_plans_each_rule_with_params_resources(tmp_path, resources):
    project = make_copy(tmp_path, resources)
    out = here(snakemake_here("-n", "--profile", SLURM, cwd=project))  # no sbatch/sinfo: a pure plan
    assert f"Using profile {SLURM}" in out
    jobs = planned(out)
    assert set(jobs) == set(pipeline.STAGE_NAMES)
    for rule, want in expected(resources, profile_default_resources(SLURM)).items():
        for got in jobs[rule]:
            assert {k: got.get(k) for k in want} == want, (rule, got)
    if resources is None:  # the declared GPU stages hold one GPU, the rest none
        assert {r for r, js in jobs.items() if js[0]["gpu"] == "1"} == {s.name for s in pipeline.STAGES if s.gpu}
    else:
        assert jobs["sample"][0]["gpu"] == "1" and jobs["reference"][0]["gpu"] == "0"
        assert jobs["train"][0]["mem_mb"] == "6000" and jobs["train"][0]["runtime"] == "90"


def test_the_profiles_name_the_slurm_executor_and_a_gpu_cap():
    slurm = yaml.safe_load((ROOT / SLURM / "config.yaml").read_text())
    box = yaml.safe_load((ROOT / GPU_BOX / "config.yaml").read_text())
    assert slurm["executor"] == "slurm" and {"mem_mb", "runtime"} <= set(slurm["default-resources"])
    assert box["resources"]["gpu"] == 1 and box["cores"] == "all"


def test_resources_merge_over_default_and_name_stages(tiny_raw):
    tiny_raw["resources"] = RESOURCES
    params = parse_params(tiny_raw)
    assert params.job_resources("train") == JobResources(mem_mb=6000, runtime_min=90)
    assert params.job_resources("nll") == JobResources(mem_mb=1500, runtime_min=20)
    assert engines.snakemake_resources(pipeline.stage("reference"), params) == \
        {"gpu": 0, "mem_mb": 1500, "runtime": 20}
    assert engines.snakemake_resources(pipeline.stage("train"), parse_params({**tiny_raw, "resources": {}})) == \
        {"gpu": 1}
    with pytest.raises(ParamsError, match=r"resources\.trian is not a stage; allowed: default, check, prepare"):
        parse_params({**tiny_raw, "resources": {"trian": {"mem_mb": 1}}})
    with pytest.raises(ParamsError, match=r"resources\.train: .*'mem' was unexpected.*allowed keys: gpu, mem_mb"):
        parse_params({**tiny_raw, "resources": {"train": {"mem": 1}}})
    # DVC tracks no resources key: changing them re-runs no stage
    assert not re.search(r"^\s+- resources", engines.render_dvc_yaml(), re.M)


@pytest.mark.timeout(300)
def test_gpu_box_runs_gpu_jobs_one_at_a_time(tmp_path):
    project = make_copy(tmp_path, RESOURCES)
    targets = [f"results/runs/{run}/model.pt" for run in ("toyroll-ddpm", "toyroll-sd")]  # 1 prepare, 2 trains
    out = sh(BIN / "snakemake", "--profile", GPU_BOX, "--cores", "4", *targets, cwd=project)
    assert re.search(r"Provided cores: 4\b", out) and re.search(r"Provided resources: .*gpu\W+1\b", out), out
    holding, most, started = set(), 0, 0
    for event in job_events(out):
        if event[0] == "start" and event[3].get("gpu", "0") != "0":
            holding.add(event[1])
            started += 1
            most = max(most, len(holding))
        elif event[0] == "end":
            holding.discard(event[1])
    assert started == 2 and most == 1, out  # 4 cores could take both trainings; the GPU cap says one
    # resources are not settings: changing them leaves the built jobs current
    raw = yaml.safe_load((project / "params.yaml").read_text())
    raw["resources"]["train"] = {"mem_mb": 9000, "runtime_min": 5, "gpu": 0}
    (project / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    assert "Nothing to be done" in here(snakemake_here("-n", "--cores", "1", *targets, cwd=project))


def _fake_srun(folder: Path) -> Path:
    """An `srun` that records its arguments and succeeds: what a SLURM allocation would be asked to run."""
    folder.mkdir()
    srun = folder / "srun"
    srun.write_text("#!/bin/sh\nprintf '%s\\n' \"$@\" > \"$(dirname \"$0\")/argv\"\n")
    srun.chmod(0o755)
    return folder


def test_multi_node_training_starts_one_torchrun_per_node_through_srun(tmp_path, tiny_raw):
    import os
    import socket
    import subprocess

    from .conftest import stage_args

    tiny_raw["runs"]["toyroll-ddpm"]["train"].update(nodes=2, processes=2)  # batch 64 over 2 x 2 processes
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(tiny_raw))
    fake = _fake_srun(tmp_path / "bin")
    args = stage_args("train", "toyroll-ddpm", tmp_path, params)
    base = {**os.environ, "PATH": f"{fake}{os.pathsep}{BIN}{os.pathsep}{os.environ['PATH']}"}
    base.pop("SLURM_JOB_ID", None)

    def train(**env):
        return subprocess.run([str(BIN / "diffrepro"), "train", *map(str, args)], env={**base, **env},
                              capture_output=True, text=True)

    proc = train(SLURM_JOB_ID="4242", SLURM_JOB_NUM_NODES="2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    argv = (fake / "argv").read_text().splitlines()
    head = argv[:argv.index("-m")]
    assert head[:4] == ["--nodes=2", "--ntasks=2", "--ntasks-per-node=1", "--kill-on-bad-exit=1"]
    assert Path(head[4]).parent == BIN and Path(head[4]).name.startswith("python")  # this venv's Python
    torchrun = argv[argv.index("torch.distributed.run") + 1:]
    assert torchrun[:5] == ["--nnodes=2", "--rdzv_backend=c10d", f"--rdzv_endpoint={socket.gethostname()}:29742",
                            "--rdzv_id=4242", "--nproc_per_node=2"]
    assert torchrun[5:9] == ["-m", "--", "diffrepro", "train"] and torchrun[9:] == list(map(str, args))
    assert "2 process(es) on each of 2 machine(s): srun --nodes=2" in proc.stderr
    # outside an allocation, or in one too small: one line naming the key
    for env, fragment in (({}, "not in one (no SLURM_JOB_ID)"), ({"SLURM_JOB_ID": "7", "SLURM_JOB_NUM_NODES": "1"},
                                                                 "holds 1 node(s); allowed: train.nodes <= 1")):
        proc = train(**env)
        lines = [line for line in proc.stderr.splitlines() if line.startswith("diffrepro train: error:")]
        assert proc.returncode == 2 and len(lines) == 1 and "train.nodes = 2" in lines[0] and fragment in lines[0], \
            proc.stderr[-2000:]


def test_slurm_plans_a_multi_node_training_as_one_job_over_its_nodes(tmp_path):
    project = make_copy(tmp_path, None)
    raw = yaml.safe_load((project / "params.yaml").read_text())
    raw["runs"]["toyroll-ddpm"]["train"].update(nodes=2, processes=2)
    (project / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    jobs = planned(here(snakemake_here("-n", "--profile", SLURM, cwd=project)))
    by_run = {job.get("nodes"): job for job in jobs["train"]}
    assert set(by_run) == {"1", "2"}
    many, one = by_run["2"], by_run["1"]
    assert (many["tasks"], many["mpi"], many["tasks_per_gpu"]) == ("2", "srun", "0")
    assert one["tasks"] == "1" and one.get("mpi", "") == ""
    raw["runs"]["toyroll-ddpm"]["train"].update(nodes=3)  # 64 examples over 3 x 2 processes
    with pytest.raises(ParamsError, match=r"batch_size = 64 cannot be split evenly over 6 processes \(.*nodes = 3"):
        parse_params(raw)
