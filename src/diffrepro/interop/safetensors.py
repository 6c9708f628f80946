"""A run's model as safetensors: the EMA weights (and the process's state: SD-2015's learned β) as
tensors, the run's config, data shape and data map as JSON in the file's metadata and beside it
(`<name>.json`). Reading one never unpickles anything, so a foreign file cannot run code.

Keys: `model.<name>` for the network, `process.<name>` for the process. Metadata: `format`,
`config`, `data_shape`, `data_map` (JSON strings), `source_sha256` (the model.pt it came from).
"""
from __future__ import annotations

import json
from pathlib import Path

from ..io import InputError, atomic_path, file_sha256

FORMAT = "diffrepro-safetensors-1"
SUFFIX = ".safetensors"


def save(ckpt: dict, out, config_json=None, source_sha256: str | None = None) -> None:
    """A checkpoint dict (model.pt's) as `out` (.safetensors: the EMA weights and the process state,
    the config in its metadata) and, with `config_json`, that metadata as a JSON file; both atomic."""
    from safetensors.torch import save_file

    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in ckpt["model"].items()}
    tensors.update({f"process.{k}": v.detach().cpu().contiguous() for k, v in (ckpt.get("process") or {}).items()})
    meta = {"format": FORMAT, "config": ckpt["config"], "data_shape": list(ckpt["data_shape"]),
            "data_map": ckpt.get("data_map")}
    if source_sha256 is not None:
        meta["source_sha256"] = source_sha256
    with atomic_path(out) as tmp:
        save_file(tensors, str(tmp), metadata={k: json.dumps(v, sort_keys=True) for k, v in meta.items()})
    if config_json is not None:
        with atomic_path(config_json) as tmp:
            tmp.write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")


def export(model_path, out) -> list:
    """model.pt (or a .safetensors) -> `out` (.safetensors) and `out` with .json; no notes."""
    out = Path(out)
    if out.suffix != SUFFIX:
        raise InputError(f"--out {str(out)!r} must end in {SUFFIX}")
    save(load_any(model_path), out, out.with_suffix(".json"), file_sha256(model_path))
    return []


def load(path) -> dict:
    """A .safetensors written by `export` as a checkpoint dict (config, data_shape, model, process,
    data_map); InputError naming the file when it is not one."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise InputError(f"checkpoint {str(path)!r} is not a readable safetensors file ({exc})") from None
    if meta.get("format") != json.dumps(FORMAT):
        raise InputError(f"checkpoint {str(path)!r} is a safetensors file but not a diffrepro model (its metadata "
                         f"lacks format {FORMAT!r}); write one with `diffrepro export --format safetensors`")
    try:
        fields = {k: json.loads(meta[k]) for k in ("config", "data_shape", "data_map")}
    except (KeyError, ValueError) as exc:
        raise InputError(f"checkpoint {str(path)!r}: its metadata is incomplete ({exc})") from None
    return {"config": fields["config"], "data_shape": fields["data_shape"], "data_map": fields["data_map"],
            "model": {k[6:]: v for k, v in tensors.items() if k.startswith("model.")},
            "process": {k[8:]: v for k, v in tensors.items() if k.startswith("process.")}}


def load_any(path) -> dict:
    """A model.pt (the safe torch loader) or a .safetensors (this module), as a checkpoint dict."""
    from ..runs.checkpoint import load_checkpoint

    return load(path) if Path(path).suffix == SUFFIX else load_checkpoint(path)
