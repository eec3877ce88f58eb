"""``## Differences to the baseline``: paired bootstrap and across-seed tests, Holm-adjusted,
and a verdict that says only what both tests support."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from octbench.report.collect import ReportData
from octbench.report.markdown import (
    ALPHA,
    METRIC_LABELS,
    data_description,
    fmt,
    fmt_p,
    key_columns,
    md_code,
    md_table,
    synthetic_tag,
)
from octbench.report.tables import COMPARE_METRICS, PRIMARY

#: Seed differences smaller than this are rounding: the two runs scored the same.
_SAME = 1e-12


def seed_wording(row) -> str:
    """What the across-seed test can say: a Holm p, or why there is none (in words)."""
    differences = [d for d in (row.get("seed_differences") or []) if not math.isnan(d)]
    if not differences:
        return "n/a (no paired seed)"
    if len(differences) == 1:
        return "untestable with one seed"
    if all(abs(d) < _SAME for d in differences):
        return f"identical on every seed ({len(differences)} seeds)"
    if np.ptp(differences) < _SAME:
        return f"the same difference on every seed ({len(differences)} seeds; t undefined)"
    return fmt_p(row.seed_t_p_holm, "Holm p")


def macro_f1_verdict(row) -> str:
    """Macro-F1 verdict: significant over the test items, and whether retraining confirms it."""
    p, seed_p = row[f"{PRIMARY}_p_holm"], row.seed_t_p_holm
    if math.isnan(p):
        return "n/a"
    seeds = seed_wording(row)
    if not p < ALPHA:
        return "identical on every seed" if seeds.startswith("identical") else "not significant"
    direction = "better" if row[f"{PRIMARY}_delta"] > 0 else "worse"
    if seed_p < ALPHA:
        return direction
    if seeds == "untestable with one seed":
        return f"{direction} on the test items; across seeds untestable with one seed"
    if seeds.startswith("the same difference"):
        return f"{direction} on the test items, by the same amount on every seed"
    # Significant on the test items but not across seeds: the gap may be luck of these seeds.
    return f"{direction} on the test items, not confirmed across seeds"


def comparison_section(data: ReportData, comparisons: pd.DataFrame,
                        n_resamples: int) -> list[str]:
    """Each strategy against the baseline per metric, with the tests named and a verdict."""
    out = [f"## Differences to the baseline {md_code(data.baseline_label)}"
           + synthetic_tag(data.synthetic), ""]
    if comparisons.empty:
        return out + [f"n/a: no strategy other than {md_code(data.baseline_label)} has complete "
                      "runs beside a complete baseline run of the same model and setup."]
    headers, cells = key_columns(data, comparisons)
    rows = []
    for _, row in comparisons.iterrows():
        deltas = []
        for metric in COMPARE_METRICS:
            delta, p = row[f"{metric}_delta"], row[f"{metric}_p_holm"]
            text = f"{fmt(delta, sign=True)} ({fmt_p(p, 'Holm p')})"
            if math.isnan(delta):
                text = "n/a"
            elif not p < ALPHA:
                text += " not significant"
            deltas.append(text)
        verdict = macro_f1_verdict(row)
        seed_text = seed_wording(row)
        rows.append([*cells(row), str(row.seeds), *deltas, seed_text, verdict])
    out.append(md_table([*headers, "Paired seeds", *[f"Δ {METRIC_LABELS[m]}"
                                                   for m in COMPARE_METRICS],
                         "Across seeds (paired t, macro-F1)", "Macro-F1 verdict"], rows,
                        align=["l"] * len(headers) + ["r"] * (len(COMPARE_METRICS) + 2) + ["l"]))
    out += ["", f"*Test split of {data_description(data)}.* Δ = strategy − baseline, "
            "averaged over the seeds both have (runs are paired by seed). **Test used:** a "
            f"paired bootstrap over the test items ({n_resamples:,} resamples; both models and "
            "all their seeds are scored on the same resampled items), two-sided; **multiple "
            "comparisons:** Holm–Bonferroni over all comparisons of each metric. *Across "
            "seeds* repeats the macro-F1 comparison with a paired t test over the seeds "
            "(Holm-adjusted), which asks whether the gain survives retraining; with 3 seeds it "
            "has little power. **Verdict:** *better* or *worse* only when both tests agree; "
            "*not confirmed across seeds* when the test items show a difference that the "
            "seeds do not (the seeds' spread could explain it); *untestable with one seed* when "
            "only one seed is paired; *identical on every seed* when both score exactly the "
            "same on each seed; \"not significant\" means the "
            f"adjusted p ≥ {ALPHA}: the data do not show a difference, not that there is none."]
    return out
