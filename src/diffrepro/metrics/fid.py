"""FID and KID, with torch-fidelity's statistics, in one of three feature spaces, chosen per data set:

- "classifier": a `SmallClassifier` trained on the data set's labels (labelled images);
- "identity": the data themselves (unlabelled points, binary sequences);
- "inception": torch-fidelity's `inception-v3-compat` FID network from local weights
  (metrics/inception.py), the space of every published image FID.

Each is stored as a checkpoint by `save_extractor` and exposes `features(x)`; `extract_features`
computes them, and `fid_kid_from_features` applies torch-fidelity 0.4.0's statistics without
importing torch-fidelity (its package pulls in torchvision and torch's compiler, seconds of start-up
for every job that scores samples): FID from mean and covariance in float64, with its numpy
operations in the same order where each set has more examples than features (with fewer, the same
trace exactly from a small matrix: `frechet_distance`); KID as the unbiased polynomial-kernel MMD²
over random subsets, draw for draw (tests/test_fid.py checks the figures equal torch-fidelity's
own). The data set's reference features are computed once (the `reference` stage) and every run's
samples are scored against them. metrics/fidelity.py registers the classifier and identity
checkpoints as torch-fidelity extractors ("diffrepro-classifier", "diffrepro-identity") for
`torch_fidelity.calculate_metrics`.
Data convention: images [N x C x H x W] float32 in [-1, 1], points [N x 2], binary sequences [N x L].
Nothing is cached or downloaded.
"""
from __future__ import annotations

import json
import os
import time

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from diffrepro.metrics.inception import InceptionFeatures, images_to_uint8
from diffrepro.nets.classifier import IdentityFeatures, SmallClassifier

CHECKPOINT_FORMAT = "diffrepro-feature-extractor/1"
FEATURE_LAYER = "features"
# checkpoint kind -> (network class, torch-fidelity extractor name)
EXTRACTOR_KINDS = {
    "classifier": (SmallClassifier, "diffrepro-classifier"),
    "identity": (IdentityFeatures, "diffrepro-identity"),
    "inception": (InceptionFeatures, None),  # torch-fidelity's own inception-v3-compat network inside
}


def _extractor_kind(kind: str):
    if kind not in EXTRACTOR_KINDS:
        raise ValueError(f"unknown feature extractor kind {kind!r}; "
                         f"allowed: {', '.join(sorted(EXTRACTOR_KINDS))}")
    return EXTRACTOR_KINDS[kind]


def _default_device(x) -> torch.device:
    return x.device if torch.is_tensor(x) else torch.device("cpu")


# ----------------------------------------------------------------------------------------------
# Training the feature classifier
# ----------------------------------------------------------------------------------------------

def _random_shift(x: torch.Tensor, shift_px: int, generator: torch.Generator) -> torch.Tensor:
    """Translate each image of [N x C x H x W] by up to ±shift_px pixels (edges replicated)."""
    n, _, h, w = x.shape
    padded = F.pad(x, (shift_px,) * 4, mode="replicate")
    dy, dx = torch.randint(0, 2 * shift_px + 1, (2, n), generator=generator, device=x.device)
    rows = dy[:, None] + torch.arange(h, device=x.device)  # [N x H]
    cols = dx[:, None] + torch.arange(w, device=x.device)  # [N x W]
    batch = torch.arange(n, device=x.device)[:, None, None]
    return padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)


@torch.no_grad()
def classifier_accuracy(model: SmallClassifier, x, y, batch_size: int = 1024) -> float:
    """Fraction of [N x C x H x W] images whose arg-max logit equals the label y [N]."""
    device = next(model.parameters()).device
    x = torch.as_tensor(x, dtype=torch.float32)
    y = torch.as_tensor(y, dtype=torch.long)
    was_training = model.training
    model.eval()
    correct = 0
    for start in range(0, len(x), batch_size):
        logits = model(x[start:start + batch_size].to(device))
        correct += (logits.argmax(dim=1).cpu() == y[start:start + batch_size].cpu()).sum().item()
    model.train(was_training)
    return correct / len(x)


