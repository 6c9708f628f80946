"""End to end on the tiny params, in one git + DVC checkout driven by both engines:

- Snakemake builds everything; a second run has nothing to do (with a model.pt of a few MB, whose
  mtime Snakemake compares); its onsuccess hook records the build in dvc.lock without moving any
  output's mtime, so `dvc repro` has nothing to do either;
- a params edit makes `dvc repro` re-run only that run's stages and the report, `dvc metrics diff`
  shows it, and after `diffrepro sync` Snakemake has nothing to do;
- a code edit makes `dvc status` and `snakemake -n` name the same jobs: the math reaches the runs'
  train/sample/inpaint/nll, an edit of the report's module only the report;
- DVC alone, in a fresh checkout, builds the same metrics as Snakemake (two of the runs).
"""
from __future__ import annotations

import io
import json
import math
import os
import re
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from .conftest import BIN, COMMAND_ENV, TINY_PARAMS, copy_pipeline_files, run_cli, snakemake_here

ENV = {**os.environ, **COMMAND_ENV}  # a command as a process: what in_this_process gives it
DETERMINISTIC = ("nll.json", "fid.json", "parzen.json", "inpaint.json", "curve.csv")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
RUN_STAGES = ("train", "sample", "inpaint", "nll", "fid", "curve", "parzen")


def here(proc: subprocess.CompletedProcess) -> str:
    """The output of a finished command (a process, or conftest.in_this_process), which must succeed."""
    assert proc.returncode == 0, f"{' '.join(proc.args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return proc.stdout + proc.stderr


def sh(*cmd, cwd):
    """A command as a process."""
    return here(subprocess.run(list(map(str, cmd)), cwd=cwd, env=ENV, capture_output=True, text=True))


def make_project(dest: Path, dvc: bool = True) -> Path:
    copy_pipeline_files(dest, TINY_PARAMS)
    (dest / ".gitignore").write_text(".snakemake/\nlogs/\nresults/benchmarks/\n")
    if dvc:
        sh("git", "init", "-q", cwd=dest)
        # an identity of the checkout's own: commits and `dvc exp run` work on a machine without one
        sh("git", "config", "user.email", "test@example.invalid", cwd=dest)
        sh("git", "config", "user.name", "diffrepro tests", cwd=dest)
        sh(BIN / "dvc", "init", "-q", cwd=dest)
        sh(BIN / "dvc", "config", "core.analytics", "false", cwd=dest)
    return dest


def commit(project: Path, message: str) -> None:
    sh("git", "add", "-A", cwd=project)
    sh("git", "commit", "-qm", message, cwd=project)


def dvc_ran(out: str) -> set:
    return set(re.findall(r"Running stage '([^']+)'", out))


def dvc_changed(project: Path) -> set:
    return set(json.loads(sh(BIN / "dvc", "status", "--json", cwd=project) or "{}"))


def snakemake_pending(project: Path) -> set:
    """rule@wildcard of every job `snakemake -n` would run (rule all left out; through
    snakemake.cli:main, in this process)."""
    out = here(snakemake_here("-n", "--cores", "1", cwd=project))
    jobs = set()
    for block in re.split(r"\n(?=rule \S+:\n)", out):
        m = re.match(r"rule (\S+):\n", block)
        if not m or m.group(1) == "all":
            continue
        wildcard = re.search(r"^\s+wildcards: \w+=(\S+)$", block, re.M)
        jobs.add(m.group(1) + (f"@{wildcard.group(1)}" if wildcard else ""))
    return jobs


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    project = make_project(tmp_path_factory.mktemp("both"))
    # a model.pt of a few MB (the digits U-Net preset): Snakemake checksums files under 1 MB
    # instead of comparing mtimes, so tiny models would hide an output whose mtime moves
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["models"]["unet-tiny"] = {"arch": "unet", "preset": "digits-cpu"}
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    out = sh(BIN / "snakemake", "--cores", "2", cwd=project)
    assert "recorded Snakemake's outputs in dvc.lock" in out
    return project


@pytest.fixture(scope="module")
def runs():
    return list(yaml.safe_load(TINY_PARAMS.read_text())["runs"])


