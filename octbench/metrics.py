"""Classification metrics: pure functions, numpy in, numbers out; the one copy of each metric.

:func:`compute_metrics` runs on the validation split after every epoch, so every count-based
metric comes from one confusion matrix built with ``np.bincount``: one pass over the items,
a few microseconds for 10,000 of them, and no chance of two metrics disagreeing about the counts.
The values equal scikit-learn's with ``zero_division=0`` (``tests/test_metrics.py`` checks
it to 1e-12).

Each metric is one function that also takes leading axes (``labels`` of shape ``(..., N)``):
the bootstrap of a report scores 500 resamples of the test items in one call with
:func:`metric_fn`, and a run record's metrics come from the very same functions.

Must not import: the rest of octbench beyond errors and registry (engine, runner and report
import this module), nor torch or scikit-learn.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
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

#: Metrics computed from the class scores; the others need only the predicted classes.
SCORE_METRICS = ("macro_auc", "ece")

# Probabilities are clipped to this floor in the NLL: one confidently wrong item with p = 0 would
# otherwise make the mean infinite and hide every other item (it costs at most -log(1e-12) ≈ 27.6).
_NLL_FLOOR = 1e-12


def compute_metrics(
    labels: np.ndarray, scores: np.ndarray, class_names: Sequence[str]
) -> dict[str, Any]:
    """All metrics of one set of predictions, as a JSON-serialisable dict.

    The predicted class is the arg-max of ``scores``. Macro-F1, balanced accuracy and macro AUC
    average over the classes *present* in ``labels``, as scikit-learn does with
    ``labels=<present classes>``: a class absent from the evaluated split has no recall, F1 or
    AUC (None in ``per_class``, listed in ``absent_classes``) and does not pull the averages
    down. A precision with no predictions is 0.0 (``zero_division=0``) for a present class.

    Args:
        labels: true classes, integers in ``[0, K)``, shape ``(N,)`` (``(N, 1)`` is accepted, as
            MedMNIST stores it).
        scores: class probabilities, shape ``(N, K)``, rows summing to 1 (softmax outputs).
        class_names: the K class names, in label order; keys of ``per_class``.

    Returns:
        ``accuracy``, ``balanced_accuracy``, ``macro_f1``, ``weighted_f1``, ``macro_auc``
        (one-vs-rest over the present classes; NaN when fewer than two are present),
        ``ece`` (top-label, 15 equal-width bins), ``nll`` (mean negative log-likelihood of the
        true class), ``per_class`` (``{name: {precision, recall, f1, support}}``, None where
        undefined), ``absent_classes`` (names with no item in ``labels``) and ``confusion``
        (list of lists, rows = true class, columns = predicted class).

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

    confusion = confusion_matrix(labels, preds, k)
    tp, support, predicted = _counts(confusion)
    precision = _divide(tp, predicted)
    recall = _divide(tp, support)
    f1 = _f1(tp, support, predicted)

    present = support > 0
    return {
        "accuracy": float(accuracy(labels, preds)),
        "balanced_accuracy": float(_balanced_accuracy(tp, support)),
        "macro_f1": float(_present_mean(f1, support)),
        "weighted_f1": float(np.dot(f1, support) / n),
        "macro_auc": float(macro_auc(labels, scores)),
        "ece": expected_calibration_error(scores.max(axis=1), preds == labels),
        "nll": float(-np.log(np.clip(scores[np.arange(n), labels], _NLL_FLOOR, 1.0)).mean()),
        "per_class": {
            name: {
                # an absent class never predicted has no precision either: nothing to count
                "precision": float(precision[i]) if present[i] or predicted[i] else None,
                "recall": float(recall[i]) if present[i] else None,
                "f1": float(f1[i]) if present[i] else None,
                "support": int(support[i]),
            }
            for i, name in enumerate(class_names)
        },
        "absent_classes": [name for i, name in enumerate(class_names) if not present[i]],
        "confusion": confusion.tolist(),
    }


