"""MedMNIST-C's scores: balanced error (BE) and relative balanced error (rBE).

As ``medmnistc.eval.Evaluator`` defines them for a multi-class task (Di Salvo et al. 2024,
Eq. 1-2): the error of one corrupted set is ``1 - balanced accuracy``; per corruption it is
averaged over the severities, then

- ``BE_c  = mean_s E_{c,s} / E^AlexNet_c``
- ``rBE_c = (mean_s E_{c,s} - E_clean) / (E^AlexNet_c - E^AlexNet_clean)``

and BE / rBE are the means over corruptions. The AlexNet errors are the package's OCTMNIST
baselines; they only mean something on the real OCTMNIST test set, so for synthetic or own data
:func:`summarize` leaves BE / rBE out and reports the unnormalised balanced error and its drop
from clean instead.

Must not import: octbench beyond L0 (plain numbers in, plain numbers out).
"""

from __future__ import annotations

import math

import numpy as np

#: The version of a record's ``robustness`` section (independent of the record's schema).
ROBUSTNESS_VERSION = 1


def alexnet_baseline() -> dict:
    """``medmnistc``'s AlexNet errors on OCTMNIST: ``{"clean_score": e, "raw_scores": {...}}``."""
    from medmnistc.utils.baselines import BASELINES

    return BASELINES["octmnist"]


def balanced_error(cell: dict) -> float:
    """``1 - balanced accuracy`` of one scored set (a :func:`compute_metrics` dict)."""
    return 1.0 - float(cell["balanced_accuracy"])


def _mean(values) -> float:
    values = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.mean(values)) if values else float("nan")


def summarize(cells: dict[str, dict[str, dict]], clean: dict, *,
              baseline: dict | None) -> dict:
    """Per-corruption and overall scores of corrupted evaluation.

    Args:
        cells: ``{corruption: {severity (str): metrics}}``.
        clean: the clean test metrics.
        baseline: :func:`alexnet_baseline` to normalise (real OCTMNIST only), else None.

    Returns:
        ``{"per_corruption": {c: {...}}, "mean": {...}}`` with ``error`` (mean balanced error),
        ``error_drop`` (minus the clean error), ``macro_f1``, ``balanced_accuracy``, and ``be`` /
        ``rbe`` when ``baseline`` is given.
    """
    clean_error = balanced_error(clean)
    per_corruption = {}
    for name, by_severity in cells.items():
        error = _mean(balanced_error(m) for m in by_severity.values())
        row = {
            "error": error,
            "error_drop": error - clean_error,
            "macro_f1": _mean(m["macro_f1"] for m in by_severity.values()),
            "balanced_accuracy": _mean(m["balanced_accuracy"] for m in by_severity.values()),
        }
        if baseline is not None:
            alexnet = baseline["raw_scores"][name]
            row["be"] = error / alexnet
            row["rbe"] = (error - clean_error) / (alexnet - baseline["clean_score"])
        per_corruption[name] = row
    keys = ("error", "error_drop", "macro_f1", "balanced_accuracy") + (
        ("be", "rbe") if baseline is not None else ())
    mean = {key: _mean(row[key] for row in per_corruption.values()) for key in keys}
    mean["clean_error"] = clean_error
    return {"per_corruption": per_corruption, "mean": mean}