def train_feature_classifier(x_train, y_train, x_test, y_test, *, steps: int = 1000, batch_size: int = 128,
                             lr: float = 2e-3, width: int = 32, feat_dim: int = 64, augment_shift_px: int = 1,
                             seed: int = 0, device=None, progress: bool = False):
    """Train a `SmallClassifier` with Adam and cross-entropy on images x [N x C x H x W] in [-1, 1].

    Labels y are int [N] in 0..num_classes-1. Augmentation: random translations of up to
    `augment_shift_px` pixels (0 disables). Deterministic given `seed`; `device` defaults to
    x_train's (CPU for numpy arrays). Afterwards the features are scaled to unit mean square on
    x_train (`SmallClassifier.calibrate_feature_scale`). Returns (model in eval mode,
    {"test_accuracy", "train_accuracy", "train_seconds", "steps", "feature_scale"}).
    """
    device = torch.device(device) if device is not None else _default_device(x_train)
    x = torch.as_tensor(x_train, dtype=torch.float32).to(device)
    y = torch.as_tensor(y_train, dtype=torch.long).to(device)
    if x.dim() != 4:
        raise ValueError(f"train_feature_classifier needs images [N x C x H x W], got shape {list(x.shape)}")
    num_classes = int(max(int(y.max()), int(torch.as_tensor(y_test).max()))) + 1
    with torch.random.fork_rng(devices=[]):  # seeded init without touching the caller's global RNG
        torch.manual_seed(seed)
        model = SmallClassifier(in_shape=tuple(x.shape[1:]), num_classes=num_classes,
                                width=width, feat_dim=feat_dim)
    model.to(device).train()
    generator = torch.Generator(device=device).manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    start_time = time.perf_counter()
    for _ in tqdm(range(steps), disable=not progress, desc="feature classifier", leave=False):
        idx = torch.randint(0, len(x), (min(batch_size, len(x)),), generator=generator, device=device)
        x_batch = x[idx]
        if augment_shift_px > 0:
            x_batch = _random_shift(x_batch, augment_shift_px, generator)
        loss = F.cross_entropy(model(x_batch), y[idx])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    train_seconds = time.perf_counter() - start_time
    model.eval().requires_grad_(False)
    feature_scale = model.calibrate_feature_scale(x)
    return model, {"test_accuracy": classifier_accuracy(model, x_test, y_test),
                   "train_accuracy": classifier_accuracy(model, x_train, y_train),
                   "train_seconds": train_seconds, "steps": steps, "feature_scale": feature_scale}


# ----------------------------------------------------------------------------------------------
# Extractor checkpoints
# ----------------------------------------------------------------------------------------------

def identity_extractor_meta(data_shape) -> dict:
    """Meta for unlabelled data: features are the flattened data [N x prod(data_shape)].

    Use as `save_extractor(path, None, identity_extractor_meta(data_shape))`.
    """
    return {"kind": "identity", "data_shape": [int(s) for s in data_shape]}


def _kind_of(model) -> str:
    for kind, (cls, _) in EXTRACTOR_KINDS.items():
        if isinstance(model, cls):
            return kind
    raise TypeError(f"cannot save a {type(model).__name__} as a feature extractor; allowed: "
                    f"{', '.join(cls.__name__ for cls, _ in EXTRACTOR_KINDS.values())}")