def test_snakemake_builds_every_output(project, runs):
    params = yaml.safe_load((project / "params.yaml").read_text())
    table = pd.read_csv(project / "results" / "metrics.csv")
    assert sorted(table["run"]) == sorted(runs)
    for run in runs:
        for name in ("samples.png", "inpaint.png", "nll_terms.png", "loss.png"):
            assert (project / "results" / "runs" / run / name).read_bytes()[:8] == PNG_MAGIC
        nll = json.loads((project / "results" / "runs" / run / "nll.json").read_text())
        assert nll["n"] == min(params["runs"][run]["eval"]["nll_n"], nll["n"]) and nll["nll"] == nll["nll"]
        inpaint = json.loads((project / "results" / "runs" / run / "inpaint.json").read_text())
        assert all(v == 0.0 for k, v in inpaint.items() if k.startswith("known_max_abs_err")), inpaint
        assert (project / "logs" / "train" / f"{run}.log").read_text().strip()
        assert (project / "results" / "benchmarks" / "train" / f"{run}.tsv").exists()
        # the finished state is kept (a longer run continues from it); so are the curve's rows
        state = torch.load(project / "results" / "runs" / run / "train_state.pt", weights_only=True)
        assert state["step"] == params["runs"][run]["train"]["steps"]
        curve = pd.read_csv(project / "results" / "runs" / run / "curve.csv")
        kept = params["runs"][run]["train"].get("keep_steps", [])
        assert list(curve["step"]) == sorted(kept) + [params["runs"][run]["train"]["steps"]]
        assert np.isfinite(curve[["fid", "nll"]].to_numpy()).all()
        for name in ("curve.png", "training_samples.png"):
            assert (project / "results" / "runs" / run / name).read_bytes()[:8] == PNG_MAGIC
    # no honest bound on heartbeat data lies below its true entropy, log2 5 bits/seq
    beat = json.loads((project / "results" / "runs" / "beat-sd" / "nll.json").read_text())
    assert beat["unit"] == "bits/seq" and beat["nll"] >= math.log2(5) - 3 * beat["nll_stderr"]
    assert "| run" in (project / "results" / "metrics.md").read_text()
    # nothing to do twice: the onsuccess hook's `dvc commit` left every mtime as Snakemake wrote it
    assert (project / "results" / "runs" / "digits-tiny" / "model.pt").stat().st_size > 2_000_000
    assert snakemake_pending(project) == set()
    assert dvc_changed(project) == set()


def test_after_snakemake_dvc_has_nothing_to_do_and_a_params_edit_reruns_only_its_run(project, runs):
    out = sh(BIN / "dvc", "repro", cwd=project)
    assert dvc_ran(out) == set(), out
    commit(project, "built by snakemake")

    params = yaml.safe_load((project / "params.yaml").read_text())
    params["runs"]["toyroll-ddpm"]["train"]["steps"] = 40
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    out = sh(BIN / "dvc", "repro", cwd=project)
    # and the params check, which reads every run (it writes results/plan.json, which no stage reads)
    assert dvc_ran(out) == {f"{s}@toyroll-ddpm" for s in RUN_STAGES} | {"report", "check"}, out
    changed = json.loads(sh(BIN / "dvc", "metrics", "diff", "--json", cwd=project))
    train_json = "results/runs/toyroll-ddpm/train.json"
    assert changed[train_json]["steps"]["old"] == 60 and changed[train_json]["steps"]["new"] == 40
    # Snakemake sees the new params and newer files; sync hands it DVC's verdict
    assert "train@toyroll-ddpm" in snakemake_pending(project)
    assert "recorded its outputs in Snakemake's metadata" in here(run_cli("sync", cwd=project))
    assert snakemake_pending(project) == set()
    assert dvc_changed(project) == set()
    commit(project, "fewer steps")

    # an edit neither engine has built: sync refuses to mark anything current
    original = (project / "params.yaml").read_text()
    params["runs"]["toyroll-sd"]["train"]["steps"] = 20
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    proc = run_cli("sync", cwd=project)
    assert proc.returncode == 2 and "neither engine is up to date" in proc.stderr, proc.stderr
    assert "train@toyroll-sd" in snakemake_pending(project) and "train@toyroll-sd" in dvc_changed(project)
    (project / "params.yaml").write_text(original)
    assert dvc_changed(project) == set() and snakemake_pending(project) == set()


def _edit(path: Path, text: str):
    """Append to a source file; returns an undo that restores its content and mtime."""
    original, stat = path.read_text(), path.stat()
    path.write_text(original + text)

    def undo():
        path.write_text(original)
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    return undo


