"""A diffusers `UNet2DModel` from a local folder as one of our networks (arch `diffusers`, option
`path`): someone else's DDPM measured by the same bound and FID as ours (DDPM Table 2's NLL in
bits/dim; diffusers itself has no likelihood). Its weights come from the folder when built; a run's
model.pt then holds them as any network's, so sample, inpaint, nll and fid read it unchanged.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn


class DiffusersUNet(nn.Module):
    """(x_t [N x C x H x W], t [N]) -> UNet2DModel(x_t, t) [N x out_mult·C x H x W]."""

    def __init__(self, data_shape, out_mult: int = 1, num_timesteps: int = 1000, path: str | None = None):
        super().__init__()
        from ..interop.diffusers import needs_diffusers, read_folder
        from ..io import InputError

        if path is None:
            raise InputError("a model of arch diffusers needs path: a local diffusers model folder")
        config = read_folder(path, "model path")["unet"]
        channels = tuple(data_shape)[0] if len(data_shape) == 3 else None
        size = config.get("sample_size")
        size = tuple(size) if isinstance(size, (list, tuple)) else (size, size)
        want = (config.get("in_channels"), *size)
        if tuple(data_shape) != want:
            raise InputError(f"the diffusers model at {str(path)!r} takes images of shape {want} "
                             f"(in_channels, sample_size), this run's data has shape {tuple(data_shape)}; "
                             f"allowed: a dataset of shape {want}")
        if config.get("out_channels") != out_mult * channels:
            raise InputError(f"the diffusers model at {str(path)!r} outputs {config.get('out_channels')} channels; "
                             f"this run's process needs {out_mult * channels} ({out_mult} per data channel: "
                             f"{'ε and a variance' if out_mult == 2 else 'the mean target alone'}); set "
                             f"diffusion.var_type to match the model")
        needs_diffusers("a model of arch diffusers")
        from diffusers import UNet2DModel

        try:  # safetensors only: a pickled .bin from elsewhere is never unpickled
            self.unet = UNet2DModel.from_pretrained(Path(path) / "unet", local_files_only=True, use_safetensors=True)
        except (OSError, ValueError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise InputError(f"the diffusers model at {str(path)!r} could not be read with safetensors ({first}); "
                             f"allowed: a folder saved by save_pretrained with safetensors weights (diffusers' "
                             f"default; a .bin holds a pickle, which is never loaded)") from None
        self.config = {"path": str(path)}
        self.data_shape, self.out_mult, self.num_timesteps = tuple(data_shape), out_mult, num_timesteps

    def forward(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.unet(x_t, t, return_dict=False)[0]
