"""`diffrepro generate`: N samples of a trained model with no params file (the checkpoint holds its
config), as PNGs a person opens and one samples.npz with `arr_0` uint8 [N x H x W x C], the layout
external FID tools read (the reference TF evaluator, torch-fidelity, clean-fid)."""
from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from ..io import InputError

LOG = logging.getLogger("diffrepro.generate")


def _check(n: int, batch_size: int, steps, eta: float) -> None:
    if n < 1:
        raise InputError(f"--n = {n} is not allowed; give a whole number >= 1")
    if batch_size < 1:
        raise InputError(f"--batch-size = {batch_size} is not allowed; give a whole number >= 1")
    if steps is not None and steps < 1:
        raise InputError(f"--steps = {steps} is not allowed; give a whole number >= 1 (or leave it out: all T)")
    if eta < 0:
        raise InputError(f"--eta = {eta} is not allowed; it must be >= 0")


def generate(model_path, n: int, out, sampler: str = "ancestral", steps: int | None = None, eta: float = 0.0,
             precision: str | None = None, batch_size: int = 256, seed: int = 0, device: str = "auto",
             threads: int | None = None) -> Path:
    """Write `out`/000000.png … and `out`/samples.npz; every check before any work, `out` whole or not at all.
    precision: the network's autocast (sample.precision's values); None: the checkpoint's own sample.precision."""
    _check(n, batch_size, steps, eta)
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(p.name != "samples.npz" and p.suffix != ".png"
                                                  for p in out.iterdir())):
        raise InputError(f"--out {str(out)!r} exists and holds other files; give a new folder or an earlier "
                         f"generate folder (which is replaced)")
    from ..runtime import configure_threads, pick_device, setup_logging

    setup_logging(None)
    configure_threads(threads or os.cpu_count() or 1)
    import torch

    from ..diffusion.families import family
    from ..runs.checkpoint import TrainedRun
    from ..runs.sampling import draw, for_sampling
    from ..runtime import progress
    from ..tables.plots import to_uint8_images

    dev = pick_device(device)
    trained = TrainedRun.open(model_path, dev)
    run, process = trained.run, trained.process
    if run.dataset.data_type != "image":
        raise InputError(f"{str(model_path)!r} is run {run.name!r} of {run.dataset.data_type} data; generate writes "
                         f"images (use the sample stage for other data)")
    fast = family(run.diffusion.family).fast_sampler
    if not fast and (sampler != "ancestral" or steps not in (None, process.num_timesteps)):
        raise InputError(f"run {run.name!r} is of family {run.diffusion.family!r}, which samples by its own "
                         f"ancestral chain over all T = {process.num_timesteps} steps; allowed: --sampler "
                         f"ancestral without --steps")
    if steps is not None and steps > process.num_timesteps:
        raise InputError(f"--steps = {steps} exceeds the model's T = {process.num_timesteps}; allowed: 1..T")
    # after every check: under bf16 the sampler's network is a copy
    trained = for_sampling(trained, run.sample.precision if precision is None else precision)
    gen = torch.Generator(device=dev).manual_seed(seed)
    walk = steps or process.num_timesteps
    with progress(total=-(-n // batch_size) * walk, desc=f"generate {run.name}", unit="step") as bar:
        x = draw(trained, n, gen, batch_size, sampler, steps, eta, clip_denoised=run.sample.clip_denoised, bar=bar)
    images = to_uint8_images(x.float().numpy())  # [N x H x W x C] uint8
    from PIL import Image

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        for i, img in enumerate(images):
            Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img).save(tmp / f"{i:06d}.png")
        np.savez(tmp / "samples.npz", arr_0=images)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    LOG.info("%s: %d samples of shape %s in %s", run.name, n, trained.data_shape, out)
    return out
