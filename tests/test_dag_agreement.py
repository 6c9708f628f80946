"""Snakemake and DVC declare the same pipeline: the same stages, commands and outputs."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import BIN, ROOT, TINY_PARAMS

PIPELINE_FILES = ("Snakefile", "workflow", "dvc.yaml", "params.yaml")


def snakemake_jobs(workdir: Path) -> dict:
    """{stage name: (command, outputs)} from Snakemake's own dry-run listing, stage name = rule@wildcard."""
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.run([str(BIN / "snakemake"), "-n", "-p", "--forceall", "--cores", "1"], cwd=workdir, env=env,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    jobs = {}
    for block in re.split(r"\n(?=rule \S+:\n)", proc.stdout):
        m = re.match(r"rule (\S+):\n", block)
        if not m or m.group(1) == "all":
            continue
        outputs = re.search(r"^\s+output: (.*)$", block, re.M).group(1).split(", ")
        wildcards = re.search(r"^\s+wildcards: \w+=(\S+)$", block, re.M)
        command = re.search(r"^Shell command: (.*)$", block, re.M).group(1)
        name = m.group(1) + (f"@{wildcards.group(1)}" if wildcards else "")
        jobs[name] = (" ".join(command.split()), sorted(outputs))
    return jobs


def dvc_stages(workdir: Path) -> dict:
    from dvc.repo import Repo

    repo = Repo(str(workdir), uninitialized=True)
    stages = {}
    for stage in repo.index.stages:
        outs = sorted(os.path.relpath(o.fs_path, workdir) for o in stage.outs)
        stages[stage.name] = (" ".join(stage.cmd.split()), outs)
    return stages


def copy_pipeline(dest: Path, params: Path) -> None:
    for name in PIPELINE_FILES[:-1]:
        src = ROOT / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, dest / name)
    shutil.copy(params, dest / "params.yaml")


@pytest.mark.parametrize("params", [ROOT / "params.yaml", TINY_PARAMS], ids=["default", "tiny"])
def test_snakemake_and_dvc_agree(tmp_path, params):
    copy_pipeline(tmp_path, params)
    smk, dvc = snakemake_jobs(tmp_path), dvc_stages(tmp_path)
    assert sorted(smk) == sorted(dvc)
    for name in smk:
        assert smk[name][0] == dvc[name][0], f"command of {name} differs"
        assert smk[name][1] == dvc[name][1], f"outputs of {name} differ"
    # every stage the CLI knows is in the pipeline
    from diffrepro.stages import STAGES

    assert {n.split("@")[0] for n in smk} == set(STAGES)


def test_snakemake_rejects_bad_params_with_the_key(tmp_path, tiny_raw):
    import yaml

    tiny_raw["runs"]["toyroll-ddpm"]["train"]["steps"] = -3
    copy_pipeline(tmp_path, TINY_PARAMS)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(tiny_raw))
    proc = subprocess.run([str(BIN / "snakemake"), "-n", "--cores", "1"], cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode != 0
    assert "steps" in proc.stdout + proc.stderr and "-3" in proc.stdout + proc.stderr
