"""The pipeline, declared once: per stage its wildcard, named inputs and outputs, params keys and module.

Everything else is generated from this table, so no path, params key or command is written twice:

- `diffrepro dvc-yaml` renders dvc.yaml (`engines.render_dvc_yaml`); the committed file is exactly
  its output (tests/test_dag_agreement.py fails on drift);
- the Snakemake rules (workflow/rules/pipeline.smk) loop over `STAGES` and take their inputs,
  outputs, params and shell command from `engines` helpers;
- `diffrepro <stage>` gets one flag per wildcard, input and output (cli.py), so a stage reads
  every path it touches from its command line and never composes another stage's file name;
- each stage's code dependencies are the package modules its implementation imports,
  transitively (`codedeps.stage_code`), in both engines.

Path templates use `{dataset}` and `{run}`; a run stage's `{dataset}` is its run's dataset.
Params keys use the same placeholders plus `{model}` (the run's model).
"""
from __future__ import annotations

from dataclasses import dataclass

WILDCARDS = ("dataset", "run")        # a stage runs once per dataset, once per run, or once (None)
ROLES = ("out", "metric", "plot")     # DVC: outs, metrics, plots (all are Snakemake outputs)


@dataclass(frozen=True)
class Output:
    name: str                         # the stage's flag --<name> and Snakemake's {output.<name>}
    path: str                         # template
    role: str = "out"
    cache: bool = True                # DVC cache for large arrays and weights; small files live in git
    plot_xy: tuple | None = None      # DVC plot axes (x, y) of a csv plot
    report: str | None = None         # Snakemake report category (caption: workflow/report/<stage>-<name>.rst)
    directory: bool = False           # a folder (Snakemake `directory()`; DVC tracks it whole)


@dataclass(frozen=True)
class Input:
    name: str                         # the stage's flag --<name> and Snakemake's {input.<name>}
    stage: str                        # the stage that writes it
    output: str                       # that stage's output name


@dataclass(frozen=True)
class Collect:
    """Every run's `outputs` (stage, output name) gathered under one folder (the report's input):
    DVC depends on the folder, Snakemake on each file; the command gets --<name> <folder>."""
    name: str
    folder: str
    outputs: tuple


@dataclass(frozen=True)
class Shards:
    """A stage whose batches may be split over jobs (runs/shards.py): Snakemake runs one scatter job
    per shard (rule `<stage>_shard`, `--shard k`, writing one shard file) and the stage's own job
    gathers them; DVC runs the stage's job alone, which computes every batch (the same bytes)."""
    key: str                          # params key of the shard count (template; 1 where left out)
    beside: str                       # the output whose folder holds the shard files (shards/<stage>-<k>-of-<K>.pt)


@dataclass(frozen=True)
class Stage:
    name: str
    wildcard: str | None
    module: str                       # implementation: add_arguments (optional) and run(args, params, device)
    inputs: tuple = ()
    outputs: tuple = ()
    params: tuple = ()                # params keys the stage reads (templates), no wider: a change of
                                      # any other key never re-runs it (a key named here must be
                                      # written out in params files: DVC refuses a missing one)
    gpu: bool = False                 # holds the GPU (Snakemake resource `gpu`)
    processes: str | None = None      # params key of the job's process count (template; torchrun when > 1)
    nodes: str | None = None          # params key of the job's node count (template; srun + torchrun when > 1)
    shards: Shards | None = None      # scatter/gather over jobs (Snakemake), one job (DVC)

    @property
    def log(self) -> str:
        return f"logs/{self.name}/{{{self.wildcard}}}.log" if self.wildcard else f"logs/{self.name}.log"

    @property
    def benchmark(self) -> str:
        return (f"results/benchmarks/{self.name}/{{{self.wildcard}}}.tsv" if self.wildcard
                else f"results/benchmarks/{self.name}.tsv")

    SHARD = "{{{wildcard}}}-shard{{shard}}-of-{{shards}}"  # a scatter job's log and benchmark name

    @property
    def shard_log(self) -> str:
        return f"logs/{self.name}/{self.SHARD.format(wildcard=self.wildcard)}.log"

    @property
    def shard_benchmark(self) -> str:
        return f"results/benchmarks/{self.name}/{self.SHARD.format(wildcard=self.wildcard)}.tsv"

    def output(self, name: str) -> Output:
        for out in self.outputs:
            if out.name == name:
                return out
        raise KeyError(f"stage {self.name!r} has no output {name!r}; it has: "
                       f"{', '.join(o.name for o in self.outputs)}")


DATA = "results/data/{dataset}"
RUN = "results/runs/{run}"
TORCH = ("seed", "device")            # every stage that draws random numbers on a device reads these

