"""Bad params, table-driven, through the entry points a user types: `snakemake -n` (the project's own
check runs when the Snakefile is parsed), `diffrepro <stage>`, and for a sample `dvc repro`.

Each case must: exit non-zero; print at most 3 lines, one of which names the key or file, the bad
value and what is allowed; show no traceback or stack frame; and leave an output already at its
target path byte-identical (Snakemake refuses before any job; DVC runs the stage's command, which
refuses before any work, and dvc.yaml marks every output `persist: true`, so DVC does not delete it first). (Bad data files, checkpoints and a diverging loss: test_bad_inputs.py,
test_user_data.py, test_config.py.)
"""
from __future__ import annotations

import copy
import os
import subprocess
from pathlib import Path

import pytest
import yaml

from . import evil
from .conftest import BIN, COMMAND_ENV, TINY_PARAMS, copy_pipeline_files, run_cli, snakemake_here

ENV = {**os.environ, **COMMAND_ENV}  # a command as a process: what in_this_process gives it
BASE = yaml.safe_load(TINY_PARAMS.read_text())
SENTINEL = "results/data/toyroll/train.npz"   # an earlier output that must survive every refusal


def run(r):
    return r["runs"]["toyroll-ddpm"]


def sd(r):
    return r["runs"]["toyroll-sd"]


