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
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from octbench.report.collect import GroupKey, ReportData, Run, _groups
from octbench.report.markdown import fmt, fmt_p, md_escape, md_table
from octbench.stats import holm, mean_std, seed_test

log = logging.getLogger(__name__)

SAMPLES = "robustness_samples.npz"

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


def robustness_table(data: ReportData) -> pd.DataFrame:
    """One row per (model, strategy, setup) with corrupted evaluation: mean ± std over seeds of
    clean and mean corrupted macro-F1, BE, rBE (normalised protocols) or the balanced error and
    its drop from clean, and the mean corrupted macro-F1's difference to the baseline strategy
    with a paired t test across seeds (Holm-adjusted)."""
    groups = {key: _robust(runs) for key, runs in _groups(data.runs).items()}
    groups = {key: runs for key, runs in groups.items() if runs}
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
        row["delta"] = row["p"] = math.nan
        base = groups.get((model, data.baseline_in(setup), setup))
        if base is not None and strategy != data.baseline_in(setup):
            ours = {r.record.seed: r.record.robustness["summary"]["mean"]["macro_f1"]
                    for r in runs}
            theirs = {r.record.seed: r.record.robustness["summary"]["mean"]["macro_f1"]
                      for r in base}
            seeds = sorted(ours.keys() & theirs.keys())
            if seeds:
                row["delta"] = float(np.mean([ours[s] - theirs[s] for s in seeds]))
                row["p"] = seed_test([ours[s] for s in seeds],
                                     [theirs[s] for s in seeds])["paired_t"].p_value
        rows.append(row)
    table = pd.DataFrame(rows)
    if not table.empty:
        table["p_holm"] = holm(table["p"].to_numpy(dtype=float))
    return table


def curves_frame(data: ReportData, label: Callable[[GroupKey], str]) -> pd.DataFrame:
    """Rows ``label, seed, corruption, severity, value`` (test macro-F1; severity 0 = clean)."""
    rows = []
    for key, runs in _groups(data.runs).items():
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
    from octbench import figures

    made = []
    curves = curves_frame(data, label)
    if not curves.empty:
        path = figures.severity_curves(
            curves, f"{prefix}Test macro-F1 under MedMNIST-C corruptions", folder /
            "robustness_curves.png")
        if path is not None:
            made.append((path, "Test macro-F1 against corruption severity, one panel per "
                               "corruption (severity 0 is the clean test set): mean over seeds, "
                               "the band spans the seeds."))
    samples = load_samples(data)
    if samples is not None:
        path = figures.image_strip(
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
    synthetic = " **— SYNTHETIC DATA, not OCTMNIST**" if data.synthetic else ""
    out = [f"## Robustness (MedMNIST-C corruptions){synthetic}", ""]
    protocols = sorted({p for cell in table["protocol"] for p in cell.split(", ")})
    out += [f"- {md_escape(PROTOCOLS.get(p, p))}." for p in protocols]
    normalised = not table["be_mean"].isna().all()
    base = md_escape(data.baseline_label or "the baseline")
    out += ["- Mean corrupted macro-F1 averages every corruption x severity scored; "
            + ("BE is the balanced error (1 − balanced accuracy) averaged over severities and "
               "divided by AlexNet's (MedMNIST-C), rBE its increase over the clean error "
               "relative to AlexNet's; lower is better, 1.0 is AlexNet."
               if normalised else
               "the balanced error (1 − balanced accuracy) is averaged over corruptions and "
               "severities; its drop from clean is that minus the clean balanced error."),
            f"- Δ: mean corrupted macro-F1 minus {base}'s, paired by seed; p: paired t test "
            "across seeds, Holm-adjusted. The corrupted sets' predictions are not stored, so "
            "there is no bootstrap interval over test items here (the clean table has one).", ""]
    headers = ["model", "strategy", "seeds", "clean macro-F1", "corrupted macro-F1"]
    headers += ["BE", "rBE"] if normalised else ["balanced error", "drop from clean"]
    headers += [f"Δ vs {base}", "p (Holm)"]
    best = table["corrupted_macro_f1_mean"].max()
    rows = []
    for _, row in table.iterrows():
        corrupted = _mean_std(row, "corrupted_macro_f1")
        if round(row["corrupted_macro_f1_mean"], 3) == round(best, 3):
            corrupted = f"**{corrupted}**"
        scores = (["be", "rbe"] if normalised else ["error", "error_drop"])
        rows.append([md_escape(row["model"]) + (f" ({md_escape(row['setup'])})"
                                                if row["setup"] else ""),
                     md_escape(row["strategy"]), str(row["seeds"]),
                     _mean_std(row, "clean_macro_f1"), corrupted,
                     *(_mean_std(row, s) for s in scores),
                     fmt(row["delta"], sign=True) if not math.isnan(row["delta"]) else "—",
                     fmt_p(row["p_holm"]) if not math.isnan(row["delta"]) else "—"])
    out += [md_table(headers, rows), ""]
    if (table["seeds"] < 3).any():
        out += ["Fewer than 3 seeds per configuration: the spreads and tests say little.", ""]
    for path, caption in figures:
        out += [f"![{path.stem.replace('_', ' ')}](figures/{path.name})", "", f"*{caption}*", ""]
    return out


def _mean_std(row, name: str) -> str:
    mean, std = row[f"{name}_mean"], row[f"{name}_std"]
    if math.isnan(mean):
        return "n/a"
    return fmt(mean) + (f" ± {fmt(std)}" if not math.isnan(std) else "")
