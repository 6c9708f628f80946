"""The README's figures are generated from results, never typed: its table equals the rendering of the
committed snapshot of a clean default run's results/metrics.csv."""
from __future__ import annotations

import shutil

import pandas as pd

from diffrepro.config import load_params
from diffrepro.tables.readme import SNAPSHOT, current_block, render_table

from .conftest import ROOT, run_cli


def test_readme_table_is_the_snapshot_rendered():
    frame = pd.read_csv(ROOT / SNAPSHOT)
    params = load_params(ROOT / "params.yaml")
    assert sorted(frame["run"]) == sorted(params.runs), "the snapshot is not of the default params' runs"
    assert current_block((ROOT / "README.md").read_text()) == render_table(frame, params)
    # every figure in the table is a number of the snapshot
    for _, row in frame.iterrows():
        assert f"{row['nll.nll']:.4g}" in render_table(frame, params)


def test_check_fails_on_a_typed_figure_and_the_generator_mends_it(tmp_path):
    shutil.copy(ROOT / "README.md", tmp_path / "README.md")
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    (tmp_path / "docs").mkdir()
    shutil.copy(ROOT / SNAPSHOT, tmp_path / SNAPSHOT)
    readme = tmp_path / "README.md"
    frame = pd.read_csv(ROOT / SNAPSHOT)
    typed = f"{frame['nll.nll'].iloc[0]:.4g}"
    readme.write_text(readme.read_text().replace(typed, "9.999", 1))
    assert run_cli("readme-figures", "--check", cwd=tmp_path).returncode == 2
    assert run_cli("readme-figures", cwd=tmp_path).returncode == 0
    assert run_cli("readme-figures", "--check", cwd=tmp_path).returncode == 0
    assert readme.read_text() == (ROOT / "README.md").read_text()