# (id, params text or a mutation of the tiny params, fragments the error line must hold)
CASES = [
    ("malformed-yaml", "seed: 0\nruns: [\n", ["params.yaml", "not valid YAML", "line"]),
    ("empty-file", "", ["params.yaml", "must be a mapping"]),
    ("top-level-list", "- 1\n- 2\n", ["top level must be a mapping", "list"]),
    ("unknown-top-key", lambda r: r.update(sed=1), ["sed", "allowed keys", "seed"]),
    ("unknown-dataset-key", lambda r: r["datasets"]["toyroll"].update(n_trian=5), ["datasets.toyroll", "n_trian"]),
    ("unknown-model-key", lambda r: r["models"]["mlp-tiny"].update(hiden=3), ["models.mlp-tiny", "hiden"]),
    ("unknown-train-key", lambda r: run(r)["train"].update(stepz=3), ["runs.toyroll-ddpm.train", "stepz", "allowed keys"]),
    ("unknown-sample-key", lambda r: run(r)["sample"].update(count=3), ["runs.toyroll-ddpm.sample", "count"]),
    ("unknown-eval-key", lambda r: run(r)["eval"].update(nll=3), ["runs.toyroll-ddpm.eval", "nll"]),
    ("wrong-type-steps", lambda r: run(r)["train"].update(steps="many"), ["train.steps", "'many'", "integer"]),
    ("wrong-type-seed", lambda r: r.update(seed=1.5), ["seed", "1.5", "integer"]),
    ("T-zero", lambda r: run(r)["diffusion"].update(timesteps=0), ["diffusion.timesteps", "0", "minimum"]),
    ("beta-above-one", lambda r: run(r)["diffusion"].update(beta_end=1.5), ["diffusion.beta_end", "1.5", "maximum"]),
    ("beta-zero", lambda r: run(r)["diffusion"].update(beta_start=0.0), ["diffusion.beta_start", "0.0", "minimum"]),
    ("beta-reversed", lambda r: run(r)["diffusion"].update(beta_start=0.5, beta_end=0.1),
     ["diffusion.beta_start = 0.5", "below", "beta_end = 0.1"]),
    ("negative-steps", lambda r: run(r)["train"].update(steps=-5), ["train.steps", "-5", "minimum of 0"]),
    ("batch-zero", lambda r: run(r)["train"].update(batch_size=0), ["train.batch_size", "0", "minimum"]),
    ("sample-n-zero", lambda r: run(r)["sample"].update(n=0), ["sample.n", "0", "minimum"]),
    ("fid-n-one", lambda r: run(r)["eval"].update(fid_n=1), ["eval.fid_n", "1", "minimum"]),
    ("threads-zero", lambda r: r.update(threads=0), ["threads", "0", "minimum"]),
    ("unknown-device", lambda r: r.update(device="tpu"), ["device", "'tpu'", "cuda"]),
    ("unknown-kind", lambda r: r["datasets"]["toyroll"].update(kind="moons"), ["datasets.toyroll.kind", "'moons'", "swissroll"]),
    ("unknown-arch", lambda r: r["models"]["mlp-tiny"].update(arch="transformer"), ["models.mlp-tiny.arch", "'transformer'", "unet"]),
    ("unknown-schedule", lambda r: run(r)["diffusion"].update(schedule="sigmoid"), ["diffusion.schedule", "'sigmoid'", "cosine"]),
    ("unknown-family", lambda r: run(r)["diffusion"].update(family="gan"), ["diffusion.family", "'gan'", "sd_binomial"]),
    ("unknown-preset", lambda r: r["models"]["unet-tiny"].update(preset="huge"), ["models.unet-tiny.preset", "'huge'", "digits-cpu"]),
    ("missing-dataset", lambda r: run(r).update(dataset="nope"), ["runs.toyroll-ddpm.dataset", "'nope'", "toyroll"]),
    ("missing-model", lambda r: run(r).update(model="nope"), ["runs.toyroll-ddpm.model", "'nope'", "mlp-tiny"]),
    ("family-vs-data", lambda r: run(r)["diffusion"].update(family="sd_binomial"),
     ["diffusion.family = 'sd_binomial'", "points", "ddpm"]),
    ("option-of-other-family", lambda r: run(r)["diffusion"].update(binomial_p=0.3),
     ["diffusion.binomial_p", "not a ddpm option", "beta_start"]),
    ("option-of-other-arch", lambda r: r["models"]["mlp-tiny"].update(channel_mult=[1, 2]),
     ["models.mlp-tiny.channel_mult", "arch 'mlp'", "hidden"]),
    ("option-of-other-kind", lambda r: r["datasets"]["toyroll"].update(root="data/tv"),
     ["datasets.toyroll.root", "kind 'swissroll'", "noise"]),
    ("clip-on-sd", lambda r: sd(r)["sample"].update(clip_denoised=True), ["runs.toyroll-sd.sample.clip_denoised", "false"]),
    ("unknown-sample-precision", lambda r: run(r)["sample"].update(precision="fp16"),
     ["runs.toyroll-ddpm.sample.precision", "'fp16'", "auto", "bf16"]),
    ("missing-sample-precision", lambda r: run(r)["sample"].pop("precision"),
     ["runs.toyroll-ddpm.sample", "precision"]),
    ("learned-range-simple", lambda r: run(r)["diffusion"].update(var_type="learned_range", loss_type="simple"),
     ["loss_type = 'simple'", "learned_range", "hybrid"]),
    ("inception-on-points", lambda r: r["datasets"]["toyroll"].update(feature_space="inception"),
     ["datasets.toyroll.feature_space", "image data", "domain"]),
    ("missing-data-root", lambda r: r["datasets"].update(tinydigits={"kind": "mnist", "root": "data/nowhere"}),
     ["datasets.tinydigits.root = 'data/nowhere' does not exist", "MNIST/raw/"]),
    ("missing-weights", lambda r: r["datasets"]["tinydigits"].update(feature_space="inception",
                                                                      inception_weights="data/w.pth"),
     ["datasets.tinydigits.inception_weights = 'data/w.pth' does not exist"]),
    ("missing-npz", lambda r: r["datasets"].update(toyroll={"kind": "npz", "path": "data/mine.npz", "data_type": "points"}),
     ["datasets.toyroll.path = 'data/mine.npz' does not exist", ".npz"]),
    # data files (written by the `project` fixture), checked when the pipeline is planned
    ("npz-nan", lambda r: own_data(r, "nan.npz"), ["datasets.toyroll (npz)", "data/nan.npz", "x", "1 NaN"]),
    ("npz-wrong-shape", lambda r: own_data(r, "cube.npz"), ["data/cube.npz", "shape (40, 2, 2)", "points are [N x D]"]),
    ("npz-wrong-dtype", lambda r: own_data(r, "complex.npz"), ["data/complex.npz", "dtype complex128", "allowed"]),
    ("npz-out-of-range", lambda r: own_data(r, "bright.npz", data_type="image", levels=256),
     ["data/bright.npz", "values in [0, 300]", "levels: 256"]),
    ("npz-without-arrays", lambda r: own_data(r, "other.npz"), ["data/other.npz", "holds arrays pixels", "train"]),
    ("npz-not-npz", lambda r: own_data(r, "notes.npz"), ["data/notes.npz", "not a readable .npz"]),
    ("mnist-truncated", lambda r: r["datasets"].update(m={"kind": "mnist", "root": "data/mnist-cut"}),
     ["datasets.m (mnist)", "train-images-idx3-ubyte", "header says shape (20, 28, 28)"]),
    ("mnist-not-idx", lambda r: r["datasets"].update(m={"kind": "mnist", "root": "data/mnist-text"}),
     ["t10k-labels-idx1-ubyte", "not an IDX file", "expected 0x00000801"]),
    ("mnist-n-beyond-files", lambda r: r["datasets"].update(m={"kind": "mnist", "root": "data/mnist", "n_train": 500}),
     ["datasets.m (mnist)", "n_train=500 is more than the 20 examples"]),
    ("cifar-missing-batch", lambda r: r["datasets"].update(c={"kind": "cifar10", "root": "data/cifar-gap"}),
     ["datasets.c (cifar10)", "missing data_batch_3", "no download"]),
]


