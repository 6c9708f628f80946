"""The pictures a person opens: the loss curve shows every logged row, a lone one included."""
from __future__ import annotations

import numpy as np

from diffrepro.tables.plots import loss_curve

LINE = np.array([31, 119, 180])  # matplotlib's first colour (C0), the curve's


def _curve_pixels(path) -> int:
    import matplotlib.image

    rgb = (matplotlib.image.imread(path)[..., :3] * 255).round()
    return int((np.abs(rgb - LINE).max(axis=-1) <= 40).sum())


def test_a_lone_logged_row_is_drawn(tmp_path):
    loss_curve(tmp_path / "one.png", [50], [0.8], "one row")
    assert _curve_pixels(tmp_path / "one.png") > 20


def test_a_long_record_is_a_line_and_an_empty_one_a_frame(tmp_path):
    steps = np.arange(1, 1001)
    loss_curve(tmp_path / "long.png", steps, 1.0 / np.sqrt(steps), "long")
    loss_curve(tmp_path / "none.png", [], [], "none")
    assert _curve_pixels(tmp_path / "long.png") > 200
    assert _curve_pixels(tmp_path / "none.png") == 0
    assert (tmp_path / "none.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
