"""The report's robustness section: MedMNIST-C corrupted test sets beside the clean test.

A table model x strategy (clean macro-F1, mean corrupted macro-F1, BE / rBE or the unnormalised
balanced error, the paired comparison with the baseline), severity curves and a strip of one
test scan at every corruption and severity, read from the runs' records (``robustness``) and
their ``robustness_samples.npz``; nothing here needs ``medmnistc``.

Must not import: build (it imports this module), tuning, the engine.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from octbench.errors import OctbenchError
from octbench.figures import image_strip, severity_curves
from octbench.metrics import metric_fn
from octbench.report.collect import GroupKey, ReportData, Run, group_runs
from octbench.report.markdown import (
    bootstrap_scheme,
    fmt,
    fmt_p,
    md_escape,
    md_table,
    mean_std_cell,
    synthetic_tag,
)
from octbench.report.tables import resampling
from octbench.results import ResultsStore
from octbench.stats import bootstrap_ci, holm, mean_std, paired_bootstrap_test, seed_test

log = logging.getLogger(__name__)

SAMPLES = ResultsStore.ROBUSTNESS_SAMPLES

#: Columns with a bootstrap interval (from the stored predictions of the corrupted sets).
INTERVALS = ("corrupted_macro_f1", "be", "error")

PROTOCOLS = {
    "medmnist_c": "MedMNIST-C protocol: OCTMNIST at 224 px, corrupted as MedMNIST-C does; "
                  "comparable with MedMNIST-C's published numbers",
    "adapted": "adapted protocol: the 224-px OCTMNIST test scans are corrupted, then resized to "
               "the run's size like the clean data; BE / rBE use MedMNIST-C's 224-px AlexNet "
               "baselines, so they are not comparable with its published numbers",
    "synthetic": "SYNTHETIC data, adapted protocol (224-px synthetic scans corrupted, then "
                 "resized); no AlexNet normalisation: balanced error and its drop from clean",
    "generic": "own data: the generic gray-scale corruptions with OCTMNIST's severities, at "
               "the data's size; no AlexNet normalisation: balanced error and its drop from clean",
}


def _robust(runs: list[Run]) -> list[Run]:
    return [r for r in runs if r.record.robustness.get("cells")]


Cell = tuple[str, int]


@dataclass(frozen=True)
class CorruptedPredictions:
    """One run's stored predictions of its corrupted sets: ``preds`` (N, cells), in ``cells``'
    order, and the test ``labels`` (N,)."""

    cells: tuple[Cell, ...]
    labels: np.ndarray
    preds: np.ndarray


def cells_of(section: dict) -> tuple[Cell, ...]:
    return tuple((name, int(s)) for name, by_severity in section["cells"].items()
                 for s in by_severity)


def load_predictions(data: ReportData, run: Run) -> CorruptedPredictions | None:
    """The run's ``robustness_predictions.npz``, checked against the record (shapes from its
    header, classes in range, test labels equal to the clean ones, and the mean corrupted
    macro-F1 recomputed from it equal to the record's); None, with a warning when the file is
    there but does not fit, for records made before it was stored."""
    section, record = run.record.robustness, run.record
    store = ResultsStore(data.folder)
    try:
        if not (store.run_dir(record.run_id) / store.ROBUSTNESS_PREDICTIONS).is_file():
            return None
        cells = cells_of(section)
        counts = (record.dataset.get("class_counts") or {}).get("test")
        found = store.robustness_predictions(record.run_id, list(cells),
                                             items=sum(counts) if counts else None,
                                             classes=len(data.class_names))
        labels = found["labels"].astype(np.int64)
        preds = np.stack([found[cell] for cell in cells], axis=1).astype(np.int64)
        if run.labels is not None and not np.array_equal(labels, run.labels):
            raise ValueError("its labels are not the clean test labels")
        weights = cell_weights(cells)
        f1 = metric_fn("macro_f1", len(data.class_names))
        recomputed = sum(w * f1(labels, preds[:, j]) for j, w in enumerate(weights))
        stored = section["summary"]["mean"]["macro_f1"]
        if not math.isclose(recomputed, stored, rel_tol=0, abs_tol=1e-9):
            raise ValueError(f"its mean corrupted macro-F1 {recomputed:.6f} is not the record's "
                             f"{stored:.6f}")
    except (OSError, ValueError, KeyError, TypeError, OctbenchError) as error:
        data.warnings.append(f"run {record.run_id}: its corrupted sets' predictions are not "
                             f"usable ({error}); mean ± std only for it")
        return None
    return CorruptedPredictions(cells, labels, preds)


def cell_weights(cells: Sequence[Cell]) -> np.ndarray:
    """Each cell's weight in a mean over corruptions of the mean over their severities (as
    :func:`octbench.robustness.scores.summarize` averages)."""
    names = [name for name, _ in cells]
    return np.array([1 / (len(set(names)) * names.count(name)) for name in names])


def corrupted_metrics(cells: Sequence[Cell], k: int, alexnet: dict | None) -> dict:
    """Resampling forms (``fn(labels, preds (..., N, cells))``, leading axes kept, as
    :func:`octbench.metrics.metric_fn`) of the mean corrupted macro-F1 and of the mean balanced
    error, divided per corruption by AlexNet's (``alexnet``: corruption -> its error) for BE."""
    weights = cell_weights(cells)
    f1 = metric_fn("macro_f1", k)
    balanced = metric_fn("balanced_accuracy", k)
    scale = np.array([1 / alexnet[name] if alexnet else 1.0 for name, _ in cells])

    def mean_f1(y, p):
        return sum(w * f1(y, p[..., j]) for j, w in enumerate(weights))

    def error(y, p):
        return sum(w * s * (1 - balanced(y, p[..., j]))
                   for j, (w, s) in enumerate(zip(weights, scale, strict=True)))

    return {"corrupted_macro_f1": mean_f1, ("be" if alexnet else "error"): error}


