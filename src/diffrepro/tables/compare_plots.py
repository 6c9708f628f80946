"""Pictures that say more than the comparison table: every row's bound terms and rate–distortion on
one plot, FID against a swept setting (training steps, ...), sample grids side by side."""
from __future__ import annotations

import io
from pathlib import Path

import pandas as pd

from ..io import save_figure
from ..wiring import pipeline


def _terms_path(run: str) -> str:
    return pipeline.fill(pipeline.stage("nll").output("terms").path, run=run)


def bound_terms_figure(curves: list):
    """curves: (label, unit, DataFrame with t, term and optionally rate, distortion). One panel per
    unit of the bound terms against t (symmetric log scale: continuous data's L_0 can be negative),
    and one rate–distortion panel per unit that has runs predicting ε."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    units = list(dict.fromkeys(unit for _, unit, _ in curves))
    rd_units = [u for u in units
                if any(unit == u and {"rate", "distortion"} <= set(f.columns) for _, unit, f in curves)]
    ncols = len(units) + len(rd_units)
    fig, axes = plt.subplots(1, ncols, figsize=(4.6 * ncols, 3.8), squeeze=False)
    for ax, unit in zip(axes[0], units):
        for label, u, frame in curves:
            if u == unit:
                ax.plot(frame["t"], frame["term"], label=label, lw=1)
        ax.set_yscale("symlog", linthresh=1e-3)
        ax.set_xlabel("t (L_0 at t = 1)")
        ax.set_ylabel(f"bound term ({unit})")
        ax.legend(fontsize=7)
    for ax, unit in zip(axes[0][len(units):], rd_units):
        for label, u, frame in curves:
            if u == unit and {"rate", "distortion"} <= set(frame.columns):
                ax.plot(frame["rate"], frame["distortion"], label=label, lw=1)
        ax.set_xlabel(f"rate ({unit})")
        ax.set_ylabel("distortion (RMSE" + (", 0-255)" if unit == "bits/dim" else ")"))
        ax.set_title("rate–distortion (DDPM Fig. 5)", fontsize=9)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def _label(row) -> str:
    return row["run"] if row["source"] == "workspace" else f"{row['source']}: {row['run']}"


def write_plots(rows: list, folder) -> list:
    """The comparison pictures of `rows` (compare.rows_of) under `folder`; returns the paths written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder = Path(folder)
    written = []
    curves = []
    for row in rows:
        data = row["read"](_terms_path(row["run"]))
        if data is not None:
            curves.append((_label(row), row["metrics"].get("nll.unit", "?"), pd.read_csv(io.BytesIO(data))))
    if curves:
        path = folder / "bound_terms.png"
        save_figure(path, bound_terms_figure(curves))
        written.append(path)
    by_run = {}
    for row in rows:
        by_run.setdefault(row["run"], []).append(row)
    for run, group in by_run.items():
        if len(group) < 2:
            continue
        # FID against every numeric setting that differs between this run's rows
        swept = sorted({k for r in group for k, v in r["settings"].items()
                        if isinstance(v, (int, float)) and not isinstance(v, bool)
                        and len({g["settings"].get(k) for g in group}) > 1})
        for key in swept:
            points = sorted((r["settings"][key], r["metrics"]["fid.fid"]) for r in group
                            if key in r["settings"] and "fid.fid" in r["metrics"])
            if len(points) < 2:
                continue
            fig, ax = plt.subplots(figsize=(4.5, 3.4))
            ax.plot([p[0] for p in points], [p[1] for p in points], "o-")
            ax.set_xlabel(key)
            ax.set_ylabel("FID")
            ax.set_title(f"{run}: FID against {key}", fontsize=9)
            path = folder / f"fid_vs_{key.replace('.', '_')}_{run}.png"
            save_figure(path, fig)
            written.append(path)
        if not swept and not any(r["settings"] != group[0]["settings"] for r in group):
            continue  # the same run with the same settings everywhere: nothing to set side by side
        # the sample grids side by side
        grids = []
        for r in group:
            data = r["read"](pipeline.fill(pipeline.stage("sample").output("picture").path, run=run))
            if data is not None:
                grids.append((r["source"], plt.imread(io.BytesIO(data), format="png")))
        if len(grids) >= 2:
            fig, axes = plt.subplots(1, len(grids), figsize=(4 * len(grids), 4.2), squeeze=False)
            for ax, (name, image) in zip(axes[0], grids):
                ax.imshow(image)
                ax.set_title(name, fontsize=9)
                ax.axis("off")
            path = folder / f"samples_{run}.png"
            save_figure(path, fig)
            written.append(path)
    return written
