"""What the report and `compare` read from each run: every scalar of the metrics files the report
collects (which files, and where, comes from the pipeline declaration), and the one list of headline
figures both show (`HEADLINE`)."""
from __future__ import annotations

from ..wiring import pipeline

# the figures shown for every run, in this order, by the report's metrics.md and by `compare`:
# (stage, key in its metrics file, column label)
HEADLINE = (
    ("train", "steps", "train steps"), ("train", "train_wall_s", "train s"), ("train", "final_loss", "final loss"),
    ("nll", "nll", "bound"), ("nll", "nll_stderr", "bound ±"), ("nll", "unit", "unit"), ("nll", "levels", "levels"),
    ("nll", "K_minus_L_null", "gain over L_null"), ("nll", "nll_categorical", "categorical"),
    ("nll", "gain_over_categorical", "gain over categorical"),
    ("fid", "fid", "FID"), ("fid", "feature_space", "feature space"),
    ("fid", "fid_floor_train_vs_test", "FID floor"), ("fid", "kid", "KID"), ("fid", "kid_std", "KID ±"),
    ("fid", "n", "FID n"), ("fid", "fid_vs_train", "FID vs train"), ("fid", "n_train_ref", "vs train n"),
    ("parzen", "ll_bits", "Parzen bits"), ("parzen", "ll_bits_se", "Parzen ±"),
    ("parzen", "ll_bits_train_kernels", "Parzen, train kernels"), ("parzen", "n_samples", "Parzen n"),
    ("inpaint", "mse_right_half", "inpaint MSE"),
)
HEADLINE_COLUMNS = tuple(f"{stage}.{key}" for stage, key, _ in HEADLINE)   # as run_metrics names them


def report_collect() -> pipeline.Collect:
    """The report's input: every run's collected outputs."""
    return next(i for i in pipeline.stage("report").inputs if isinstance(i, pipeline.Collect))


def run_metrics(load, run: str) -> dict:
    """Every scalar of one run's collected metrics files, as {"<stage>.<key>": value}.

    load(stage, output, run) returns that metrics file's mapping (or None where it is missing): the
    report reads them from its runs folder, `compare` from a workspace, revision or experiment.
    """
    found = {}
    for stage_name, output in report_collect().outputs:
        if pipeline.stage(stage_name).output(output).role != "metric":
            continue
        data = load(stage_name, output, run)
        if isinstance(data, dict):
            found.update({f"{stage_name}.{k}": v for k, v in data.items()
                          if isinstance(v, (int, float, str)) and not isinstance(v, bool)})
    return found
