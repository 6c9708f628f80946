"""report: every run's metrics gathered into results/metrics.csv and results/metrics.md (one row per run),
with the papers' figures beside ours where a run has a counterpart."""
from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from ..diffusion.families import family
from ..io import load_csv, load_json, save_csv, save_figure, save_text
from ..tables.collect import HEADLINE_COLUMNS, report_collect, run_metrics
from ..tables.compare_plots import bound_terms_figure
from ..tables.paper import PAPER_FIGURES, PAPER_UNITS
from ..wiring import pipeline

LOG = logging.getLogger("diffrepro.report")
USES_TORCH = False  # reads and writes tables and a picture with pandas: no torch (start-up)


def gather(params, runs_dir: Path) -> pd.DataFrame:
    """One row per run: every scalar of each collected metrics file, as `<stage>.<key>`; where a
    run's file lies under `runs_dir` comes from the pipeline declaration."""
    collect = report_collect()

    def load(stage, output, name):
        return load_json(pipeline.collected_file(collect, runs_dir, stage, output, name),
                         f"{stage} metrics of run {name!r}")

    rows = []
    for name, run in params.runs.items():
        rows.append({"run": name, "dataset": run.dataset.name, "family": run.diffusion.family,
                     "T": run.diffusion.timesteps, "model": run.model.name, **run_metrics(load, name)})
    return pd.DataFrame(rows)


def paper_table(params, frame: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for _, r in frame.iterrows():
        run = params.runs[r["run"]]
        key = (run.dataset.kind, run.diffusion.family)
        for metric, (figure, source) in PAPER_FIGURES.get(key, {}).items():
            ours = next((r[c] for c in (f"nll.{metric}", f"fid.{metric}", f"parzen.{metric}")
                         if c in r and pd.notna(r[c])), None)
            unit = PAPER_UNITS.get(key)
            if unit and metric.startswith("K") and r.get("nll.unit") != unit:  # another scale: not beside it
                ours, source = None, f"{source}; this run reports {r.get('nll.unit')}: set image_convention: sd2015"
            rows.append({"run": r["run"], "metric": metric, "paper": figure, "ours": ours,
                         "setting": family(run.diffusion.family).setting(run),
                         "source": source})
    return pd.DataFrame(rows, columns=["run", "metric", "paper", "ours", "setting", "source"])


def family_table(frame: pd.DataFrame) -> pd.DataFrame:
    """SD-2015 vs DDPM on the same data set, through the same evaluator (the nll stage's bound, one
    unit per data type) and the same FID feature space at the same count."""
    cols = {"nll.nll": "nll", "nll.unit": "unit", "nll.levels": "levels", "nll.L_null": "L_null",
            "nll.K_minus_L_null": "K_minus_L_null", "nll.nll_categorical": "per_pixel_categorical",
            "fid.fid": "fid", "fid.n": "fid_n"}
    have = frame[[c for c in ["dataset", "family", "run", *cols] if c in frame.columns]].rename(columns=cols)
    shared = have.groupby("dataset")["family"].nunique()
    return have[have["dataset"].isin(shared[shared > 1].index)].sort_values(["dataset", "family"])


def quality_table(params, runs_dir: Path) -> pd.DataFrame:
    """Every run's curve.csv as one table: run, step, FID, bound and its unit (runs that kept
    checkpoints along training first)."""
    collect = report_collect()
    frames = []
    for name in params.runs:
        curve = load_csv(pipeline.collected_file(collect, runs_dir, "curve", "table", name),
                         f"quality-over-training table of {name!r}")
        frames.append(curve.assign(run=name)[["run", "step", "fid", "fid_n", "nll", "unit", "nll_n"]])
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    if len(table):
        kept = table.groupby("run")["step"].transform("size")
        table = table.assign(_kept=-kept).sort_values(["_kept", "run", "step"], kind="stable").drop(columns="_kept")
    return table


def _md(frame: pd.DataFrame) -> str:
    return frame.to_markdown(index=False, floatfmt=".4g") if len(frame) else "(none)"


def run(args, params, device):
    frame = gather(params, Path(args.runs_dir))
    collect = report_collect()
    headline_cols = ["run", "dataset", "family", "T", *HEADLINE_COLUMNS]
    headline = frame[[c for c in headline_cols if c in frame.columns]]
    text = ["# diffrepro metrics", "", "One row per run (full columns in metrics.csv). NLL is the variational bound",
            "on the test set over all T terms, beside SD-2015's L_null and, for images, an independent",
            "per-pixel categorical over the data's levels (fitted on train, add-one) in the same units;",
            "FID/KID compare only at equal `fid.n` and feature space. `parzen.ll_bits` (image runs) is SD-2015",
            "Table 2's Parzen-window log-likelihood, bits per example on [0, 1] pixels; Theis, van den Oord &",
            "Bethge 2016 show such estimates are unreliable in high dimensions and can rank models wrongly.",
            "", _md(headline), "",
            "## Papers' figures beside this run's", "",
            "SD-2015's K is a lower bound on log-likelihood (higher is better); our `nll` is −K.", "",
            _md(paper_table(params, frame)), "",
            "## SD-2015 vs DDPM on the same data (one evaluator)", "", _md(family_table(frame)), "",
            "## Quality over training", "",
            "Every checkpoint kept at `train.keep_steps` and the final model (the curve stage): FID against the",
            "test set at `eval.curve_fid_n` and the bound on `eval.curve_nll_n` test examples, same draws for",
            "every checkpoint (curve.png beside each run's files).", "",
            _md(quality_table(params, Path(args.runs_dir))), ""]
    save_csv(args.csv, frame)
    curves = []  # every run's bound terms (and rate-distortion) on one picture
    for name in params.runs:
        path = pipeline.collected_file(collect, Path(args.runs_dir), "nll", "terms", name)
        unit = frame.loc[frame["run"] == name, "nll.unit"].iloc[0]
        curves.append((name, unit, load_csv(path, f"bound terms of {name!r}")))
    save_figure(args.bound_plot, bound_terms_figure(curves))
    save_text(args.md, "\n".join(text))
    LOG.info("report: %d runs -> %s", len(frame), args.csv)
