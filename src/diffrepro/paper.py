"""The papers' reported figures, keyed by (dataset kind, diffusion family), for the report's comparison tables."""

# (dataset kind, family) -> {metric: (paper figure, source)}; metric names match nll.json / fid.json keys
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
