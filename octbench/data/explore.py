"""Exploratory views of a dataset: class counts, imbalance ratios and sample grids.

Must not import: models, strategies, the engine, runner or report.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from octbench.data.dataset import SPLITS, OCTData
from octbench.data.duplicates import summary
from octbench.data.preprocess import preprocess_array, read_scan
from octbench.figures import save_figure


def class_distribution(data: OCTData) -> pd.DataFrame:
    """Per-split class counts and shares, with each class's ratio to the smallest class."""
    rows = []
    for split, counts in data.class_counts().items():
        total = sum(counts)
        smallest = max(min(counts), 1)
        for name, count in zip(data.class_names, counts, strict=True):
            rows.append({"split": split, "class": name, "count": count,
                         "share": count / total if total else float("nan"),
                         "ratio_to_smallest": count / smallest})
    return pd.DataFrame(rows)


def format_distribution(data: OCTData) -> str:
    """The distribution as text: one block per split, plus the largest:smallest ratio."""
    table = class_distribution(data)
    tag = " [SYNTHETIC DATA]" if data.synthetic else ""
    lines = [f"{data.name} ({data.size} px, {data.num_classes} classes){tag}",
             f"fingerprint: {data.fingerprint}"]
    for split in SPLITS:
        part = table[table.split == split]
        counts = part["count"].to_numpy()
        lines.append(f"{split}: {counts.sum():,} images, largest:smallest class "
                     f"{counts.max() / max(counts.min(), 1):.1f}:1")
        for row in part.itertuples():
            lines.append(f"  {row._2:<8} {row.count:>7,}  {row.share:6.1%}  "
                         f"{row.ratio_to_smallest:5.2f}x the smallest")
    if data.duplicates is not None:
        dropped = data.duplicates.get("dropped")
        lines.append(f"exact duplicates (pixel hash): {summary(data.duplicates)}"
                     + (f"; {dropped:,} dropped" if dropped else ""))
    return "\n".join(lines)


def save_distribution_figure(data: OCTData, path: str | Path) -> Path:
    """A bar chart of class counts per split (PNG)."""
    import seaborn as sns
    from matplotlib.figure import Figure

    table = class_distribution(data)
    fig = Figure(figsize=(12, 3.6))
    axes = fig.subplots(1, len(SPLITS))
    for ax, split in zip(axes, SPLITS, strict=True):
        part = table[table.split == split]
        sns.barplot(part, x="class", y="count", hue="class", ax=ax, legend=False,
                    palette="viridis")
        ax.set_title(f"{split} ({part['count'].sum():,} images)")
        ax.set_xlabel("")
        for container in ax.containers:
            ax.bar_label(container, fmt="{:,.0f}", fontsize=8)
    title = f"Class distribution: {data.name} ({data.size} px)"
    fig.suptitle(title + (" — SYNTHETIC DATA" if data.synthetic else ""))
    fig.tight_layout()
    return save_figure(fig, path)


def save_sample_grid(data: OCTData, path: str | Path, *, per_class: int = 8,
                     split: str = "test", seed: int = 0) -> Path:
    """A PNG grid: one row per class with ``per_class`` random samples of ``split``."""
    from matplotlib.figure import Figure

    part = data.split(split)
    labels = part.labels.numpy()
    rng = np.random.default_rng(seed)
    fig = Figure(figsize=(per_class * 1.1, data.num_classes * 1.25))
    axes = fig.subplots(data.num_classes, per_class, squeeze=False)
    for row, name in enumerate(data.class_names):
        members = np.flatnonzero(labels == row)
        chosen = rng.choice(members, size=min(per_class, len(members)), replace=False)
        for col in range(per_class):
            ax = axes[row, col]
            ax.set_xticks([])
            ax.set_yticks([])
            if col < len(chosen):
                ax.imshow(part.images[chosen[col]].numpy(), cmap="gray", vmin=0, vmax=255)
            if col == 0:
                ax.set_ylabel(name, rotation=0, ha="right", va="center", fontsize=10)
    title = f"{data.name} {data.size} px, {split} split"
    fig.suptitle(title + (" — SYNTHETIC" if data.synthetic else ""), fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)


def save_scan_grid(scans: list[str | Path], path: str | Path, *, size: int = 28) -> Path:
    """A PNG of raw scan files (top row) and the model inputs made from them (bottom row)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(1.9 * len(scans), 3.6))
    axes = fig.subplots(2, len(scans), squeeze=False)
    for col, scan in enumerate(scans):
        raw = read_scan(scan)  # fails clearly before anything is drawn
        inputs = preprocess_array(raw, size=size)  # exactly what load_scan gives a model
        for row, (picture, label) in enumerate([(raw, f"{raw.shape[1]}x{raw.shape[0]}"),
                                                (inputs, f"{size}x{size} input")]):
            ax = axes[row, col]
            ax.imshow(picture, cmap="gray", vmin=0, vmax=255)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_xlabel(label, fontsize=7)
        axes[0, col].set_title(Path(scan).name, fontsize=7)
    fig.tight_layout()
    return save_figure(fig, path)
