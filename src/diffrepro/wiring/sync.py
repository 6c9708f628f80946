"""One checkout, both engines: after either engine has built the pipeline, the other has nothing to do.

Each engine keeps its own record of what is current: DVC its lock file (content hashes of deps,
params and outs), Snakemake its metadata (params, code, input sets) and file mtimes. `sync`
hands the verdict of the engine that built the workspace to the other, and never marks stale
work as current:

- DVC says every stage is up to date (`dvc status` is empty): `snakemake --touch` records the
  present outputs, params and code in Snakemake's metadata;
- Snakemake says nothing is left to do (`snakemake -n`): `dvc commit -f` records them in dvc.lock;
- neither: nothing is recorded, and the error says to build first.

After `snakemake --cores all` the Snakefile's onsuccess hook runs this itself; after `dvc repro`
run `diffrepro sync` (DVC has no hook). Only params.yaml is synced: DVC reads no other params file.
"""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

LOG = logging.getLogger("diffrepro.wiring.sync")
PARAMS_FILE = "params.yaml"


class SyncError(RuntimeError):
    """The workspace is current in neither engine, or an engine failed."""


def tool(name: str) -> str:
    """An engine's executable beside this Python's (the project's venv), else from PATH."""
    here = Path(sys.executable).parent / name
    return str(here) if here.exists() else name


def _run(cmd, cwd) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env)


def is_dvc_repo(cwd) -> bool:
    return (Path(cwd) / ".dvc").is_dir() and (Path(cwd) / "dvc.yaml").is_file()


def dvc_stale(cwd) -> dict:
    """DVC's view: {stage: what changed}; empty when every stage is up to date."""
    proc = _run([tool("dvc"), "status", "--json"], cwd)
    if proc.returncode != 0:
        raise SyncError(f"dvc status failed: {(proc.stderr or proc.stdout).strip().splitlines()[-1:]}")
    text = proc.stdout.strip()
    return json.loads(text) if text else {}


def snakemake_pending(cwd) -> bool:
    """Snakemake's view: True when `snakemake -n` would run something."""
    proc = _run([tool("snakemake"), "-n", "--cores", "1"], cwd)
    if proc.returncode != 0:
        raise SyncError(f"snakemake -n failed: {(proc.stderr or proc.stdout).strip().splitlines()[-1:]}")
    return "Nothing to be done" not in proc.stdout + proc.stderr


def _declared_outputs(cwd) -> list:
    """Every output the pipeline declares for the params file in `cwd` that exists: its files, and
    a declared folder (the train stage's checkpoints) itself and every file in it."""
    from ..config import read_params
    from .engines import all_targets

    raw = read_params(Path(cwd) / PARAMS_FILE)
    found = []
    for path in (Path(cwd) / t for t in all_targets(raw)):
        if path.is_dir():
            found += [path, *sorted(p for p in path.rglob("*") if p.is_file())]
        elif path.is_file():
            found.append(path)
    return found


def record_in_dvc(cwd) -> None:
    """`dvc commit -f`, keeping every output's mtime: DVC relinks the outputs it caches (model.pt,
    samples.npz) from its cache, which gives them a new mtime, newer than the outputs built from
    them; Snakemake would then re-run every job downstream of a cached output (it only checksums
    files under 1 MB, so the tiny config hides it)."""
    stamps = {}
    for path in _declared_outputs(cwd):
        st = path.stat()
        stamps[path] = (st.st_atime_ns, st.st_mtime_ns, st.st_size)
    proc = _run([tool("dvc"), "commit", "-f", "-q"], cwd)
    if proc.returncode != 0:
        raise SyncError(f"dvc commit failed: {(proc.stderr or proc.stdout).strip()}")
    for path, (atime, mtime, size) in stamps.items():
        if path.is_dir():
            continue  # after the files in it: their restored times must not move it again
        if not path.is_file() or path.stat().st_size != size:
            continue  # not the file that was there: leave it as DVC wrote it
        os.utime(path, ns=(atime, mtime))  # a link into DVC's cache: its target
    for path, (atime, mtime, _) in stamps.items():
        if path.is_dir():
            os.utime(path, ns=(atime, mtime))


def record_in_snakemake(cwd) -> None:
    proc = _run([tool("snakemake"), "--touch", "--cores", "1", "--no-hooks", "--quiet"], cwd)
    if proc.returncode != 0:
        raise SyncError(f"snakemake --touch failed: {(proc.stderr or proc.stdout).strip()[-500:]}")


def sync(cwd=".") -> str:
    """Bring the other engine's record up to date; returns what was done (one line)."""
    if not is_dvc_repo(cwd):
        return "not a DVC repository (no .dvc/ or dvc.yaml here): Snakemake alone, nothing to sync"
    stale = dvc_stale(cwd)
    if not stale:
        if not snakemake_pending(cwd):
            return "both engines are up to date"
        record_in_snakemake(cwd)
        if snakemake_pending(cwd):
            raise SyncError("snakemake --touch left jobs to run; run `snakemake --cores all`")
        return "DVC was up to date: recorded its outputs in Snakemake's metadata"
    if snakemake_pending(cwd):
        raise SyncError(f"neither engine is up to date ({len(stale)} DVC stage(s) changed, e.g. "
                        f"{next(iter(stale))}); build first with `dvc repro` or `snakemake --cores all`")
    record_in_dvc(cwd)
    left = dvc_stale(cwd)
    if left:
        raise SyncError(f"dvc commit left stages changed: {', '.join(left)}")
    return "Snakemake was up to date: recorded its outputs in dvc.lock"


def after_snakemake(cwd, params_file: str) -> None:
    """The Snakefile's onsuccess hook: record a complete Snakemake build in dvc.lock."""
    if params_file != PARAMS_FILE or not is_dvc_repo(cwd):
        return
    try:
        if snakemake_pending(cwd):
            LOG.warning("dvc.lock not updated: Snakemake built only part of the pipeline")
            return
        if dvc_stale(cwd):
            record_in_dvc(cwd)
            print("diffrepro sync: recorded Snakemake's outputs in dvc.lock (dvc repro has nothing to do)",
                  file=sys.stderr)
    except SyncError as exc:
        print(f"diffrepro sync: warning: {exc}", file=sys.stderr)
