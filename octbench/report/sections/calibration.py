"""``## Calibration``: temperature scaling fitted on validation, ECE and NLL before and after."""

from __future__ import annotations

import pandas as pd

from octbench.report.collect import ReportData
from octbench.report.markdown import data_description, fmt, key_columns, md_table, synthetic_tag


def calibration_section(data: ReportData, table: pd.DataFrame) -> list[str]:
    """The section's lines: one row per group, or why there is nothing to show."""
    tag = synthetic_tag(data.synthetic)
    out = [f"## Calibration: temperature scaling{tag}", ""]
    if table.empty or not (table.calibrated > 0).any():
        return out + ["n/a: no run holds a fitted temperature (runs made before octbench "
                      "fitted one at the end of training)."]
    headers, cells = key_columns(data, table)
    rows = [[*cells(row), f"{row.calibrated} of {row.runs}",
             "n/a" if row.calibrated == 0 else
             f"{fmt(row.temperature, 2)} ({fmt(row.t_min, 2)}–{fmt(row.t_max, 2)})",
             f"{fmt(row.ece_before)} → {fmt(row.ece_after)}",
             f"{fmt(row.nll_before)} → {fmt(row.nll_after)}"]
            for _, row in table.iterrows()]
    out += [md_table([*headers, "Runs scaled", "Temperature T (range)", "Test ECE before → after",
                      "Test NLL before → after"], rows,
                     align=["l"] * len(headers) + ["r"] * 4), "",
            f"*Test split of {data_description(data)}.* Temperature scaling (Guo et al. 2017) "
            "divides the logits by one number T, fitted at the end of training by minimising "
            "the NLL on the **validation split only**; the test split never influences it. T > "
            "1 softens over-confident probabilities, T < 1 sharpens them; the predicted class, "
            "and so accuracy and macro-F1, never change. ECE (15 bins) and NLL are means over "
            "the scaled seeds; lower is better. A T fitted on validation need not help on test "
            "when the two splits differ (e.g. in class balance: here validation follows the "
            "training imbalance, test may not), so the table shows both directions as measured. "
            "`python -m octbench predict` applies the run's "
            "T. The reliability diagram (Figures) shows each group before and after."]
    return out
