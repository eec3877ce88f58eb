"""Figures: PNG and SVG side by side, sized for a paper page; curves mark the selected epoch."""

from __future__ import annotations

import pandas as pd
from PIL import Image

from octbench import figures


def test_training_curves_mark_the_selected_epoch_in_png_and_svg(tmp_path):
    rows = [{"label": label, "seed": seed, "epoch": epoch, "train_loss": 1.0 / epoch,
             "val_macro_f1": 0.5 + 0.1 * epoch * (seed + 1), "selected": epoch == best}
            for label, best in (("none", 2), ("focal", 3)) for seed in (0, 1)
            for epoch in (1, 2, 3)]
    path = figures.training_curves(pd.DataFrame(rows), "Training curves", tmp_path / "c.png")
    assert path == tmp_path / "c.png"
    svg = path.with_suffix(".svg").read_text()
    assert svg.lstrip().startswith("<?xml") and "<svg" in svg
    assert "selected epoch" in svg and "focal" in svg  # text stays text in the SVG
    width, height = Image.open(path).size
    assert width / figures.DPI <= figures.PAGE_WIDTH + 0.5  # fits a page, with the legend
    assert height < width


def test_figures_without_selected_column_have_no_star(tmp_path):
    rows = [{"label": "none", "seed": 0, "epoch": e, "train_loss": 1.0, "val_macro_f1": 0.5}
            for e in (1, 2)]
    path = figures.training_curves(pd.DataFrame(rows), "t", tmp_path / "c.png")
    assert "selected epoch" not in path.with_suffix(".svg").read_text()


def _drawn(monkeypatch, draw):
    """The matplotlib Figure that ``draw()`` saves."""
    saved = []
    monkeypatch.setattr(figures, "save_figure", lambda fig, path: saved.append(fig) or path)
    draw()
    return saved[0]


def test_stars_of_labels_selecting_the_same_epoch_do_not_overlap(tmp_path, monkeypatch):
    rows = [{"label": label, "seed": 0, "epoch": epoch, "train_loss": 1.0,
             "val_macro_f1": 0.6, "selected": epoch == 2}
            for label in ("none", "focal", "weighted_ce") for epoch in (1, 2, 3)]
    fig = _drawn(monkeypatch, lambda: figures.training_curves(pd.DataFrame(rows), "t",
                                                              tmp_path / "c.png"))
    stars = fig.axes[1].collections[-1].get_offsets()
    xs = sorted(float(x) for x, _ in stars)
    assert len(xs) == 3 and len(set(xs)) == 3  # one star each, side by side
    assert all(abs(x - 2) <= 0.15 for x in xs)  # all still at epoch 2


def test_interval_labels_sit_above_the_baseline_line(tmp_path, monkeypatch):
    frame = pd.DataFrame([
        {"label": "none", "mean": 0.5, "low": 0.45, "high": 0.55, "values": [0.5],
         "baseline": True},
        {"label": "focal", "mean": 0.6, "low": 0.55, "high": 0.65, "values": [0.6],
         "baseline": False}])
    fig = _drawn(monkeypatch, lambda: figures.interval_plot(frame, "macro-F1", "t",
                                                            tmp_path / "i.png"))
    ax = fig.axes[0]
    (baseline,) = [line for line in ax.lines if line.get_linestyle() == "--"]
    for text in ax.texts:
        assert text.get_zorder() > baseline.get_zorder()
        assert text.get_bbox_patch() is not None
        assert text.get_bbox_patch().get_facecolor()[:3] == (1.0, 1.0, 1.0)
