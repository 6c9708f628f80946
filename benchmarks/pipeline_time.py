"""Benchmark: where a built pipeline's time goes, from what Snakemake and the jobs already write.

- each job's wall seconds: Snakemake's benchmark file (results/benchmarks/<stage>/<key>.tsv; a
  sharded stage's scatter jobs, `<stage>_shard`, <key>-shard<k>-of-<K>.tsv);
- each job's start-up (process start to its stage's first work: the interpreter, the imports, the
  params checks): the rule log's "start-up X s" line (cli.py);
- the jobs' dependencies: the pipeline declaration (wiring/pipeline.py) over the params file;
- the whole run's wall time: the first and last timestamps of Snakemake's newest log.

Prints the wall time, the job-seconds (their sum: what two cores share), the start-up share of
the job-seconds, the critical path (the longest chain of dependent jobs by wall seconds: no number
of cores makes the run shorter) and the costliest jobs.
Usage: python benchmarks/pipeline_time.py [--root .] [--params params.yaml] [--top 10] [--json]
"""
from __future__ import annotations

import argparse
import csv
import datetime
import functools
import json
import re
from pathlib import Path

import yaml

from diffrepro.wiring import engines, pipeline
from diffrepro.wiring.pipeline import Collect

STARTUP = re.compile(r"start-up (\d+(?:\.\d+)?) s")
STAMP = re.compile(r"^\[(\w{3} \w{3} +\d+ \d\d:\d\d:\d\d \d{4})\]$")


def jobs_of(raw: dict) -> dict:
    """{job name: (stage, key, shard)} for every job the params give (key: the dataset or run, or None;
    shard: None, or k of a sharded job's scatter jobs `<stage>_shard@<key>#<k>`, as Snakemake runs them)."""
    keys = {"dataset": list(raw["datasets"]), "run": list(raw["runs"]), None: [None]}
    jobs = {}
    for st in pipeline.STAGES:
        for key in keys[st.wildcard]:
            jobs[f"{st.name}@{key}" if key else st.name] = (st, key, None)
            shards = engines.job_shards(st, raw, key)
            for k in range(shards if shards > 1 else 0):
                jobs[f"{st.name}_shard@{key}#{k}"] = (st, key, k)
    return jobs


def _file(template: str, st, key, shard, raw: dict) -> str:
    """A job's log or benchmark path (template: the stage's own, or its scatter jobs')."""
    values = {st.wildcard: key} if st.wildcard else {}
    if shard is not None:
        values.update(shard=shard, shards=engines.job_shards(st, raw, key))
    return pipeline.fill(template, **values)


def dependencies(raw: dict, jobs: dict) -> dict:
    """{job: [the jobs whose outputs it reads]}, from the declaration's inputs (a sharded job's
    gather also reads its scatter jobs' shard files)."""
    deps = {}
    for name, (st, key, shard) in jobs.items():
        found = []
        for inp in st.inputs:
            if isinstance(inp, Collect):
                found += [f"{stage}@{run}" for stage, _ in inp.outputs for run in raw["runs"]]
                continue
            producer = pipeline.stage(inp.stage)
            if producer.wildcard is None:
                found.append(producer.name)
            elif producer.wildcard == st.wildcard:
                found.append(f"{producer.name}@{key}")
            else:  # a run's job reads its dataset's
                found.append(f"{producer.name}@{raw['runs'][key]['dataset']}")
        if shard is None:
            found += [other for other, (s, k, sh) in jobs.items() if s is st and k == key and sh is not None]
        deps[name] = sorted(set(found) & set(jobs))
    return deps


def job_seconds(root: Path, raw: dict, jobs: dict) -> dict:
    """{job: wall seconds} from Snakemake's benchmark files (jobs without one are left out)."""
    out = {}
    for name, (st, key, shard) in jobs.items():
        path = root / _file(st.benchmark if shard is None else st.shard_benchmark, st, key, shard, raw)
        if path.is_file():
            with open(path) as f:
                rows = list(csv.DictReader(f, delimiter="\t"))
            if rows:
                out[name] = float(rows[-1]["s"])
    return out


