"""params.yaml validation: one clear message naming the key, the value and what is allowed."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from diffrepro.config import ParamsError, load_params, parse_params, schema
from diffrepro.data.kinds import KINDS
from diffrepro.data.loaders import LOADERS
from diffrepro.diffusion.families import FAMILIES
from diffrepro.nets import NETS

from .conftest import ROOT, TINY_PARAMS, run_cli, stage_args


def test_default_and_tiny_params_are_valid(default_raw, tiny_raw):
    for raw in (default_raw, tiny_raw):
        params = parse_params(raw)
        assert set(params.runs) == set(raw["runs"])
        for run in params.runs.values():
            assert run.dataset.name == raw["runs"][run.name]["dataset"]


def _error(raw) -> str:
    with pytest.raises(ParamsError) as err:
        parse_params(raw)
    return str(err.value)


@pytest.mark.parametrize("mutate, must_name", [
    (lambda r: r["datasets"]["toyroll"].update(kind="moons"), ["datasets.toyroll.kind", "'moons'", "swissroll"]),
    (lambda r: r["runs"]["toyroll-ddpm"]["train"].update(steps=-5), ["runs.toyroll-ddpm.train.steps", "-5", "minimum"]),
    (lambda r: r["runs"]["toyroll-ddpm"]["train"].update(steps="many"), ["runs.toyroll-ddpm.train.steps", "'many'", "integer"]),
    (lambda r: r["runs"]["toyroll-ddpm"]["train"].pop("steps"), ["runs.toyroll-ddpm.train.steps is missing"]),
    (lambda r: r["runs"]["toyroll-ddpm"]["eval"].pop("parzen_n"),
     ["runs.toyroll-ddpm.eval.parzen_n is missing", "nll_n, fid_n, parzen_n, batch_size", "DVC"]),
    (lambda r: r["runs"]["toyroll-sd"]["sample"].pop("steps"), ["runs.toyroll-sd.sample.steps is missing", "inpaint"]),
    (lambda r: r["runs"]["toyroll-ddpm"]["diffusion"].update(family="gan"), ["runs.toyroll-ddpm.diffusion.family", "ddpm"]),
    (lambda r: r["runs"]["toyroll-ddpm"].update(model="nope"), ["runs.toyroll-ddpm.model", "'nope'", "allowed"]),
    (lambda r: r["runs"]["toyroll-ddpm"].update(dataset="nope"), ["runs.toyroll-ddpm.dataset", "'nope'", "allowed"]),
    (lambda r: r["runs"]["toyroll-ddpm"]["train"].update(stepz=3), ["runs.toyroll-ddpm.train", "stepz", "allowed keys"]),
    (lambda r: r["models"]["mlp-tiny"].update(arch="transformer"), ["models.mlp-tiny.arch", "unet"]),
    (lambda r: r["runs"]["toyroll-ddpm"]["inpaint"].update(masks=["center_square"]), ["center_square", "image"]),
    (lambda r: r.pop("seed"), ["seed is missing; (top level) needs seed"]),
    (lambda r: r["models"]["unet-tiny"].update(preset="unet-huge"), ["models.unet-tiny.preset", "'unet-huge'", "digits-cpu"]),
    (lambda r: r["datasets"]["toyroll"].update(feature_space="inception"), ["datasets.toyroll.feature_space", "image", "domain"]),
    (lambda r: r["datasets"]["tinydigits"].update(feature_space="clip"), ["datasets.tinydigits.feature_space", "'clip'", "inception"]),
    (lambda r: r["datasets"]["tinydigits"].update(inception_weights="w.pth"), ["datasets.tinydigits.inception_weights", "feature_space: inception"]),
    (lambda r: r["datasets"].update(toyroll={"kind": "npz"}), ["datasets.toyroll.path", "npz"]),
    (lambda r: r["datasets"]["toyroll"].update(levels=16), ["datasets.toyroll.levels", "not an option of kind 'swissroll'", "noise"]),
    (lambda r: r["datasets"]["toyroll"].update(root="data/tv"), ["datasets.toyroll.root", "swissroll takes: n_train, n_test, noise"]),
    (lambda r: r["models"]["mlp-tiny"].update(channel_mult=[1, 2]), ["models.mlp-tiny.channel_mult", "arch 'mlp'", "time_embed_dim"]),
    (lambda r: r["datasets"].update(toyroll=dict(kind="npz", path="a.npz", data_type="points", levels=4)), ["datasets.toyroll.levels", "image data"]),
    (lambda r: r["datasets"]["toyroll"].update(kind="npz", path="a.npz", data_type="pixels"), ["datasets.toyroll.data_type", "'pixels'", "binary"]),
])
def test_bad_params_name_the_key(tiny_raw, mutate, must_name):
    mutate(tiny_raw)
    message = _error(tiny_raw)
    assert "\n" not in message
    for fragment in must_name:
        assert fragment in message, (fragment, message)


def test_family_must_fit_data_type(tiny_raw):
    tiny_raw["runs"]["toyroll-ddpm"]["diffusion"]["family"] = "sd_binomial"
    message = _error(tiny_raw)
    assert "sd_binomial" in message and "points" in message


def test_malformed_yaml_and_missing_file(tmp_path):
    bad = tmp_path / "params.yaml"
    bad.write_text("seed: 0\nruns: [unclosed\n")
    with pytest.raises(ParamsError, match="not valid YAML at line"):
        load_params(bad)
    with pytest.raises(ParamsError, match="does not exist"):
        load_params(tmp_path / "missing.yaml")
    bad.write_text("- just\n- a list\n")
    with pytest.raises(ParamsError, match="top level must be a mapping"):
        load_params(bad)


def test_schema_enums_match_registries():
    s = schema()
    assert set(s["definitions"]["dataset"]["properties"]["kind"]["enum"]) == set(LOADERS) == set(KINDS)
    assert set(s["definitions"]["model"]["properties"]["arch"]["enum"]) == set(NETS)


def test_workflow_schema_is_the_package_schema():
    wf = json.loads((ROOT / "workflow" / "schemas" / "params.schema.json").read_text())
    assert wf == schema()


def test_cli_rejects_bad_params_before_touching_outputs(tmp_path, tiny_raw):
    out = tmp_path / "results" / "data" / "toyroll"
    out.mkdir(parents=True)
    keep = out / "train.npz"
    keep.write_bytes(b"an earlier result")
    tiny_raw["runs"]["toyroll-ddpm"]["train"]["steps"] = -1
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(tiny_raw))
    proc = run_cli("prepare", *stage_args("prepare", "toyroll", tmp_path, TINY_PARAMS)[2:], "--params", params)
    assert proc.returncode != 0
    assert "runs.toyroll-ddpm.train.steps" in proc.stderr and "-1" in proc.stderr
    assert keep.read_bytes() == b"an earlier result"
    assert sorted(p.name for p in out.iterdir()) == ["train.npz"]


def test_cli_unknown_run_and_missing_input(tmp_path):
    from .conftest import TINY_PARAMS

    args = stage_args("train", "toyroll-ddpm", tmp_path, TINY_PARAMS)
    proc = run_cli("train", *[("nope" if a == "toyroll-ddpm" else a) for a in args])
    assert proc.returncode != 0 and "run 'nope'" in proc.stderr and "toyroll-ddpm" in proc.stderr
    proc = run_cli("train", *args)
    assert proc.returncode != 0 and "train.npz" in proc.stderr and "does not exist" in proc.stderr


def test_cli_corrupt_checkpoint(tmp_path):
    from .conftest import TINY_PARAMS

    args = stage_args("sample", "toyroll-ddpm", tmp_path, TINY_PARAMS)
    ckpt = Path(args[args.index("--model") + 1])
    ckpt.parent.mkdir(parents=True)
    ckpt.write_bytes(b"\x00not a torch file")
    proc = run_cli("sample", *args)
    assert proc.returncode != 0 and "corrupt" in proc.stderr and str(ckpt) in proc.stderr
    assert not (ckpt.parent / "samples.npz").exists()


def _enum_paths(node, path=()):
    """(dotted schema path, enum values) of every enum-valued key in the params schema."""
    if isinstance(node, dict):
        if "enum" in node:
            yield ".".join(path), tuple(node["enum"])
        for key, value in node.items():
            yield from _enum_paths(value, (*path, key))


def test_every_schema_enum_equals_its_registry():
    from diffrepro.config import FEATURE_SPACES, IMAGE_CONVENTIONS
    from diffrepro.convention import ImageConvention
    from diffrepro.data import DATA_TYPES
    from diffrepro.diffusion.binomial import BinomialReverse
    from diffrepro.diffusion.gaussian import LossType, ModelMeanType, ModelVarType
    from diffrepro.diffusion.schedules import SCHEDULES
    from diffrepro.diffusion.sd_gaussian import SDBetaInit
    from diffrepro.nets.activations import ACTIVATIONS
    from diffrepro.nets.sd_nets import HiddenKind
    from diffrepro.nets.unet import PRESETS
    from diffrepro.runs.precision import Precision
    from diffrepro.runs.sampling import InpaintMode, RSchedule, Sampler
    from diffrepro.runs.training import LRSchedule, TrainLogger
    from diffrepro.runtime import DEVICES
    from diffrepro.stages.inpaint import MASKS

    run = "definitions.run.properties."
    registries = {
        "properties.device": DEVICES,
        "definitions.dataset.properties.kind": KINDS,
        "definitions.dataset.properties.feature_space": FEATURE_SPACES,
        "definitions.dataset.properties.image_convention": ImageConvention.values(),
        "definitions.dataset.properties.data_type": DATA_TYPES,
        "definitions.model.properties.arch": NETS,
        "definitions.model.properties.activation": ACTIVATIONS,
        "definitions.model.properties.hidden_kind": HiddenKind.values(),
        "definitions.model.properties.preset": PRESETS,
        run + "diffusion.properties.family": FAMILIES,
        run + "diffusion.properties.schedule": {s for f in FAMILIES.values() for s in f.schedules},
        run + "diffusion.properties.mean_type": ModelMeanType.values(),
        run + "diffusion.properties.var_type": ModelVarType.values(),
        run + "diffusion.properties.loss_type": LossType.values(),
        run + "diffusion.properties.binomial_reverse": BinomialReverse.values(),
        run + "train.properties.lr_schedule": LRSchedule.values(),
        run + "train.properties.logger": TrainLogger.values(),
        run + "train.properties.precision": Precision.values(),
        run + "inpaint.properties.masks.items": MASKS,
        run + "sample.properties.sampler": Sampler.values(),
        run + "sample.properties.precision": Precision.values(),
        run + "inpaint.properties.mode": InpaintMode.values(),
        run + "inpaint.properties.r_schedule": RSchedule.values(),
    }
    found = dict(_enum_paths(schema()))
    assert set(found) == set(registries), "an enum-valued key has no registry to check it against (or went away)"
    for path, values in found.items():
        assert set(values) == set(registries[path]), path
    # each family's schedules are exactly its registry's
    assert set(FAMILIES["ddpm"].schedules) == set(SCHEDULES)
    assert set(FAMILIES["sd_gaussian"].schedules) == set(SDBetaInit.values())
    assert FAMILIES["sd_binomial"].schedules == ()
    assert set(IMAGE_CONVENTIONS) == set(ImageConvention.values())


def test_arch_and_kind_options_are_the_constructors_keywords():
    import inspect

    from diffrepro.nets import net_class
    from diffrepro.nets.options import ARCH_OPTIONS

    common = {"self", "data_shape", "out_mult", "num_timesteps"}
    assert set(ARCH_OPTIONS) == set(NETS) and set(KINDS) == set(LOADERS)
    for arch, options in ARCH_OPTIONS.items():
        assert set(options) == set(inspect.signature(net_class(arch)).parameters) - common, arch
    for kind, record in KINDS.items():
        params = inspect.signature(LOADERS[kind]).parameters.values()
        assert set(record.options) == {p.name for p in params if p.kind is p.KEYWORD_ONLY}, kind


def test_family_options_are_the_schema_keys():
    import dataclasses

    from diffrepro.config import DiffusionConfig

    keys = set(schema()["definitions"]["run"]["properties"]["diffusion"]["properties"])
    declared = {"family", "timesteps"} | {k for f in FAMILIES.values() for k in f.options}
    assert declared == keys == {f.name for f in dataclasses.fields(DiffusionConfig)}


@pytest.mark.parametrize("run, mutate, must_name", [
    ("toyroll-sd", lambda r: r["sample"].update(clip_denoised=True), ["runs.toyroll-sd.sample.clip_denoised", "sd_gaussian"]),
    ("beat-sd", lambda r: r["sample"].update(clip_denoised=True), ["runs.beat-sd.sample.clip_denoised", "sd_binomial"]),
    ("toyroll-ddpm", lambda r: r["sample"].update(clip_denoised=True), ["runs.toyroll-ddpm.sample.clip_denoised", "points"]),
    ("toyroll-ddpm", lambda r: r["diffusion"].update(beta_1=0.01), ["runs.toyroll-ddpm.diffusion.beta_1", "ddpm takes"]),
    ("toyroll-sd", lambda r: r["diffusion"].update(mean_type="epsilon"), ["runs.toyroll-sd.diffusion.mean_type", "sd_gaussian takes"]),
    ("toyroll-sd", lambda r: r["diffusion"].update(beta_start=0.01), ["runs.toyroll-sd.diffusion.beta_start", "beta_1"]),
    ("beat-sd", lambda r: r["diffusion"].update(learn_betas=False), ["runs.beat-sd.diffusion.learn_betas", "binomial_p"]),
    ("toyroll-ddpm", lambda r: r["diffusion"].update(binomial_p=0.3), ["runs.toyroll-ddpm.diffusion.binomial_p", "ddpm"]),
    ("toyroll-ddpm", lambda r: r["diffusion"].update(var_type="learned_range"), ["loss_type", "learned_range", "hybrid"]),
    ("toyroll-sd", lambda r: r["diffusion"].update(schedule="cosine"), ["runs.toyroll-sd.diffusion.schedule", "geometric"]),
    ("toyroll-ddpm", lambda r: r["diffusion"].update(beta_start=0.3, beta_end=0.01), ["diffusion.beta_start = 0.3", "beta_end = 0.01"]),
    ("toyroll-ddpm", lambda r: r["diffusion"].update(beta_start=0.05) or r["diffusion"].pop("beta_end"), ["beta_start = 0.05", "0.02"]),
    ("toyroll-sd", lambda r: r["diffusion"].update(beta_1=0.6), ["runs.toyroll-sd.diffusion.beta_1 = 0.6", "beta_end = 0.5"]),
])
def test_options_of_another_family_name_the_key(tiny_raw, run, mutate, must_name):
    mutate(tiny_raw["runs"][run])
    message = _error(tiny_raw)
    assert "\n" not in message
    for fragment in must_name:
        assert fragment in message, (fragment, message)


def test_clip_denoised_false_is_allowed_for_every_family(tiny_raw):
    for run in tiny_raw["runs"].values():
        run["sample"]["clip_denoised"] = False
    parse_params(tiny_raw)


def test_clip_denoised_on_an_sd_run_stops_train_with_one_line(tmp_path, tiny_raw):
    tiny_raw["runs"]["toyroll-sd"]["sample"]["clip_denoised"] = True
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(tiny_raw))
    proc = run_cli("train", *stage_args("train", "toyroll-sd", tmp_path, TINY_PARAMS)[2:], "--params", params)
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if "error" in line.lower()]
    assert len([e for e in errors if e.startswith("diffrepro train: error:")]) == 1
    assert "runs.toyroll-sd.sample.clip_denoised" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "results").exists()


def test_outputs_get_the_umask_permissions(tmp_path):
    import os
    import stat

    from diffrepro import io

    io.save_json(tmp_path / "a.json", {"x": 1})
    io.save_text(tmp_path / "b.md", "text")
    for name in ("a.json", "b.md"):
        mode = stat.S_IMODE(os.stat(tmp_path / name).st_mode)
        assert mode == 0o666 & ~io._UMASK, oct(mode)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left behind
