"""`diffrepro compare`: one table of every run's figures across the workspace, git revisions and DVC
experiments, with the params that differ between the rows of the same run beside the metrics.

Sources (each gives params.yaml and the runs' metrics files as they were there):
- the workspace (what `snakemake`/`dvc repro` last built here);
- git revisions (`--rev REV`, repeatable): the committed params and metrics (the metrics JSON are
  DVC outs with `cache: false`, so they live in git);
- DVC experiments (`--exp`, or by default when there are any): the experiments `dvc exp show` lists
  for HEAD, named as DVC names them; their files are read from the experiment's commit.
Which files hold a run's metrics comes from the pipeline declaration (the report's inputs).
"""
from __future__ import annotations

import io
import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pandas as pd
import yaml

from ..wiring import pipeline
from .collect import HEADLINE, run_metrics

FORMATS = ("md", "csv", "html")
class CompareError(RuntimeError):
    """A source that cannot be read (unknown revision, not a git or DVC repository)."""


@dataclass
class Source:
    name: str                                   # workspace, the revision as given, or the experiment's name
    kind: str                                   # workspace | rev | exp
    read: Callable[[str], bytes | None]         # a project-relative file's bytes there, or None


def _git(args, cwd) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True)


def workspace(root) -> Source:
    def read(path):
        p = Path(root) / path
        return p.read_bytes() if p.is_file() else None
    return Source("workspace", "workspace", read)


def revision(root, rev: str, name: str | None = None, kind: str = "rev") -> Source:
    proc = _git(["rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}"], root)
    if proc.returncode != 0:
        raise CompareError(f"--rev {rev!r} is not a git revision of {Path(root).resolve()}")
    sha = proc.stdout.decode().strip()

    def read(path):
        got = _git(["show", f"{sha}:{path}"], root)
        return got.stdout if got.returncode == 0 else None
    return Source(name or rev, kind, read)


def experiments(root) -> list:
    """The DVC experiments of HEAD as `dvc exp show` names them (empty when there are none)."""
    from ..wiring.sync import tool

    if not (Path(root) / ".dvc").is_dir():
        return []
    proc = subprocess.run([tool("dvc"), "exp", "show", "--json"], cwd=root, capture_output=True, text=True)
    if proc.returncode != 0:
        raise CompareError(f"dvc exp show failed: {proc.stderr.strip()[-300:]}")
    found = []
    for baseline in json.loads(proc.stdout or "[]"):
        for exp in baseline.get("experiments") or []:
            for rev in exp.get("revs") or []:
                if rev.get("rev") and rev.get("name"):
                    found.append(revision(root, rev["rev"], name=rev["name"], kind="exp"))
    return found


def _load(source: Source, path: str, what: str):
    data = source.read(path)
    if data is None:
        return None
    try:
        return yaml.safe_load(data) if path.endswith((".yaml", ".yml")) else json.loads(data)
    except (ValueError, yaml.YAMLError) as exc:
        raise CompareError(f"{source.name}: {path} ({what}) is not readable: {exc}") from None


def _flatten(node, prefix="") -> dict:
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: json.dumps(node) if isinstance(node, list) else node}


def run_settings(params: dict, run: str) -> dict:
    """Every setting a run's figures depend on, flattened: the run's own keys, its model's and
    dataset's (prefixed model./dataset.), and the seed."""
    spec = params["runs"][run]
    flat = {"seed": params.get("seed")}
    flat.update(_flatten({k: v for k, v in spec.items() if k not in ("dataset", "model")}))
    flat.update(_flatten(params.get("models", {}).get(spec["model"], {}), "model."))
    flat.update(_flatten(params.get("datasets", {}).get(spec["dataset"], {}), "dataset."))
    return flat


def rows_of(source: Source, params_file: str = "params.yaml") -> list:
    """One row per run of `source`: names, settings (flattened) and metrics (`stage.key`)."""
    params = _load(source, params_file, "params")
    if params is None:
        raise CompareError(f"{source.name}: no {params_file} there")

    def load(stage_name, output, run):
        path = pipeline.fill(pipeline.stage(stage_name).output(output).path, run=run)
        return _load(source, path, f"{stage_name} metrics of {run}")

    rows = []
    for run, spec in (params.get("runs") or {}).items():
        metrics = run_metrics(load, run)
        rows.append({"source": source.name, "kind": source.kind, "run": run, "dataset": spec.get("dataset"),
                     "family": spec.get("diffusion", {}).get("family"), "settings": run_settings(params, run),
                     "metrics": metrics, "read": source.read})
    return rows


def table(rows: list) -> pd.DataFrame:
    """The comparison: source, run, the settings that differ between rows of the same run, the figures."""
    by_run = {}
    for row in rows:
        by_run.setdefault(row["run"], []).append(row["settings"])
    differing = []
    for settings in by_run.values():
        for key in sorted({k for s in settings for k in s}):
            if len({json.dumps(s.get(key), sort_keys=True) for s in settings}) > 1 and key not in differing:
                differing.append(key)
    records = []
    for row in rows:
        rec = {"source": row["source"], "run": row["run"], "dataset": row["dataset"], "family": row["family"]}
        rec.update({key: row["settings"].get(key) for key in differing})
        for stage_name, key, column in HEADLINE:
            rec[column] = row["metrics"].get(f"{stage_name}.{key}")
        records.append(rec)
    frame = pd.DataFrame(records)
    return frame.dropna(axis=1, how="all")


def render(frame: pd.DataFrame, fmt: str) -> str:
    if fmt not in FORMATS:
        raise CompareError(f"--format {fmt!r} is not allowed; allowed: {', '.join(FORMATS)}")
    if fmt == "csv":
        buf = io.StringIO()
        frame.to_csv(buf, index=False)
        return buf.getvalue()
    if fmt == "html":
        return frame.to_html(index=False, na_rep="", float_format=lambda v: f"{v:.4g}")
    return frame.to_markdown(index=False, floatfmt=".4g", missingval="") + "\n"


def gather(root=".", revs=(), exps: bool | None = None, include_workspace: bool = True) -> list:
    """Rows of every requested source (experiments: all of HEAD's when `exps` is None and some exist)."""
    sources = [workspace(root)] if include_workspace else []
    sources += [revision(root, rev) for rev in revs]
    if exps:
        sources += experiments(root)
    elif exps is None:  # by default: the experiments there are, if DVC can list them
        try:
            sources += experiments(root)
        except CompareError:
            pass
    rows = []
    for source in sources:
        rows += rows_of(source)
    return rows
