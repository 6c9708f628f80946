"""Print Snakemake's own view of every job of the workflow in the current folder, as JSON:
{"rule@wildcard": {"command", "inputs", "outputs", "params"}} (a scatter job: "rule@run/shard/shards")
(used by test_dag_agreement.py).

Runs in its own process: it drives Snakemake's Python API to build the DAG with --forceall,
without running anything, and reads each job's formatted shell command, files and params.
"""
import json
import sys
from pathlib import Path

from snakemake.api import SnakemakeApi
from snakemake.settings.types import DAGSettings, OutputSettings, Quietness, ResourceSettings

with SnakemakeApi(OutputSettings(quiet={Quietness.ALL})) as api:
    wapi = api.workflow(resource_settings=ResourceSettings(cores=64), snakefile=Path("Snakefile"), workdir=Path("."))
    wapi.dag(DAGSettings(forceall=True))
    wf = wapi._workflow
    wf._prepare_dag(forceall=True, ignore_incomplete=True, lock_warn_only=True, nolock=True, shadow_prefix=None)
    wf._build_dag()
    jobs = {}
    for job in wf.dag.jobs:
        if job.rule.name == "all":
            continue
        wildcards = dict(job.wildcards.items())
        name = job.rule.name + ("@" + "/".join(wildcards.values()) if wildcards else "")  # scatter: run/shard/shards
        params = dict(job.params.items())
        jobs[name] = {"command": " ".join(job.shellcmd.split()), "inputs": sorted(map(str, job.input)),
                      "outputs": sorted(map(str, job.output)), "params": params}
json.dump(jobs, sys.stdout, default=str)
