"""One GPU per job on a machine with several: jobs that hold the `gpu` resource each take devices of
their own from the pool (runtime.claim_gpus: a lock file per device), so Snakemake's
`--resources gpu=N` with N devices keeps N jobs on N different GPUs. Tested on the CPU with a fake
pool: the device ids each job saw, and no two jobs holding one at the same time."""
from __future__ import annotations

import os
import re
import subprocess

import pytest
import yaml

from .conftest import BIN, TINY_PARAMS, copy_pipeline_files

HOLD = re.compile(r"this job holds GPU (\S+) from (\d+\.\d+)")
RELEASE = re.compile(r"this job releases GPU (\S+) at (\d+\.\d+)")


def test_a_job_takes_a_free_device_and_one_holding_no_gpu_is_left_alone(tmp_path, monkeypatch):
    from diffrepro import runtime

    for name in ("CUDA_VISIBLE_DEVICES", runtime._CLAIMED):  # recorded, so restored after the test
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    with pytest.raises(ValueError, match="gpu = 3 needs 3 devices; the pool has 2"):
        runtime.claim_gpus(3, pool=["0", "1"], lock_dir=tmp_path)
    assert runtime.claim_gpus(1, pool=["0"], lock_dir=tmp_path) is None  # one device: nothing to share
    assert runtime.claim_gpus(0, pool=["0", "1"], lock_dir=tmp_path) is None  # no GPU held: left as it is
    assert "CUDA_VISIBLE_DEVICES" not in os.environ
    # another process holding device 0: this one gets 1
    holder = subprocess.Popen([str(BIN / "python"), "-c", "import fcntl, sys, time; f = open(sys.argv[1], 'a'); "
                               "fcntl.flock(f, fcntl.LOCK_EX); print('held', flush=True); time.sleep(30)",
                               str(tmp_path / "gpu-0.lock")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        monkeypatch.delenv(runtime._CLAIMED, raising=False)
        assert runtime.claim_gpus(1, pool=["0", "1"], lock_dir=tmp_path) == ["1"]
        assert os.environ["CUDA_VISIBLE_DEVICES"] == "1"
    finally:
        holder.kill()
        for handle in runtime._HELD:
            handle.close()
        runtime._HELD.clear()


@pytest.mark.timeout(600)
def test_concurrent_snakemake_jobs_never_share_a_device(tmp_path):
    raw = yaml.safe_load(TINY_PARAMS.read_text())
    raw["resources"] = {"default": {"gpu": 1}}  # every job holds one GPU
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(raw))
    project = tmp_path / "p"
    project.mkdir()
    copy_pipeline_files(project, params)
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "OMP_WAIT_POLICY": "PASSIVE",
           "DIFFREPRO_GPUS": "0,1", "DIFFREPRO_GPU_LOCKS": str(tmp_path / "locks")}
    for name in ("CUDA_VISIBLE_DEVICES", "DIFFREPRO_GPUS_CLAIMED"):
        env.pop(name, None)
    targets = [f"results/runs/{run}/model.pt" for run in ("toyroll-ddpm", "toyroll-sd", "beat-sd")]
    proc = subprocess.run([str(BIN / "snakemake"), *targets, "--cores", "2", "--resources", "gpu=2"], cwd=project,
                          env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-4000:]
    spans = []
    for log in (project / "logs").rglob("*.log"):
        text = log.read_text()
        held, released = HOLD.findall(text), RELEASE.findall(text)
        assert len(held) == len(released) == 1, (log, text[-2000:])
        assert held[0][0] == released[0][0] in ("0", "1")
        spans.append((held[0][0], float(held[0][1]), float(released[0][1]), log.name))
    assert len(spans) == 5  # two prepares, three trains
    for i, (dev, start, end, name) in enumerate(spans):
        for other_dev, other_start, other_end, other in spans[i + 1:]:
            if dev == other_dev:  # the same device: one job after the other
                assert end <= other_start or other_end <= start, (name, other, dev)
    concurrent = [(a[3], b[3]) for i, a in enumerate(spans) for b in spans[i + 1:] if a[1] < b[2] and b[1] < a[2]]
    assert concurrent, "no two jobs ran at once: the test showed nothing"
    assert {dev for dev, *_ in spans} == {"0", "1"}
