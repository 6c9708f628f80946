"""Procedural data sets of SD-2015: the 2-D swiss roll, binary heartbeat sequences, dead-leaves images."""
from __future__ import annotations

import math
import numbers

import numpy as np

from diffrepro.data import DatasetSplit, check_positive_int
from diffrepro.data.images import PIXEL_SCALING, uint8_to_model_range


def _check_nonnegative(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0.0 <= value < math.inf:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return float(value)


# ---------------------------------------------------------------- swiss roll

def swissroll_points(rng: np.random.Generator, n: int, noise: float = 0.0) -> np.ndarray:
    """Raw swiss-roll points `[n x 2]` (float64): scikit-learn's make_swiss_roll (x, z) coordinates.

    Angle t = 1.5 pi (1 + 2u), u ~ U(0, 1); the point is (t cos t, t sin t) plus N(0, noise^2) per axis.
    """
    t = 1.5 * np.pi * (1.0 + 2.0 * rng.random(n))
    points = np.stack([t * np.cos(t), t * np.sin(t)], axis=1)
    return points + noise * rng.standard_normal((n, 2))


def swissroll(rng: np.random.Generator, *, n_train: int = 10_000, n_test: int = 2_000,
              noise: float = 0.0) -> DatasetSplit:
    """2-D swiss roll, standardised per coordinate ("rescaled to unit variance", SD-2015).

    The data noise (std `noise`, in raw units) is added before standardising. The mean and std come
    from the training points and are applied to both splits; info keeps them so that
    raw = x * standardise_std + standardise_mean.
    """
    n_train, n_test = check_positive_int("n_train", n_train), check_positive_int("n_test", n_test)
    noise = _check_nonnegative("noise", noise)
    points = swissroll_points(rng, n_train + n_test, noise)
    mean, std = points[:n_train].mean(axis=0), points[:n_train].std(axis=0)
    x = ((points - mean) / std).astype(np.float32)
    info = {"noise": noise, "standardise_mean": mean.tolist(), "standardise_std": std.tolist()}
    return DatasetSplit(x[:n_train], None, x[n_train:], None, "points", info)


# ---------------------------------------------------------------- heartbeat

def heartbeat(rng: np.random.Generator, *, n_train: int = 10_000, n_test: int = 4_000,
              length: int = 20, period: int = 5) -> DatasetSplit:
    """Binary sequences `[N x length]` in {0, 1}: a 1 every `period`-th bin from a uniform random phase.

    There are exactly `period` distinct sequences, equally likely, so the true entropy is
    log2(period) bits per sequence (2.32 bits for SD-2015's period 5).
    """
    n_train, n_test = check_positive_int("n_train", n_train), check_positive_int("n_test", n_test)
    length, period = check_positive_int("length", length), check_positive_int("period", period)
    if period > length:
        raise ValueError(f"period must be <= length so that every phase fires; got period={period}, "
                         f"length={length}")
    phase = rng.integers(period, size=n_train + n_test)
    x = ((np.arange(length)[None, :] - phase[:, None]) % period == 0).astype(np.float32)
    all_phases = (np.arange(length)[None, :] - np.arange(period)[:, None]) % period == 0
    info = {"length": length, "period": period, "true_entropy_bits": math.log2(period),
            "firing_rate": float(all_phases.mean())}
    return DatasetSplit(x[:n_train], None, x[n_train:], None, "binary", info)


# ---------------------------------------------------------------- dead leaves

LEAF_RADIUS_EXPONENT = 3   # leaf radius density f(r) ∝ r^-3 on [r_min, r_max]: scale-invariant statistics
COVER_DEPTH = 10.0         # mean number of leaves drawn over a pixel; it shows the background w.p. e^-10
_CHUNK_IMAGES = 64         # images rendered together (fixed, so image i never depends on n)


def _power_law_integral(k: int, a: float, b: float) -> float:
    """Integral of r^-k over [a, b]."""
    return math.log(b / a) if k == 1 else (a ** (1 - k) - b ** (1 - k)) / (k - 1)


def _sample_power_law(rng: np.random.Generator, k: int, a: float, b: float, size) -> np.ndarray:
    """Inverse-CDF draws from the density ∝ r^-k on [a, b]."""
    u = rng.random(size)
    if k == 1:
        return a * (b / a) ** u
    return (a ** (1 - k) + u * (b ** (1 - k) - a ** (1 - k))) ** (1.0 / (1 - k))


def _touching_radius_terms(image_size: int, r_min: float, r_max: float):
    """(exponent, weight) terms of g(r) ∝ f(r) (S + 2r)^2, the radius density of leaves that reach
    an S x S window: S^2 r^-k + 4S r^-(k-1) + 4 r^-(k-2) on [r_min, r_max], k = LEAF_RADIUS_EXPONENT."""
    s, k = float(image_size), LEAF_RADIUS_EXPONENT
    terms = [(k, s * s), (k - 1, 4.0 * s), (k - 2, 4.0)]
    return [(k, c * _power_law_integral(k, r_min, r_max)) for k, c in terms]


def sample_leaf_radii(rng: np.random.Generator, size, image_size: int, r_min: float, r_max: float) -> np.ndarray:
    """Radii of the leaves that reach the S x S window: density ∝ r^-3 (S + 2r)^2, sampled as a mixture
    of three truncated power laws."""
    terms = _touching_radius_terms(image_size, r_min, r_max)
    weights = np.array([w for _, w in terms])
    which = rng.choice(len(terms), size=size, p=weights / weights.sum())
    radii = np.empty(size)
    for i, (k, _) in enumerate(terms):
        radii[which == i] = _sample_power_law(rng, k, r_min, r_max, int((which == i).sum()))
    return radii


def leaves_per_image(image_size: int, r_min: float, r_max: float) -> int:
    """Leaves to draw per image so a pixel is covered COVER_DEPTH times on average.

    A leaf of radius r reaching the window has its centre uniform on the (S + 2r)-square, so it covers
    a given pixel with probability pi r^2 / (S + 2r)^2; averaged over g that is E_f[pi r^2] / E_f[(S + 2r)^2].
    """
    s, k = float(image_size), LEAF_RADIUS_EXPONENT
    z = _power_law_integral(k, r_min, r_max)
    mean_r = _power_law_integral(k - 1, r_min, r_max) / z
    mean_r2 = _power_law_integral(k - 2, r_min, r_max) / z
    cover_prob = math.pi * mean_r2 / (s * s + 4 * s * mean_r + 4 * mean_r2)
    return math.ceil(COVER_DEPTH / cover_prob)


def _front_leaf(radii: np.ndarray, centres: np.ndarray, image_size: int) -> np.ndarray:
    """Index of the front-most (lowest-index) leaf over each pixel, `[m x S x S]`; K where none is.

    radii `[m x K]`, centres `[m x K x 2]` as (x, y). Only the pixels of each leaf's bounding box are
    tested, grouped by box side so each group is one dense `[L x side x side]` test: the cost follows
    the leaves' areas rather than K x S^2.
    """
    m, k = radii.shape
    s = image_size
    # pixel j's centre j + 0.5 lies in [c - r, c + r]  <=>  ceil(c - r - 0.5) <= j <= floor(c + r - 0.5)
    lo = np.clip(np.ceil(centres - radii[..., None] - 0.5), 0, s).astype(np.int64).reshape(-1, 2)
    hi = np.clip(np.floor(centres + radii[..., None] - 0.5), -1, s - 1).astype(np.int64).reshape(-1, 2)
    side = (hi - lo + 1).max(axis=1)
    flat_centres, flat_radii = centres.reshape(-1, 2), radii.reshape(-1)
    front = np.full(m * s * s, k, dtype=np.int64)
    for b in np.unique(side[side > 0]):
        leaf = np.flatnonzero(side == b)
        cols = lo[leaf, 0, None] + np.arange(b)                                   # [L x b]
        rows = lo[leaf, 1, None] + np.arange(b)
        dx2 = np.where(cols <= hi[leaf, 0, None], (cols + 0.5 - flat_centres[leaf, 0, None]) ** 2, np.inf)
        dy2 = np.where(rows <= hi[leaf, 1, None], (rows + 0.5 - flat_centres[leaf, 1, None]) ** 2, np.inf)
        inside = dy2[:, :, None] + dx2[:, None, :] <= flat_radii[leaf, None, None] ** 2   # [L x b x b]
        pixel = (leaf // k * s * s)[:, None, None] + rows[:, :, None] * s + cols[:, None, :]
        np.minimum.at(front, pixel[inside], np.broadcast_to((leaf % k)[:, None, None], inside.shape)[inside])
    return front.reshape(m, s, s)


def render_dead_leaves(rng: np.random.Generator, n: int, image_size: int, r_min: float,
                       r_max: float) -> np.ndarray:
    """Dead-leaves images `[n x S x S]` uint8: occluding discs, the first drawn in front.

    Each leaf has a radius from `sample_leaf_radii`, a centre uniform on [-r, S + r]^2 and a grey level
    uniform on 0..255; a pixel (centre at (j + 0.5, i + 0.5)) takes the grey of the front-most leaf
    covering it, or a per-image uniform background grey if none does.
    """
    s, n_leaves = image_size, leaves_per_image(image_size, r_min, r_max)
    images = np.empty((n, s, s), dtype=np.uint8)
    for start in range(0, n, _CHUNK_IMAGES):
        m = min(_CHUNK_IMAGES, n - start)
        radii = sample_leaf_radii(rng, (m, n_leaves), s, r_min, r_max)
        centres = rng.random((m, n_leaves, 2)) * (s + 2 * radii)[..., None] - radii[..., None]
        greys = rng.integers(0, 256, size=(m, n_leaves + 1), dtype=np.uint8)  # last column: background
        front = _front_leaf(radii, centres, s)
        images[start:start + m] = greys[np.arange(m)[:, None, None], front]
    return images


def deadleaves(rng: np.random.Generator, *, n_train: int = 10_000, n_test: int = 2_000, image_size: int = 16,
               r_min: float = 1.0, r_max: float | None = None) -> DatasetSplit:
    """Grayscale dead-leaves images `[N x 1 x S x S]`, 8-bit then rescaled to [-1, 1].

    Leaf radii (pixels) follow r^-3 on [r_min, r_max]; r_max defaults to image_size / 2.
    """
    n_train, n_test = check_positive_int("n_train", n_train), check_positive_int("n_test", n_test)
    image_size = check_positive_int("image_size", image_size)
    r_max = image_size / 2 if r_max is None else r_max
    r_min, r_max = _check_nonnegative("r_min", r_min), _check_nonnegative("r_max", r_max)
    if not 0.0 < r_min < r_max:
        raise ValueError(f"need 0 < r_min < r_max, got r_min={r_min}, r_max={r_max}")
    x = uint8_to_model_range(render_dead_leaves(rng, n_train + n_test, image_size, r_min, r_max))[:, None]
    info = {"image_size": image_size, "r_min": r_min, "r_max": r_max,
            "radius_density": f"r^-{LEAF_RADIUS_EXPONENT}", "scaling": PIXEL_SCALING,
            "leaves_per_image": leaves_per_image(image_size, r_min, r_max)}
    return DatasetSplit(x[:n_train], None, x[n_train:], None, "image", info)
