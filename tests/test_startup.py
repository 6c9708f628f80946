"""Start-up: a job imports its own stage's code and what that code uses, nothing else. The stages that
compute with numpy and pandas alone (prepare, report) never import torch, and the digits never import
scikit-learn (its data file is read directly): each saves seconds per job (benchmarks/pipeline_time.py)."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from .conftest import TINY_PARAMS, stage_args

PROBE = """
import sys
from diffrepro.cli import main
code = main(sys.argv[1:])
print("LOADED", " ".join(m for m in ("torch", "sklearn", "diffrepro.stages.train", "diffrepro.stages.fid")
                        if m in sys.modules))
sys.exit(code)
"""


@pytest.mark.slow
def test_prepare_imports_neither_torch_nor_sklearn_nor_other_stages(tmp_path):
    args = stage_args("prepare", "tinydigits", tmp_path, TINY_PARAMS)
    proc = subprocess.run([sys.executable, "-c", PROBE, "prepare", *map(str, args)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    loaded = next(line for line in proc.stdout.splitlines() if line.startswith("LOADED")).split()[1:]
    assert loaded == [], loaded
    assert "start-up " in proc.stderr and "prepare on cpu (numpy)" in proc.stderr
    assert np.load(tmp_path / "results" / "data" / "tinydigits" / "train.npz")["x"].shape[1:] == (1, 8, 8)


def test_the_report_stage_module_does_not_import_torch():
    proc = subprocess.run([sys.executable, "-c", "import sys, diffrepro.stages.report as r; "
                           "print(r.USES_TORCH, 'torch' in sys.modules)"], capture_output=True, text=True)
    assert proc.stdout.split() == ["False", "False"], proc.stderr[-2000:]


def test_digits_read_directly_equal_sklearns_load_digits():
    from sklearn.datasets import load_digits

    from diffrepro.data.images import digits

    split = digits(np.random.default_rng(0), test_fraction=0.2)
    bunch = load_digits()
    x = np.concatenate([split.x_train, split.x_test])
    # the same 1,797 images in the same 17 levels, every class present in both parts
    assert len(x) == len(bunch.images) == 1797
    ours = sorted(map(tuple, np.round((x.reshape(len(x), -1) + 1) * 8).astype(int)))
    assert ours == sorted(map(tuple, bunch.data.astype(int)))
    assert set(split.y_train) == set(split.y_test) == set(bunch.target)