STAGES = (
    # First, so first in dvc.yaml: `dvc repro` runs stages no dependency orders in the file's order, so
    # a run naming an undefined dataset or model is refused here, by key, before DVC looks for the
    # run's inputs. A leaf (no stage reads plan.json): re-running it re-runs nothing else.
    Stage("check", None, "diffrepro.stages.check",
          outputs=(Output("plan", "results/plan.json", cache=False),),
          params=("seed", "device", "datasets", "models", "runs")),
    Stage("prepare", "dataset", "diffrepro.stages.prepare",
          outputs=(Output("train", f"{DATA}/train.npz"),
                   Output("test", f"{DATA}/test.npz"),
                   Output("info", f"{DATA}/info.json", cache=False),
                   Output("preview", f"{DATA}/preview.png", cache=False, report="data")),
          params=("seed", "datasets.{dataset}")),
    Stage("features", "dataset", "diffrepro.stages.features",
          inputs=(Input("train", "prepare", "train"), Input("test", "prepare", "test")),
          outputs=(Output("extractor", "results/features/{dataset}.pt"),
                   Output("metrics", "results/features/{dataset}.json", role="metric", cache=False)),
          params=(*TORCH, "datasets.{dataset}")),
    Stage("reference", "dataset", "diffrepro.stages.reference",
          inputs=(Input("extractor", "features", "extractor"), Input("train", "prepare", "train"),
                  Input("test", "prepare", "test")),
          outputs=(Output("reference", "results/features/{dataset}-reference.npz"),),
          params=("device",), gpu=True),
    Stage("train", "run", "diffrepro.stages.train",
          inputs=(Input("train", "prepare", "train"),),
          outputs=(Output("model", f"{RUN}/model.pt"),
                   Output("weights", f"{RUN}/model.safetensors"),    # the EMA weights without pickle
                   Output("weights_config", f"{RUN}/model.json", cache=False),  # its config, as JSON
                   Output("metrics", f"{RUN}/train.json", role="metric", cache=False),
                   Output("loss", f"{RUN}/loss.csv", role="plot", cache=False, plot_xy=("step", "loss")),
                   Output("curve", f"{RUN}/loss.png", cache=False, report="loss curves"),
                   Output("schedule", f"{RUN}/schedule.csv", role="plot", cache=False, plot_xy=("t", "beta")),
                   Output("schedule_plot", f"{RUN}/schedule.png", cache=False, report="loss curves"),
                   Output("training_samples", f"{RUN}/training_samples.png", cache=False, report="samples"),
                   Output("checkpoints", f"{RUN}/checkpoints", directory=True),
                   Output("state", f"{RUN}/train_state.pt")),
          params=(*TORCH, "models.{model}", "runs.{run}.dataset", "runs.{run}.model", "runs.{run}.diffusion",
                  "runs.{run}.train"),
          gpu=True, processes="runs.{run}.train.processes", nodes="runs.{run}.train.nodes"),
    Stage("sample", "run", "diffrepro.stages.sample",
          inputs=(Input("model", "train", "model"), Input("test", "prepare", "test")),
          outputs=(Output("samples", f"{RUN}/samples.npz"),
                   Output("picture", f"{RUN}/samples.png", cache=False, report="samples"),
                   Output("progressive", f"{RUN}/progressive.png", cache=False, report="samples")),
          params=(*TORCH, "runs.{run}.sample"), gpu=True,
          shards=Shards("runs.{run}.sample.shards", beside="samples")),
    Stage("inpaint", "run", "diffrepro.stages.inpaint",
          inputs=(Input("model", "train", "model"), Input("train", "prepare", "train"),
                  Input("test", "prepare", "test")),
          outputs=(Output("metrics", f"{RUN}/inpaint.json", role="metric", cache=False),
                   Output("arrays", f"{RUN}/inpaint.npz"),
                   Output("panel", f"{RUN}/inpaint.png", cache=False, report="inpainting")),
          params=(*TORCH, "runs.{run}.inpaint", "runs.{run}.sample.sampler", "runs.{run}.sample.steps",
                  "runs.{run}.sample.eta", "runs.{run}.sample.precision")),  # sample's walk; never sample.n
    Stage("nll", "run", "diffrepro.stages.nll",
          inputs=(Input("model", "train", "model"), Input("train", "prepare", "train"),
                  Input("test", "prepare", "test")),
          outputs=(Output("metrics", f"{RUN}/nll.json", role="metric", cache=False),
                   Output("terms", f"{RUN}/nll_terms.csv", role="plot", cache=False, plot_xy=("t", "term")),
                   Output("plot", f"{RUN}/nll_terms.png", cache=False, report="bound terms")),
          params=(*TORCH, "runs.{run}.eval.nll_n", "runs.{run}.eval.batch_size", "runs.{run}.eval.nll_shards"),
          gpu=True, shards=Shards("runs.{run}.eval.nll_shards", beside="metrics")),  # never fid_n: T steps per example
    Stage("fid", "run", "diffrepro.stages.fid",
          inputs=(Input("samples", "sample", "samples"), Input("extractor", "features", "extractor"),
                  Input("reference", "reference", "reference")),
          outputs=(Output("metrics", f"{RUN}/fid.json", role="metric", cache=False),),
          params=(*TORCH, "runs.{run}.eval.fid_n")),
    Stage("curve", "run", "diffrepro.stages.curve",
          inputs=(Input("checkpoints", "train", "checkpoints"), Input("model", "train", "model"),
                  Input("test", "prepare", "test"), Input("extractor", "features", "extractor"),
                  Input("reference", "reference", "reference")),
          outputs=(Output("table", f"{RUN}/curve.csv", role="plot", cache=False, plot_xy=("step", "fid")),
                   Output("plot", f"{RUN}/curve.png", cache=False, report="quality over training")),
          params=(*TORCH, "runs.{run}.eval.curve_fid_n", "runs.{run}.eval.curve_nll_n", "runs.{run}.eval.batch_size",
                  "runs.{run}.sample.sampler", "runs.{run}.sample.steps", "runs.{run}.sample.eta",
                  "runs.{run}.sample.precision")),
    Stage("parzen", "run", "diffrepro.stages.parzen",
          inputs=(Input("samples", "sample", "samples"), Input("train", "prepare", "train"),
                  Input("test", "prepare", "test")),
          outputs=(Output("metrics", f"{RUN}/parzen.json", role="metric", cache=False),),
          params=(*TORCH, "runs.{run}.eval.parzen_n")),
    Stage("report", None, "diffrepro.stages.report",
          inputs=(Collect("runs_dir", "results/runs",
                          (("train", "metrics"), ("nll", "metrics"), ("fid", "metrics"), ("parzen", "metrics"),
                           ("inpaint", "metrics"), ("nll", "terms"), ("curve", "table"))),),
          outputs=(Output("csv", "results/metrics.csv", cache=False, report="metric tables"),
                   Output("md", "results/metrics.md", cache=False),
                   Output("bound_plot", "results/bound_terms.png", cache=False, report="bound terms")),
          params=("runs", "datasets")),
)
STAGE_NAMES = tuple(s.name for s in STAGES)


