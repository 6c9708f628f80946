"""The code passes the project's ruff configuration (pyproject.toml: pycodestyle, pyflakes, imports
sorted, 120 columns), so CI checks it with every `make test`."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ruff_passes():
    proc = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "src", "tests", "benchmarks"],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]


def test_requires_python_matches_the_engines():
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    # Snakemake 9 needs Python 3.11: the package cannot promise less than its engine
    assert project["requires-python"].startswith(">=3.11")
    assert sys.version_info >= (3, 11)