def startups(root: Path, raw: dict, jobs: dict) -> dict:
    """{job: start-up seconds} from the last "start-up X s" line of each rule log."""
    out = {}
    for name, (st, key, shard) in jobs.items():
        path = root / _file(st.log if shard is None else st.shard_log, st, key, shard, raw)
        if path.is_file():
            found = STARTUP.findall(path.read_text(errors="replace"))
            if found:
                out[name] = float(found[-1])
    return out


def snakemake_wall(root: Path) -> float | None:
    """Seconds between the first and last timestamps of Snakemake's newest log (None: no log)."""
    logs = sorted((root / ".snakemake" / "log").glob("*.snakemake.log"))
    if not logs:
        return None
    stamps = [datetime.datetime.strptime(m.group(1), "%a %b %d %H:%M:%S %Y")
              for m in map(STAMP.match, logs[-1].read_text(errors="replace").splitlines()) if m]
    return (stamps[-1] - stamps[0]).total_seconds() if len(stamps) > 1 else None


def critical_path(deps: dict, seconds: dict) -> tuple:
    """(seconds, [jobs]) of the longest chain of dependent jobs, weighted by their wall seconds."""
    @functools.lru_cache(maxsize=None)
    def longest(job):
        best = max((longest(d) for d in deps.get(job, [])), key=lambda x: x[0], default=(0.0, ()))
        return best[0] + seconds.get(job, 0.0), (*best[1], job)

    total, chain = max((longest(job) for job in deps), key=lambda x: x[0])
    return total, list(chain)


def summary(root: Path, raw: dict) -> dict:
    jobs = jobs_of(raw)
    seconds, starts = job_seconds(root, raw, jobs), startups(root, raw, jobs)
    deps = dependencies(raw, jobs)
    total = sum(seconds.values())
    path_s, path = critical_path(deps, seconds)
    by_stage = {}
    for name, s in seconds.items():
        by_stage[jobs[name][0].name] = by_stage.get(jobs[name][0].name, 0.0) + s
    return {
        "jobs": len(jobs), "jobs_timed": len(seconds), "wall_s": snakemake_wall(root),
        "job_seconds": round(total, 1),
        "startup_seconds": round(sum(starts.values()), 1),
        "startup_share": round(sum(starts.values()) / total, 3) if total and starts else None,
        "startup_median_s": sorted(starts.values())[len(starts) // 2] if starts else None,
        "startup_max_s": max(starts.values()) if starts else None,
        "startup_by_job": starts,
        "critical_path_s": round(path_s, 1), "critical_path": path,
        "seconds_by_stage": {k: round(v, 1) for k, v in sorted(by_stage.items(), key=lambda kv: -kv[1])},
        "seconds_by_job": dict(sorted(seconds.items(), key=lambda kv: -kv[1])),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default=".", help="the project a pipeline was built in")
    ap.add_argument("--params", default=None, help="its params file (default: ROOT/params.yaml)")
    ap.add_argument("--top", type=int, default=10, help="how many of the costliest jobs to list")
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = ap.parse_args(argv)
    root = Path(args.root)
    raw = yaml.safe_load(Path(args.params or root / "params.yaml").read_text())
    s = summary(root, raw)
    if args.json:
        print(json.dumps(s, indent=1))
        return 0
    wall = "n/a (no Snakemake log)" if s["wall_s"] is None else f"{s['wall_s']:.0f} s"
    print(f"wall time            {wall}")
    print(f"jobs                 {s['jobs']} ({s['jobs_timed']} with a benchmark file)")
    print(f"job-seconds          {s['job_seconds']:.0f} s")
    if s["startup_share"] is not None:
        print(f"start-up             {s['startup_seconds']:.0f} s = {100 * s['startup_share']:.1f}% of the job-seconds "
              f"(median {s['startup_median_s']:.2f} s, max {s['startup_max_s']:.2f} s per job)")
    print(f"critical path        {s['critical_path_s']:.0f} s: {' -> '.join(s['critical_path'])}")
    print("by stage             " + ", ".join(f"{k} {v:.0f} s" for k, v in s["seconds_by_stage"].items()))
    print(f"costliest {args.top} jobs")
    for name, sec in list(s["seconds_by_job"].items())[: args.top]:
        start = s["startup_by_job"].get(name)
        print(f"  {name:32s} {sec:8.1f} s" + (f"  (start-up {start:.2f} s)" if start is not None else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
