"""A run's checkpoint: what model.pt holds (`checkpoint_dict`, written by the train stage), the
one safe way to read it (`load_checkpoint`, through io.load_torch: never runs code), a torch-free
peek at its run name for the plan-time check (`peek_checkpoint_run`), and the handle the stages
that use a trained run share (`TrainedRun.open`: config, EMA network, process, data map, digest).
"""
from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path

from ..io import InputError, load_torch

FORMAT = "diffrepro-checkpoint-1"


def checkpoint_dict(run, result, data_shape, seed: int, data_map=None, provenance: dict | None = None) -> dict:
    """What model.pt holds: the config it was built from, the EMA and raw weights, the process state,
    (SD-2015's image convention) the training set's pixel mean and scale, and (train.init_from) the
    weights it started from."""
    extra = {"data_map": data_map.as_dict()} if data_map is not None and data_map.continuous else {}
    if provenance is not None:
        extra["provenance"] = provenance
    return {
        "format": FORMAT,
        "config": run.to_dict(),
        "data_shape": list(data_shape),
        "seed": seed,
        "model": result.ema.state_dict(),          # EMA weights: used for sampling and evaluation
        "model_raw": result.model.state_dict(),
        "process": result.process.state_dict(),
        "history": result.history,
        **extra,
    }


def kept_checkpoint(run, step: int, ema_state: dict, process_state: dict, history: dict, data_shape, seed: int,
                    data_map, state_digest: str) -> dict:
    """A kept checkpoint (train.keep_steps): model.pt's format with the EMA weights at `step` (no raw
    weights), the rows of the loss record so far, and the training state's digest it belongs to."""
    extra = {"data_map": data_map.as_dict()} if data_map is not None and data_map.continuous else {}
    return {"format": FORMAT, "config": run.to_dict(), "data_shape": list(data_shape), "seed": seed,
            "step": step, "model": ema_state, "process": process_state,
            "history": {k: list(v) for k, v in history.items()}, "state_digest": state_digest, **extra}


KEPT = "step-{:08d}.pt"  # a kept checkpoint's file name in the checkpoints folder (kept_steps reads it back)


def kept_steps(folder) -> dict:
    """{step: path} of the kept checkpoints in a train stage's checkpoints folder."""
    import re

    found = {}
    for path in sorted(Path(folder).glob("step-*.pt")):
        match = re.fullmatch(r"step-(\d+)\.pt", path.name)
        if match:
            found[int(match.group(1))] = path
    return found


def load_init(run, data_shape, runs_dir) -> dict:
    """The weights train.init_from names (a run: its model.pt beside this run's folder under
    `runs_dir`; else a model.pt path), checked against `run`: the same family and a network of the
    same shapes, else one line naming both. {"model", "process" (None: another process config),
    "digest" (the file's SHA-256), "path"}."""
    from ..build import build
    from ..io import file_sha256

    source = run.train.init_from
    path = Path(runs_dir) / source / "model.pt" if not source.endswith(".pt") else Path(source)
    where = f"run {run.name!r}, train.init_from" + (f" = {source!r} ({str(path)!r})" if source != str(path) else "")
    if not path.is_file():
        raise InputError(f"{where}: {str(path)!r} does not exist; train that run first (its train stage writes "
                         f"it) or give the path of a model.pt")
    ckpt = load_checkpoint(path, "init_from checkpoint")
    src = ckpt["config"]
    src_family, family = src["diffusion"]["family"], run.diffusion.family
    if src_family != family:
        raise InputError(f"{where}: {str(path)!r} is a {src_family} model (run {src['name']!r}), this run is {family}; "
                         f"allowed: a model of family {family}")
    src_shape = tuple(ckpt.get("data_shape", ()))
    if src_shape != tuple(data_shape):
        raise InputError(f"{where}: {str(path)!r} was trained on examples of shape {src_shape}, this run's data "
                         f"has shape {tuple(data_shape)}; allowed: a model of the same data shape")
    model, process = build(run, tuple(data_shape))
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[-1].strip()
        raise InputError(f"{where}: the network in {str(path)!r} (model {src['model']['name']!r}) does not fit "
                         f"this run's model {run.model.name!r}: {first}") from None
    process_state = ckpt.get("process")
    try:
        process.load_state_dict(process_state or {})
    except RuntimeError:  # another T or schedule: the process starts as this run's config says
        process_state = None
    return {"model": ckpt["model"], "process": process_state, "digest": file_sha256(path), "path": path}


def load_checkpoint(path, what: str = "checkpoint", required_keys=("config", "model")) -> dict:
    """A diffrepro checkpoint (model.pt) through the safe loader, with its keys checked."""
    ckpt = load_torch(path, what)
    if not isinstance(ckpt, dict) or any(k not in ckpt for k in required_keys):
        raise InputError(f"{what} {str(path)!r} is not a diffrepro checkpoint: it lacks the keys "
                         f"{', '.join(required_keys)}")
    return ckpt