def alexnet_errors(runs: Sequence[Run]) -> dict | None:
    """AlexNet's balanced error per corruption, as the records normalised BE by it
    (``error / be``); None when not normalised or not recoverable."""
    section = runs[0].record.robustness
    if not section.get("normalised"):
        return None
    try:
        return {name: row["error"] / row["be"]
                for name, row in section["summary"]["per_corruption"].items()}
    except (KeyError, TypeError, ZeroDivisionError):
        return None


def _stacked(data: ReportData, runs: Sequence[Run], loaded: dict) -> tuple | None:
    """(cells, labels, preds (seeds, N, cells)) when every run stored the same cells of the same
    test items, else None."""
    found = [loaded.get(r.record.run_id) for r in runs]
    if not found or any(f is None for f in found):
        return None
    first = found[0]
    if any(f.cells != first.cells or not np.array_equal(f.labels, first.labels) for f in found):
        return None
    return first.cells, first.labels, np.stack([f.preds for f in found])


def robustness_table(data: ReportData, *, n_resamples: int = 2000) -> pd.DataFrame:
    """One row per (model, strategy, setup) with corrupted evaluation: mean ± std over seeds of
    clean and mean corrupted macro-F1, BE, rBE (normalised protocols) or the balanced error and
    its drop from clean; 95% bootstrap intervals of the mean corrupted macro-F1 and of BE (or
    the balanced error) from the stored predictions, with the same machinery and resampling
    scheme as the clean table; and the mean corrupted macro-F1's difference to the baseline
    strategy with a paired bootstrap test over the test items and a paired t test across seeds
    (both Holm-adjusted). Runs without stored predictions get mean ± std and the t test."""
    groups = {key: _robust(runs) for key, runs in group_runs(data.runs).items()}
    groups = {key: runs for key, runs in groups.items() if runs}
    loaded = {r.record.run_id: load_predictions(data, r) for runs in groups.values()
              for r in runs}
    k = len(data.class_names)
    rows = []
    for (model, strategy, setup), runs in groups.items():
        mean = [r.record.robustness["summary"]["mean"] for r in runs]
        row = {"model": model, "strategy": strategy, "setup": setup, "seeds": len(runs),
               "protocol": ", ".join(sorted({r.record.robustness.get("protocol", "?")
                                             for r in runs}))}
        columns = {"clean_macro_f1": [r.test.get("macro_f1", math.nan) for r in runs],
                   "corrupted_macro_f1": [m.get("macro_f1", math.nan) for m in mean],
                   "be": [m.get("be", math.nan) for m in mean],
                   "rbe": [m.get("rbe", math.nan) for m in mean],
                   "error": [m.get("error", math.nan) for m in mean],
                   "error_drop": [m.get("error_drop", math.nan) for m in mean]}
        for name, values in columns.items():
            row[f"{name}_mean"], row[f"{name}_std"] = mean_std(values)
            row[f"{name}_low"] = row[f"{name}_high"] = math.nan
        stacked = _stacked(data, runs, loaded)
        row["intervals"] = stacked is not None
        if stacked is not None:
            cells, labels, preds = stacked
            for name, fn in corrupted_metrics(cells, k, alexnet_errors(runs)).items():
                interval = bootstrap_ci(labels, preds, fn, n_resamples=n_resamples,
                                        vectorized=True, **resampling(data, runs, labels))
                row[f"{name}_low"], row[f"{name}_high"] = interval.low, interval.high
        row.update(delta=math.nan, p=math.nan, seed_p=math.nan)
        base = groups.get((model, data.baseline_in(setup), setup))
        if base is not None and strategy != data.baseline_in(setup):
            row.update(_compare(data, runs, base, loaded, k, n_resamples))
        rows.append(row)
    table = pd.DataFrame(rows)
    if not table.empty:
        table["p_holm"] = holm(table["p"].to_numpy(dtype=float))
        table["seed_p_holm"] = holm(table["seed_p"].to_numpy(dtype=float))
    return table