def save_extractor(path, model, meta: dict | None = None) -> None:
    """Write {kind, constructor config, state_dict, meta} to `path` atomically (temp file + os.replace).

    `model` is a trained `SmallClassifier` or `IdentityFeatures`; `None` with
    `identity_extractor_meta(...)` as meta saves the identity extractor. `meta` must be JSON-like
    (str, numbers, lists, dicts), e.g. the data set name and the classifier's test accuracy.
    """
    try:  # meta must survive torch.load(weights_only=True): plain JSON-like values only
        meta = json.loads(json.dumps(dict(meta or {})))
    except TypeError as err:
        raise TypeError(f"save_extractor meta must hold plain JSON values (str, numbers, lists, dicts): "
                        f"{err}") from err
    if model is None:
        if meta.get("kind") != "identity" or "data_shape" not in meta:
            raise ValueError("save_extractor got model=None; that is only allowed with "
                             "meta=identity_extractor_meta(data_shape)")
        model = IdentityFeatures(meta["data_shape"])
    kind = _kind_of(model)
    meta["kind"] = kind
    checkpoint = {"format": CHECKPOINT_FORMAT, "kind": kind, "config": model.config,
                  "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()}, "meta": meta}
    from ..io import save_torch

    save_torch(path, checkpoint)  # atomically, with the umask's permissions


def _read_checkpoint(path) -> dict:
    from ..io import load_torch

    if path is None or not os.path.isfile(path):
        raise FileNotFoundError(f"feature extractor checkpoint not found: {path!r} "
                                f"(write one with save_extractor)")
    # tensors and plain values only: never runs code
    checkpoint = load_torch(path, "feature extractor", "a feature extractor checkpoint")
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path!r} is not a feature extractor checkpoint (format {CHECKPOINT_FORMAT!r})")
    _extractor_kind(checkpoint["kind"])
    return checkpoint


def load_extractor(path, device=None):
    """Rebuild a `save_extractor` checkpoint: (SmallClassifier | IdentityFeatures in eval mode, meta)."""
    checkpoint = _read_checkpoint(path)
    cls, _ = _extractor_kind(checkpoint["kind"])
    model = cls(**checkpoint["config"])
    model.load_state_dict(checkpoint["state_dict"])
    model.eval().requires_grad_(False)
    if device is not None:
        model.to(device)
    return model, checkpoint["meta"]


# ----------------------------------------------------------------------------------------------
# Metrics
# ----------------------------------------------------------------------------------------------

