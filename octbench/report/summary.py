"""The terminal summary that ``octbench report`` prints: mean ± std per cell over seeds.

Must not import: the other report modules except collect, tuning, or the engine.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from octbench.report.collect import dataset_label, load_records, null_to_nan, setup_label
from octbench.results import COMPLETE, RunRecord
from octbench.untrusted import printable

SUMMARY_METRICS = ("accuracy", "balanced_accuracy", "macro_f1", "macro_auc")


def summary_table(records: list[RunRecord]) -> pd.DataFrame:
    """Mean ± std over seeds of the test metrics, per (model, strategy, setup)."""
    rows = [
        {"model": r.model, "strategy": r.strategy, "setup": setup_label(r), "seed": r.seed,
         **{m: null_to_nan(r.metrics.get("test", {}).get(m, math.nan)) for m in SUMMARY_METRICS}}
        for r in records if r.status == COMPLETE
    ]
    if not rows:
        return pd.DataFrame()
    frame = pd.DataFrame(rows)
    grouped = frame.groupby(["model", "strategy", "setup"], sort=False)
    table = grouped[list(SUMMARY_METRICS)].agg(["mean", "std"])
    table[("seeds", "")] = grouped["seed"].nunique()  # "" lets table["seeds"] be a Series
    return table


def print_summary(source: str | Path, *, allow_mixed_data: bool = False,
                  full: bool = True) -> None:
    """Print mean ± std per (model, strategy, device and precision) to the terminal;
    ``full=False`` (``-q``): only the warnings and the line that says what was found."""
    warnings: list[str] = []
    name, folder, records = load_records(source, warnings, allow_mixed_data=allow_mixed_data)
    for warning in warnings:
        print(f"warning: {printable(warning)}")  # names from files: no escape sequences
    if not records:
        if (Path(folder) / "study.json").is_file():  # a tuning study: its report covers trials
            print(f"{name}: a tuning study (its trials are listed in the report); test results "
                  "come from running the best experiment it wrote.")
        else:
            print(f"{name}: no run records in {folder}; run the experiment first.")
        return
    datasets = sorted({dataset_label(r) for r in records})
    counts = pd.Series([r.status for r in records]).value_counts().to_dict()
    print(f"{printable(name)}: test metrics on {printable(', '.join(datasets))} "
          f"({', '.join(f'{n} {s}' for s, n in counts.items())})")
    if not full:
        return
    table = summary_table(records)
    if table.empty:
        print("no complete runs yet.")
        return
    # columns as wide as their longest entry: long model names do not shift the numbers
    keys = list(table.index)
    widths = [max([len(title), *(len(printable(str(key[i]))) for key in keys)])
              for i, title in enumerate(("model", "strategy", "setup"))]
    header = " ".join(f"{t:<{w}}" for t, w in zip(("model", "strategy", "setup"), widths,
                                                 strict=True))
    print(header + "".join(f" {m:>18}" for m in SUMMARY_METRICS) + "  seeds")
    for key, row in table.iterrows():
        cells = "".join(f" {_mean_std(row[(m, 'mean')], row[(m, 'std')]):>18}"
                        for m in SUMMARY_METRICS)
        names = " ".join(f"{printable(str(k)):<{w}}" for k, w in zip(key, widths, strict=True))
        print(f"{names}{cells}  {int(row[('seeds', '')])}")
    if any(r.synthetic for r in records):
        print("SYNTHETIC DATA: these numbers come from octbench's generated scans, not OCTMNIST.")
    if table["seeds"].min() < 3:
        print("note: fewer than 3 seeds per cell; differences are not reliable.")


def _mean_std(mean: float, std: float) -> str:
    if pd.isna(mean):
        return "n/a"
    return f"{mean:.3f}" if pd.isna(std) else f"{mean:.3f} ± {std:.3f}"
