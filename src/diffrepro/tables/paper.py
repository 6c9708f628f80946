"""The papers' reported figures, keyed by (dataset kind, diffusion family), for the report's comparison tables."""

# (dataset kind, family) -> {metric: (paper figure, source)}; metric names match nll.json / fid.json /
# parzen.json keys
PAPER_FIGURES = {
    ("swissroll", "sd_gaussian"): {"K": (2.35, "SD-2015 Table 1"), "K_minus_L_null": (6.45, "SD-2015 Table 1")},
    ("heartbeat", "sd_binomial"): {"K": (-2.414, "SD-2015 Table 1"), "K_minus_L_null": (12.024, "SD-2015 Table 1")},
    ("deadleaves", "sd_gaussian"): {"K": (1.489, "SD-2015 Table 1 (bits/pixel, unit-variance data)"),
                                    "K_minus_L_null": (3.536, "SD-2015 Table 1")},
    ("cifar10", "sd_gaussian"): {"K": (5.4, "SD-2015 Table 1 (bits/pixel, unit-variance data)"),
                                 "K_minus_L_null": (11.5, "SD-2015 Table 1")},
    ("cifar10", "ddpm"): {"fid_vs_train": (3.17, "DDPM Table 1, L_simple, Inception FID, 50k samples vs train "
                                                          "(compare only with feature_space: inception)"),
                          "nll": (3.75, "DDPM Table 1, L_simple, bits/dim test"),
                          "inception_score": (9.46, "DDPM Table 1")},
}

# (dataset kind, family) -> the unit of the paper's K and K − L_null where it is not the project's
# default for that data: SD-2015's image figures are bits/pixel of dequantised, unit-variance data
# (image_convention: sd2015); a run in another unit is not set beside them
PAPER_UNITS = {
    ("deadleaves", "sd_gaussian"): "bits/pixel",
    ("cifar10", "sd_gaussian"): "bits/pixel",
}

# SD-2015 Table 2, MNIST: Parzen-window log-likelihood of the test set under 10k samples, bits per example on
# [0, 1] pixels (Goodfellow et al. 2014's protocol; the others' nats converted by SD-2015: GAN 225 nats = 325
# bits). Keys ll_bits and ll_bits_train_kernels match parzen.json; the other models' rows have no counterpart
# here, so their "ours" stays empty. A sample-quality figure of any model: shown beside every MNIST run.
SD2015_TABLE2_MNIST = {
    "ll_bits": (317.0, "SD-2015 Table 2, diffusion, ± 2.7 (Parzen window, bits/example)"),
    "ll_bits_train_kernels": (349.0, "SD-2015 Table 2, Parzen on training samples"),
    "ll_bits [adversarial net]": (325.0, "SD-2015 Table 2 (Goodfellow et al. 2014: 225 ± 2 nats)"),
    "ll_bits [deep GSN]": (309.0, "SD-2015 Table 2"),
    "ll_bits [DBN]": (199.0, "SD-2015 Table 2"),
    "ll_bits [stacked CAE]": (174.0, "SD-2015 Table 2"),
}
for _kind in ("mnist", "mnist5k"):
    for _family in ("sd_gaussian", "ddpm"):
        PAPER_FIGURES.setdefault((_kind, _family), {}).update(SD2015_TABLE2_MNIST)
del _kind, _family