def resolve_kid_subset_size(kid_subset_size, n_a: int, n_b: int) -> int:
    """KID subset size: min(1000, n/2) when None (torch-fidelity's 1000 of 50k, and at most half the
    smaller set: subsets as large as the set are all the same draw, and their spread, kid_std, is then
    ~0 instead of an uncertainty); else checked."""
    largest = min(n_a, n_b)
    if largest < 4:
        raise ValueError(f"KID needs at least 4 samples per set (subsets of half of them), got {n_a} and {n_b}")
    if kid_subset_size is None:
        return min(1000, largest // 2)
    if not 2 <= int(kid_subset_size) <= largest:
        raise ValueError(f"kid_subset_size={kid_subset_size} must lie in "
                         f"[2, min(len(a), len(b)) = {largest}]")
    return int(kid_subset_size)


@torch.no_grad()
def extract_features(extractor, x, *, batch_size: int = 256, device=None, quantize_8bit: bool = False,
                     progress: str | None = None) -> torch.Tensor:
    """Features [N x F] (float32, CPU) of examples x [N x ...] in the data convention, in the space of
    a `save_extractor` checkpoint (a path) or an already loaded extractor network.

    `quantize_8bit` first rounds images to 256 levels (samples scored as saved 8-bit images); the
    Inception extractor always sees 8-bit RGB. `progress`: a tqdm label, or None for no bar.
    """
    net = load_extractor(extractor, device)[0] if isinstance(extractor, (str, os.PathLike)) else extractor
    kind = _kind_of(net)
    if quantize_8bit and kind == "identity":
        raise ValueError(f"quantize_8bit only applies to images (a 'classifier' or 'inception' extractor), "
                         f"not {kind!r}")
    dev = next(iter(net.buffers()), torch.zeros(())).device if kind == "identity" else next(net.parameters()).device
    x = torch.as_tensor(x)
    out = []
    for start in tqdm(range(0, len(x), batch_size), disable=progress is None, desc=progress, leave=False):
        batch = x[start:start + batch_size]
        batch = batch if batch.dtype == torch.uint8 else batch.to(torch.float32)
        if quantize_8bit and batch.dtype != torch.uint8:
            batch = images_to_uint8(batch).to(torch.float32) / 127.5 - 1.0
        out.append(net.features(batch.to(dev)).to(torch.float32).cpu())
    return torch.cat(out) if out else torch.zeros((0, 0))


def frechet_distance(f_a: np.ndarray, f_b: np.ndarray) -> float:
    """FID (Heusel et al. 2017, Sec. 3): ||μ_a − μ_b||² + tr(Σ_a + Σ_b − 2 (Σ_a Σ_b)^½) of the Gaussians
    fitted to features [N x F] in float64.

    With at least F + 1 examples in each set, tr (Σ_a Σ_b)^½ is the sum of the square roots of the
    product's eigenvalues (torch-fidelity 0.4.0's fid_statistics_to_metric, operation for operation).
    With fewer (8 samples in 2048 Inception features) both covariances are singular, and the same trace
    comes exactly from the small cross-Gram matrix: with Σ_a = AᵀA, Σ_b = BᵀB (A, B the centred
    features over √(n − 1)), the non-zero eigenvalues of AᵀA BᵀB are those of (ABᵀ)(ABᵀ)ᵀ, so
    tr (Σ_a Σ_b)^½ is the sum of the singular values of ABᵀ [n_a x n_b]: no F x F eigenproblem, and
    no rounding noise from the product's ~F zero eigenvalues."""
    n_a, n_b, dim = len(f_a), len(f_b), f_a.shape[1]
    if min(n_a, n_b) < 2:
        raise ValueError(f"FID needs at least 2 examples per set (a covariance), got {n_a} and {n_b}")
    mu_a, mu_b = np.mean(f_a, axis=0), np.mean(f_b, axis=0)
    diff = mu_a - mu_b
    if min(n_a, n_b) > dim:
        sigma_a, sigma_b = np.cov(f_a, rowvar=False), np.cov(f_b, rowvar=False)
        tr_covmean = np.sum(np.sqrt(np.linalg.eigvals(sigma_a.dot(sigma_b)).astype("complex128")).real)
        return float(diff.dot(diff) + np.trace(sigma_a) + np.trace(sigma_b) - 2 * tr_covmean)
    a, b = (f_a - mu_a) / np.sqrt(n_a - 1), (f_b - mu_b) / np.sqrt(n_b - 1)
    tr_covmean = np.linalg.svd(a @ b.T, compute_uv=False).sum()
    return float(diff.dot(diff) + np.sum(a * a) + np.sum(b * b) - 2 * tr_covmean)


def kernel_distance(f_a: np.ndarray, f_b: np.ndarray, *, subset_size: int, subsets: int, seed: int):
    """KID (Bińkowski et al. 2018, Sec. 3): the unbiased estimate of MMD² under the kernel
    k(x, y) = (x·y / F + 1)³, over `subsets` pairs of random subsets of `subset_size` drawn without
    replacement by numpy's RandomState(seed) (torch-fidelity 0.4.0's kid_features_to_metric and
    defaults, draw for draw). Returns (mean, std) over the subsets.

    Only sums of kernel values enter the estimate. With few features (F³ ≤ subset size: the 2-D
    points) they come from the kernel's moments instead of the m x m kernel matrices:
    k = 1 + 3γs + 3γ²s² + γ³s³ with s = x·y, and Σ_ij s^p = <Σ_i x_i^⊗p, Σ_j y_j^⊗p> (moment tensors of
    F^p entries), the same sums in O(m F³) instead of O(m² F), equal up to float rounding."""
    rng = np.random.RandomState(seed)
    gamma, m = 1.0 / f_a.shape[1], subset_size
    sums = _kernel_sums_by_moments if f_a.shape[1] ** 3 <= m else _kernel_sums_by_matrices
    mmds = np.zeros(subsets)
    for i in range(subsets):
        x = f_a[rng.choice(len(f_a), m, replace=False)]
        y = f_b[rng.choice(len(f_b), m, replace=False)]
        within_x, within_y, across = sums(x, y, gamma)
        mmds[i] = (within_x + within_y) / (m * (m - 1)) - 2 * across / (m * m)
    return float(np.mean(mmds)), float(np.std(mmds))


def _kernel_sums_by_matrices(x, y, gamma):
    """(Σ_{i≠j} k(x_i, x_j), Σ_{i≠j} k(y_i, y_j), Σ_ij k(x_i, y_j)) from the kernel matrices."""
    def total(u, v, off_diagonal):
        k = np.matmul(u, v.T)
        k *= gamma
        k += 1
        k = k * k * k
        return k.sum() - (np.trace(k) if off_diagonal else 0.0)

    return total(x, x, True), total(y, y, True), total(x, y, False)


def _kernel_sums_by_moments(x, y, gamma):
    """The sums of _kernel_sums_by_matrices from the moment tensors of x and y (k is a cubic in x·y)."""
    def moments(u):
        return (len(u), u.sum(axis=0), np.einsum("ni,nj->ij", u, u), np.einsum("ni,nj,nk->ijk", u, u, u))

    def total(mu, mv):
        return mu[0] * mv[0] + 3 * gamma * mu[1] @ mv[1] + 3 * gamma ** 2 * np.sum(mu[2] * mv[2]) \
            + gamma ** 3 * np.sum(mu[3] * mv[3])

    def diagonal(u):
        return np.sum((gamma * np.einsum("ni,ni->n", u, u) + 1) ** 3)

    mx, my = moments(x), moments(y)
    return total(mx, mx) - diagonal(x), total(my, my) - diagonal(y), total(mx, my)


def fid_kid_from_features(f_a, f_b, *, kid_subset_size: int | None = None, kid_subsets: int = 100,
                          seed: int = 0) -> dict:
    """FID (Fréchet distance of the features' Gaussians, in float64) and KID (unbiased
    polynomial-kernel MMD² over `kid_subsets` random subsets, drawn from `seed`) of features [N x F],
    torch-fidelity 0.4.0's figures. Returns {"fid", "kid_mean", "kid_std", "kid_subset_size"}."""
    f_a, f_b = (torch.as_tensor(f).to(torch.float64).cpu().numpy() for f in (f_a, f_b))
    if f_a.ndim != 2 or f_b.ndim != 2 or f_a.shape[1] != f_b.shape[1]:
        raise ValueError(f"features must be [N x F] with the same F, got {list(f_a.shape)} and {list(f_b.shape)}")
    subset_size = resolve_kid_subset_size(kid_subset_size, len(f_a), len(f_b))
    kid_mean, kid_std = kernel_distance(f_a, f_b, subset_size=subset_size, subsets=kid_subsets, seed=seed)
    return {"fid": frechet_distance(f_a, f_b), "kid_mean": kid_mean, "kid_std": kid_std,
            "kid_subset_size": subset_size}


def fid_kid(x_a, x_b, extractor_path, *, kid_subset_size: int | None = None, kid_subsets: int = 100,
            quantize_8bit: bool = False, batch_size: int = 256, device=None, seed: int = 0) -> dict:
    """FID and KID between samples x_a and x_b [N x ...] in the features of a `save_extractor` checkpoint.

    `quantize_8bit` rounds images to the 256 levels first (samples scored as saved 8-bit images).
    `kid_subset_size` defaults to min(1000, n/2). Deterministic given `seed`.
    Returns {"fid", "kid_mean", "kid_std", "kid_subset_size"}.
    """
    device = device if device is not None else _default_device(x_a)
    net = load_extractor(extractor_path, device)[0]
    f_a, f_b = (extract_features(net, x, batch_size=batch_size, quantize_8bit=quantize_8bit) for x in (x_a, x_b))
    return fid_kid_from_features(f_a, f_b, kid_subset_size=kid_subset_size, kid_subsets=kid_subsets, seed=seed)


@torch.no_grad()
def inception_score(net, x, *, batch_size: int = 256, splits: int = 10, seed: int = 0) -> dict:
    """Inception Score (torch-fidelity's isc over `splits`) of images x with an Inception extractor that
    has the classifier head; raises InceptionError where it has none."""
    import torch_fidelity
    from torch_fidelity.metric_isc import isc_features_to_metric

    logits = torch.cat([net.logits(torch.as_tensor(x[i:i + batch_size])).cpu()
                        for i in range(0, len(x), batch_size)])
    out = isc_features_to_metric(logits.to(torch.float64), splits=min(splits, len(x)), shuffle=True, rng_seed=seed)
    return {"inception_score": float(out[torch_fidelity.KEY_METRIC_ISC_MEAN]),
            "inception_score_std": float(out[torch_fidelity.KEY_METRIC_ISC_STD])}
