"""parzen: SD-2015 Table 2's Parzen-window log-likelihood of the test set under a run's samples, in bits
per example on [0, 1] pixels, beside the same estimate with training images as the kernels (the
paper's "Parzen on training samples" row, 349 bits on MNIST).

Protocol (Goodfellow et al. 2014, metrics/parzen.py): σ is chosen on a grid by the mean log-likelihood
of a validation split of the training set (a seeded 1,000 images, at most half the set), then the
first `eval.parzen_n` test images are scored. The training-image kernels are drawn from the rest of
the training set, as many as the run has samples, so they never include a validation image. Images
are stored in [-1, 1] and mapped to [0, 1] here; samples are not clipped.

Image runs only. Every run has a parzen job (the DAG is the same for every run), so a points or
binary run writes a parzen.json that says the estimate does not apply: its nll bound is already an
exact likelihood bound in bits per example, and a Gaussian kernel density is no likelihood of bits.
"""
from __future__ import annotations

import logging

import numpy as np

from ..io import InputError, load_data, load_npz, save_json
from ..runtime import derive_seed

LOG = logging.getLogger("diffrepro.parzen")
VALID_N = 1000  # Goodfellow et al.'s validation images (their --limit_size)
UNITS = "bits per example (Parzen window, [0,1] pixels)"


def run(args, params, device):
    from ..metrics import parzen

    cfg = params.run(args.run)
    data_type = cfg.dataset.data_type
    if data_type != "image":
        save_json(args.metrics, {"applicable": False, "data_type": data_type,
                                 "note": f"not applicable: the Parzen-window protocol is for images; {cfg.name} "
                                         f"holds {data_type} data (see nll.json for its likelihood bound)"})
        LOG.info("%s: parzen not applicable to %s data", cfg.name, data_type)
        return
    samples = load_npz(args.samples, "samples")["x"]  # a model's samples may stray outside [-1, 1]
    train = load_data(args.train, "training data", data_type)["x"]
    test = load_data(args.test, "test data", data_type)["x"]
    if samples.shape[1:] != train.shape[1:]:
        raise InputError(f"samples {args.samples!r} have examples of shape {tuple(samples.shape[1:])}, the data set "
                         f"{tuple(train.shape[1:])}: they are not of run {cfg.name!r}")
    bad = int(np.sum(~np.isfinite(samples)))
    if bad:
        raise InputError(f"samples {args.samples!r} hold {bad} NaN or infinite values; the run's sampler diverged")
    order = np.random.default_rng(derive_seed(params.seed, "parzen", cfg.name)).permutation(len(train))
    n_valid = min(VALID_N, len(train) // 2)
    valid = parzen.unit_pixels(train[order[:n_valid]])
    train_kernels = parzen.unit_pixels(train[order[n_valid:n_valid + len(samples)]])
    x_test = parzen.unit_pixels(test[: cfg.eval.parzen_n])
    model = parzen.parzen_bits(parzen.unit_pixels(samples), valid, x_test, device=device)
    baseline = parzen.parzen_bits(train_kernels, valid, x_test, device=device)
    metrics = {"applicable": True, "units": UNITS,
               **{k: model[k] for k in ("ll_bits", "ll_bits_se", "sigma", "sigmas", "valid_ll_bits",
                                        "sigma_at_grid_edge", "n_samples", "n_valid", "n_test")},
               "ll_bits_train_kernels": baseline["ll_bits"], "ll_bits_train_kernels_se": baseline["ll_bits_se"],
               "sigma_train_kernels": baseline["sigma"], "n_train_kernels": baseline["n_samples"]}
    save_json(args.metrics, metrics)
    LOG.info("%s: Parzen %.1f ± %.1f bits/example (σ %.3g, %d samples, %d test); training-image kernels %.1f (%d)",
             cfg.name, metrics["ll_bits"], metrics["ll_bits_se"], metrics["sigma"], metrics["n_samples"],
             metrics["n_test"], metrics["ll_bits_train_kernels"], metrics["n_train_kernels"])
    if model["sigma_at_grid_edge"]:
        LOG.warning("%s: the chosen σ %.3g is at the grid's edge; the optimum may lie outside it", cfg.name,
                    model["sigma"])
