"""Past one machine with DVC: a build pushed to a remote comes back, byte for byte, in a fresh clone.

A git + DVC checkout on the tiny params builds one run's data and model (`dvc repro
train@toyroll-ddpm`), commits dvc.lock and a default remote (a local folder standing in for S3, SSH
or a shared disk) in .dvc/config, and pushes the cache. A fresh `git clone` pulls those outputs:
they equal the originals byte for byte, `dvc status` is clean and `dvc repro` runs nothing.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from .conftest import BIN
from .test_pipeline import commit, dvc_ran, make_project, sh

TARGET = "train@toyroll-ddpm"
CACHED = ("results/data/toyroll/train.npz", "results/data/toyroll/test.npz", "results/runs/toyroll-ddpm/model.pt",
          "results/runs/toyroll-ddpm/model.safetensors",
          "results/runs/toyroll-ddpm/train_state.pt")  # the finished state: a longer run continues from it


def outputs(project: Path) -> dict:
    """Every file under results/ (what the two stages wrote), relative path -> bytes."""
    return {str(p.relative_to(project)): p.read_bytes() for p in sorted((project / "results").rglob("*"))
            if p.is_file()}


@pytest.mark.timeout(600)
def test_a_fresh_clone_pulls_the_build_and_has_nothing_to_reproduce(tmp_path):
    (tmp_path / "origin").mkdir()
    origin = make_project(tmp_path / "origin")
    ran = dvc_ran(sh(BIN / "dvc", "repro", TARGET, cwd=origin))
    assert ran == {"prepare@toyroll", TARGET}
    remote = tmp_path / "remote"
    sh(BIN / "dvc", "remote", "add", "-d", "store", remote, cwd=origin)
    commit(origin, "built one run; default remote")
    tracked = sh("git", "ls-files", cwd=origin).split()
    assert "dvc.lock" in tracked and not set(CACHED) & set(tracked)  # large files go to the remote, not git
    # the cached files and the (empty: no train.keep_steps) checkpoints folder's listing
    assert f"{len(CACHED) + 1} files pushed" in sh(BIN / "dvc", "push", TARGET, "--with-deps", cwd=origin)
    assert "in sync" in sh(BIN / "dvc", "status", "--cloud", TARGET, "--with-deps", cwd=origin)

    clone = tmp_path / "clone"
    sh("git", "clone", "-q", origin, clone, cwd=tmp_path)
    assert not (clone / CACHED[-1]).exists()
    assert str(remote) in sh(BIN / "dvc", "remote", "list", cwd=clone)  # the committed remote came along
    sh(BIN / "dvc", "pull", TARGET, "--with-deps", cwd=clone)
    assert outputs(clone) == outputs(origin)
    assert set(CACHED) <= set(outputs(clone))
    assert "Data and pipelines are up to date" in sh(BIN / "dvc", "status", TARGET, "--with-deps", cwd=clone)
    out = sh(BIN / "dvc", "repro", TARGET, cwd=clone)
    assert dvc_ran(out) == set() and f"Stage '{TARGET}' didn't change" in out, out
    assert sh("git", "status", "--porcelain", cwd=clone) == ""
