"""Temperature scaling (Guo et al. 2017, "On calibration of modern neural networks", §4.2).

One scalar ``T > 0`` divides the logits before the softmax; it is fitted by minimising the
negative log-likelihood on the *validation* split only, so the test split stays unseen. Since
``softmax(z / T)`` keeps the order of ``z``, the predicted class never changes, only the
confidence. The logits are recovered from stored probabilities as ``log p``: a per-row constant
away from the logits, which the softmax ignores.

Must not import: the engine, runner, report or tuning (L1: numpy, scipy and metrics only).
"""

from __future__ import annotations

import math

import numpy as np
import scipy.optimize
import scipy.special

from octbench.metrics import expected_calibration_error

#: The search range of T: far beyond any useful temperature on either side.
T_BOUNDS = (0.05, 20.0)
#: Probabilities below this (float32 softmax underflow) are clipped before the log, as the
#: ``nll`` metric of :mod:`octbench.metrics` clips them.
_FLOOR = 1e-12


def _log_probs(scores: np.ndarray) -> np.ndarray:
    return np.log(np.clip(np.asarray(scores, dtype=np.float64), _FLOOR, 1.0))


def apply_temperature(scores: np.ndarray, temperature: float) -> np.ndarray:
    """Probabilities ``softmax(log(scores) / T)``; ``T = 1`` returns the scores renormalised.

    Example:
        >>> p = apply_temperature(np.array([[0.9, 0.1]]), 2.0)
        >>> p.round(3).tolist()  # softer, same argmax
        [[0.75, 0.25]]
    """
    return scipy.special.softmax(_log_probs(scores) / temperature, axis=-1)


def nll(scores: np.ndarray, labels: np.ndarray) -> float:
    """Mean negative log-likelihood of the true classes."""
    labels = np.asarray(labels).reshape(-1).astype(np.int64)
    picked = np.asarray(scores, dtype=np.float64)[np.arange(len(labels)), labels]
    return float(-np.log(np.clip(picked, _FLOOR, 1.0)).mean())


def fit_temperature(scores: np.ndarray, labels: np.ndarray) -> float:
    """The ``T`` in :data:`T_BOUNDS` minimising the NLL of ``softmax(log(scores) / T)``.

    Args:
        scores: validation probabilities ``(N, K)`` (rows sum to 1).
        labels: validation classes ``(N,)``.

    Returns:
        The temperature; 1.0 (no change) when there are no items.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> labels = rng.integers(0, 3, 500)
        >>> logits = rng.normal(size=(500, 3)); logits[np.arange(500), labels] += 1.0
        >>> overconfident = scipy.special.softmax(4 * logits, axis=1)
        >>> 3 < fit_temperature(overconfident, labels) < 5
        True
    """
    labels = np.asarray(labels).reshape(-1).astype(np.int64)
    if len(labels) == 0:
        return 1.0
    log_p = _log_probs(scores)
    rows = np.arange(len(labels))

    def loss(log_t: float) -> float:
        z = log_p / math.exp(log_t)
        return float((scipy.special.logsumexp(z, axis=1) - z[rows, labels]).mean())

    # log T: the NLL is smooth and unimodal in it, and T stays positive.
    result = scipy.optimize.minimize_scalar(loss, bounds=tuple(map(math.log, T_BOUNDS)),
                                            method="bounded", options={"xatol": 1e-6})
    return float(math.exp(result.x))


def calibration_summary(scores: np.ndarray, labels: np.ndarray, temperature: float) -> dict:
    """NLL and ECE of ``scores`` before and after scaling by ``temperature`` (plain floats)."""
    labels = np.asarray(labels).reshape(-1).astype(np.int64)
    after = apply_temperature(scores, temperature)

    def ece(p: np.ndarray) -> float:
        return float(expected_calibration_error(p.max(axis=1), p.argmax(axis=1) == labels))

    return {"nll_before": nll(scores, labels), "nll_after": nll(after, labels),
            "ece_before": ece(np.asarray(scores, dtype=np.float64)), "ece_after": ece(after)}
