"""ddmlflow.figures: one module, Figure API (no pyplot state), PNGs that open, the numbers the figures print."""

from __future__ import annotations

import numpy as np
from PIL import Image

from ddmlflow import figures
from ddmlflow.decomposition import make


def test_training_times_rows_prints_each_speedup(tmp_path):
    rows = {"2x2": {"global CNN": 30.0, "slowest local": 10.0, "coarse": 5.0}, "4x4": {"slowest local": 4.0}}
    fig = figures.training_times_rows(rows, tmp_path / "t.png", "devices: CPU")
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert texts == ["x2.00"]  # 30 / (10 + 5); the row without a global net gets no ratio
    assert Image.open(tmp_path / "t.png").size[0] > 300


def test_local_predictions_colours_right_and_wrong(tmp_path):
    d = make("2x2", (8, 8, 3))
    x = np.random.default_rng(0).random((2, 8, 8, 3))
    probs = [np.array([[0.9, 0.1], [0.2, 0.8]])] * 3 + [np.array([[0.1, 0.9], [0.2, 0.8]])]
    fig = figures.local_predictions(x, np.array([0, 1]), d, probs, ["a", "b"], tmp_path / "p.png")
    titles = [(ax.get_title(), ax.title.get_color()) for ax in fig.axes]
    assert titles[0] == ("a\n0.90", figures.RIGHT) and titles[3] == ("b\n0.90", figures.WRONG)
    assert len(titles) == 8 and (tmp_path / "p.png").stat().st_size > 1000


def test_learning_curves_one_line_per_net_and_png_bytes():
    curves = {"global": [0.1, 0.5], "local 00": [0.2, 0.3], "GNet-T": [np.nan, 0.4, 0.6]}
    fig = figures.learning_curves(curves, title="t")
    assert [ln.get_label() for ln in fig.axes[0].get_lines()] == list(curves)
    assert figures.png_bytes(fig)[:8] == b"\x89PNG\r\n\x1a\n"


def test_decomposition_boxes_3d_shows_the_middle_slice(tmp_path):
    d = make("2x2x2", (8, 8, 4, 1))
    fig = figures.decomposition_boxes(d, np.zeros((8, 8, 4, 1)), tmp_path / "b.png")
    assert "depth slice 2: 4 boxes shown" in fig.axes[0].get_title()
