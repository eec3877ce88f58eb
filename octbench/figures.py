"""Report and study figures: matplotlib + seaborn, drawn on ``Figure`` objects, saved as PNG
and SVG side by side (the SVG for papers: vector, text kept as text).

Sizes fit a printed page: :data:`PAGE_WIDTH` inches wide (a two-column paper's full width;
half of it is one column), with seaborn's "paper" fonts.

Figures are built with :class:`matplotlib.figure.Figure` rather than ``pyplot``, so drawing a
report never switches the caller's backend (a notebook keeps its own) and leaves no global
state behind. Each function takes plain tables and returns the written path, or None when
there is nothing to draw. :func:`draw_study` draws an Optuna study with Optuna's own matplotlib
plots (pyplot figures, closed after saving).

Must not import: octbench's other modules (report and tuning hand it plain tables or a study),
nor matplotlib or optuna at module level (importing this module, as the report does, draws
nothing and costs nothing; a report without a study never needs optuna).
One module over 450 lines because it is one idea: every figure octbench draws, in one page
size, palette and PNG + SVG format.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from octbench.fileio import confined

if TYPE_CHECKING:
    from matplotlib.figure import Figure

log = logging.getLogger(__name__)

DPI = 200
#: Inches: the full text width of a two-column paper (about 17.8 cm); one column is half.
PAGE_WIDTH = 7.0
# Wong (2011) colour-blind-safe palette, as seaborn's "colorblind" orders it.
PALETTE = "colorblind"


def save_figure(fig, path: str | Path) -> Path:
    """Write ``fig`` as a PNG and, beside it, an SVG (creating the folder); return the PNG path."""
    import matplotlib

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, bbox_inches="tight", facecolor="white")
    # Text stays text (editable, searchable); no timestamp, so a redrawn figure diffs clean.
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "octbench"}):
        fig.savefig(path.with_suffix(".svg"), bbox_inches="tight", facecolor="white",
                    metadata={"Date": None})
    return path


def _new_figure(**kwargs) -> Figure:
    """A :class:`matplotlib.figure.Figure`; matplotlib is imported here, when a figure is drawn,
    so importing this module (as the report does) costs nothing until then."""
    from matplotlib.figure import Figure

    return Figure(**kwargs)


def _theme() -> None:
    import seaborn as sns

    sns.set_theme(style="whitegrid", context="paper", font_scale=1.0)


def confusion_grid(panels: Sequence[tuple[str, np.ndarray]], class_names: Sequence[str],
                   title: str, path: Path) -> Path | None:
    """Row-normalised confusion matrices, one panel per (label, counts) pair."""
    import seaborn as sns

    if not panels:
        return None
    _theme()
    cols = min(len(panels), 4)
    rows = math.ceil(len(panels) / cols)
    fig = _new_figure(figsize=(PAGE_WIDTH, (PAGE_WIDTH / cols) * rows + 0.4), layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    for ax, (label, counts) in zip(axes, panels, strict=False):
        counts = np.asarray(counts, dtype=float)
        totals = counts.sum(axis=1, keepdims=True)
        share = np.divide(counts, totals, out=np.full_like(counts, np.nan), where=totals > 0)
        sns.heatmap(share, ax=ax, vmin=0, vmax=1, cmap="Blues", annot=True, fmt=".2f",
                    cbar=False, square=True, xticklabels=class_names, yticklabels=class_names,
                    annot_kws={"size": 6})
        ax.set_title(label, fontsize=8)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.tick_params(axis="y", labelrotation=0, labelsize=6)
        # Slanted: four class names side by side do not fit under a panel a quarter page wide.
        ax.set_xticks(ax.get_xticks(), class_names, rotation=40, ha="right",
                      rotation_mode="anchor", fontsize=6)
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    fig.suptitle(title, fontsize=10)
    return save_figure(fig, path)


def training_curves(curves: pd.DataFrame, title: str, path: Path) -> Path | None:
    """Training loss and validation macro-F1 per epoch; one line per label, band = seed range.

    ``curves`` has columns ``label, seed, epoch, train_loss, val_macro_f1`` and optionally
    ``selected`` (True on the epoch whose checkpoint each seed kept), marked with a star.
    """
    import seaborn as sns

    curves = curves.dropna(subset=["epoch"])
    if curves.empty:
        return None
    _theme()
    fig = _new_figure(figsize=(PAGE_WIDTH, 2.8), layout="constrained")
    left, right = fig.subplots(1, 2)
    order = list(dict.fromkeys(curves["label"]))
    for ax, column, name in ((left, "train_loss", "training loss"),
                             (right, "val_macro_f1", "validation macro-F1")):
        sns.lineplot(curves, x="epoch", y=column, hue="label", hue_order=order, ax=ax,
                     errorbar=("pi", 100), marker="o", palette=PALETTE,
                     legend=ax is right)
        ax.set_title(name)
        ax.set_ylabel(name)
        ax.set_xlabel("epoch")
        ax.xaxis.get_major_locator().set_params(integer=True)
    if "selected" in curves and curves["selected"].any():
        colours = dict(zip(order, sns.color_palette(PALETTE, len(order)), strict=False))
        chosen = curves[curves["selected"].astype(bool)]
        # Several labels often select the same epoch: spread their stars a little sideways.
        shift = {label: (i - (len(order) - 1) / 2) * min(0.3 / max(len(order) - 1, 1), 0.12)
                 for i, label in enumerate(order)}
        right.scatter(chosen["epoch"] + chosen["label"].map(shift), chosen["val_macro_f1"],
                      marker="*", s=90, zorder=5,
                      c=[colours[label] for label in chosen["label"]], edgecolor="black",
                      linewidth=0.6, label="selected epoch")
        right.legend()  # rebuilt so that it shows the star too
    if right.get_legend() is not None:
        sns.move_legend(right, "upper left", bbox_to_anchor=(1.02, 1), title=None, frameon=False)
    fig.suptitle(title, fontsize=10)
    return save_figure(fig, path)


def interval_plot(frame: pd.DataFrame, metric_label: str, title: str, path: Path) -> Path | None:
    """Mean with its confidence interval per label, with the per-seed values as dots.

    ``frame`` has columns ``label, mean, low, high, values`` (a list) and ``baseline`` (bool).
    """
    import seaborn as sns

    frame = frame[frame["mean"].notna()].reset_index(drop=True)
    if frame.empty:
        return None
    _theme()
    colors = sns.color_palette(PALETTE, len(frame))
    fig = _new_figure(figsize=(PAGE_WIDTH, 0.9 + 0.4 * len(frame)), layout="constrained")
    ax = fig.subplots()
    y = np.arange(len(frame))[::-1]
    for i, row in frame.iterrows():
        if not (math.isnan(row["low"]) or math.isnan(row["high"])):
            ax.plot([row["low"], row["high"]], [y[i]] * 2, color=colors[i], lw=3, alpha=0.6,
                    solid_capstyle="butt")
        seeds = [v for v in row["values"] if v is not None and not math.isnan(v)]
        ax.scatter(seeds, [y[i]] * len(seeds), color=colors[i], s=18, alpha=0.8, zorder=3)
        ax.scatter([row["mean"]], [y[i]], color=colors[i], marker="D", s=60, zorder=4,
                   edgecolor="black", linewidth=0.8)
        # on a white box, above the baseline's dashed line, which would cross it
        ax.annotate(f"{row['mean']:.3f}", (row["mean"], y[i]), xytext=(0, 7),
                    textcoords="offset points", ha="center", fontsize=7, zorder=5,
                    bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none",
                          "alpha": 0.9})
        if row["baseline"]:
            ax.axvline(row["mean"], color="grey", ls="--", lw=1, zorder=1)
    ax.set_yticks(y, [f"{lab} (baseline)" if b else lab
                      for lab, b in zip(frame["label"], frame["baseline"], strict=True)])
    ax.set_xlabel(metric_label)
    ax.set_ylim(-0.7, len(frame) - 0.3)
    ax.set_title(title, fontsize=10)
    return save_figure(fig, path)


def throughput(frame: pd.DataFrame, title: str, path: Path) -> Path | None:
    """Horizontal bars of training and evaluation images per second per device label.

    ``frame`` has columns ``label, train, eval`` (images per second, NaN when unknown).
    """
    import seaborn as sns

    if frame.empty or frame[["train", "eval"]].isna().all().all():
        return None
    _theme()
    long = frame.melt(id_vars="label", value_vars=["train", "eval"], var_name="phase",
                      value_name="images/s").dropna()
    long["phase"] = long["phase"].map({"train": "training", "eval": "evaluation"})
    fig = _new_figure(figsize=(PAGE_WIDTH, 1.0 + 0.6 * frame["label"].nunique()),
                 layout="constrained")
    ax = fig.subplots()
    sns.barplot(long, y="label", x="images/s", hue="phase", ax=ax, palette=PALETTE,
                hue_order=["training", "evaluation"], errorbar=None)
    values = long["images/s"]
    if values.max() / max(values.min(), 1e-9) > 50:  # CPU next to GPU: log keeps both visible
        ax.set_xscale("log")
    for container in ax.containers:
        ax.bar_label(container, fmt="{:,.0f}", padding=3, fontsize=7)
    ax.set_ylabel("")
    ax.set_xlabel("images per second (higher is faster)")
    ax.margins(x=0.15)
    sns.move_legend(ax, "upper left", bbox_to_anchor=(1.01, 1), title=None, frameon=False)
    ax.set_title(title, fontsize=10)
    return save_figure(fig, path)


def severity_curves(frame: pd.DataFrame, title: str, path: Path) -> Path | None:
    """One panel per corruption: the metric against severity (0 = clean), one line per label.

    ``frame`` has columns ``label, corruption, severity, value`` (one row per seed; the line is
    the mean, the band the seeds' range).
    """
    import seaborn as sns

    frame = frame.dropna(subset=["value"])
    if frame.empty:
        return None
    _theme()
    corruptions = list(dict.fromkeys(frame["corruption"]))
    columns = min(3, len(corruptions))
    rows = math.ceil(len(corruptions) / columns)
    fig = _new_figure(figsize=(PAGE_WIDTH, 0.6 + 2.0 * rows), layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, columns, sharex=True, sharey=True)).ravel()
    order = list(dict.fromkeys(frame["label"]))
    for ax, corruption in zip(axes, corruptions, strict=False):
        sns.lineplot(frame[frame["corruption"] == corruption], x="severity", y="value",
                     hue="label", hue_order=order, ax=ax, marker="o", palette=PALETTE,
                     errorbar=("pi", 100), legend=ax is axes[0])
        ax.set_title(corruption.replace("_", " "))
        ax.set_xlabel("severity (0 = clean)")
        ax.set_ylabel("test macro-F1")
        ax.xaxis.get_major_locator().set_params(integer=True)
    for ax in axes[len(corruptions):]:
        ax.set_visible(False)
    if axes[0].get_legend() is not None:
        sns.move_legend(axes[0], "lower left", title=None, frameon=False, fontsize=7)
    fig.suptitle(title, fontsize=10)
    return save_figure(fig, path)


def image_strip(clean: np.ndarray, images: np.ndarray, rows: Sequence[str],
                columns: Sequence[str], title: str, path: Path) -> Path | None:
    """A grid of gray uint8 images: ``images[i, j]`` in row ``rows[i]``, column ``columns[j]``,
    with the clean image as the first column."""
    if images.size == 0:
        return None
    n_rows, n_cols = images.shape[:2]
    fig = _new_figure(figsize=(min(PAGE_WIDTH, 1.1 * (n_cols + 1) + 1.2), 0.5 + 1.1 * n_rows),
                 layout="constrained")
    axes = np.asarray(fig.subplots(n_rows, n_cols + 1, squeeze=False))
    for i in range(n_rows):
        for j in range(n_cols + 1):
            ax = axes[i, j]
            ax.imshow(clean if j == 0 else images[i, j - 1], cmap="gray", vmin=0, vmax=255,
                      interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title("clean" if j == 0 else columns[j - 1], fontsize=8)
            if j == 0:
                ax.set_ylabel(rows[i].replace("_", " "), fontsize=8)
    fig.suptitle(title, fontsize=10)
    return save_figure(fig, path)


#: Fewer complete trials than this give no importance figure: fANOVA on a handful of points
#: draws confident-looking bars from noise.
MIN_IMPORTANCE_TRIALS = 8


def draw_study(study, out_dir: str | Path, *, metric: str = "objective",
               synthetic: bool = False) -> list[Path]:
    """Optimisation history, per-epoch curves and (with enough trials) parameter importances.

    ``study`` is an ``optuna.Study`` (optuna is imported only here, so reports without a study
    never need it); ``metric`` labels the value axis. Pruned trials are drawn too (at the last
    value they reported), epochs count from 1, and titles say "synthetic data" when told so.
    Returns the PNGs written to ``out_dir`` (an SVG lies beside each; none without trials).
    """
    from optuna.trial import TrialState

    out_dir = Path(out_dir)
    trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
    if not trials:
        return []
    _theme()
    suffix = "\n(synthetic data)" if synthetic else ""
    maximize = study.direction.name == "MAXIMIZE"
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    best = ((max if maximize else min)(complete, key=lambda t: t.value) if complete else None)
    written = [_study_history(trials, best, maximize, metric,
                              f"Optimisation history: {study.study_name}{suffix}",
                              confined(out_dir, f"{study.study_name}-history.png")),
               _study_curves(trials, best, metric,
                             f"Per-epoch {metric}, every trial{suffix}",
                             confined(out_dir, f"{study.study_name}-curves.png"))]
    if len(complete) >= MIN_IMPORTANCE_TRIALS:
        written.append(_study_importance(study, len(complete),
                                         f"Parameter importance (fANOVA){suffix}",
                                         confined(out_dir,
                                                  f"{study.study_name}-importance.png")))
    return [path for path in written if path is not None]


def _trial_value(trial) -> float | None:
    """A complete trial's value; a pruned trial's last reported value."""
    if trial.value is not None:
        return trial.value
    steps = trial.intermediate_values
    return steps[max(steps)] if steps else None


def _study_history(trials, best, maximize: bool, metric: str, title: str,
                   path: Path) -> Path | None:
    from optuna.trial import TrialState

    fig = _new_figure(figsize=(PAGE_WIDTH / 2, 2.6), layout="constrained")
    ax = fig.subplots()
    colours = {"complete": "#0173b2", "pruned": "#949494"}
    for state, marker in (("complete", "o"), ("pruned", "x")):
        chosen = [(t.number, _trial_value(t)) for t in trials
                  if (t.state == TrialState.COMPLETE) == (state == "complete")
                  and _trial_value(t) is not None]
        if chosen:
            x, y = zip(*chosen, strict=True)
            label = state if state == "complete" else "pruned (last value reported)"
            ax.scatter(x, y, marker=marker, s=22, color=colours[state], label=label, zorder=3)
    complete = sorted((t for t in trials if t.state == TrialState.COMPLETE),
                      key=lambda t: t.number)
    if complete:
        running, so_far = [], None
        for t in complete:
            so_far = t.value if so_far is None else (max if maximize else min)(so_far, t.value)
            running.append(so_far)
        ax.step([t.number for t in complete], running, where="post", color="#de8f05",
                label="best so far", zorder=2)
    if best is not None:
        ax.annotate(f"best: trial {best.number}", (best.number, best.value), xytext=(4, 4),
                    textcoords="offset points", fontsize=7)
    return _finish_study_axes(fig, ax, "trial number", metric, title, path)


def _finish_study_axes(fig: Figure, ax, xlabel: str, metric: str, title: str,
                       path: Path) -> Path | None:
    """The labels, integer ticks, legend and title both study line figures share; then save."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(metric)
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.legend(fontsize=7, frameon=False)
    ax.set_title(title, fontsize=9)
    return save_figure(fig, path)


def _study_curves(trials, best, metric: str, title: str, path: Path) -> Path | None:
    from optuna.trial import TrialState

    fig = _new_figure(figsize=(PAGE_WIDTH / 2, 2.6), layout="constrained")
    ax = fig.subplots()
    seen = set()
    for t in sorted(trials, key=lambda t: t.state == TrialState.COMPLETE):  # complete on top
        steps = sorted(t.intermediate_values.items())
        if not steps:
            continue
        x = [step + 1 for step, _ in steps]  # reported at step = epoch index: 1-based here
        y = [value for _, value in steps]
        if best is not None and t.number == best.number:
            ax.plot(x, y, color="#de8f05", lw=2, zorder=4, label=f"best (trial {t.number})")
            continue
        kind = "complete" if t.state == TrialState.COMPLETE else "pruned"
        ax.plot(x, y, color="#0173b2" if kind == "complete" else "#949494",
                ls="-" if kind == "complete" else "--", lw=1, alpha=0.8,
                label=None if kind in seen else kind)
        seen.add(kind)
    # with seeds_per_trial k > 1 a trial reports k x epochs steps, one seed after the other
    return _finish_study_axes(fig, ax, "epoch (a trial of k seeds: seed 2's epochs follow "
                              "seed 1's)", metric, title, path)


def _study_importance(study, n_complete: int, title: str, path: Path) -> Path | None:
    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            importance = optuna.importance.get_param_importances(study)
        except (ValueError, RuntimeError) as error:  # e.g. a parameter with a single value
            log.info("no importance figure for %s: %s", study.study_name, error)
            return None
    if not importance:
        return None
    names = list(importance)[::-1]
    fig = _new_figure(figsize=(PAGE_WIDTH / 2, 0.8 + 0.3 * len(names)), layout="constrained")
    ax = fig.subplots()
    ax.barh(names, [importance[n] for n in names], color="#0173b2")
    ax.set_xlabel(f"share of the variance explained ({n_complete} complete trials)")
    ax.set_title(title, fontsize=9)
    return save_figure(fig, path)


def critical_difference(names: Sequence[str], mean_ranks: Sequence[float], cd: float,
                        cliques: Sequence[Sequence[int]], title: str, path: Path) -> Path | None:
    """A critical-difference diagram (Demšar 2006): mean ranks on an axis (1 = best, left),
    Nemenyi's CD as a scale bar, and a thick bar joining configurations within one CD.

    Returns None with fewer than two configurations (nothing to rank).
    """
    k = len(names)
    if k < 2:
        return None
    _theme()
    order = sorted(range(k), key=lambda i: mean_ranks[i])
    rows = math.ceil(k / 2)
    fig = _new_figure(figsize=(PAGE_WIDTH, 1.4 + 0.28 * rows))
    ax = fig.subplots()
    ax.set_xlim(0.5, k + 0.5)
    below = 0.35 + 0.25 * len(cliques)  # the clique bars sit between the axis and the labels
    ax.set_ylim(-(below + 0.9 * rows + 0.4), 1.6)
    ax.axis("off")
    ax.plot([1, k], [0, 0], color="black", linewidth=1)
    for rank in range(1, k + 1):
        ax.plot([rank, rank], [0, 0.15], color="black", linewidth=1)
        ax.text(rank, 0.3, str(rank), ha="center", va="bottom", fontsize=8)
    if not math.isnan(cd):
        ax.plot([1, 1 + cd], [1.2, 1.2], color="black", linewidth=1.5)
        ax.text(1 + cd / 2, 1.3, f"CD = {cd:.2f}", ha="center", va="bottom", fontsize=8)
    for position, i in enumerate(order):  # best half labelled on the left, the rest right
        left = position < rows
        level = -below - (position if left else k - 1 - position) * 0.9
        end = 0.55 if left else k + 0.45
        ax.plot([mean_ranks[i], mean_ranks[i], end], [0, level, level], color="0.3",
                linewidth=0.8)
        ax.text(end, level, f"{names[i]} ({mean_ranks[i]:.2f})  " if left
                else f"  ({mean_ranks[i]:.2f}) {names[i]}", ha="right" if left else "left",
                va="center", fontsize=8)
    for n, group in enumerate(cliques):
        ranks = [mean_ranks[i] for i in group]
        y = -0.35 - 0.25 * n
        ax.plot([min(ranks) - 0.03, max(ranks) + 0.03], [y, y], color="black", linewidth=3)
    ax.set_title(title, fontsize=9)
    return save_figure(fig, path)


def reliability(curves: Sequence[dict], title: str, path: Path) -> Path | None:
    """Reliability diagrams, one panel per model group: accuracy against mean confidence per
    confidence bin, before (dashed) and after (solid) temperature scaling; the diagonal is
    perfect calibration. Each curve dict holds ``label`` and ``before`` / ``after`` as
    ``(mean confidence per bin, accuracy per bin)``; None when there is none."""
    if not curves:
        return None
    _theme()
    columns = min(3, len(curves))
    rows = math.ceil(len(curves) / columns)
    fig = _new_figure(figsize=(PAGE_WIDTH, 2.4 * rows + 0.4))
    axes = np.atleast_1d(fig.subplots(rows, columns, squeeze=False)).ravel()
    for ax, curve in zip(axes, curves, strict=False):
        ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls=":")
        for when, style in (("before", "--"), ("after", "-")):
            confidence, accuracy = curve[when]
            keep = ~np.isnan(confidence)
            ax.plot(confidence[keep], accuracy[keep], style, marker="o", ms=3,
                    label=f"{when} scaling")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_title(curve["label"], fontsize=8)
        ax.set_xlabel("confidence")
        ax.set_ylabel("accuracy")
    for ax in axes[len(curves):]:
        ax.set_visible(False)
    axes[0].legend(fontsize=7, loc="upper left")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)