def test_a_code_edit_reruns_the_same_jobs_in_both_engines(project, runs):
    src = project / "src" / "diffrepro"
    # the DDPM math: every stage that builds a process (build.py imports all three), never the
    # report (it reads the families' records, not their math)
    undo = _edit(src / "diffusion" / "gaussian.py", "\n\ndef _added_helper():\n    return 1\n")
    try:
        dvc, smk = dvc_changed(project), snakemake_pending(project)
    finally:
        undo()
    direct = {f"{s}@{r}" for s in ("train", "sample", "inpaint", "nll", "curve") for r in runs}
    # DVC names the stages whose own deps changed; Snakemake also what follows them
    assert dvc == direct
    assert smk == direct | {f"{s}@{r}" for s in ("fid", "parzen") for r in runs} | {"report"}
    assert dvc_changed(project) == set() and snakemake_pending(project) == set()

    # the report's own module, and the declaration that decides which metrics files it reads
    for path in (src / "stages" / "report.py", src / "wiring" / "pipeline.py"):
        undo = _edit(path, "\n\ndef _added_helper():\n    return 1\n")
        try:
            assert dvc_changed(project) == {"report"}, path
            assert snakemake_pending(project) == {"report"}, path
        finally:
            undo()


def _jobs(raw: dict) -> dict:
    """{stage: its job names as the engines spell them (`train@toyroll-ddpm`, `report`)}."""
    from diffrepro.wiring import pipeline

    keys = {"run": list(raw["runs"]), "dataset": list(raw["datasets"]), None: [None]}
    return {st.name: {st.name if k is None else f"{st.name}@{k}" for k in keys[st.wildcard]}
            for st in pipeline.STAGES}


def _downstream(raw: dict, stale: set) -> set:
    """`stale` and every job that reads, directly or not, an output of one of them (the declaration's
    inputs: a run's stages read its own run's and its dataset's outputs; the report every run's)."""
    from diffrepro.wiring import pipeline

    def inputs_of(st, key):
        found = set()
        for inp in st.inputs:
            if isinstance(inp, pipeline.Input):
                producer = pipeline.stage(inp.stage)
                found.add(producer.name if producer.wildcard is None else
                          f"{producer.name}@{key if producer.wildcard == st.wildcard else raw['runs'][key]['dataset']}")
            else:
                found |= {f"{s}@{run}" for s, _ in inp.outputs for run in raw["runs"]}
        return found

    graph = {job: inputs_of(pipeline.stage(name), job.partition("@")[2] or None)
             for name, jobs in _jobs(raw).items() for job in jobs}
    result, grew = set(stale), True
    while grew:
        grew = False
        for job, needs in graph.items():
            if job not in result and needs & result:
                result.add(job)
                grew = True
    return result


def test_every_module_edit_makes_exactly_its_importers_stale(project):
    """Each module of the package belongs to the dvc.yaml deps of exactly the stages whose code imports
    it (codedeps, itself checked against Python's import scanner in test_dag_agreement.py). Then one
    module of each distinct set of such stages, edited (a function appended): Snakemake names those
    stages' jobs and every job after them; DVC, for three of the sets, exactly those jobs. The wiring
    (cli, engines, codedeps, sync, checks) stales nothing."""
    from dvc.repo import Repo

    from diffrepro.wiring import codedeps, pipeline

    raw = yaml.safe_load((project / "params.yaml").read_text())
    jobs = _jobs(raw)
    dvc_deps = {st.name: st.deps for st in Repo(str(project)).index.stages}  # stage name: its dep paths
    patterns = {}
    files = sorted((project / "src" / "diffrepro").rglob("*.py"))
    assert len(files) > 50
    for path in files:
        rel = path.relative_to(project).as_posix()
        stages = frozenset(st.name for st in pipeline.STAGES if rel in codedeps.stage_code(st.module))
        depending = {name for name, deps in dvc_deps.items() if any(d.def_path == rel for d in deps)}
        assert depending == set().union(set(), *(jobs[s] for s in stages)), rel
        patterns.setdefault(stages, path)
    assert frozenset() in patterns and frozenset({"report"}) in patterns and len(patterns) >= 6
    # DVC acts on its deps (checked above for every module): an edit seen through it for the wiring,
    # the report alone and the widest set; Snakemake's code digests for every set
    through_dvc = {frozenset(), frozenset({"report"}), max(patterns, key=len)}
    repo = Repo(str(project))
    for stages, path in patterns.items():
        rel = path.relative_to(project).as_posix()
        direct = set().union(set(), *(jobs[s] for s in stages))
        undo = _edit(path, "\n\ndef _added_helper():\n    return 1\n")
        try:
            if stages in through_dvc:
                assert {name.rsplit(":", 1)[-1] for name in repo.status()} == direct, rel  # path/dvc.yaml:stage
            pending = snakemake_pending(project)
        finally:
            undo()
        assert pending == _downstream(raw, direct), rel
    assert dvc_changed(project) == set() and snakemake_pending(project) == set()


