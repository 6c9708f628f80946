"""check: params.yaml read and checked whole (under `dvc repro`, before any other stage); writes
results/plan.json, every run's configuration with each default written out.

Every stage checks the whole params file when it starts (cli.py), and Snakemake checks it when it
parses the Snakefile (workflow/rules/common.smk). What this stage adds is DVC's order: `dvc repro`
reproduces stages without a dependency between them in dvc.yaml's order, and this stage is declared
first. A run that names a dataset or model params.yaml does not define is then refused here, with the
key and the names allowed, before DVC looks for that run's inputs (it would stop at
"No such file ... results/data/<name>/train.npz" or "Parameters 'models.<name>' are missing").
No stage reads plan.json, so a check that re-runs re-runs nothing else. DVC's order is pinned by
tests/test_bad_input_table.py (plain `dvc repro` with an undefined dataset or model).
"""
from __future__ import annotations

import dataclasses
import logging

from ..io import save_json

LOG = logging.getLogger("diffrepro.check")
USES_TORCH = False  # reads params, writes JSON: no torch (start-up)


def plan(params) -> dict:
    """What the pipeline runs: the seed, the device asked for, every dataset and each run's whole
    configuration (its dataset's and model's included)."""
    return {"seed": params.seed, "device": params.device,
            "datasets": {name: dataclasses.asdict(d) for name, d in params.datasets.items()},
            "runs": {name: run.to_dict() for name, run in params.runs.items()}}


def run(args, params, device):
    save_json(args.plan, plan(params))
    LOG.info("params checked: %d datasets, %d runs (%s)", len(params.datasets), len(params.runs),
             ", ".join(params.runs))
