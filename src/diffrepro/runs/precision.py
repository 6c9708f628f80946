"""The network's numeric precision: training's autocast (train.precision) and the sampler's
(sample.precision). One rule for both: fp32, or bf16 autocast, in which the convolutions and matmuls
compute in bf16 and everything around the network (the loss, Adam, the EMA, the reverse step's
arithmetic) stays float32, SD-2015's schedule float64. The bound (the nll stage, the curve stage's
bound) always computes in fp32.
"""
from __future__ import annotations

import torch

from ..choices import Choice
from ..diffusion.families import family


class Precision(Choice):
    """train.precision and sample.precision (autocast_bf16 and sampling_bf16 say what auto picks)."""

    AUTO = "auto"
    FP32 = "fp32"
    BF16 = "bf16"


def autocast_bf16(run, device: torch.device) -> bool:
    """train.precision of `run` (a config.RunConfig): bf16 autocast or fp32. auto: bf16 on CUDA for the
    families whose training allows it (DDPM's; SD-2015's learned β and float64 schedule math stay fp32),
    fp32 on the CPU. There, on this project's Xeon (AMX), the digits U-Net under bf16 trains faster
    than fp32 NHWC with one thread (2544 vs 2288 images/s) but slower with two (2880 vs 3107), and on
    its AMD EPYC 1.4x faster with one (docs/benchmarks.md), so bf16 is the run's call: the default
    params.yaml makes it for digits-ddpm, whose jobs take one thread. The network's forward runs in
    bf16, the loss, Adam, the master weights and the EMA in fp32."""
    precision = Precision.from_str(run.train.precision)
    if precision is not Precision.AUTO:
        return precision is Precision.BF16
    return device.type == "cuda" and family(run.diffusion.family).bf16_autocast


def sampling_bf16(precision: str, run, device: torch.device) -> bool:
    """sample.precision (`precision`) for trained run `run` on `device`: whether the sampler's network
    runs under bf16 autocast. auto: at the precision the run trained at there (autocast_bf16 of its
    config), so a model trained under bf16 samples under bf16 and one trained in fp32 in fp32."""
    chosen = Precision.from_str(precision)
    if chosen is Precision.AUTO:
        return autocast_bf16(run, device)
    return chosen is Precision.BF16


# layers whose op autocast runs in bf16 (convolution, linear): their weights are cast once, as autocast
# would cast them on every call
_CAST_ONCE = (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d, torch.nn.Linear)


class Autocast(torch.nn.Module):
    """`net` run under bf16 autocast with its output back in float32, so the reverse step's arithmetic
    (DDPM's posterior, SD-2015's float64 kernel) sees what an fp32 network would hand it. Its weights
    stay as they are (training's grids sample the EMA this way, whose float32 weights go on training)."""

    def __init__(self, net: torch.nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=x.device.type, dtype=torch.bfloat16):
            out = self.net(x, t)
        return out.float()


class Bf16Net(Autocast):
    """The sampler's network at sample.precision bf16: Autocast that takes `net` over (pass a copy to
    keep an fp32 one). The weights and biases of its convolutions and linear layers are held in bf16,
    the cast autocast makes of them on every call (its cache lasts one autocast region, a forward
    here), made once: the outputs are autocast's bit for bit, and a sampling step does not re-cast the
    weights (the digits U-Net's forward: 3-4% at batch 128, nothing at 360). The other parameters
    (GroupNorm's, SD-2015's RBF centres) stay float32."""

    def __init__(self, net: torch.nn.Module):
        for layer in net.modules():
            if isinstance(layer, _CAST_ONCE):
                layer.to(torch.bfloat16)
        super().__init__(net)
