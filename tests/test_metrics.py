"""compute_metrics and the resampling form of each metric agree with scikit-learn, and ECE with
its textbook definition."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import scipy.stats
from sklearn import metrics as skm

from octbench.errors import OctbenchError
from octbench.metrics import (
    METRICS,
    SCORE_METRICS,
    compute_metrics,
    expected_calibration_error,
    is_better,
    metric_fn,
)

NAMES = ["CNV", "DME", "DRUSEN", "NORMAL"]
K = len(NAMES)
TOL = 1e-12


def _softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _random_case(seed: int, n: int = 500) -> tuple[np.ndarray, np.ndarray]:
    """Imbalanced labels (OCTMNIST's train proportions) and informative but noisy scores."""
    rng = np.random.default_rng(seed)
    labels = rng.choice(K, size=n, p=[0.34, 0.10, 0.08, 0.48])
    logits = rng.normal(size=(n, K)) * 1.5
    logits[np.arange(n), labels] += rng.uniform(0, 2)
    return labels, _softmax(logits)


def _never_predicted(seed: int) -> tuple[np.ndarray, np.ndarray]:
    labels, scores = _random_case(seed)
    scores[:, 2] = 1e-6  # DRUSEN is never the arg-max: precision 0/0 -> 0
    return labels, scores / scores.sum(axis=1, keepdims=True)


def _class_absent(seed: int) -> tuple[np.ndarray, np.ndarray]:
    labels, scores = _random_case(seed)
    labels = np.where(labels == 1, 0, labels)  # no DME in the labels, but it is still predicted
    return labels, scores


def _absent_and_unpredicted(seed: int) -> tuple[np.ndarray, np.ndarray]:
    labels, scores = _class_absent(seed)
    scores[:, 1] = 1e-6
    return labels, scores / scores.sum(axis=1, keepdims=True)


def _all_wrong(seed: int) -> tuple[np.ndarray, np.ndarray]:
    labels, scores = _random_case(seed)
    return labels, np.roll(np.eye(K)[labels] * 0.9 + 0.025, 1, axis=1)


CASES = {
    "random": _random_case,
    "never_predicted": _never_predicted,
    "class_absent": _class_absent,
    "absent_and_unpredicted": _absent_and_unpredicted,
    "all_wrong": _all_wrong,
}


# balanced_accuracy_score warns when a predicted class is absent from the labels; that is the case.
@pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("case", CASES)
def test_count_metrics_match_sklearn(case: str, seed: int) -> None:
    labels, scores = CASES[case](seed)
    preds = scores.argmax(axis=1)
    m = compute_metrics(labels, scores, NAMES)
    every_class = list(range(K))

    assert m["accuracy"] == pytest.approx(skm.accuracy_score(labels, preds), abs=TOL)
    # balanced_accuracy_score averages recall over the classes present in the labels.
    assert m["balanced_accuracy"] == pytest.approx(
        skm.balanced_accuracy_score(labels, preds), abs=TOL
    )
    # macro averages run over the classes present in the labels (scikit-learn's labels=)
    present = np.unique(labels).tolist()
    assert m["macro_f1"] == pytest.approx(
        skm.f1_score(labels, preds, labels=present, average="macro", zero_division=0), abs=TOL)
    assert m["weighted_f1"] == pytest.approx(
        skm.f1_score(labels, preds, labels=every_class, average="weighted", zero_division=0),
        abs=TOL)
    precision, recall, f1, support = skm.precision_recall_fscore_support(
        labels, preds, labels=every_class, zero_division=0
    )
    assert m["absent_classes"] == [n for i, n in enumerate(NAMES) if i not in present]
    for i, name in enumerate(NAMES):
        got = m["per_class"][name]
        assert got["support"] == support[i]
        if i not in present:  # no items: recall and F1 are undefined, not 0
            assert got["recall"] is None and got["f1"] is None
            assert got["precision"] == (0.0 if (preds == i).any() else None)
            continue
        assert got["precision"] == pytest.approx(precision[i], abs=TOL)
        assert got["recall"] == pytest.approx(recall[i], abs=TOL)
        assert got["f1"] == pytest.approx(f1[i], abs=TOL)
    assert m["confusion"] == skm.confusion_matrix(labels, preds, labels=every_class).tolist()
    assert m["nll"] == pytest.approx(skm.log_loss(labels, scores, labels=every_class), abs=TOL)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("case", ["random", "never_predicted", "all_wrong"])
def test_macro_auc_matches_sklearn(case: str, seed: int) -> None:
    labels, scores = CASES[case](seed)
    expected = skm.roc_auc_score(labels, scores, multi_class="ovr", average="macro")
    assert compute_metrics(labels, scores, NAMES)["macro_auc"] == pytest.approx(expected, abs=TOL)


@pytest.mark.parametrize("case", ["class_absent", "absent_and_unpredicted"])
def test_macro_auc_averages_over_the_present_classes(case: str) -> None:
    labels, scores = CASES[case](0)
    expected = np.mean([skm.roc_auc_score(labels == c, scores[:, c]) for c in np.unique(labels)])
    assert compute_metrics(labels, scores, NAMES)["macro_auc"] == pytest.approx(expected, abs=TOL)


def test_a_perfect_classifier_with_a_class_absent_scores_perfectly() -> None:
    labels = np.array([0, 0, 2, 2, 3, 3, 3])  # no DME in the split
    scores = np.eye(K)[labels] * 0.9 + 0.025
    m = compute_metrics(labels, scores, NAMES)
    assert m["accuracy"] == m["balanced_accuracy"] == m["macro_f1"] == m["macro_auc"] == 1.0
    assert m["per_class"]["DME"] == {"precision": None, "recall": None, "f1": None, "support": 0}
    assert m["absent_classes"] == ["DME"]
    # the selection metric's resampling form agrees
    assert metric_fn("macro_f1", K)(labels, labels) == 1.0


def test_single_class_labels_do_not_raise() -> None:
    labels, scores = _random_case(0)
    m = compute_metrics(np.zeros_like(labels), scores, NAMES)
    assert math.isnan(m["macro_auc"])
    assert m["balanced_accuracy"] == m["per_class"]["CNV"]["recall"] == m["accuracy"]


def test_binary_auc_uses_positive_class_scores() -> None:
    labels, scores = _random_case(0)
    labels, scores = labels % 2, np.stack([scores[:, :2].sum(1), scores[:, 2:].sum(1)], axis=1)
    m = compute_metrics(labels, scores, ["a", "b"])
    assert m["macro_auc"] == pytest.approx(skm.roc_auc_score(labels, scores[:, 1]), abs=TOL)


def test_result_is_json_serialisable_python_scalars() -> None:
    labels, scores = _random_case(0)
    m = compute_metrics(labels.astype(np.uint8).reshape(-1, 1), scores.astype(np.float32), NAMES)
    assert json.loads(json.dumps(m)) == m
    assert set(METRICS) <= set(m)
    assert all(type(m[name]) is float for name in METRICS)


def test_perfect_predictions() -> None:
    labels = np.repeat(np.arange(K), 250)  # the balanced OCTMNIST test split
    scores = np.eye(K)[labels] * 0.96 + 0.01  # right, with confidence 0.97
    m = compute_metrics(labels, scores, NAMES)
    for name in ("accuracy", "balanced_accuracy", "macro_f1", "weighted_f1", "macro_auc"):
        assert m[name] == 1.0
    assert m["ece"] == pytest.approx(0.03, abs=TOL)  # every item: accuracy 1, confidence 0.97
    assert m["confusion"] == (np.eye(K, dtype=int) * 250).tolist()


def test_ece_hand_example() -> None:
    # Four items, K = 4, 15 bins of width 1/15:
    #   conf 0.90, 0.90 -> bin (13/15, 14/15], one right one wrong: acc 0.5, |0.5 - 0.90| = 0.40
    #   conf 0.55, 0.55 -> bin (8/15, 9/15],   both right:          acc 1.0, |1.0 - 0.55| = 0.45
    # ECE = 2/4 * 0.40 + 2/4 * 0.45 = 0.425
    labels = np.array([0, 1, 2, 3])
    scores = np.array(
        [
            [0.90, 0.04, 0.03, 0.03],  # right
            [0.90, 0.04, 0.03, 0.03],  # wrong (true class 1)
            [0.15, 0.15, 0.55, 0.15],  # right
            [0.15, 0.15, 0.15, 0.55],  # right
        ]
    )
    assert compute_metrics(labels, scores, NAMES)["ece"] == pytest.approx(0.425, abs=TOL)


def _textbook_ece(confidence: np.ndarray, correct: np.ndarray, n_bins: int = 15) -> float:
    """Guo et al. (2017), eq. 3, written as a plain loop over bins ((m-1)/M, m/M]."""
    edges = np.linspace(0, 1, n_bins + 1)
    total = 0.0
    for m in range(n_bins):
        lower = -np.inf if m == 0 else edges[m]
        in_bin = (confidence > lower) & (confidence <= edges[m + 1])
        if in_bin.any():
            gap = correct[in_bin].mean() - confidence[in_bin].mean()
            total += in_bin.sum() / len(confidence) * abs(gap)
    return total


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_ece_matches_textbook_loop(seed: int) -> None:
    labels, scores = _random_case(seed, n=2000)
    m = compute_metrics(labels, scores, NAMES)
    expected = _textbook_ece(scores.max(axis=1), scores.argmax(axis=1) == labels)
    assert m["ece"] == pytest.approx(expected, abs=TOL)


def test_ece_of_no_items_is_nan() -> None:
    assert math.isnan(expected_calibration_error(np.array([]), np.array([])))


def test_nll_is_finite_for_zero_probability_of_the_true_class() -> None:
    labels = np.array([0, 1])
    scores = np.array([[0.0, 1.0], [0.0, 1.0]])
    assert compute_metrics(labels, scores, ["a", "b"])["nll"] == pytest.approx(-np.log(1e-12) / 2)


@pytest.mark.parametrize(
    ("labels", "scores", "match"),
    [
        (np.array([0, 1]), np.full((2, 3), 1 / 3), r"shape \(N, K\) = \(2, 4\)"),
        (np.array([], dtype=int), np.zeros((0, K)), "at least one item"),
        (np.array([0, 4]), np.full((2, K), 0.25), r"labels in \[0, 4\)"),
        (np.array([0.0, 1.0]), np.full((2, K), 0.25), "integer labels"),
    ],
)
def test_invalid_input_is_explained(labels: np.ndarray, scores: np.ndarray, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        compute_metrics(labels, scores, NAMES)


def test_metric_directions() -> None:
    assert {METRICS[name] for name in ("ece", "nll")} == {"min"}
    assert all(d == "max" for name, d in METRICS.items() if name not in ("ece", "nll"))
    assert is_better("macro_f1", 0.8, 0.7) and not is_better("macro_f1", 0.7, 0.8)
    assert is_better("ece", 0.02, 0.05) and not is_better("nll", 0.9, 0.5)
    assert not is_better("accuracy", 0.5, 0.5)  # strictly better only
    assert is_better("macro_auc", 0.6, math.nan) and not is_better("macro_auc", math.nan, 0.6)


def test_unknown_metric_suggests_the_closest() -> None:
    with pytest.raises(OctbenchError, match="Did you mean 'macro_f1'"):
        is_better("macro_f2", 0.1, 0.2)


# The resampling form: one call scores a batch of resamples (rows), as the report's bootstrap does.


def _sklearn_metric(name: str, labels: np.ndarray, scores: np.ndarray) -> float:
    preds = scores.argmax(axis=1)
    if name == "accuracy":
        return skm.accuracy_score(labels, preds)
    if name == "balanced_accuracy":
        return skm.balanced_accuracy_score(labels, preds)
    present = np.unique(labels)
    if name == "macro_f1":
        return skm.f1_score(labels, preds, labels=present, average="macro", zero_division=0)
    if name == "macro_auc":
        if len(present) < 2:
            return math.nan
        # One-vs-rest, macro over the present classes; the per-class form accepts the rounded
        # scores, whose rows no longer sum to exactly 1.
        return np.mean([skm.roc_auc_score(labels == c, scores[:, c]) for c in present])
    return _textbook_ece(scores.max(axis=1), preds == labels)


@pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")
@pytest.mark.parametrize("name", ["accuracy", "balanced_accuracy", "macro_f1", "macro_auc", "ece"])
@pytest.mark.parametrize("case", CASES)
def test_batched_metric_matches_sklearn_on_every_resample(case: str, name: str) -> None:
    labels, scores = CASES[case](0)
    scores = np.round(scores, 2)  # ties in the scores: AUC must give them half credit
    rows = np.random.default_rng(1).integers(0, len(labels), size=(20, len(labels)))
    rows[0] = np.arange(len(labels))  # the resample that is the whole set
    values = scores[rows] if name in SCORE_METRICS else scores.argmax(axis=1)[rows]
    got = metric_fn(name, K)(labels[rows], values)
    assert got.shape == (20,)
    expected = [_sklearn_metric(name, labels[r], scores[r]) for r in rows]
    np.testing.assert_allclose(got, expected, rtol=0, atol=TOL)
    # ... and one set of predictions gives compute_metrics' value, as a float.
    one = metric_fn(name, K)(labels, values[0])
    assert isinstance(one, float)
    assert one == pytest.approx(compute_metrics(labels, scores, NAMES)[name], abs=TOL, nan_ok=True)


def test_batched_auc_is_nan_only_on_resamples_of_one_class() -> None:
    labels, scores = _random_case(0, n=40)
    rows = np.stack([np.flatnonzero(labels != 1)[np.arange(40) % 10],
                     np.full(40, np.flatnonzero(labels == 2)[0])])
    got = metric_fn("macro_auc", K)(labels[rows], scores[rows])
    assert not math.isnan(got[0]) and math.isnan(got[1])


def test_unknown_resampling_metric_names_the_choices() -> None:
    with pytest.raises(OctbenchError, match="Did you mean 'macro_f1'"):
        metric_fn("macro_f2", K)


def test_ranks_with_ties_match_scipy() -> None:
    from octbench.metrics import _mid_ranks

    values = np.random.default_rng(0).integers(0, 5, size=(3, 50)).astype(float)
    np.testing.assert_array_equal(_mid_ranks(values), scipy.stats.rankdata(values, axis=-1))