def expected_calibration_error(
    confidence: np.ndarray, correct: np.ndarray, n_bins: int = ECE_BINS
) -> float | np.ndarray:
    """Expected calibration error of top-label confidences (Guo et al., 2017, eq. 3).

    ``ECE = sum_m |B_m| / N * |acc(B_m) - conf(B_m)|`` over ``n_bins`` equal-width bins
    ``((m-1)/M, m/M]`` (a confidence of exactly 0 falls in the first bin).

    Args:
        confidence: the probability of the predicted class, shape ``(..., N)``.
        correct: whether each prediction is right, shape ``(..., N)``.
        n_bins: number of equal-width bins on [0, 1].

    Returns:
        The ECE in [0, 1] (a float, or one per leading index); NaN for no items.

    Example:
        >>> expected_calibration_error(np.array([.9, .9, .6, .6]), np.array([1, 0, 1, 1]))
        0.4
    """
    confidence = np.asarray(confidence, dtype=np.float64)
    n = confidence.shape[-1]
    if n == 0:
        return _scalar(np.full(confidence.shape[:-1], math.nan))
    bins = np.clip(np.ceil(confidence * n_bins).astype(np.int64) - 1, 0, n_bins - 1)
    # |B_m| * (acc - conf) is the per-bin sum of (correct - confidence): one weighted bincount.
    gaps = _bincount_rows(bins, n_bins, weights=np.asarray(correct) - confidence)
    return _scalar(np.abs(gaps).sum(axis=-1) / n)


