"""Bootstrap intervals cover, tests find real differences and no false ones, degenerate is NaN."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats

from octbench.stats import (
    ConfidenceInterval,
    bootstrap_ci,
    holm,
    mcnemar_test,
    mean_std,
    paired_bootstrap_test,
    seed_test,
)


def accuracy(labels: np.ndarray, preds: np.ndarray) -> float:
    return float(np.mean(labels == preds))


def _predictions(rng: np.random.Generator, labels: np.ndarray, p_right: float) -> np.ndarray:
    """Each item is right with probability p_right, otherwise the next class (K = 4)."""
    return np.where(rng.random(len(labels)) < p_right, labels, (labels + 1) % 4)


LABELS = np.repeat(np.arange(4), 50)  # 200 items, balanced like OCTMNIST's test split


def test_bootstrap_ci_covers_the_true_accuracy() -> None:
    # Each replicate draws a fresh test set from a model whose true accuracy is 0.75; a 95%
    # interval should contain 0.75 in about 95% of replicates (binomial sd ~3.5% for 40 of them).
    rng = np.random.default_rng(0)
    covered = []
    for replicate in range(40):
        preds = _predictions(rng, LABELS, 0.75)
        ci = bootstrap_ci(LABELS, preds, accuracy, n_resamples=300, seed=replicate)
        covered.append(ci.low <= 0.75 <= ci.high)
    assert 0.8 <= np.mean(covered) <= 1.0


def test_interval_contains_the_point_estimate() -> None:
    preds = _predictions(np.random.default_rng(1), LABELS, 0.7)
    ci = bootstrap_ci(LABELS, preds, accuracy, n_resamples=500)
    assert isinstance(ci, ConfidenceInterval)
    assert ci.estimate == accuracy(LABELS, preds)
    assert ci.low < ci.estimate < ci.high
    assert ci.confidence == 0.95 and "percentile bootstrap" in ci.method


def test_bca_interval_contains_the_point_estimate() -> None:
    preds = _predictions(np.random.default_rng(1), LABELS, 0.7)
    ci = bootstrap_ci(LABELS, preds, accuracy, n_resamples=300, method="BCa")
    assert ci.low < ci.estimate < ci.high and ci.method.startswith("BCa")


def test_seeds_are_pooled_over_the_same_resampled_items() -> None:
    rng = np.random.default_rng(2)
    seeds = np.stack([_predictions(rng, LABELS, p) for p in (0.6, 0.7, 0.8)])  # (S, N)
    pooled = bootstrap_ci(LABELS, seeds, accuracy, n_resamples=300)
    assert pooled.estimate == pytest.approx(np.mean([accuracy(LABELS, s) for s in seeds]))
    # S copies of one seed resample the same items as that seed alone: the same interval.
    single = bootstrap_ci(LABELS, seeds[0], accuracy, n_resamples=300)
    copies = bootstrap_ci(LABELS, np.stack([seeds[0]] * 3), accuracy, n_resamples=300)
    assert (copies.low, copies.high) == pytest.approx((single.low, single.high))


def test_scores_with_a_seed_axis() -> None:
    rng = np.random.default_rng(3)
    scores = rng.dirichlet(np.ones(4), size=(2, len(LABELS)))  # (S, N, K)
    top1 = lambda y, s: accuracy(y, s.argmax(axis=1))
    ci = bootstrap_ci(LABELS, scores, top1, n_resamples=200)
    assert ci.estimate == pytest.approx(np.mean([top1(LABELS, s) for s in scores]))


def test_groups_resample_whole_groups() -> None:
    preds = _predictions(np.random.default_rng(4), LABELS, 0.7)
    plain = bootstrap_ci(LABELS, preds, accuracy, n_resamples=300)
    # One item per group is the plain item bootstrap.
    singletons = bootstrap_ci(LABELS, preds, accuracy, n_resamples=300, groups=np.arange(200))
    assert (singletons.low, singletons.high) == (plain.low, plain.high)
    # Each item seen 4 times (say, 4 scans of one eye): ignoring that fakes 4x the data and
    # halves the interval; resampling the groups gives back roughly the width for 200 items.
    labels4, preds4, eyes = np.repeat(LABELS, 4), np.repeat(preds, 4), np.repeat(np.arange(200), 4)
    naive = bootstrap_ci(labels4, preds4, accuracy, n_resamples=300)
    grouped = bootstrap_ci(labels4, preds4, accuracy, n_resamples=300, groups=eyes)
    width = lambda ci: ci.high - ci.low
    assert width(grouped) > 1.5 * width(naive)
    assert width(grouped) == pytest.approx(width(plain), rel=0.25)


def test_bootstrap_ci_degenerate_input_is_nan() -> None:
    empty = bootstrap_ci(np.array([], dtype=int), np.array([], dtype=int), accuracy)
    assert all(math.isnan(v) for v in (empty.estimate, empty.low, empty.high))
    one = bootstrap_ci(np.array([1]), np.array([1]), accuracy)
    assert one.estimate == 1.0 and math.isnan(one.low) and math.isnan(one.high)


def test_predictions_of_the_wrong_length_are_explained() -> None:
    with pytest.raises(ValueError, match="200 test items"):
        bootstrap_ci(LABELS, np.zeros(199, dtype=int), accuracy)


def test_identical_predictors_are_not_significant() -> None:
    preds = _predictions(np.random.default_rng(5), LABELS, 0.7)
    r = paired_bootstrap_test(LABELS, preds, preds.copy(), accuracy, n_resamples=300, seed=0)
    assert r.difference == 0.0 and r.p_value == pytest.approx(1.0)
    assert not r.significant()


def test_strongly_different_predictors_are_significant() -> None:
    rng = np.random.default_rng(6)
    good, poor = _predictions(rng, LABELS, 0.9), _predictions(rng, LABELS, 0.5)
    r = paired_bootstrap_test(LABELS, good, poor, accuracy, n_resamples=300, seed=0)
    assert r.difference == pytest.approx(accuracy(LABELS, good) - accuracy(LABELS, poor))
    assert r.p_value < 0.01 and r.significant()
    assert r.p_value >= 2 / 301  # never 0: the +1 correction
    swapped = paired_bootstrap_test(LABELS, poor, good, accuracy, n_resamples=300, seed=0)
    assert swapped.difference == -r.difference and swapped.p_value == r.p_value


def test_paired_bootstrap_averages_seeds() -> None:
    rng = np.random.default_rng(7)
    a = np.stack([_predictions(rng, LABELS, p) for p in (0.7, 0.8)])
    b = np.stack([_predictions(rng, LABELS, p) for p in (0.6, 0.65, 0.7)])
    r = paired_bootstrap_test(LABELS, a, b, accuracy, n_resamples=200)
    expected = np.mean([accuracy(LABELS, s) for s in a]) - np.mean([accuracy(LABELS, s) for s in b])
    assert r.difference == pytest.approx(expected)


def test_paired_bootstrap_makes_no_claim_when_the_metric_is_undefined() -> None:
    preds = _predictions(np.random.default_rng(8), LABELS, 0.7)
    r = paired_bootstrap_test(LABELS, preds, preds, lambda y, p: math.nan, n_resamples=50)
    assert math.isnan(r.p_value) and "undefined" in r.note
    tiny = paired_bootstrap_test(LABELS[:1], preds[:1], preds[:1], accuracy)
    assert math.isnan(tiny.p_value) and "at least 2" in tiny.note


def test_mcnemar_hand_example() -> None:
    # 30 items: 15 both right, 5 both wrong, 9 only A right, 1 only B right.
    # Under H0 the 10 discordant items favour A ~ Binomial(10, 1/2); two-sided exact p =
    # 2 * P(X <= 1) = 2 * (C(10,0) + C(10,1)) / 2**10 = 2 * 11 / 1024 = 0.021484375.
    labels = np.zeros(30, dtype=int)
    a = np.array([0] * 15 + [1] * 5 + [0] * 9 + [1] * 1)
    b = np.array([0] * 15 + [1] * 5 + [1] * 9 + [0] * 1)
    r = mcnemar_test(labels, a, b)
    assert r.p_value == pytest.approx(22 / 1024, abs=1e-12)
    assert r.statistic == 9 and r.difference == pytest.approx(8 / 30)


def test_mcnemar_degenerate_cases() -> None:
    labels = np.array([0, 1, 2])
    same = mcnemar_test(labels, labels, labels)
    assert same.p_value == 1.0 and "no discordant" in same.note
    empty = mcnemar_test(np.array([], dtype=int), np.array([], dtype=int), np.array([], dtype=int))
    assert math.isnan(empty.p_value) and math.isnan(empty.difference)
    with pytest.raises(ValueError, match="paired_bootstrap_test"):
        mcnemar_test(labels, np.stack([labels, labels]), labels)


def test_seed_test_matches_scipy() -> None:
    a, b = [0.80, 0.82, 0.79, 0.85, 0.81, 0.83], [0.78, 0.80, 0.80, 0.81, 0.77, 0.80]
    r = seed_test(a, b)
    assert r["wilcoxon"].p_value == pytest.approx(scipy.stats.wilcoxon(a, b).pvalue)
    assert r["paired_t"].p_value == pytest.approx(scipy.stats.ttest_rel(a, b).pvalue)
    assert r["paired_t"].difference == pytest.approx(np.mean(np.subtract(a, b)))
    assert r["wilcoxon"].note == "" and r["paired_t"].note == ""


@pytest.mark.parametrize(
    ("a", "b", "note"),
    [
        ([], [], "at least 2 seeds"),
        ([0.8], [0.7], "at least 2 seeds"),
        ([0.8, math.nan], [0.7, 0.6], "at least 2 seeds"),
        ([0.8, 0.7, 0.75], [0.8, 0.7, 0.75], "equal on all 3 seeds"),
    ],
)
def test_seed_test_degenerate_cases_are_nan_with_a_note(a: list, b: list, note: str) -> None:
    for result in seed_test(a, b).values():
        assert math.isnan(result.p_value) and note in result.note
        assert not result.significant()


def test_seed_test_says_what_few_seeds_cannot_show() -> None:
    r = seed_test([0.80, 0.82, 0.81], [0.70, 0.72, 0.71])  # the same 0.10 gain on all 3 seeds
    assert r["wilcoxon"].p_value == pytest.approx(0.25)
    assert "smallest possible p is 0.25" in r["wilcoxon"].note
    assert math.isnan(r["paired_t"].p_value) and "zero variance" in r["paired_t"].note
    r = seed_test([0.8, 0.9, math.nan, 0.7], [0.7, 0.85, 0.5, 0.7])
    assert "dropped 1 seed(s) with a NaN" in r["paired_t"].note
    assert "zero difference dropped" in r["wilcoxon"].note


def test_holm_hand_example() -> None:
    # Family of m = 4 tested p-values (the NaN is not tested and does not count).
    # Sorted: 0.005, 0.01, 0.03, 0.04 -> times (4, 3, 2, 1): 0.02, 0.03, 0.06, 0.04;
    # running maximum (step-down): 0.02, 0.03, 0.06, 0.06. Back in input order:
    p = [0.01, math.nan, 0.04, 0.03, 0.005]
    np.testing.assert_allclose(holm(p), [0.03, math.nan, 0.06, 0.06, 0.02], rtol=1e-12)
    # Capped at 1: 0.5 * 2 = 1.0, then max(1.0, 0.6 * 1) = 1.0.
    np.testing.assert_array_equal(holm([0.6, 0.5]), [1.0, 1.0])
    assert holm([]).shape == (0,) and np.isnan(holm([math.nan])).all()


def test_mean_std() -> None:
    assert mean_std([1.0, 2.0, 3.0]) == (2.0, 1.0)
    mean, std = mean_std([1.0, math.nan, 3.0])
    assert mean == 2.0 and std == pytest.approx(math.sqrt(2))
    mean, std = mean_std([0.7])
    assert mean == 0.7 and math.isnan(std)
    assert all(math.isnan(v) for v in mean_std([]))


@pytest.mark.parametrize("method", ["percentile", "BCa"])
def test_vectorized_bootstrap_draws_the_same_resamples(method: str) -> None:
    from octbench.metrics import metric_fn

    rng = np.random.default_rng(3)
    a = np.stack([_predictions(rng, LABELS, 0.7) for _ in range(3)])  # 3 seeds
    b = np.stack([_predictions(rng, LABELS, 0.6) for _ in range(2)])
    f1 = metric_fn("macro_f1", 4)
    loop = bootstrap_ci(LABELS, a, f1, n_resamples=300, method=method)
    batched = bootstrap_ci(LABELS, a, f1, n_resamples=300, method=method, vectorized=True)
    assert (batched.low, batched.high) == pytest.approx((loop.low, loop.high), abs=1e-12)
    assert batched.estimate == loop.estimate
    test_loop = paired_bootstrap_test(LABELS, a, b, f1, n_resamples=300)
    test_batched = paired_bootstrap_test(LABELS, a, b, f1, n_resamples=300, vectorized=True)
    assert test_batched.p_value == test_loop.p_value
    assert test_batched.difference == test_loop.difference


# --- stratified bootstrap (resampling within each class) ---------------------------------------


def test_stratified_resamples_keep_every_class_count_fixed() -> None:
    labels = np.r_[np.zeros(7), np.ones(3), np.full(11, 2)].astype(int)  # unbalanced on purpose
    seen: list[np.ndarray] = []

    def counting(y: np.ndarray, p: np.ndarray) -> float:
        seen.append(np.bincount(y, minlength=3))
        return float(np.mean(y == p))

    preds = np.where(np.arange(21) % 3 == 0, (labels + 1) % 3, labels)
    bootstrap_ci(labels, preds, counting, n_resamples=200, strata=labels)
    paired_bootstrap_test(labels, preds, labels, counting, n_resamples=200, strata=labels)
    # one call on all items per metric, then one per resample (and per model in the paired test)
    assert len(seen) >= 600
    assert all((c == [7, 3, 11]).all() for c in seen)
    # without strata the class counts do move: the check above can fail
    seen.clear()
    bootstrap_ci(labels, preds, counting, n_resamples=200)
    assert any((c != [7, 3, 11]).any() for c in seen)


def test_stratified_accuracy_and_balanced_accuracy_agree_on_a_balanced_split() -> None:
    # On a balanced test split the two metrics are equal, and with class-stratified resamples
    # they stay equal on every resample, so their intervals and tests must be identical.
    from sklearn.metrics import balanced_accuracy_score

    rng = np.random.default_rng(3)
    good, poor = _predictions(rng, LABELS, 0.8), _predictions(rng, LABELS, 0.7)

    def balanced(y: np.ndarray, p: np.ndarray) -> float:
        return float(balanced_accuracy_score(y, p))

    ci_acc = bootstrap_ci(LABELS, good, accuracy, n_resamples=300, strata=LABELS)
    ci_bal = bootstrap_ci(LABELS, good, balanced, n_resamples=300, strata=LABELS)
    assert ci_acc.low == pytest.approx(ci_bal.low) and ci_acc.high == pytest.approx(ci_bal.high)
    assert "within 4 strata" in ci_acc.method
    p_acc = paired_bootstrap_test(LABELS, good, poor, accuracy, n_resamples=300, strata=LABELS)
    p_bal = paired_bootstrap_test(LABELS, good, poor, balanced, n_resamples=300, strata=LABELS)
    assert p_acc.p_value == pytest.approx(p_bal.p_value)
    plain_acc = bootstrap_ci(LABELS, good, accuracy, n_resamples=300)
    plain_bal = bootstrap_ci(LABELS, good, balanced, n_resamples=300)
    assert (plain_acc.low, plain_acc.high) != (plain_bal.low, plain_bal.high)


def test_stratified_interval_is_the_percentile_of_its_resamples_and_vectorizes() -> None:
    from octbench.stats import stratified_resamples

    rng = np.random.default_rng(5)
    preds = _predictions(rng, LABELS, 0.75)
    ci = bootstrap_ci(LABELS, preds, accuracy, n_resamples=400, strata=LABELS, seed=9)
    # independent re-computation: the same draws (500 per batch), scored one by one
    rows = stratified_resamples(LABELS, 400, np.random.default_rng(9))
    values = [accuracy(LABELS[r], preds[r]) for r in rows]
    assert (ci.low, ci.high) == pytest.approx(tuple(np.percentile(values, [2.5, 97.5])))
    vectorized = bootstrap_ci(LABELS, preds, lambda y, p: np.mean(y == p, axis=-1),
                              n_resamples=400, strata=LABELS, seed=9, vectorized=True)
    assert (vectorized.low, vectorized.high) == pytest.approx((ci.low, ci.high))
    with pytest.raises(ValueError, match="not both"):
        bootstrap_ci(LABELS, preds, accuracy, strata=LABELS, groups=np.arange(200))
    with pytest.raises(ValueError, match="percentile"):
        bootstrap_ci(LABELS, preds, accuracy, strata=LABELS, method="BCa")
