"""Classification metrics of one set of predictions: pure functions, numpy in, Python floats out.

:func:`compute_metrics` runs on the validation split after every epoch, so every count-based
metric comes from one confusion matrix built with ``np.bincount``: one pass over the items,
a few microseconds for 10,000 of them, and no chance of two metrics disagreeing about the counts.
The values equal scikit-learn's with ``zero_division=0`` (``tests/test_metrics.py`` checks
it to 1e-12). Only macro AUC calls scikit-learn, since it needs the ranks of the scores.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

import numpy as np

from octbench.errors import OctbenchError
from octbench.registry import did_you_mean

#: The scalar metrics of :func:`compute_metrics` and the direction in which each improves
#: ("max" or "min"): used to select the best epoch and to bold the best value in reports.
METRICS: Mapping[str, str] = MappingProxyType(
    {
        "accuracy": "max",
        "balanced_accuracy": "max",
        "macro_f1": "max",
        "weighted_f1": "max",
        "macro_auc": "max",
        "ece": "min",
        "nll": "min",
    }
)

#: Equal-width confidence bins of the expected calibration error, as in Guo et al. (2017).
ECE_BINS = 15

# Probabilities are clipped to this floor in the NLL: one confidently wrong item with p = 0 would
# otherwise make the mean infinite and hide every other item (it costs at most -log(1e-12) ≈ 27.6).
_NLL_FLOOR = 1e-12


def compute_metrics(
    labels: np.ndarray, scores: np.ndarray, class_names: Sequence[str]
) -> dict[str, Any]:
    """All metrics of one set of predictions, as a JSON-serialisable dict.

    The predicted class is the arg-max of ``scores``. Count-based metrics treat a division by zero
    (a class never predicted, or absent from ``labels``) as 0.0, like scikit-learn's
    ``zero_division=0``; macro averages run over all ``class_names``, while balanced accuracy
    averages recall over the classes present in ``labels`` (as ``balanced_accuracy_score``).

    Args:
        labels: true classes, integers in ``[0, K)``, shape ``(N,)`` (``(N, 1)`` is accepted, as
            MedMNIST stores it).
        scores: class probabilities, shape ``(N, K)``, rows summing to 1 (softmax outputs).
        class_names: the K class names, in label order; keys of ``per_class``.

    Returns:
        ``accuracy``, ``balanced_accuracy``, ``macro_f1``, ``weighted_f1``, ``macro_auc``
        (one-vs-rest, macro; NaN when a class is absent from ``labels``, where AUC is undefined),
        ``ece`` (top-label, 15 equal-width bins), ``nll`` (mean negative log-likelihood of the
        true class), ``per_class`` (``{name: {precision, recall, f1, support}}``) and
        ``confusion`` (list of lists, rows = true class, columns = predicted class).

    Raises:
        ValueError: if the shapes disagree, there are no items, or a label is out of range.

    Example:
        >>> labels = np.array([0, 1, 1, 2])
        >>> scores = np.array([[.8, .1, .1], [.2, .7, .1], [.6, .3, .1], [.1, .1, .8]])
        >>> m = compute_metrics(labels, scores, ["a", "b", "c"])
        >>> m["accuracy"], m["per_class"]["b"]["recall"], m["confusion"][1]
        (0.75, 0.5, [1, 1, 0])
    """
    labels = np.asarray(labels).reshape(-1)
    scores = np.asarray(scores, dtype=np.float64)
    k = len(class_names)
    _check(labels, scores, k)
    labels = labels.astype(np.int64)  # MedMNIST labels are uint8: labels * k must not overflow
    n = len(labels)
    preds = scores.argmax(axis=1)

    confusion = np.bincount(labels * k + preds, minlength=k * k).reshape(k, k)
    tp = np.diag(confusion)
    support = confusion.sum(axis=1)
    predicted = confusion.sum(axis=0)
    precision = _divide(tp, predicted)
    recall = _divide(tp, support)
    f1 = _divide(2 * tp, support + predicted)  # = 2PR / (P + R), and 0 where both are 0

    confidence = scores.max(axis=1)
    return {
        "accuracy": float(tp.sum() / n),
        "balanced_accuracy": float(recall[support > 0].mean()),
        "macro_f1": float(f1.mean()),
        "weighted_f1": float(np.dot(f1, support) / n),
        "macro_auc": _macro_auc(labels, scores, support),
        "ece": expected_calibration_error(confidence, preds == labels),
        "nll": float(-np.log(np.clip(scores[np.arange(n), labels], _NLL_FLOOR, 1.0)).mean()),
        "per_class": {
            name: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, name in enumerate(class_names)
        },
        "confusion": confusion.tolist(),
    }


def expected_calibration_error(
    confidence: np.ndarray, correct: np.ndarray, n_bins: int = ECE_BINS
) -> float:
    """Expected calibration error of top-label confidences (Guo et al., 2017, eq. 3).

    ``ECE = sum_m |B_m| / N * |acc(B_m) - conf(B_m)|`` over ``n_bins`` equal-width bins
    ``((m-1)/M, m/M]`` (a confidence of exactly 0 falls in the first bin).

    Args:
        confidence: the probability of the predicted class, shape ``(N,)``.
        correct: whether each prediction is right, shape ``(N,)``.
        n_bins: number of equal-width bins on [0, 1].

    Returns:
        The ECE in [0, 1]; NaN for no items.

    Example:
        >>> expected_calibration_error(np.array([.9, .9, .6, .6]), np.array([1, 0, 1, 1]))
        0.4
    """
    confidence = np.asarray(confidence, dtype=np.float64)
    if confidence.size == 0:
        return math.nan
    bins = np.clip(np.ceil(confidence * n_bins).astype(np.int64) - 1, 0, n_bins - 1)
    # |B_m| * (acc - conf) is the per-bin sum of (correct - confidence): one weighted bincount.
    gaps = np.bincount(bins, weights=np.asarray(correct) - confidence, minlength=n_bins)
    return float(np.abs(gaps).sum() / confidence.size)


def is_better(metric: str, a: float, b: float) -> bool:
    """Whether value ``a`` of ``metric`` is strictly better than ``b``, using :data:`METRICS`.

    NaN is never better than anything and every number is better than NaN, so an undefined value
    (macro AUC with a class absent) never wins "best" and never blocks a defined one.

    Raises:
        OctbenchError: if ``metric`` is not in :data:`METRICS` (the message lists the choices).

    Example:
        >>> is_better("macro_f1", 0.80, 0.75), is_better("ece", 0.08, 0.05)
        (True, False)
    """
    if metric not in METRICS:
        raise OctbenchError(
            f"unknown metric '{metric}'.{did_you_mean(metric, list(METRICS))} "
            f"Choices: {', '.join(METRICS)}."
        )
    if math.isnan(a):
        return False
    if math.isnan(b):
        return True
    return a > b if METRICS[metric] == "max" else a < b


def _check(labels: np.ndarray, scores: np.ndarray, k: int) -> None:
    if scores.ndim != 2 or scores.shape != (len(labels), k):
        raise ValueError(
            f"compute_metrics needs scores of shape (N, K) = ({len(labels)}, {k}) for "
            f"{len(labels)} labels and {k} class names; got {scores.shape}."
        )
    if len(labels) == 0:
        raise ValueError("compute_metrics needs at least one item; got 0.")
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"compute_metrics needs integer labels; got dtype {labels.dtype}.")
    if labels.min() < 0 or labels.max() >= k:
        raise ValueError(
            f"compute_metrics needs labels in [0, {k}) for {k} class names; "
            f"got labels from {labels.min()} to {labels.max()}."
        )


def _divide(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """``num / den`` with 0.0 where ``den`` is 0 (scikit-learn's ``zero_division=0``)."""
    return np.divide(num, den, out=np.zeros(len(num)), where=den > 0)


def _macro_auc(labels: np.ndarray, scores: np.ndarray, support: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score  # imported here: it costs 1.5 s at start-up

    # One-vs-rest AUC needs positives and negatives of every class; rather than let scikit-learn
    # raise (or warn and average a NaN), report the macro AUC as undefined.
    if (support == 0).any():
        return math.nan
    if scores.shape[1] == 2:  # scikit-learn's binary form: the positive class's score only
        return float(roc_auc_score(labels, scores[:, 1]))
    return float(roc_auc_score(labels, scores, multi_class="ovr", average="macro"))
