"""Networks: each maps (x_t [N x ...], t [N] long, 0-based step) -> [N x out_mult*C x ...].

Every constructor takes `data_shape` (one example's shape, e.g. (2,) or (1, 8, 8)), `out_mult`
(how many output tensors of the data's shape the process needs: 1 for ε, 2 for mean+variance),
`num_timesteps` and its own architecture keywords. `build_net` looks the architecture up by name.
"""
from __future__ import annotations

import importlib

# arch name -> (module, class). Modules are imported lazily so a missing optional piece only
# fails when it is asked for.
NETS = {
    "mlp": ("diffrepro.nets.mlp", "TimeMLP"),
    "unet": ("diffrepro.nets.unet", "UNet"),
    "sd_mlp": ("diffrepro.nets.sd_nets", "SDBumpMLP"),
    "sd_multiscale": ("diffrepro.nets.sd_nets", "SDMultiScaleConv"),
    "diffusers": ("diffrepro.nets.diffusers_unet", "DiffusersUNet"),  # a local diffusers folder's UNet2DModel
}


def net_class(arch: str):
    if arch not in NETS:
        raise ValueError(f"unknown network arch {arch!r}; allowed: {', '.join(sorted(NETS))}")
    module, name = NETS[arch]
    return getattr(importlib.import_module(module), name)


def build_net(arch: str, *, data_shape, out_mult: int = 1, num_timesteps: int, **kwargs):
    """Build a network by registry name; kwargs are that architecture's own settings."""
    return net_class(arch)(data_shape=tuple(data_shape), out_mult=out_mult,
                           num_timesteps=num_timesteps, **kwargs)


def count_parameters(net) -> int:
    return sum(p.numel() for p in net.parameters())
