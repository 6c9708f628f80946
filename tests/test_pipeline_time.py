"""benchmarks/pipeline_time.py on a built project's files, written here: Snakemake's benchmark files
and the rule logs' start-up lines, a sharded stage's scatter jobs counted and on the critical path."""
from __future__ import annotations

import importlib.util

import pytest

from .conftest import ROOT


@pytest.fixture(scope="module")
def pipeline_time():
    spec = importlib.util.spec_from_file_location("pipeline_time", ROOT / "benchmarks" / "pipeline_time.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _bench(root, rel, seconds):
    path = root / "results" / "benchmarks" / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"s\th:m:s\tmax_rss\n{seconds}\t0:00:{seconds:02.0f}\t100.0\n")


def test_scatter_jobs_count_and_the_slowest_shard_is_on_the_critical_path(tmp_path, tiny_raw, pipeline_time):
    tiny_raw["runs"]["digits-tiny"]["sample"]["shards"] = 2
    for rel, seconds in [("prepare/tinydigits.tsv", 1.0), ("train/digits-tiny.tsv", 2.0),
                         ("sample/digits-tiny-shard0-of-2.tsv", 1.5), ("sample/digits-tiny-shard1-of-2.tsv", 5.0),
                         ("sample/digits-tiny.tsv", 1.0), ("fid/digits-tiny.tsv", 1.0), ("report.tsv", 0.5)]:
        _bench(tmp_path, rel, seconds)
    log = tmp_path / "logs" / "sample" / "digits-tiny-shard1-of-2.log"
    log.parent.mkdir(parents=True)
    log.write_text("12:00:00 INFO diffrepro: sample on cpu with 1 thread(s), start-up 1.25 s\n")

    s = pipeline_time.summary(tmp_path, tiny_raw)
    unsharded = pipeline_time.summary(tmp_path, {**tiny_raw, "runs": {
        **tiny_raw["runs"], "digits-tiny": {**tiny_raw["runs"]["digits-tiny"], "sample": {"shards": 1}}}})
    assert s["jobs"] == unsharded["jobs"] + 2 and s["jobs_timed"] == 7
    assert s["job_seconds"] == 12.0 and s["seconds_by_stage"]["sample"] == 7.5
    assert s["startup_by_job"] == {"sample_shard@digits-tiny#1": 1.25}
    assert s["critical_path"] == ["prepare@tinydigits", "train@digits-tiny", "sample_shard@digits-tiny#1",
                                  "sample@digits-tiny", "fid@digits-tiny", "report"]
    assert s["critical_path_s"] == 10.5
    assert s["wall_s"] is None  # no Snakemake log here