def _compare(data: ReportData, runs: list[Run], base: list[Run], loaded: dict, k: int,
             n_resamples: int) -> dict:
    """Mean corrupted macro-F1 minus the baseline's over the seeds both have: the paired
    bootstrap test over the test items (same items, all paired seeds) and the paired t test."""
    ours = {r.record.seed: r for r in runs}
    theirs = {r.record.seed: r for r in base}
    seeds = sorted(ours.keys() & theirs.keys())
    if not seeds:
        return {}
    a, b = [ours[s] for s in seeds], [theirs[s] for s in seeds]

    def value(run: Run) -> float:
        return run.record.robustness["summary"]["mean"]["macro_f1"]

    out = {"delta": float(np.mean([value(x) - value(y) for x, y in zip(a, b, strict=True)])),
           "seed_p": seed_test([value(x) for x in a], [value(y) for y in b])[
               "paired_t"].p_value}
    sa, sb = _stacked(data, a, loaded), _stacked(data, b, loaded)
    if (sa is not None and sb is not None and sa[0] == sb[0]
            and np.array_equal(sa[1], sb[1])):
        metric = corrupted_metrics(sa[0], k, None)["corrupted_macro_f1"]
        out["p"] = paired_bootstrap_test(sa[1], sa[2], sb[2], metric, n_resamples=n_resamples,
                                         vectorized=True,
                                         **resampling(data, [*a, *b], sa[1])).p_value
    return out


def curves_frame(data: ReportData, label: Callable[[GroupKey], str]) -> pd.DataFrame:
    """Rows ``label, seed, corruption, severity, value`` (test macro-F1; severity 0 = clean)."""
    rows = []
    for key, runs in group_runs(data.runs).items():
        for run in _robust(runs):
            for corruption, cells in run.record.robustness["cells"].items():
                rows.append({"label": label(key), "seed": run.record.seed,
                             "corruption": corruption, "severity": 0,
                             "value": run.test.get("macro_f1", math.nan)})
                rows += [{"label": label(key), "seed": run.record.seed,
                          "corruption": corruption, "severity": int(severity),
                          "value": metrics.get("macro_f1", math.nan)}
                         for severity, metrics in cells.items()]
    return pd.DataFrame(rows)


def load_samples(data: ReportData) -> dict | None:
    """The sample strip of the first run that saved one (read without pickle, shape-checked)."""
    for run in _robust(data.runs):
        path = data.folder / run.record.run_id / SAMPLES
        if not path.is_file():
            continue
        try:
            with np.load(path, allow_pickle=False) as arrays:
                samples = {k: arrays[k] for k in ("clean", "images", "corruptions",
                                                  "severities")}
        except (OSError, ValueError, KeyError) as error:
            log.warning("cannot read %s (%s); no sample strip from it", path, error)
            continue
        images = samples["images"]
        if (images.dtype == np.uint8 and images.ndim == 4
                and images.shape[:2] == (len(samples["corruptions"]), len(samples["severities"]))
                and samples["clean"].shape == images.shape[2:]):
            return samples
    return None


