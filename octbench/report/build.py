"""The entry point: :func:`build_report` writes ``reports/<experiment>/`` (markdown, figures, CSV).

Owns the order of a report (collect, tables, figures, markdown, exports), the figures' data
frames, and finding a tuning study by its files (``study.json``, ``study.db``, ``journal.log``);
the study's figures and summary are drawn by functions the caller hands in (the CLI passes
``octbench.tuning.study_figures`` and ``study_summary``), so the report never imports tuning.

Must not import: tuning or optuna (a report stands without them), the engine.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from octbench.errors import OctbenchError
from octbench.figures import (
    confusion_grid,
    critical_difference,
    interval_plot,
    reliability,
    throughput,
    training_curves,
)
from octbench.fileio import UnsafePath, atomic_write_text, confined, writable_folder
from octbench.rankings import MIN_BLOCKS
from octbench.report.calibration import calibration_table, reliability_curves
from octbench.report.collect import GroupKey, ReportData, collect, group_runs, null_to_nan
from octbench.report.export import export_medmnist, runs_frame
from octbench.report.ranking import SetupRanking, rank_setups
from octbench.report.render import render_markdown
from octbench.report.sections import robustness
from octbench.report.sections.calibration import calibration_section
from octbench.report.sections.ranking import ranking_section
from octbench.report.sections.recipe import recipe_section
from octbench.report.tables import compare_to_baseline, device_table, main_table, per_class_table

#: More resamples than this change no printed digit and take minutes to hours.
MAX_RESAMPLES = 100_000

log = logging.getLogger(__name__)


def check_options(formats, n_resamples, stratify=None) -> None:
    """Refuse report options out of range (OctbenchError), before any record is read."""
    unknown = set(formats) - {"md", "csv"}
    if unknown or not formats:
        raise OctbenchError(f"report formats must be among md, csv. Got {sorted(formats)!r}.")
    if not isinstance(n_resamples, int) or not 100 <= n_resamples <= MAX_RESAMPLES:
        raise OctbenchError(f"the number of bootstrap resamples must be an int from 100 to "
                            f"{MAX_RESAMPLES:,}. Got {n_resamples!r} instead; 2000 is a good "
                            "default.")
    if stratify not in (None, "class", "groups", "none"):
        raise OctbenchError(f"the bootstrap's stratify must be class, groups or none. Got "
                            f"{stratify!r} instead.")

#: ``draw(study_folder, figure_folder) -> paths`` and ``summarise(study_folder) -> dict``.
DrawStudy = Callable[[Path, Path], Sequence[str | Path]]
SummariseStudy = Callable[[Path], dict]


def build_report(source: str | Path, out: str | Path = "reports", *,
                 formats: Sequence[str] = ("md",), baseline: str | None = None,
                 n_resamples: int = 2000, study: str | Path | None = None,
                 allow_mixed_data: bool = False, stratify: str | None = None,
                 draw_study: DrawStudy | None = None,
                 summarise_study: SummariseStudy | None = None) -> list[Path]:
    """Write the report of an experiment to ``<out>/<experiment>/``.

    Args:
        source: experiment YAML or results folder.
        out: the reports folder.
        formats: ``"md"`` for ``report.md`` and ``figures/*.png``; ``"csv"`` for ``runs.csv``
            and the medmnist Evaluator files in ``medmnist/``.
        baseline: strategy to compare with (default: the YAML's, else ``none``).
        n_resamples: bootstrap resamples of the intervals and tests.
        study: an Optuna study folder whose figures to include (default: :func:`find_study`).
        draw_study: ``draw(study_folder, figure_folder) -> paths`` for the study's figures
            (:func:`octbench.tuning.study_figures`); None: no tuning figures or section.
        summarise_study: ``summarise(study_folder) -> dict`` for the report's tuning section
            (:func:`octbench.tuning.study_summary`).
        allow_mixed_data: report runs made on data of different fingerprints together
            (otherwise refused, naming them).
        stratify: how the bootstrap resamples test items: ``class`` (within each class),
            ``groups`` (whole groups, e.g. patients) or ``none``; default the YAML's
            ``report.bootstrap.stratify``, else ``class``.

    Returns:
        Every path written: report, figures (PNG and SVG), CSV, exported files.

    Raises:
        OctbenchError: if the source does not exist or an option is out of range.

    Example:
        >>> build_report("experiments/quickstart.yaml")  # doctest: +SKIP
        [PosixPath('reports/quickstart/report.md')]
    """
    check_options(formats, n_resamples, stratify)
    start = time.perf_counter()

    def step(what: str) -> None:  # the report can take half a minute: say what it is doing
        log.info("report: %s (%.0f s so far)", what, time.perf_counter() - start)

    data = collect(source, baseline=baseline, allow_mixed_data=allow_mixed_data,
                   stratify=stratify)
    folder = confined(out, data.name)  # everything below is written inside <out>/<name>/
    writable_folder(folder, "report folder")  # before any figure is drawn
    written = []
    step(f"read {len(data.records)} run record(s) of '{data.name}'")
    if "csv" in formats:
        path = folder / "runs.csv"
        atomic_write_text(path, runs_frame(data).to_csv(index=False))
        written += [path, *export_medmnist(data, folder / "medmnist", data.warnings)]
    if "md" in formats:
        step(f"bootstrap intervals and paired tests ({n_resamples} resamples)")
        comparisons = compare_to_baseline(data, n_resamples=n_resamples)
        table = main_table(data, n_resamples=n_resamples, comparisons=comparisons)
        rankings = rank_setups(data)
        calibration = calibration_table(data)
        per_class = per_class_table(data)
        devices = device_table(data)
        figure_dir = folder / "figures"
        figure_dir.mkdir(parents=True, exist_ok=True)
        for old in [*figure_dir.glob("*.png"), *figure_dir.glob("*.svg")]:
            old.unlink()  # a figure of a previous report must not linger
        step("drawing figures")
        figures = (_make_figures(data, table, devices, figure_dir, data.warnings, rankings)
                   if data.runs else [])
        tuning = _study_figures(study, data, figure_dir, draw_study)
        robust_figures, robust_lines = _robustness(data, figure_dir, n_resamples)
        text = render_markdown(data, table=table, comparisons=comparisons,
                               per_class=per_class, devices=devices, figures=figures,
                               n_resamples=n_resamples, study_figures=tuning,
                               study=(_study_summary(study, data, summarise_study)
                                      if tuning else None),
                               robustness=robust_lines,
                               sections={"ranking": ranking_section(data, rankings),
                                         "calibration": calibration_section(data, calibration),
                                         "recipe": recipe_section(data)})
        path = folder / "report.md"
        atomic_write_text(path, text)
        drawn = [*(p for p, _ in figures), *(p for p, _ in robust_figures), *tuning]
        written[:0] = [path, *(f for p in drawn for f in (p, p.with_suffix(".svg"))
                               if f.is_file())]
    return written


def find_study(data: ReportData) -> Path | None:
    """The Optuna study folder of a report: the results folder itself, or for ``<study>-best``
    (the experiment ``octbench tune`` writes) the sibling ``<study>``; None when neither is one.
    """
    candidates = [data.folder]
    if data.folder.name.endswith("-best"):
        candidates.append(data.folder.with_name(data.folder.name.removesuffix("-best")))
    return next((c for c in candidates if _is_study(c)), None)


def _is_study(folder: Path) -> bool:
    return any((folder / name).is_file() for name in ("study.json", "study.db", "journal.log"))


def _study_figures(study: str | Path | None, data: ReportData, figure_dir: Path,
                   draw: DrawStudy | None) -> list[Path]:
    """The tuning study's figures when a study exists and the caller can draw them."""
    folder = Path(study) if study is not None else find_study(data)
    if folder is None:
        return []
    if not _is_study(folder):
        data.warnings.append(f"no Optuna study (study.json, study.db or journal.log) in {folder}")
        return []
    if draw is None:
        return []
    try:
        return [Path(p) for p in draw(folder, figure_dir)]
    except UnsafePath:
        raise  # a link planted in the study folder: refused, never reported around
    except Exception as error:  # the tuning figures are extra: the report goes on without them
        data.warnings.append(f"tuning figures of {folder} could not be drawn: "
                             f"{type(error).__name__}: {error}")
        return []


def _study_summary(study: str | Path | None, data: ReportData,
                   summarise: SummariseStudy | None) -> dict | None:
    """The study's trials for the report's tuning section, when the caller can read them."""
    folder = Path(study) if study is not None else find_study(data)
    if summarise is None:
        return None
    try:
        return summarise(folder)
    except UnsafePath:
        raise  # a link planted in the study folder: refused, never reported around
    except Exception as error:  # the section is extra: the report goes on without it
        data.warnings.append(f"the tuning study in {folder} could not be summarised: "
                             f"{type(error).__name__}: {error}")
        return None


def _robustness(data: ReportData, figure_dir: Path,
                n_resamples: int) -> tuple[list, list[str]]:
    """The robustness section's figures and markdown (none without corrupted runs)."""
    table = robustness.robustness_table(data, n_resamples=n_resamples)
    if table.empty:
        return [], []
    prefix = "SYNTHETIC DATA (not OCTMNIST) — " if data.synthetic else ""
    try:
        figures = robustness.draw_figures(data, figure_dir, _group_label(data), prefix)
    except Exception as error:  # a figure must never cost the whole report
        data.warnings.append(f"robustness figures could not be drawn: "
                             f"{type(error).__name__}: {error}")
        figures = []
    return figures, robustness.render_section(data, table, figures)


def _group_label(data: ReportData) -> Callable[[GroupKey], str]:
    """``model / strategy / setup``, leaving out what every group shares."""
    groups = group_runs(data.runs)
    multi_model = len({k[0] for k in groups}) > 1
    multi_setup = len({k[2] for k in groups}) > 1

    def label(key: GroupKey) -> str:
        model, strategy, setup = key
        parts = ([model] if multi_model else []) + [strategy] + ([setup] if multi_setup else [])
        return " / ".join(parts)
    return label


def _make_figures(data: ReportData, table: pd.DataFrame, devices: pd.DataFrame,
                  folder: Path, warnings: list[str],
                  rankings: Sequence[SetupRanking] = ()) -> list[tuple[Path, str]]:
    size = data.dataset.get("size", "?")
    prefix = "SYNTHETIC DATA (not OCTMNIST) — " if data.synthetic else ""
    name = "OCTMNIST" if data.real_octmnist_size else data.dataset.get("name", "?")
    dataset = f"{size} px" if data.synthetic else f"{name}, {size} px"
    source = f"test split, {dataset}"
    groups = group_runs(data.runs)
    label = _group_label(data)
    made = []
    panels = []
    for key, runs in groups.items():
        # Choose on validation macro-F1: picking the best *test* run would flatter every matrix.
        best = max(runs, key=lambda r: null_to_nan(
            (r.record.metrics.get("val") or {}).get("macro_f1", -1.0)) or -1.0)
        confusion = best.test.get("confusion")
        if confusion is not None:
            panels.append((f"{label(key)}\nseed {best.record.seed}", np.asarray(confusion)))
    jobs = [
        ("confusion.png", lambda p: confusion_grid(
            panels, data.class_names, f"{prefix}Normalised confusion matrices ({source})", p),
         "Row-normalised test confusion matrices (each row sums to 1, so the diagonal is "
         "per-class recall), for the seed with the best validation macro-F1 of each "
         "strategy."),
        ("training_curves.png", lambda p: training_curves(
            _curves(data, label), f"{prefix}Training curves ({dataset})", p),
         "Training loss and validation macro-F1 per epoch: mean over seeds, the band spans the "
         "seeds' minimum to maximum; a star marks the epoch whose checkpoint each seed kept "
         f"(best validation {_selection_metrics(data)})."),
        ("macro_f1_ci.png", lambda p: interval_plot(
            _interval_frame(table, label, data), "Macro-F1 (test)",
            f"{prefix}Macro-F1 with 95% bootstrap CI ({source})", p),
         "Test macro-F1 per strategy: mean over seeds (diamond) with its 95% bootstrap "
         "interval, and each seed (dots). The dashed line marks the baseline's mean."),
        ("throughput.png", lambda p: throughput(
            _throughput_frame(devices), "Throughput per device", p),
         "Training and evaluation throughput (images per second) per model and device; "
         "higher is faster."),
    ]
    curves = [{**c, "label": label((c["model"], c["strategy"], c["setup"]))
               + f" ({c['seeds']} seed{'s' if c['seeds'] > 1 else ''})"}
              for c in reliability_curves(data)]
    jobs.append(("reliability.png", lambda p: reliability(
        curves, f"{prefix}Reliability before and after temperature scaling ({source})", p),
        "Reliability diagrams per group, test items pooled over seeds: accuracy against mean "
        "confidence in 15 confidence bins, before (dashed) and after (solid) temperature "
        "scaling fitted on validation; the dotted diagonal is perfect calibration."))
    drawable = [r for r in rankings
                if len(r.seeds) >= MIN_BLOCKS and not np.isnan(r.ranking.mean_ranks).any()]
    for n, item in enumerate(drawable):
        name = "ranking_cd.png" if len(drawable) == 1 else f"ranking_cd_{n + 1}.png"
        where = f" ({item.setup})" if len(drawable) > 1 else ""
        jobs.append((name, lambda p, r=item.ranking, w=where: critical_difference(
            r.names, r.mean_ranks, r.critical_difference, r.cliques(),
            f"{prefix}Mean rank on test macro-F1 over {len(r.values)} seeds{w}", p),
            "Critical-difference diagram: each configuration's mean rank over the seeds "
            "(1 = best, left); configurations joined by a thick bar are within Nemenyi's "
            f"critical difference (the CD bar) of each other{where}."))
    for name, draw, caption in jobs:
        try:
            path = draw(folder / name)
        except Exception as error:  # a figure must never cost the whole report
            warnings.append(f"figure {name} could not be drawn: {type(error).__name__}: {error}")
            continue
        if path is not None:
            made.append((path, caption))
    return made


def _curves(data: ReportData, label: Callable[[GroupKey], str]) -> pd.DataFrame:
    rows = [{"label": label(key), "seed": run.record.seed, "epoch": h.get("epoch"),
             "train_loss": null_to_nan(h.get("train_loss")),
             "val_macro_f1": null_to_nan(h.get("val_macro_f1")),
             "selected": h.get("epoch") == run.record.best_epoch}
            for key, runs in group_runs(data.runs).items() for run in runs
            for h in run.record.history]
    return pd.DataFrame(rows, columns=["label", "seed", "epoch", "train_loss", "val_macro_f1",
                                       "selected"])


def _selection_metrics(data: ReportData) -> str:
    names = sorted({str((run.record.config.get("train") or {}).get("select_on", "macro_f1"))
                    for run in data.runs})
    return " / ".join(names) or "macro_f1"


def _interval_frame(table: pd.DataFrame, label: Callable[[GroupKey], str],
                    data: ReportData) -> pd.DataFrame:
    return pd.DataFrame([{
        "label": label((r.model, r.strategy, r.setup)), "mean": r.macro_f1_mean,
        "low": r.macro_f1_low, "high": r.macro_f1_high, "values": r.macro_f1_values,
        "baseline": r.strategy == data.baseline_in(r.setup)} for r in table.itertuples()])


def _throughput_frame(devices: pd.DataFrame) -> pd.DataFrame:
    if devices.empty:
        return devices
    label = devices.model + "\n" + devices.device + " " + devices.precision + " · " + (
        devices.hardware.str.slice(0, 40))
    return pd.DataFrame({"label": label, "train": devices.train_images_per_s,
                         "eval": devices.eval_images_per_s})