def own_data(r, name, data_type="points", **options):
    """The toyroll entry becomes the user's own file data/<name>."""
    r["datasets"]["toyroll"] = {"kind": "npz", "path": f"data/{name}", "data_type": data_type, **options}


def write_bad_files(data: Path) -> None:
    """The data files the table's file cases name: each wrong in one way."""
    import numpy as np

    from .roots import write_cifar_root, write_mnist_root

    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 2))
    np.savez(data / "nan.npz", x=np.where(np.arange(80).reshape(40, 2) == 7, np.nan, x))
    np.savez(data / "cube.npz", x=x.reshape(40, 1, 2).repeat(2, axis=1))
    np.savez(data / "complex.npz", x=x.astype(np.complex128))
    np.savez(data / "bright.npz", x=np.linspace(0, 300, 40 * 64).reshape(40, 1, 8, 8).round())
    np.savez(data / "other.npz", pixels=x)
    (data / "notes.npz").write_text("not an archive\n")
    for name in ("mnist", "mnist-cut", "mnist-text"):
        write_mnist_root(data / name, n_train=20, n_test=10)
    images = data / "mnist-cut" / "MNIST" / "raw" / "train-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:-100])
    (data / "mnist-text" / "MNIST" / "raw" / "t10k-labels-idx1-ubyte").write_text("labels\n")
    write_cifar_root(data / "cifar-gap", per_batch=2, n_test=2)
    (data / "cifar-gap" / "cifar-10-batches-py" / "data_batch_3").unlink()
DVC_CASES = ("malformed-yaml", "negative-steps", "option-of-other-arch", "missing-data-root", "npz-nan",
             "mnist-truncated")


def params_text(case) -> str:
    if isinstance(case, str):
        return case
    raw = copy.deepcopy(BASE)
    case(raw)
    return yaml.safe_dump(raw, sort_keys=False)


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad")
    copy_pipeline_files(root, TINY_PARAMS)
    for cmd in (["git", "init", "-q"], [str(BIN / "dvc"), "init", "-q", "--no-scm"]):
        subprocess.run(cmd, cwd=root, check=True, env=ENV)
    (root / "data").mkdir()
    write_bad_files(root / "data")
    (root / SENTINEL).parent.mkdir(parents=True)
    (root / SENTINEL).write_bytes(b"an earlier build's training data")
    return root


def check_refusal(proc, fragments, project: Path, where: str) -> None:
    out = (proc.stdout + proc.stderr).strip()
    lines = [line for line in out.splitlines() if line.strip()]
    assert proc.returncode != 0, f"{where} accepted it:\n{out[-2000:]}"
    assert "Traceback" not in out and not any(line.lstrip().startswith('File "') for line in lines), out[-3000:]
    assert len(lines) <= 3, f"{where} printed {len(lines)} lines:\n{out[-3000:]}"
    assert any(all(f in line for f in fragments) for line in lines), (where, fragments, out)
    assert (project / SENTINEL).read_bytes() == b"an earlier build's training data"


