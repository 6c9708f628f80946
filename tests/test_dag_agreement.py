"""The pipeline is declared once (src/diffrepro/wiring/pipeline.py) and both engines agree with it.

- the committed dvc.yaml is exactly `diffrepro dvc-yaml`;
- Snakemake (its own DAG, through its API) and DVC (its own index) list the same jobs with the same
  commands, inputs/deps, outputs and params keys, on the default, tiny and paper configs;
- every stage's code deps are the modules it imports, transitively.
"""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import yaml

from .conftest import BIN, ROOT, TINY_PARAMS, copy_pipeline_files, run_cli
from .roots import write_cifar_root, write_mnist_root

ROOT_WRITERS = {"cifar10": write_cifar_root, "mnist": write_mnist_root}

CONFIGS = {"default": ROOT / "params.yaml", "tiny": TINY_PARAMS,
           "ddpm-cifar10": ROOT / "configs" / "ddpm-cifar10.yaml", "ddpm-mnist": ROOT / "configs" / "ddpm-mnist.yaml"}
SHARDED = {"sample": ("sample", "shards"), "nll": ("eval", "nll_shards")}  # stage: its shard count's key


def config_file(config: str, folder: Path) -> Path:
    """A config of CONFIGS, or "tiny-sharded": the tiny one with two runs' sampling in 3 shards and
    their bounds in 2 (the paper config ddpm-cifar10 shards too)."""
    if config != "tiny-sharded":
        return CONFIGS[config]
    raw = yaml.safe_load(TINY_PARAMS.read_text())
    for run in ("digits-tiny", "beat-sd"):
        raw["runs"][run]["sample"]["shards"] = 3
        raw["runs"][run]["eval"]["nll_shards"] = 2
    path = folder / "tiny-sharded.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def shard_count(raw: dict, stage: str, run: str) -> int:
    section, key = SHARDED[stage]
    return raw["runs"][run][section].get(key, 1)


def copy_pipeline(dest: Path, params: Path) -> None:
    copy_pipeline_files(dest, params)
    raw = yaml.safe_load(params.read_text())
    for ds in raw["datasets"].values():  # paper configs read local roots: small stand-ins suffice to plan
        if ds["kind"] in ROOT_WRITERS:
            ROOT_WRITERS[ds["kind"]](dest / ds["root"], 4, 4)