def confusion_matrix(labels: np.ndarray, preds: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts of (true class, predicted class), shape ``(..., K, K)`` for labels ``(..., N)``.

    Example:
        >>> confusion_matrix(np.array([0, 1, 1]), np.array([0, 1, 0]), 2).tolist()
        [[1, 0], [1, 1]]
    """
    k = num_classes
    # int64: MedMNIST labels are uint8, and labels * k must not overflow.
    codes = np.asarray(labels).astype(np.int64) * k + np.asarray(preds)
    return _bincount_rows(codes, k * k).reshape(*codes.shape[:-1], k, k)


def accuracy(labels: np.ndarray, preds: np.ndarray) -> float | np.ndarray:
    """Share of items whose predicted class is the true one, over the last axis."""
    return _scalar(np.mean(np.asarray(labels) == np.asarray(preds), axis=-1))


def balanced_accuracy(labels: np.ndarray, preds: np.ndarray,
                      num_classes: int) -> float | np.ndarray:
    """Mean recall over the classes present in ``labels`` (scikit-learn's
    ``balanced_accuracy_score``)."""
    tp, support, _ = _counts(confusion_matrix(labels, preds, num_classes))
    return _scalar(_balanced_accuracy(tp, support))


def macro_f1(labels: np.ndarray, preds: np.ndarray, num_classes: int) -> float | np.ndarray:
    """Unweighted mean F1 over the classes present in ``labels`` (scikit-learn's
    ``f1_score(average="macro", labels=<present classes>, zero_division=0)``)."""
    tp, support, predicted = _counts(confusion_matrix(labels, preds, num_classes))
    return _scalar(_present_mean(_f1(tp, support, predicted), support))


def macro_auc(labels: np.ndarray, scores: np.ndarray) -> float | np.ndarray:
    """One-vs-rest ROC AUC averaged over the classes present (scikit-learn's
    ``multi_class="ovr"``, macro, when every class is present).

    Computed in the Mann-Whitney form from mid-ranks (ties count half), all classes at once. Two
    classes: the AUC of class 1's scores (scikit-learn's binary form). A class with no positives
    (absent) or no negatives (alone) has no AUC and is left out of the mean; NaN when no class
    has both.

    Args:
        labels: true classes, shape ``(..., N)``.
        scores: class scores, shape ``(..., N, K)``.

    Example:
        >>> macro_auc(np.array([0, 0, 1, 1]), np.array([[.9, .1], [.6, .4], [.3, .7], [.7, .3]]))
        0.75
    """
    labels, scores = np.asarray(labels), np.asarray(scores, dtype=np.float64)
    k = scores.shape[-1]
    classes = np.arange(1, 2) if k == 2 else np.arange(k)
    ranks = _mid_ranks(np.moveaxis(scores[..., classes], -1, -2))  # (..., classes, N)
    positive = labels[..., None, :] == classes[:, None]
    n_pos = positive.sum(axis=-1)
    n_neg = labels.shape[-1] - n_pos
    rank_sum = np.where(positive, ranks, 0.0).sum(axis=-1)  # half-integers: exact in any order
    with np.errstate(divide="ignore", invalid="ignore"):
        auc = (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
    defined = (n_pos > 0) & (n_neg > 0)
    count = defined.sum(axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = np.where(defined, auc, 0.0).sum(axis=-1) / count
    return _scalar(np.where(count > 0, mean, math.nan))


def metric_fn(name: str, num_classes: int) -> Callable[[np.ndarray, np.ndarray], Any]:
    """``fn(labels, values)`` for one metric of :data:`METRICS` that reports resample.

    ``values`` are the predicted classes, or the scores ``(..., N, K)`` for the metrics in
    :data:`SCORE_METRICS`. Leading axes are kept: labels ``(B, N)`` give ``B`` values, so a
    bootstrap scores a whole batch of resamples in one call. Values equal
    :func:`compute_metrics`'s.

    Example:
        >>> fn = metric_fn("accuracy", 2)
        >>> fn(np.array([[0, 1], [1, 1]]), np.array([[0, 0], [1, 1]])).tolist()
        [0.5, 1.0]
    """
    fns = {
        "accuracy": accuracy,
        "balanced_accuracy": lambda y, p: balanced_accuracy(y, p, num_classes),
        "macro_f1": lambda y, p: macro_f1(y, p, num_classes),
        "macro_auc": macro_auc,
        "ece": lambda y, s: expected_calibration_error(s.max(axis=-1), s.argmax(axis=-1) == y),
    }
    if name not in fns:
        raise OctbenchError(f"no resampling form of metric '{name}'.{did_you_mean(name, list(fns))}"
                            f" Choices: {', '.join(fns)}.")
    return fns[name]


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


def _counts(confusion: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """True positives, support (true items) and predicted items per class."""
    tp = np.diagonal(confusion, axis1=-2, axis2=-1)
    return tp, confusion.sum(axis=-1), confusion.sum(axis=-2)


def _f1(tp: np.ndarray, support: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """Per-class F1 = 2PR / (P + R) = 2 TP / (support + predicted), 0 where both are 0."""
    den = support + predicted
    return np.divide(2 * tp, den, out=np.zeros(den.shape), where=den > 0)


def _present_mean(values: np.ndarray, support: np.ndarray) -> np.ndarray:
    """Mean of per-class ``values`` over the classes with support (at least one is present)."""
    present = support > 0
    return np.where(present, values, 0.0).sum(axis=-1) / present.sum(axis=-1)


def _balanced_accuracy(tp: np.ndarray, support: np.ndarray) -> np.ndarray:
    present = support > 0
    recall = np.divide(tp, support, out=np.zeros(support.shape), where=present)
    return recall.sum(axis=-1) / present.sum(axis=-1)  # absent classes add exact zeros


def _bincount_rows(codes: np.ndarray, size: int, weights: np.ndarray | None = None) -> np.ndarray:
    """``np.bincount`` of each row of ``codes`` (``(..., N)`` -> ``(..., size)``), in one call."""
    lead = codes.shape[:-1]
    rows = math.prod(lead)
    shifted = codes.reshape(rows, -1) + (np.arange(rows) * size)[:, None]
    flat = None if weights is None else np.broadcast_to(weights, codes.shape).reshape(-1)
    return np.bincount(shifted.reshape(-1), weights=flat, minlength=rows * size).reshape(
        *lead, size)


def _mid_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks along the last axis, ties sharing their mean rank
    (``scipy.stats.rankdata(axis=-1)``, several times faster)."""
    n = values.shape[-1]
    order = np.argsort(values, axis=-1, kind="stable")
    ordered = np.take_along_axis(values, order, axis=-1)
    position = np.broadcast_to(np.arange(n), values.shape)
    starts = np.ones(values.shape, dtype=bool)
    starts[..., 1:] = ordered[..., 1:] != ordered[..., :-1]
    ends = np.ones(values.shape, dtype=bool)
    ends[..., :-1] = starts[..., 1:]
    first = np.maximum.accumulate(np.where(starts, position, 0), axis=-1)
    last = np.flip(np.minimum.accumulate(np.flip(np.where(ends, position, n - 1), -1), axis=-1),
                   -1)
    ranks = np.empty(values.shape)
    np.put_along_axis(ranks, order, (first + last) / 2 + 1, axis=-1)
    return ranks


def _scalar(value: np.ndarray) -> float | np.ndarray:
    """A Python float for a 0-d result (one set of predictions), else the array."""
    return float(value) if np.ndim(value) == 0 else value