# (section, key, value, what DVC names, what Snakemake names): each stage of digits-tiny's run
PARAM_EDITS = [
    # the bound walks all T steps per example: an FID sample count never re-runs it
    ("eval", "fid_n", 48, {"fid"}, {"fid"}),
    ("eval", "nll_n", 48, {"nll"}, {"nll"}),
    ("eval", "parzen_n", 48, {"parzen"}, {"parzen"}),
    # more samples: sample and what reads samples.npz, never inpainting
    ("sample", "n", 48, {"sample"}, {"sample", "fid", "parzen"}),
    # the reverse walk: sample, inpaint and the curve's samples, never the bound
    ("sample", "steps", 10, {"sample", "inpaint", "curve"}, {"sample", "inpaint", "fid", "parzen", "curve"}),
    # the sampler's precision: the same stages as the walk, never the bound (always fp32)
    ("sample", "precision", "bf16", {"sample", "inpaint", "curve"}, {"sample", "inpaint", "fid", "parzen", "curve"}),
    ("eval", "curve_fid_n", 8, {"curve"}, {"curve"}),
]


def test_a_stage_reruns_only_for_the_params_it_reads(project):
    """One edit at a time, each undone (content and mtime) before the next; after the last undo both
    engines have nothing to do again."""
    run = "digits-tiny"
    path = project / "params.yaml"
    original, stat = path.read_text(), path.stat()
    for section, key, value, dvc_expected, smk_expected in PARAM_EDITS:
        params = yaml.safe_load(original)
        assert params["runs"][run][section][key] != value
        params["runs"][run][section][key] = value
        path.write_text(yaml.safe_dump(params, sort_keys=False))
        try:
            dvc, smk = dvc_changed(project), snakemake_pending(project)
        finally:
            path.write_text(original)
            os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
        # DVC names the stages whose own params changed; Snakemake also what follows them; the
        # report and the params check read every run
        assert dvc == {f"{s}@{run}" for s in dvc_expected} | {"report", "check"}, (section, key, dvc)
        assert smk == {f"{s}@{run}" for s in smk_expected} | {"report", "check"}, (section, key, smk)
    assert dvc_changed(project) == set() and snakemake_pending(project) == set()


# DVC runs its stages one after another: the fresh checkout builds two of the four runs, one of each
# family and kind of data (the U-Net on images, SD-2015's learned β on points), from a params.yaml
# that lists only those, so their bytes equal the full build's only if a stage reads no other run's
# params (the other two runs' stages are the same commands with another key)
DVC_ALONE_RUNS = ("digits-tiny", "toyroll-sd")


