"""Calibration numbers of a report: each run's validation-fitted temperature applied to its
stored test probabilities, ECE and NLL before and after, and reliability curves.

Must not import: markdown, export, build or summary (they import this module), tuning, or the
engine.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from octbench.calibration import apply_temperature, calibration_summary
from octbench.metrics import ECE_BINS
from octbench.report.collect import ReportData, group_runs
from octbench.stats import mean_std


def calibration_table(data: ReportData) -> pd.DataFrame:
    """Per (model, strategy, setup): runs with a fitted temperature, its mean and range, and
    mean test NLL / ECE before and after scaling (``nll_before``, ``nll_after``, ...)."""
    rows = []
    for (model, strategy, setup), runs in group_runs(data.runs).items():
        fitted = [r for r in runs if _temperature(r.record.calibration) is not None
                  and r.scores is not None]
        row = {"model": model, "strategy": strategy, "setup": setup, "runs": len(runs),
               "calibrated": len(fitted)}
        temperatures = [_temperature(r.record.calibration) for r in fitted]
        row["temperature"], _ = mean_std(temperatures)
        row["t_min"] = min(temperatures, default=math.nan)
        row["t_max"] = max(temperatures, default=math.nan)
        summaries = [calibration_summary(r.scores, r.labels, _temperature(r.record.calibration))
                     for r in fitted]
        for key in ("nll_before", "nll_after", "ece_before", "ece_after"):
            row[key] = float(np.mean([s[key] for s in summaries])) if summaries else math.nan
        rows.append(row)
    return pd.DataFrame(rows)


def reliability_curves(data: ReportData, n_bins: int = ECE_BINS) -> list[dict]:
    """Per group with fitted temperatures, pooled over its seeds: for each confidence bin the
    mean confidence and accuracy before and after scaling (NaN for empty bins)."""
    out = []
    for (model, strategy, setup), runs in group_runs(data.runs).items():
        fitted = [r for r in runs if _temperature(r.record.calibration) is not None
                  and r.scores is not None]
        if not fitted:
            continue
        curves = {}
        for when in ("before", "after"):
            probs = [r.scores if when == "before" else
                     apply_temperature(r.scores, _temperature(r.record.calibration))
                     for r in fitted]
            confidence = np.concatenate([p.max(axis=1) for p in probs])
            correct = np.concatenate([p.argmax(axis=1) == r.labels
                                      for p, r in zip(probs, fitted, strict=True)])
            bins = np.clip(np.ceil(confidence * n_bins).astype(int) - 1, 0, n_bins - 1)
            count = np.bincount(bins, minlength=n_bins)
            with np.errstate(invalid="ignore", divide="ignore"):
                curves[when] = (np.bincount(bins, confidence, n_bins) / count,
                                np.bincount(bins, correct.astype(float), n_bins) / count)
        out.append({"model": model, "strategy": strategy, "setup": setup,
                    "seeds": len(fitted), **curves})
    return out


def _temperature(calibration: dict) -> float | None:
    value = (calibration or {}).get("temperature")
    return float(value) if isinstance(value, int | float) and 0 < value < math.inf else None