class _Peek(pickle.Unpickler):
    """Reads a torch checkpoint's pickle without torch and without its tensors: torch's rebuild
    functions become placeholders, storages are skipped; any other class is refused (no code runs)."""

    def find_class(self, module, name):
        if module == "torch" or module.startswith("torch."):
            return lambda *args, **kwargs: None
        if (module, name) in (("collections", "OrderedDict"), ("builtins", "set"), ("builtins", "tuple")):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"its pickle calls {module}.{name}, i.e. it would run code when loaded")

    def persistent_load(self, pid):
        return None


def peek_checkpoint(path):
    """A torch checkpoint's pickled object read cheaply: no torch import, no tensor data (tensors read
    as None), no code run. InputError when the file is cut short, is not a torch zip, or its pickle
    names anything but containers."""
    import zipfile

    path = Path(path)
    try:
        with zipfile.ZipFile(path) as archive:
            name = next((n for n in archive.namelist() if n.endswith("/data.pkl")), None)
            if name is None:
                raise InputError(f"checkpoint {str(path)!r} is not a torch checkpoint (no data.pkl inside)")
            ckpt = _Peek(archive.open(name)).load()
    except (zipfile.BadZipFile, OSError, EOFError, pickle.UnpicklingError, ValueError, TypeError,
            AttributeError, IndexError, KeyError) as exc:
        if "would run code" in str(exc):
            raise InputError(f"checkpoint {str(path)!r} is refused: {exc}; only tensors and plain values are "
                             f"loaded") from None
        raise InputError(f"checkpoint {str(path)!r} is corrupt or not a diffrepro checkpoint "
                         f"({type(exc).__name__}: {exc})") from None
    return ckpt


def peek_checkpoint_run(path) -> str:
    """The run name inside a diffrepro model.pt, read cheaply (peek_checkpoint): for checking a
    checkpoint when a pipeline is planned. InputError when it cannot be read or is not a diffrepro
    checkpoint."""
    ckpt = peek_checkpoint(path)
    config = ckpt.get("config") if isinstance(ckpt, dict) else None
    run = config.get("name") if isinstance(config, dict) else None
    if not isinstance(run, str) or "model" not in ckpt:
        raise InputError(f"checkpoint {str(path)!r} is not a diffrepro checkpoint: it lacks the keys config, model")
    return run



@dataclass(frozen=True)
class TrainedRun:
    """A trained run opened from its model.pt: what sample, inpaint and nll (and the benchmarks)
    work with. `model` is the EMA network in eval mode on `device`; `process` carries the trained
    process state (SD-2015's learned β); `data_map` maps stored data to the process's space;
    `digest` is model.pt's SHA-256 (what resumable parts are keyed by)."""

    run: object                       # config.RunConfig the run was trained with
    model: object                     # torch.nn.Module (EMA weights)
    process: object                   # protocol.DiffusionProcess
    data_map: object                  # convention.DataMap
    data_shape: tuple                 # one example's shape
    path: Path
    digest: str

    @classmethod
    def open(cls, path, device, *, run: str | None = None) -> "TrainedRun":
        """Read model.pt (or its .safetensors export) at `path` and rebuild its network and process on
        `device`. run: the run the caller needs; a checkpoint of another run is refused naming the
        file, before anything is computed or written."""
        import torch

        from ..build import build
        from ..config import RunConfig
        from ..convention import DataMap
        from ..interop.safetensors import load_any
        from ..io import file_sha256
        from ..runtime import uses_channels_last

        ckpt = load_any(path)  # model.pt through the safe torch loader, or a .safetensors export
        cfg = RunConfig.from_dict(ckpt["config"])
        shape = tuple(ckpt["data_shape"])
        if run is not None and cfg.name != run:
            raise InputError(f"checkpoint {str(path)!r} is of run {cfg.name!r}, not of run {run!r}; "
                             f"give run {run!r}'s own model.pt (its train stage writes it)")
        try:
            model, process = build(cfg, shape)
            model.load_state_dict(ckpt["model"])
            process.load_state_dict(ckpt["process"])
        except (RuntimeError, KeyError, TypeError) as exc:
            raise InputError(f"checkpoint {str(path)!r} of run {cfg.name!r} does not match its own config "
                             f"({exc})") from None
        model = model.to(device).eval()
        if uses_channels_last(device, len(shape)):  # image networks evaluate in NHWC (fp32)
            model = model.to(memory_format=torch.channels_last)
        return cls(run=cfg, model=model, process=process.to(device),
                   data_map=DataMap.from_dict(ckpt.get("data_map")), data_shape=shape, path=Path(path),
                   digest=file_sha256(path))

    def check_data(self, data_path, x) -> None:
        """Data the caller will feed this run (`x`, read from `data_path`) must have the examples'
        shape it was trained on: InputError naming the data file otherwise."""
        shape = tuple(x.shape[1:])
        if shape != self.data_shape:
            raise InputError(f"data file {str(data_path)!r} holds examples of shape {shape}, but run "
                             f"{self.run.name}'s checkpoint {str(self.path)!r} was trained on shape "
                             f"{self.data_shape}; give the data the run was trained on (its prepare stage writes it)")
