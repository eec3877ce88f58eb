"""``## Devices: speed and parity``: throughput per device and agreement with CPU fp32 runs."""

from __future__ import annotations

import math

import pandas as pd

from octbench.report.collect import ReportData
from octbench.report.markdown import fmt, md_code, md_escape, md_table


def device_section(data: ReportData, devices: pd.DataFrame) -> list[str]:
    """Speed per model and device, and parity with the CPU fp32 runs of the same seeds."""
    out = ["## Devices: speed and parity", ""]
    rows = []
    for row in devices.itertuples():
        if row.is_reference:
            parity = "reference", "reference", "reference", "reference"
        elif row.paired == 0:
            parity = ("n/a (no CPU fp32 run of the same seeds)",) + ("n/a",) * 3
        else:
            parity = (str(row.paired), fmt(row.delta_accuracy, sign=True),
                      f"{fmt(row.delta_macro_f1, sign=True)} (largest "
                      f"{fmt(row.max_abs_delta_macro_f1)})", fmt(100 * row.agreement, 1) + "%")
        speedup = "n/a" if math.isnan(row.speedup) else f"{row.speedup:.1f}×"
        rows.append([md_escape(row.model), md_code(row.device),
                     md_escape(row.hardware), row.precision, str(row.runs),
                     fmt(row.seconds_per_epoch, 1), fmt(row.train_images_per_s, 0),
                     fmt(row.eval_images_per_s, 0), speedup, *parity])
    out.append(md_table(["Model", "Device", "Hardware", "Precision", "Runs", "s / epoch",
                         "Train img/s", "Eval img/s", "Train speed vs CPU fp32", "Runs paired",
                         "Δ Accuracy vs CPU", "Δ Macro-F1 vs CPU", "Same prediction"], rows,
                        align=["l", "l", "l", "l"] + ["r"] * 9))
    out += ["", "Speed is the mean over runs: training images per second (forward, backward, "
            "update, including the data pipeline) and evaluation images per second. Parity "
            "pairs each run with the CPU fp32 run of the same model, strategy and seed: Δ is "
            "this setup − CPU, and *same prediction* is the share of test items on which both "
            "predict the same class. Identical settings rarely give identical numbers across "
            "devices (kernels differ), so small Δ are expected; large ones point to a precision "
            "or determinism problem. Runs copied from several machines into one results folder "
            "appear here side by side."]
    if data.synthetic:
        out[-1] += " (Metrics from synthetic data; the timings do not depend on it.)"
    return out
