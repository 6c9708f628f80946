"""inpaint: fill the unknown part of test examples with the reverse chain conditioned on the known part.

Masks (1 = known): `right_half` hides the second half of the last axis (image columns; the second
coordinate of 2-D points; the second half of a binary sequence), `center_square` a centred square of
half the image side. Reports the MSE on the hidden values, beside a mean-fill baseline. The chain is
walked as the sample stage walks it (the run's sample.sampler, sample.steps, sample.eta).
"""
from __future__ import annotations

import logging

import numpy as np
import torch

from ..io import check_same_shape, load_data, save_json, save_npz
from ..runs.checkpoint import TrainedRun
from ..runs.sampling import denoise, for_sampling, inpaint
from ..runtime import derive_seed
from ..tables.plots import inpaint_panel

LOG = logging.getLogger("diffrepro.inpaint")
MASKS = ("right_half", "center_square")


def make_mask(name: str, shape) -> np.ndarray:
    """Known-value mask (1 known, 0 hidden) of one example's shape."""
    mask = np.ones(shape, np.float32)
    if name == "right_half":
        mask[..., shape[-1] // 2:] = 0
    elif name == "center_square":
        if len(shape) != 3:
            raise ValueError(f"mask 'center_square' needs images [C x H x W], got example shape {tuple(shape)}")
        h, w = shape[-2:]
        s = max(1, min(h, w) // 2)
        top, left = (h - s) // 2, (w - s) // 2
        mask[:, top:top + s, left:left + s] = 0
    else:
        raise ValueError(f"unknown inpainting mask {name!r}; allowed: {', '.join(MASKS)}")
    return mask


def observe(x: np.ndarray, noise: float, data_type: str, generator: torch.Generator) -> np.ndarray:
    """A noisy observation of x: bits flipped with probability `noise`, else x + noise·N(0, I)."""
    if data_type == "binary":
        draw = torch.rand(x.shape, generator=generator, device=generator.device).cpu().numpy()
        return np.where(draw < noise, 1.0 - x, x).astype(np.float32)
    gauss = torch.randn(x.shape, generator=generator, device=generator.device).cpu().numpy()
    return (x + noise * gauss).astype(np.float32)


def run(args, params, device):
    cfg = params.run(args.run)
    # the sampler's walk, under sample.precision (its network's autocast) as the sample stage walks it
    trained = for_sampling(TrainedRun.open(args.model, device, run=cfg.name), cfg.sample.precision)
    test = load_data(args.test, "test data", cfg.dataset.data_type)["x"]
    x_train = load_data(args.train, "training data", cfg.dataset.data_type)["x"]
    train_mean = x_train.mean(axis=0)
    trained.check_data(args.test, test)
    check_same_shape(x_train, args.train, test, args.test)
    run_cfg, model, process = trained.run, trained.model, trained.process
    data_map = trained.data_map  # SD-2015's images: the chain runs in unit variance
    data_type = run_cfg.dataset.data_type
    x_known = test[: cfg.inpaint.n]
    gen = torch.Generator(device=device).manual_seed(derive_seed(params.seed, "inpaint", cfg.name))
    metrics, panels, arrays = {"mode": cfg.inpaint.mode, "n": int(len(x_known))}, {}, {}
    for name in cfg.inpaint.masks:
        mask = np.broadcast_to(make_mask(name, x_known.shape[1:]), x_known.shape).astype(np.float32)
        filled = inpaint(process, model, data_map.to_process(torch.as_tensor(x_known, device=device)),
                         torch.as_tensor(mask, device=device), generator=gen, mode=cfg.inpaint.mode,
                         sampler=cfg.sample.sampler, steps=cfg.sample.steps, eta=cfg.sample.eta)
        filled = data_map.from_process(filled).cpu().numpy()
        hidden = mask == 0
        mse = float(((filled - x_known) ** 2)[hidden].mean())
        baseline = float(((np.broadcast_to(train_mean, x_known.shape) - x_known) ** 2)[hidden].mean())
        known_err = float(np.abs(filled - x_known)[~hidden].max()) if (~hidden).any() else 0.0
        metrics[f"mse_{name}"] = mse
        metrics[f"mse_mean_fill_{name}"] = baseline
        metrics[f"known_max_abs_err_{name}"] = known_err
        masked = np.where(hidden, 0.0, x_known)  # hidden values drawn mid-grey (images) or 0
        panels[name] = (x_known, masked, filled)
        arrays[f"{name}_filled"] = filled.astype(np.float32)
        arrays[f"{name}_mask"] = mask[0]
        LOG.info("%s %s: hidden-value MSE %.4f (mean fill %.4f)", cfg.name, name, mse, baseline)
    if cfg.inpaint.denoise_noise:
        noisy = observe(x_known, cfg.inpaint.denoise_noise, data_type, gen)
        cleaned = denoise(process, model, data_map.to_process(torch.as_tensor(noisy, device=device)),
                          cfg.inpaint.denoise_noise * data_map.scale, generator=gen, schedule=cfg.inpaint.r_schedule)
        cleaned = data_map.from_process(cleaned).cpu().numpy()
        metrics.update(denoise_noise=cfg.inpaint.denoise_noise, r_schedule=cfg.inpaint.r_schedule,
                       mse_denoise=float(((cleaned - x_known) ** 2).mean()),
                       mse_noisy_observation=float(((noisy - x_known) ** 2).mean()))
        panels["denoise"] = (x_known, noisy, cleaned)
        arrays.update(denoise_noisy=noisy.astype(np.float32), denoise_filled=cleaned.astype(np.float32))
        LOG.info("%s denoise: MSE %.4f (observation %.4f)", cfg.name, metrics["mse_denoise"],
                 metrics["mse_noisy_observation"])
    save_npz(args.arrays, original=x_known.astype(np.float32), **arrays)
    inpaint_panel(args.panel, panels, data_type, f"{cfg.name}: inpainting ({cfg.inpaint.mode})")
    save_json(args.metrics, metrics)
