"""Image conventions: how stored images meet a diffusion process, and the unit of their bound.

Stored images are always the data's own levels v = 0..L-1 rescaled to [-1, 1] (data/images.py), so
pictures, FID features and Parzen windows never ask which convention a run used. What the process
models, and so what its bound means, is the dataset's `image_convention`:

- `ddpm` (default, DDPM §3.3): the process sees the stored values; its first step is a discretised
  decoder over the L bins; the bound is in bits/dim of those levels.
- `sd2015` (SD-2015 §3 and its code, `train.py`/`model.py`): the levels are dequantised with uniform
  noise, v + u with u ~ U(-½, ½) drawn afresh for every batch, and rescaled to zero mean and unit
  variance over the training set, z = (v + u − μ)/s; the process is continuous (a Gaussian first
  step, no bins), and K, L_null and K − L_null are in bits per pixel — a density of z summed over
  the colour channels of a pixel (the paper code's `L_diff_bits.mean() * n_colors`).

The two are linked by the dequantisation bound (Theis, van den Oord & Bethge 2016): for every v,
−log P(v) ≤ E_u[−log p_z((v + u − μ)/s)] + D log s, so an sd2015 bound also gives an upper bound in
bits/dim of the data's own levels (`DataMap.levels_nats`), set beside DDPM's figures.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch

from .choices import Choice
from .diffusion.draws import Shard, rand


class ImageConvention(Choice):
    DDPM = "ddpm"        # discrete levels in [-1, 1], discretised decoder, bits/dim
    SD2015 = "sd2015"    # dequantised, unit variance, continuous decoder, bits/pixel


@dataclass(frozen=True)
class DataMap:
    """The map between stored examples and the process's space; identity except for sd2015 images.

    levels: the data's quantisation levels L (images); mean, std: μ and s of the dequantised
    training levels (in level units; sd2015 only). Saved in every checkpoint (`as_dict`), so the
    stages that sample or score a trained model use the training set's μ and s.
    """

    convention: str = ImageConvention.DDPM.value
    levels: int | None = None
    mean: float = 0.0
    std: float = 1.0

    @classmethod
    def fit(cls, convention: str | None, x_train: np.ndarray, levels: int | None) -> "DataMap":
        """μ and s of the training images' dequantised levels (sd2015), else the identity map."""
        convention = ImageConvention.from_str(convention or "ddpm")
        if convention is ImageConvention.DDPM:
            return cls(ImageConvention.DDPM.value, levels)
        v = (np.asarray(x_train, dtype=np.float64) + 1.0) * (levels - 1) / 2.0
        # E[v + u] = E[v]; Var[v + u] = Var[v] + 1/12 (u uniform on a unit bin, independent of v)
        return cls(convention.value, levels, float(v.mean()), float(math.sqrt(v.var() + 1.0 / 12.0)))

    @classmethod
    def from_dict(cls, d: dict | None) -> "DataMap":
        return cls(**d) if d else cls()

    def as_dict(self) -> dict:
        return asdict(self)

    @property
    def continuous(self) -> bool:
        """True when the process models a density (no bins): its decoder is Gaussian."""
        return self.convention == ImageConvention.SD2015.value

    @property
    def scale(self) -> float:
        """dz/dx: how far the process's space moves for a unit step of the stored values (an
        observation's noise level is multiplied by it)."""
        return (self.levels - 1) / (2.0 * self.std) if self.continuous else 1.0

    def to_process(self, x: torch.Tensor, generator: torch.Generator | Shard | None = None) -> torch.Tensor:
        """Stored examples `[N x ...]` -> the process's space. sd2015: dequantised with a fresh
        uniform draw from `generator` (None: the bin centres, e.g. for the known pixels of
        inpainting), then standardised."""
        if not self.continuous:
            return x
        v = (x.double() + 1.0) * ((self.levels - 1) / 2.0)
        if generator is not None:
            v = v + rand(tuple(x.shape), generator, x.device, dtype=torch.float64) - 0.5
        return ((v - self.mean) / self.std).to(x.dtype)

    def from_process(self, z: torch.Tensor) -> torch.Tensor:
        """The process's samples -> stored examples: sd2015 values are rounded to the nearest level
        (clipped to 0..L-1) and rescaled to [-1, 1]."""
        if not self.continuous:
            return z
        v = torch.floor(z.double() * self.std + self.mean + 0.5).clamp(0, self.levels - 1)  # bins [v - ½, v + ½)
        half = torch.tensor((self.levels - 1) / 2, dtype=torch.float32)  # as data.images.levels_to_model_range
        return (v.float() / half - 1.0).to(z.dtype)

    def levels_nats(self, nats_process: np.ndarray, dims: int) -> np.ndarray:
        """Per-example −log density of z (nats) -> an upper bound on −log P(v) of the levels
        (nats): + D log s, the dequantisation bound."""
        return np.asarray(nats_process) + dims * math.log(self.std)