def snakemake_jobs(workdir: Path) -> dict:
    """{rule@wildcard: {command, inputs, outputs, params}} from Snakemake's own DAG."""
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.run([str(BIN / "python"), str(ROOT / "tests" / "snakemake_jobs.py")], cwd=workdir, env=env,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


def dvc_stages(workdir: Path) -> dict:
    """{stage name: {command, inputs, outputs, params}} from DVC's own index of dvc.yaml."""
    from dvc.repo import Repo

    repo = Repo(str(workdir), uninitialized=True)
    stages = {}
    for stage in repo.index.stages:
        deps = [d for d in stage.deps if not hasattr(d, "params")]
        params = sorted(p for d in stage.deps if hasattr(d, "params") for p in d.params)
        stages[stage.name] = {
            "command": " ".join(stage.cmd.split()),
            "inputs": sorted(os.path.relpath(d.fs_path, workdir) for d in deps),
            "outputs": sorted(os.path.relpath(o.fs_path, workdir) for o in stage.outs),
            "params": params,
        }
    return stages


def covers(dvc_deps, smk_inputs) -> bool:
    """DVC's deps name the same files as Snakemake's inputs; a DVC folder dep (the report's
    results/runs) stands for the files under it that Snakemake lists one by one."""
    files = set(smk_inputs)
    folders = [d for d in dvc_deps if d not in files]
    rest = {f for f in files if not any(f.startswith(d.rstrip("/") + "/") for d in folders)}
    return rest == set(dvc_deps) - set(folders) and all(any(f.startswith(d + "/") for f in files) for d in folders)


def test_committed_dvc_yaml_is_generated():
    proc = run_cli("dvc-yaml", check=True)
    assert proc.stdout == (ROOT / "dvc.yaml").read_text(), \
        "dvc.yaml drifted from src/diffrepro/wiring/pipeline.py: run `diffrepro dvc-yaml > dvc.yaml`"


@pytest.mark.parametrize("config", [*CONFIGS, "tiny-sharded"])
def test_snakemake_and_dvc_agree(tmp_path, config):
    params = config_file(config, tmp_path)
    copy_pipeline(tmp_path, params)
    everything, dvc = snakemake_jobs(tmp_path), dvc_stages(tmp_path)
    smk = {name: job for name, job in everything.items() if not name.split("@")[0].endswith("_shard")}
    scatter = {name: job for name, job in everything.items() if name not in smk}
    assert sorted(smk) == sorted(dvc)
    for name in smk:
        s, d = smk[name], dvc[name]
        shard_files = [f for f in s["inputs"] if "/shards/" in f]
        assert s["command"] == d["command"], f"command of {name} differs"
        assert s["outputs"] == d["outputs"], f"outputs of {name} differ"
        assert covers(d["inputs"], [f for f in s["inputs"] if f not in shard_files]), \
            f"inputs of {name} differ: {s['inputs']} vs {d['inputs']}"
        assert sorted(s["params"]["settings"]) == d["params"], f"params keys of {name} differ"
        # a gather's extra inputs are exactly its scatter jobs' outputs (DVC's one job computes them itself)
        mine = {n: j for n, j in scatter.items() if n.split("@")[0] == name.split("@")[0] + "_shard"
                and n.split("@")[1].split("/")[0] == name.split("@")[1]}
        assert sorted(shard_files) == sorted(o for j in mine.values() for o in j["outputs"]), name
        for job in mine.values():  # the stage's own command up to its outputs, then the shard's flags
            head = s["command"].split(" --" + pipeline_first_output(name.split("@")[0]))[0]
            out = job["outputs"][0]
            shard = int(out.rsplit("-of-", 1)[0].rsplit("-", 1)[1])
            assert job["command"] == f"{head} --shard {shard} --shard-file {out}".replace(
                f"--log logs/{name.split('@')[0]}/{name.split('@')[1]}.log", f"--log {job_log(job)}"), job["command"]
            assert job["inputs"] == sorted(f for f in s["inputs"] if f not in shard_files)
            assert job["params"]["settings"] == s["params"]["settings"]
    from diffrepro.wiring import pipeline

    assert {n.split("@")[0] for n in smk} == set(pipeline.STAGE_NAMES)
    raw = yaml.safe_load(params.read_text())
    # the check and the report; prepare, features, reference per dataset; 7 per run; plus a scatter job per shard
    shards = sum(k for st in SHARDED for r in raw["runs"] for k in [shard_count(raw, st, r)] if k > 1)
    assert len(smk) == 2 + 3 * len(raw["datasets"]) + 7 * len(raw["runs"])
    assert len(scatter) == shards and (shards > 0) == (config in ("tiny-sharded", "ddpm-cifar10"))
    # every path a command names is an input or output of its job: no stage composes another's file name
    for name, job in everything.items():
        words = job["command"].split()
        paths = [w for w in words if w.startswith("results/")]
        assert all(p in job["outputs"] or p in job["inputs"] or p == "results/runs" for p in paths), name


def pipeline_first_output(stage: str) -> str:
    from diffrepro.wiring import pipeline

    return pipeline.stage(stage).outputs[0].name.replace("_", "-")


def job_log(job: dict) -> str:
    words = job["command"].split()
    return words[words.index("--log") + 1]


def test_code_deps_follow_imports():
    from diffrepro.wiring import codedeps, pipeline

    deps = {st.name: set(codedeps.stage_code(st.module)) for st in pipeline.STAGES}
    src = "src/diffrepro/"
    # the bound's math reaches every stage that builds a process, and only those
    for name in ("train", "sample", "inpaint", "nll"):
        assert {src + "diffusion/gaussian.py", src + "diffusion/sd_gaussian.py", src + "diffusion/binomial.py",
                src + "build.py", src + "nets/unet.py", src + f"stages/{name}.py"} <= deps[name], name
    for name in ("prepare", "features", "fid", "parzen"):
        assert src + "diffusion/gaussian.py" not in deps[name], name
    assert src + "metrics/parzen.py" in deps["parzen"]
    assert src + "metrics/fid.py" in deps["fid"] and src + "metrics/fid.py" in deps["features"]
    assert src + "tables/paper.py" in deps["report"]
    assert src + "runs/sampling.py" in deps["sample"] and src + "runs/sampling.py" in deps["inpaint"]
    # a stage that only uses a trained run never depends on the training loop, nor on a data loader
    for name in ("sample", "inpaint", "nll", "fid", "parzen", "report"):
        assert src + "runs/training.py" not in deps[name] and src + "data/toy.py" not in deps[name], name
    # a stage module depends on itself only: an edit of report.py touches the report alone
    assert [n for n, d in deps.items() if src + "stages/report.py" in d] == ["report"]
    # the wiring that names and launches stages is not a dependency of any stage; the declaration
    # is one of the report's alone (it decides which metrics files the report reads)
    assert not any(src + "cli.py" in d or src + "wiring/engines.py" in d for d in deps.values())
    assert [n for n, d in deps.items() if src + "wiring/pipeline.py" in d] == ["report"]


def test_code_deps_equal_an_independent_import_scan():
    """codedeps (an AST walk) against Python's own bytecode scanner (modulefinder, which also sees
    imports inside functions), stage by stage: the same files but for the two documented rules."""
    import ast
    import modulefinder

    from diffrepro.nets import NETS
    from diffrepro.wiring import codedeps, pipeline

    src = ROOT / "src"

    def scanned(*modules) -> set:
        finder = modulefinder.ModuleFinder(path=[str(src)])  # the package only: third-party imports stop there
        for module in modules:
            finder.import_hook(module)
        return {codedeps.source_path(m) for m in finder.modules
                if m.split(".")[0] == "diffrepro" and codedeps.module_file(m) is not None}

    for st in pipeline.STAGES:
        expected = scanned(st.module, *codedeps.HARNESS)
        # rule 1: a registry that imports by name (nets.NETS) counts wherever the network is built
        if "src/diffrepro/build.py" in expected:
            expected |= scanned(*{module for module, _ in NETS.values()})
        # rule 2: the params check asks the declaration only for stage names: no stage's dependency
        # through the harness, the report's through its own import
        own = ast.parse((src / (st.module.replace(".", "/") + ".py")).read_text())
        imports_declaration = any(
            isinstance(node, ast.ImportFrom) and ((node.module or "").endswith("wiring.pipeline") or (
                (node.module or "").endswith("wiring") and any(a.name == "pipeline" for a in node.names)))
            for node in ast.walk(own))
        if not imports_declaration:
            expected -= {"src/diffrepro/wiring/pipeline.py", "src/diffrepro/wiring/__init__.py"}
        # rule 3: the wiring that names and launches stages is never followed (the train stage imports
        # codedeps for its code digest; an edit of codedeps re-plans, it does not retrain)
        expected -= {codedeps.source_path(m) for m in codedeps.WIRING if codedeps.module_file(m) is not None}
        assert set(codedeps.stage_code(st.module)) == expected, st.name


def test_code_deps_see_lazy_imports_and_registries(tmp_path, monkeypatch):
    from diffrepro.wiring import codedeps

    # nets/__init__.py imports its architectures by name in a registry (NETS)
    assert "diffrepro.nets.unet" in codedeps.direct_imports("diffrepro.nets")
    # build.py imports the processes inside functions
    assert "diffrepro.diffusion.gaussian" in codedeps.direct_imports("diffrepro.build")
    # passing through a package only runs its module-level imports, not its registry
    assert "diffrepro.nets.unet" not in codedeps.closure(["diffrepro.nets.classifier"])


@pytest.mark.parametrize("mutate, key", [
    (lambda r: r["runs"]["toyroll-ddpm"]["train"].update(steps=-3), "runs.toyroll-ddpm.train.steps"),
    (lambda r: r["runs"]["toyroll-sd"]["sample"].update(clip_denoised=True), "runs.toyroll-sd.sample.clip_denoised"),
    (lambda r: r["runs"]["beat-sd"]["diffusion"].update(beta_1=0.01), "runs.beat-sd.diffusion.beta_1"),
])
def test_snakemake_rejects_bad_params_with_one_line_naming_the_key(tmp_path, tiny_raw, mutate, key):
    mutate(tiny_raw)
    copy_pipeline(tmp_path, TINY_PARAMS)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(tiny_raw))
    proc = subprocess.run([str(BIN / "snakemake"), "-n", "--cores", "1"], cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode != 0
    lines = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
    assert len(lines) == 1 and key in lines[0] and lines[0].startswith("diffrepro: error:"), lines


def test_every_reported_output_has_a_caption():
    from diffrepro.wiring import pipeline

    flagged = [(st, out) for st in pipeline.STAGES for out in st.outputs if out.report]
    assert {out.report for _, out in flagged} >= {"samples", "inpainting", "bound terms", "loss curves",
                                                   "metric tables"}
    for st, out in flagged:
        assert (ROOT / "workflow" / "report" / f"{st.name}-{out.name}.rst").read_text().strip(), (st.name, out.name)
        assert out.path.endswith((".png", ".csv")), out.path


@pytest.mark.parametrize("config", list(CONFIGS), ids=list(CONFIGS))
def test_no_two_jobs_write_the_same_file(config):
    """Runs that share a dataset share its prepare/features/reference jobs but never write one file
    twice: every output path of every job is distinct (and so are logs and benchmarks)."""
    from diffrepro.wiring import engines, pipeline

    raw = yaml.safe_load(CONFIGS[config].read_text())
    targets = engines.all_targets(raw)
    assert len(targets) == len(set(targets))
    per_job = []
    for st in pipeline.STAGES:
        keys = {"dataset": list(raw["datasets"]), "run": list(raw["runs"]), None: [None]}[st.wildcard]
        for key in keys:
            values = pipeline.wildcard_values(st, raw, key)
            per_job.append(pipeline.fill(st.log, **values))
    assert len(per_job) == len(set(per_job))
    shared = [d for d in raw["datasets"] if sum(r["dataset"] == d for r in raw["runs"].values()) > 1]
    assert shared or config != "default"  # the default config does share datasets between runs