def stage(name: str) -> Stage:
    for s in STAGES:
        if s.name == name:
            return s
    raise KeyError(f"unknown stage {name!r}; allowed: {', '.join(STAGE_NAMES)}")


def producer(inp: Input) -> Output:
    """The output an input names."""
    return stage(inp.stage).output(inp.output)


def fill(template: str, **values) -> str:
    """A template with its placeholders filled (`{dataset}`, `{run}`, `{model}`)."""
    return template.format(**values)


def run_values(raw: dict, run: str) -> dict:
    """Placeholder values of one run: {run, dataset, model} from the raw params mapping."""
    spec = raw["runs"][run]
    return {"run": run, "dataset": spec["dataset"], "model": spec["model"]}


def wildcard_values(st: Stage, raw: dict, key: str | None) -> dict:
    """Placeholder values of one job of `st` (key: the dataset or run name; None for a single stage)."""
    if st.wildcard == "run":
        return run_values(raw, key)
    if st.wildcard == "dataset":
        return {"dataset": key}
    return {}


def collected_file(coll: Collect, folder, stage_name: str, output: str, run: str):
    """Where, under `folder` (the command's --<coll.name>), one run's collected output lies."""
    from pathlib import Path

    template = stage(stage_name).output(output).path
    prefix = coll.folder.rstrip("/") + "/"
    if not template.startswith(prefix):
        raise ValueError(f"output {stage_name}.{output} ({template}) is not under {coll.folder}")
    return Path(folder) / fill(template[len(prefix):], run=run)


def check_declaration() -> None:
    """Internal consistency: names unique, inputs name real outputs, templates use their wildcard only."""
    seen = set()
    for st in STAGES:
        if st.name in seen:
            raise ValueError(f"stage {st.name!r} declared twice")
        seen.add(st.name)
        if st.wildcard not in (None, *WILDCARDS):
            raise ValueError(f"stage {st.name}: wildcard {st.wildcard!r}; allowed: None, {', '.join(WILDCARDS)}")
        names = [i.name for i in st.inputs] + [o.name for o in st.outputs]
        if len(set(names)) != len(names):
            raise ValueError(f"stage {st.name}: input/output names repeat: {names}")
        for out in st.outputs:
            if out.role not in ROLES:
                raise ValueError(f"stage {st.name} output {out.name}: role {out.role!r}; allowed: {', '.join(ROLES)}")
            own = "{" + st.wildcard + "}" if st.wildcard else None
            for w in WILDCARDS:
                if "{" + w + "}" in out.path and "{" + w + "}" != own:
                    raise ValueError(f"stage {st.name} output {out.name} uses {{{w}}}, not its own wildcard")
        if st.processes is not None and not any(st.processes.startswith(p + ".") for p in st.params):
            raise ValueError(f"stage {st.name}: its processes key {st.processes} is not under its params keys")
        if st.shards is not None:
            if not any(st.shards.key == p or st.shards.key.startswith(p + ".") for p in st.params):
                raise ValueError(f"stage {st.name}: its shards key {st.shards.key} is not under its params keys")
            if st.wildcard != "run":
                raise ValueError(f"stage {st.name}: only a run's stage is sharded")
            st.output(st.shards.beside)
        for inp in st.inputs:
            if isinstance(inp, Input):
                producer(inp)
            else:
                for s, o in inp.outputs:
                    collected_file(inp, ".", s, o, "x")