def test_dvc_alone_builds_the_same_metrics(project, tmp_path):
    fresh = make_project(tmp_path)
    params = yaml.safe_load((project / "params.yaml").read_text())  # as edited above
    params["runs"] = {run: params["runs"][run] for run in DVC_ALONE_RUNS}
    params["datasets"] = {d: spec for d, spec in params["datasets"].items()
                          if d in {r["dataset"] for r in params["runs"].values()}}
    assert len(params["datasets"]) == 2
    (fresh / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    sh(BIN / "dvc", "repro", cwd=fresh)
    # same params and seed on the same device -> the same metrics from either engine
    for run in DVC_ALONE_RUNS:
        for name in DETERMINISTIC:
            assert (fresh / "results" / "runs" / run / name).read_bytes() == \
                (project / "results" / "runs" / run / name).read_bytes(), (run, name)
        assert (fresh / "results" / "runs" / run / "model.pt").read_bytes() == \
            (project / "results" / "runs" / run / "model.pt").read_bytes(), run
    for dataset in params["datasets"]:  # the feature networks and their reference features, byte for byte
        for name in (f"{dataset}.pt", f"{dataset}-reference.npz"):
            assert (fresh / "results" / "features" / name).read_bytes() == \
                (project / "results" / "features" / name).read_bytes(), name
    # and the Snakemake side of this checkout agrees (it has no metadata yet: its mtimes decide)
    assert "up to date" in here(run_cli("sync", cwd=fresh))
    assert snakemake_pending(fresh) == set()


def test_snakemake_report_builds_offline_with_the_pictures(project):
    here(snakemake_here("--report", "results/report.html", cwd=project))
    html = (project / "results" / "report.html").read_text(errors="replace")
    for category in ("samples", "inpainting", "bound terms", "loss curves", "metric tables"):
        assert category in html, category
    for name in ("samples.png", "inpaint.png", "nll_terms.png", "bound_terms.png", "metrics.csv"):
        assert name in html, name
    assert html.count("iVBORw0KGgo") >= 4 * 5  # the pictures are embedded (base64 PNG), not linked
    assert (project / "results" / "bound_terms.png").read_bytes()[:8] == PNG_MAGIC


def _compare(project, *args):
    return here(run_cli("compare", *args, cwd=project))


def test_compare_across_git_revisions(project):
    # two commits above: built with 60 steps for toyroll-ddpm, then re-run with 40
    out = _compare(project, "--rev", "HEAD~1", "--rev", "HEAD", "--no-workspace", "--no-exp", "--format", "csv")
    frame = pd.read_csv(io.StringIO(out))
    rows = frame[frame["run"] == "toyroll-ddpm"].set_index("source")
    assert list(rows.index) == ["HEAD~1", "HEAD"]
    assert rows.loc["HEAD~1", "train.steps"] == 60 and rows.loc["HEAD", "train.steps"] == 40
    assert rows.loc["HEAD~1", "bound"] != rows.loc["HEAD", "bound"]
    for rev in ("HEAD~1", "HEAD"):
        committed = json.loads(subprocess.run(["git", "show", f"{rev}:results/runs/toyroll-ddpm/nll.json"],
                                              cwd=project, capture_output=True, text=True).stdout)
        assert rows.loc[rev, "bound"] == pytest.approx(committed["nll"], rel=1e-12)
    # the other runs did not change, so no other setting differs between the two revisions
    assert [c for c in frame.columns if "." in c and c != "train.steps"] == []


def test_compare_dvc_experiments_that_differ_in_one_param(project):
    # the FID's sample count: each experiment re-runs the fid stage and the report, nothing else
    for n in (32, 48):
        sh(BIN / "dvc", "exp", "run", "-S", f"runs.toyroll-ddpm.eval.fid_n={n}", cwd=project)
    shown = json.loads(subprocess.run([str(BIN / "dvc"), "exp", "show", "--json"], cwd=project, env=ENV,
                                      capture_output=True, text=True).stdout)
    names = {}
    for baseline in shown:
        for exp in baseline.get("experiments") or []:
            for rev in exp["revs"]:
                data = rev["data"]
                n = data["params"]["params.yaml"]["data"]["runs"]["toyroll-ddpm"]["eval"]["fid_n"]
                fid = data["metrics"]["results/runs/toyroll-ddpm/fid.json"]["data"]
                assert fid["n"] == n
                names[rev["name"]] = (n, fid["fid"])
    assert sorted(n for n, _ in names.values()) == [32, 48]
    for fmt in ("md", "csv"):
        out = _compare(project, "--no-workspace", "--exp", "--format", fmt, "--plots", project / "compare")
        if fmt == "csv":
            frame = pd.read_csv(io.StringIO(out))
            rows = frame[frame["run"] == "toyroll-ddpm"].set_index("source")
            assert set(rows.index) == set(names)
            for name, (n, fid) in names.items():  # agrees with dvc exp show
                assert rows.loc[name, "eval.fid_n"] == n
                assert rows.loc[name, "FID"] == pytest.approx(fid, rel=1e-12)
            assert rows["FID"].nunique() == 2 and rows["FID n"].tolist() == rows["eval.fid_n"].tolist()
        else:
            assert all(f"| {name}" in out for name in names) and "eval.fid_n" in out, out
    for picture in ("bound_terms.png", "fid_vs_eval_fid_n_toyroll-ddpm.png", "samples_toyroll-ddpm.png"):
        assert (project / "compare" / picture).read_bytes()[:8] == PNG_MAGIC, picture
