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