@pytest.mark.parametrize("case_id, case, fragments", CASES, ids=[c[0] for c in CASES])
def test_bad_params_are_refused_by_snakemake_and_the_cli(project, case_id, case, fragments):
    """Snakemake and the CLI through their commands' functions, in this process (conftest's
    in_this_process: the Snakefile parsed afresh each case); the DVC cases, and the engine-flag
    cases below, as processes."""
    (project / "params.yaml").write_text(params_text(case))
    check_refusal(snakemake_here("-n", "--cores", "1", cwd=project), fragments, project, "snakemake -n")
    proc = run_cli("prepare", "--params", "params.yaml", "--dataset", "toyroll", "--train", SENTINEL,
                   "--test", "results/data/toyroll/test.npz", "--info", "results/data/toyroll/info.json",
                   "--preview", "results/data/toyroll/p.png", cwd=project)
    check_refusal(proc, fragments, project, "diffrepro prepare")
    if case_id in DVC_CASES:
        dvc = subprocess.run([str(BIN / "dvc"), "repro", "prepare@toyroll"], cwd=project, env=ENV,
                             capture_output=True, text=True)
        out = dvc.stdout + dvc.stderr
        assert dvc.returncode != 0 and "Traceback" not in out, out[-3000:]
        assert "params.yaml" in out or all(f in out for f in fragments), out[-3000:]
        # every output persists (dvc.yaml): DVC leaves the earlier build's output where it was
        assert (project / SENTINEL).read_bytes() == b"an earlier build's training data"


@pytest.mark.parametrize("case_id", ["missing-dataset", "missing-model"])
def test_plain_dvc_repro_refuses_an_undefined_name_by_its_key(project, case_id):
    """`dvc repro` with no target, as a user types it: the check stage, first in dvc.yaml, refuses a
    run naming an undefined dataset or model by its key and the names allowed, before DVC looks for
    that run's inputs (it would stop at ".../results/data/nope/train.npz: No such file" or
    "Parameters 'models.nope' are missing") and before any other stage runs."""
    _, case, fragments = next(c for c in CASES if c[0] == case_id)
    (project / "params.yaml").write_text(params_text(case))
    dvc = subprocess.run([str(BIN / "dvc"), "repro"], cwd=project, env=ENV, capture_output=True, text=True)
    out = dvc.stdout + dvc.stderr
    assert dvc.returncode != 0 and "Traceback" not in out, out[-3000:]
    assert any(all(f in line for f in fragments) for line in out.splitlines()), out[-3000:]
    assert "failed to reproduce 'check'" in out and out.count("Running stage") == 1, out[-3000:]
    assert (project / SENTINEL).read_bytes() == b"an earlier build's training data"


def test_snakemake_in_this_process_accepts_the_good_params(project):
    """The control for the in-process runner (conftest.snakemake_here): the tiny params plan a whole build."""
    (project / "params.yaml").write_text(yaml.safe_dump(BASE, sort_keys=False))
    smk = snakemake_here("-n", "--cores", "1", cwd=project)
    assert smk.returncode == 0, (smk.stdout + smk.stderr)[-3000:]
    assert "rule train:" in smk.stdout + smk.stderr and "error" not in smk.stderr.lower()


def test_the_table_is_at_least_thirty_cases():
    assert len(CASES) >= 30 and len({c[0] for c in CASES}) == len(CASES)


