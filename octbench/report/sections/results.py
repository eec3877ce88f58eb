"""``## Results on the test split``: mean ± std and 95% intervals per group, the difference to
the baseline, and warnings where seeds are too few or disagree."""

from __future__ import annotations

import math

import pandas as pd

from octbench.metrics import METRICS
from octbench.report.collect import ReportData
from octbench.report.markdown import (
    ALPHA,
    METRIC_LABELS,
    MIN_SEEDS,
    best_value,
    data_description,
    fmt,
    fmt_p,
    key_columns,
    md_escape,
    md_names,
    md_table,
    mean_std_cell,
    synthetic_tag,
)
from octbench.report.tables import TABLE_METRICS

#: A std across seeds above this (in metric units) means seeds disagree enough to warn.
LARGE_STD = 0.03


def results_section(data: ReportData, table: pd.DataFrame, n_resamples: int) -> list[str]:
    """The main table (mean ± std, 95% intervals, Δ macro-F1 to the baseline) and its warnings."""
    out = ["## Results on the test split" + synthetic_tag(data.synthetic), ""]
    headers, cells = key_columns(data, table)
    best = {m: best_value(table[f"{m}_mean"].tolist(), m) for m in TABLE_METRICS}
    delta_header = f"Δ Macro-F1 vs {md_escape(data.baseline_label)}"
    dagger = False
    rows = []
    for _, row in table.iterrows():
        if row.strategy == data.baseline_in(row.setup):
            delta = "—"
        elif math.isnan(row.delta):
            delta = "n/a"
        else:
            delta = f"{fmt(row.delta, sign=True)} ({fmt_p(row.p_holm, 'Holm p')})"
            if not row.p_holm < ALPHA:
                delta += " not significant"
            elif not row.seed_p_holm < ALPHA:
                delta += " †"
                dagger = True
        rows.append([*cells(row), str(row.seeds),
                     *[mean_std_cell(row, m, best[m]) for m in TABLE_METRICS], delta])
    arrows = {m: "↑" if METRICS[m] == "max" else "↓" for m in TABLE_METRICS}
    out.append(md_table([*headers, "Seeds", *[f"{METRIC_LABELS[m]} {arrows[m]}"
                                             for m in TABLE_METRICS], delta_header], rows,
                        align=["l"] * len(headers) + ["r"] * (len(TABLE_METRICS) + 2)))
    out += ["", f"*Test split of {data_description(data)}.* Each cell: mean ± standard "
            "deviation over seeds, and below it the 95% confidence interval from a percentile "
            f"bootstrap over the test items ({n_resamples:,} resamples; each resample scores "
            "every seed on the same items, so the interval reflects the finite test set). "
            "↑ higher is better, ↓ lower is better. ECE (expected calibration error, 15 bins) "
            "has no interval: binning noise biases it upwards on every bootstrap resample, so "
            "an interval would be misleading; compare it by its std over seeds. "
            "The best mean per column is **bold**. Δ Macro-F1: mean over paired seeds of "
            "(strategy − baseline); p from a paired bootstrap test over the test items, "
            "Holm-adjusted over all comparisons with the baseline; a difference is called "
            f"significant only when that p < {ALPHA}."]
    if dagger:
        out[-1] += (" † significant over the test items but not confirmed across seeds (paired "
                    "t test): see the next section.")
    notes = []
    for _, row in table.iterrows():
        name = md_names(row.model, row.strategy) + (
            f" ({md_escape(row.setup)})" if table.setup.nunique() > 1 else "")
        if row.seeds < MIN_SEEDS:
            notes.append(f"{name}: only {row.seeds} seed(s); the std and across-seed tests need "
                         f"at least {MIN_SEEDS}, so differences from this row are not reliable.")
        large = [f"{METRIC_LABELS[m]} {fmt(row[f'{m}_std'])}" for m in TABLE_METRICS
                 if row[f"{m}_std"] > LARGE_STD]
        if large:
            notes.append(f"{name}: large spread across seeds (std {', '.join(large)} > "
                         f"{LARGE_STD}); one seed's result could differ a lot from another's.")
        undefined = [METRIC_LABELS[m] for m in TABLE_METRICS if math.isnan(row[f"{m}_mean"])]
        if undefined:
            notes.append(f"{name}: {', '.join(undefined)} undefined (n/a) — e.g. macro AUC "
                         "needs at least two classes in the test labels.")
    if notes:
        out += ["", *[f"- ⚠ {n}" for n in notes]]
    return out