def draw_figures(data: ReportData, folder: Path, label: Callable[[GroupKey], str],
                 prefix: str) -> list[tuple[Path, str]]:
    """The severity curves and the sample strip (PNG + SVG); [] without corrupted runs."""
    made = []
    curves = curves_frame(data, label)
    if not curves.empty:
        path = severity_curves(
            curves, f"{prefix}Test macro-F1 under MedMNIST-C corruptions", folder /
            "robustness_curves.png")
        if path is not None:
            made.append((path, "Test macro-F1 against corruption severity, one panel per "
                               "corruption (severity 0 is the clean test set): mean over seeds, "
                               "the band spans the seeds."))
    samples = load_samples(data)
    if samples is not None:
        path = image_strip(
            samples["clean"], samples["images"], [str(c) for c in samples["corruptions"]],
            [f"severity {s}" for s in samples["severities"]],
            f"{prefix}One test scan at every corruption and severity",
            folder / "robustness_samples.png")
        if path is not None:
            made.append((path, "What was measured: the first test scan, clean and at every "
                               "corruption and severity, as the model saw it."))
    return made


def render_section(data: ReportData, table: pd.DataFrame,
                   figures: list[tuple[Path, str]]) -> list[str]:
    """The markdown of the section ([] when no run was evaluated on corrupted sets)."""
    if table.empty:
        return []
    synthetic = synthetic_tag(data.synthetic)
    out = [f"## Robustness (MedMNIST-C corruptions){synthetic}", ""]
    protocols = sorted({p for cell in table["protocol"] for p in cell.split(", ")})
    out += [f"- {md_escape(PROTOCOLS.get(p, p))}." for p in protocols]
    normalised = not table["be_mean"].isna().all()
    base = md_escape(data.baseline_label or "the baseline")
    out += ["- Mean corrupted macro-F1 averages each corruption's macro-F1 over its severities, "
            "then over the corruptions; "
            + ("BE is the balanced error (1 − balanced accuracy) averaged over severities and "
               "divided by AlexNet's (MedMNIST-C), rBE its increase over the clean error "
               "relative to AlexNet's; lower is better, 1.0 is AlexNet."
               if normalised else
               "the balanced error (1 − balanced accuracy) is averaged likewise; its drop from "
               "clean is that minus the clean balanced error."),
            "- Below each mean ± std over seeds: the 95% percentile bootstrap interval over the "
            "test items from the stored predictions of the corrupted sets, exactly as the clean "
            "table's (every seed and every corrupted set scored on the same resampled items; "
            f"{bootstrap_scheme(data).rstrip('.')}).",
            f"- Δ: mean corrupted macro-F1 minus {base}'s, paired by seed; p: paired bootstrap "
            "over the test items, and paired t test across seeds; both Holm-adjusted.", ""]
    if not table["intervals"].all():
        out[-1:] = ["- [n/a]: runs evaluated before the corrupted sets' predictions were stored "
                    "(no robustness_predictions.npz), or whose seeds differ in the sets scored: "
                    "mean ± std over seeds only, and no bootstrap test.", ""]
    headers = ["model", "strategy", "seeds", "clean macro-F1", "corrupted macro-F1"]
    headers += ["BE", "rBE"] if normalised else ["balanced error", "drop from clean"]
    headers += [f"Δ vs {base}", "p bootstrap (Holm)", "p seeds (Holm)"]
    best = table["corrupted_macro_f1_mean"].max()
    rows = []
    for _, row in table.iterrows():
        corrupted = mean_std_cell(row, "corrupted_macro_f1", best, INTERVALS)
        scores = (["be", "rbe"] if normalised else ["error", "error_drop"])
        compared = not math.isnan(row["delta"])
        rows.append([md_escape(row["model"]) + (f" ({md_escape(row['setup'])})"
                                                if row["setup"] else ""),
                     md_escape(row["strategy"]), str(row["seeds"]),
                     mean_std_cell(row, "clean_macro_f1", intervals=INTERVALS), corrupted,
                     *(mean_std_cell(row, s, intervals=INTERVALS) for s in scores),
                     fmt(row["delta"], sign=True) if compared else "—",
                     fmt_p(row["p_holm"]) if compared else "—",
                     fmt_p(row["seed_p_holm"]) if compared else "—"])
    out += [md_table(headers, rows), ""]
    if (table["seeds"] < 3).any():
        out += ["Fewer than 3 seeds per configuration: the spreads and tests say little.", ""]
    for path, caption in figures:
        out += [f"![{path.stem.replace('_', ' ')}](figures/{path.name})", "", f"*{caption}*", ""]
    return out