def test_a_job_refused_under_snakemake_keeps_the_earlier_outputs(tmp_path):
    """Bad data found inside a job: Snakemake would delete the job's outputs before running it; the
    rules flag them `update`, so the failed job leaves the previous build's files byte-identical,
    and once the data are fixed the job runs again."""
    import numpy as np

    copy_pipeline_files(tmp_path, TINY_PARAMS)
    target = "results/runs/toyroll-ddpm/model.pt"
    smk = [str(BIN / "snakemake"), "--cores", "2", target]
    assert subprocess.run(smk, cwd=tmp_path, env=ENV, capture_output=True).returncode == 0
    outputs = {p: p.read_bytes() for p in (tmp_path / "results" / "runs" / "toyroll-ddpm").rglob("*") if p.is_file()}
    data = tmp_path / "results" / "data" / "toyroll" / "train.npz"
    arrays = dict(np.load(data))
    good = arrays["x"].copy()
    arrays["x"][3, 0] = np.nan
    np.savez(data, **arrays)
    proc = subprocess.run(smk, cwd=tmp_path, env=ENV, capture_output=True, text=True)
    assert proc.returncode != 0
    assert "diffrepro train: error: training data 'results/data/toyroll/train.npz': array x holds 1 NaN" \
        in proc.stdout + proc.stderr
    assert {p: p.read_bytes() for p in outputs} == outputs
    np.savez(data, **{**arrays, "x": good})
    fixed = subprocess.run(smk, cwd=tmp_path, env=ENV, capture_output=True, text=True)
    assert fixed.returncode == 0 and "rule train:" in fixed.stdout + fixed.stderr  # it ran again
    assert (tmp_path / target).read_bytes() == outputs[tmp_path / target]  # same data, seed: same model


# Checkpoints: a run's model.pt already on disk is checked when Snakemake plans the pipeline (read
# without torch), and again by the job that loads it (`dvc repro --single-item`, the CLI). Each case:
# exit non-zero, one line naming the file, no traceback; under Snakemake at most 3 lines and the
# previous samples byte-identical.
MODEL = "results/runs/toyroll-ddpm/model.pt"
SAMPLE_OUTPUTS = ("samples.npz", "samples.png", "progressive.png")


def _truncated(project):
    return (project / MODEL).read_bytes()[:2000]


def _foreign(project):
    import io

    import torch

    buffer = io.BytesIO()
    torch.save({"state_dict": {"w": torch.zeros(3)}}, buffer)
    return buffer.getvalue()


CHECKPOINT_CASES = [
    ("truncated", _truncated, ["corrupt or not a diffrepro checkpoint"]),
    ("not-a-checkpoint", lambda project: b"weights, they said\n", ["corrupt or not a diffrepro checkpoint"]),
    ("foreign-torch-file", _foreign, ["is not a diffrepro checkpoint", "lacks the keys config, model"]),
    ("another-run-and-arch", lambda project: (project / "results/runs/toyroll-sd/model.pt").read_bytes(),
     ["of run 'toyroll-sd', not of run 'toyroll-ddpm'"]),
    # a pickle that writes the marker when run (tests/evil.py): refused at every door, never run
    ("code-running-pickle", lambda project: evil.torch_zip(project / MARKER), ["is refused", "exec", "run code"]),
]
MARKER = "code-ran.txt"


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("built")
    copy_pipeline_files(root, TINY_PARAMS)
    for cmd in (["git", "init", "-q"], [str(BIN / "dvc"), "init", "-q", "--no-scm"],
                [str(BIN / "snakemake"), "--cores", "2", "results/runs/toyroll-ddpm/samples.npz",
                 "results/runs/toyroll-sd/model.pt"]):
        subprocess.run(cmd, cwd=root, check=True, env=ENV, capture_output=True)
    return root


def _our_line(proc, prefix, fragments, where):
    out = proc.stdout + proc.stderr
    ours = [line for line in out.splitlines() if line.startswith(f"{prefix}: error:")]
    assert proc.returncode != 0 and "Traceback" not in out, f"{where}:\n{out[-3000:]}"
    assert len(ours) == 1 and MODEL in ours[0] and all(f in ours[0] for f in fragments), f"{where}:\n{out[-3000:]}"


@pytest.mark.parametrize("case_id, bad, fragments", CHECKPOINT_CASES, ids=[c[0] for c in CHECKPOINT_CASES])
def test_bad_checkpoints_are_refused_by_every_engine(built, case_id, bad, fragments):
    run_dir = built / "results" / "runs" / "toyroll-ddpm"
    good = (built / MODEL).read_bytes()
    before = {name: (run_dir / name).read_bytes() for name in SAMPLE_OUTPUTS}
    (built / MODEL).write_bytes(bad(built))
    try:
        smk = subprocess.run([str(BIN / "snakemake"), "--cores", "1", "results/runs/toyroll-ddpm/samples.npz"],
                             cwd=built, env=ENV, capture_output=True, text=True)
        _our_line(smk, "diffrepro", fragments, "snakemake")
        assert len([line for line in (smk.stdout + smk.stderr).splitlines() if line.strip()]) <= 3
        assert {name: (run_dir / name).read_bytes() for name in SAMPLE_OUTPUTS} == before
        dvc = subprocess.run([str(BIN / "dvc"), "repro", "--single-item", "sample@toyroll-ddpm"], cwd=built, env=ENV,
                             capture_output=True, text=True)
        _our_line(dvc, "diffrepro sample", fragments, "dvc repro")
        assert {name: (run_dir / name).read_bytes() for name in SAMPLE_OUTPUTS} == before  # persist: kept
        cli_args = ["sample", "--params", "params.yaml", "--run", "toyroll-ddpm", "--model", MODEL,
                    "--test", "results/data/toyroll/test.npz", "--samples", "out/samples.npz",
                    "--picture", "out/samples.png", "--progressive", "out/progressive.png"]
        # the stage command's entry point, in this process (the engines ran it as one)
        _our_line(run_cli(*cli_args, cwd=built), "diffrepro sample", fragments, "diffrepro sample")
        assert not (built / "out").exists()
        assert not (built / MARKER).exists()
    finally:
        (built / MODEL).write_bytes(good)


# `snakemake --configfile X` (read before Snakemake does, by the project's Snakemake plugin
# src/snakemake_logger_plugin_diffrepro) and `snakemake --config KEY=VALUE` (refused: the stages read
# one params file). Same rules as the table above, through `snakemake -n`.
ENGINE_CASES = [
    ("configfile-missing", ["--configfile", "nowhere.yaml"], ["nowhere.yaml", "does not exist"]),
    ("configfile-malformed", ["--configfile", "data/broken.yaml"], ["data/broken.yaml", "not valid YAML", "line 3"]),
    ("configfile-empty", ["--configfile", "data/empty.yaml"], ["data/empty.yaml", "must be a mapping", "NoneType"]),
    ("configfile-list", ["--configfile", "data/list.yaml"], ["data/list.yaml", "must be a mapping", "list"]),
    ("configfile-bad-key", ["--configfiles=data/badkey.yaml"], ["data/badkey.yaml", "train.steps", "-5"]),
    ("config-runs", ["--config", "runs=oops"], ["--config runs='oops'", "params.yaml", "--configfile"]),
    ("config-seed", ["--config", "seed=5"], ["--config seed=5", "dvc exp run -S"]),
]


@pytest.mark.parametrize("case_id, flags, fragments", ENGINE_CASES, ids=[c[0] for c in ENGINE_CASES])
def test_bad_engine_flags_are_refused_in_one_line(project, case_id, flags, fragments):
    (project / "params.yaml").write_text(yaml.safe_dump(BASE, sort_keys=False))
    data = project / "data"
    (data / "broken.yaml").write_text("seed: 0\nruns: [\n")
    (data / "empty.yaml").write_text("")
    (data / "list.yaml").write_text("- 1\n- 2\n")
    (data / "badkey.yaml").write_text(params_text(lambda r: run(r)["train"].update(steps=-5)))
    smk = subprocess.run([str(BIN / "snakemake"), "-n", "--cores", "1", *flags], cwd=project, env=ENV,
                         capture_output=True, text=True)
    check_refusal(smk, fragments, project, f"snakemake -n {' '.join(flags)}")


def test_a_good_configfile_still_reaches_snakemake(project):
    (project / "params.yaml").write_text(yaml.safe_dump(BASE, sort_keys=False))
    (project / "data" / "other.yaml").write_text(params_text(lambda r: r.update(seed=7)))
    smk = subprocess.run([str(BIN / "snakemake"), "-n", "-p", "--cores", "1", "--configfile", "data/other.yaml"],
                         cwd=project, env=ENV, capture_output=True, text=True)
    assert smk.returncode == 0, smk.stderr[-2000:]
    assert "diffrepro prepare --params data/other.yaml" in smk.stdout + smk.stderr
