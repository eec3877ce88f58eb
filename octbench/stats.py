"""Uncertainty and significance for reports: bootstrap intervals and paired tests.

A benchmark number varies for two reasons, and each has its own tools here:

* **Test items.** The test split is one sample of images (OCTMNIST: 1,000). :func:`bootstrap_ci`,
  :func:`paired_bootstrap_test` and :func:`mcnemar_test` resample or pair the test items: freely,
  within strata (``strata=labels`` keeps a balanced split balanced, :func:`stratified_resamples`)
  or as whole groups (``groups=patients``, a cluster bootstrap).
* **Training seeds.** Another seed gives another model. :func:`seed_test` pairs runs by seed and
  :func:`mean_std` summarises them.

Reports must never over-claim, so nothing here raises on degenerate data (no items, one seed,
identical models, NaN values): the answer is NaN, and test results carry a ``note`` saying why.
:func:`holm` adjusts a family of p-values for multiple comparisons.

Must not import: any octbench module, metrics included (a metric is passed in as a function).
One module over 450 lines because it is one idea: the uncertainty of a reported number.
"""

from __future__ import annotations

import inspect
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import scipy.stats

#: ``metric_fn(labels, predictions) -> float`` on one seed's predictions of a subset of the test
#: items, e.g. ``lambda y, p: float(np.mean(y == p))``.
MetricFn = Callable[[np.ndarray, np.ndarray], float]

# Differences between seeds smaller than this are floating-point rounding, not effects.
_ROUNDING = 1e-12


@dataclass(frozen=True)
class ConfidenceInterval:
    """A point estimate with its confidence interval.

    Attributes:
        estimate: the metric on all test items (averaged over seeds when there are several).
        low: lower bound; NaN when there was nothing to resample.
        high: upper bound; NaN when there was nothing to resample.
        confidence: the confidence level, e.g. 0.95.
        method: how the interval was computed, worded for reports.
    """

    estimate: float
    low: float
    high: float
    confidence: float
    method: str


@dataclass(frozen=True)
class Comparison:
    """The outcome of one two-sided test of "A and B perform equally well".

    Attributes:
        test: the test's name, worded for reports (a difference is called significant only by a
            named test).
        difference: the effect, A minus B (metric or accuracy difference, or mean difference over
            seeds); NaN when undefined.
        p_value: two-sided p-value; NaN when the test is undefined (see ``note``).
        statistic: the test's own statistic (see each test); NaN where it has none.
        note: why the p-value is NaN, or a caveat a reader must see; empty otherwise.
    """

    test: str
    difference: float
    p_value: float
    statistic: float = math.nan
    note: str = ""

    def significant(self, alpha: float = 0.05) -> bool:
        """Whether ``p_value < alpha``; never true for an undefined (NaN) p-value."""
        return bool(self.p_value < alpha)


def bootstrap_ci(
    labels: np.ndarray,
    scores_or_preds: np.ndarray,
    metric_fn: MetricFn,
    *,
    n_resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
    groups: np.ndarray | None = None,
    strata: np.ndarray | None = None,
    method: str = "percentile",
    vectorized: bool = False,
) -> ConfidenceInterval:
    """Bootstrap confidence interval of a metric over the test items.

    Test items are resampled with replacement (``scipy.stats.bootstrap`` on item indices) and the
    metric is recomputed on each resample. Predictions of several seeds for the same items are
    pooled: each resample draws the *same* items for every seed and averages the metric across
    seeds, so the interval reflects the test set's sampling and not only one model's luck.

    Args:
        labels: true classes of the N test items, shape ``(N,)``.
        scores_or_preds: one seed's predictions with the items first (``(N,)`` classes or
            ``(N, K)`` scores), or several seeds' with the seeds first (``(S, N)`` or
            ``(S, N, K)``). An array whose first axis has length N is read as one seed.
        metric_fn: ``metric_fn(labels, predictions) -> float`` for one seed.
        n_resamples: number of bootstrap resamples.
        confidence: confidence level of the interval.
        seed: seed of the resampling, for reproducible intervals.
        groups: optional ``(N,)`` group ids (e.g. patients); whole groups are resampled, because
            items of one group are not independent.
        strata: optional ``(N,)`` stratum ids (e.g. the labels): items are resampled within
            each stratum, so every resample keeps each stratum's size (a class-balanced test
            split stays balanced). Not together with ``groups``; ``method`` percentile or basic.
        method: ``"percentile"`` (default: robust for bounded metrics with few distinct values and
            no extra cost), ``"basic"`` or ``"BCa"`` (bias-corrected; N extra metric calls).
        vectorized: ``metric_fn`` also takes a leading resample axis (labels ``(B, N)``,
            predictions ``(B, N[, K])``) and returns B values, as :func:`octbench.metrics.metric_fn`
            does: 500 resamples are scored per call instead of one (the same resamples, so the
            same interval). Ignored with ``groups`` (resamples of groups differ in length).

    Returns:
        The metric on all items with its interval; ``low`` and ``high`` are NaN when fewer than
        two items (or groups) exist.

    Example:
        >>> labels = np.repeat([0, 1], 50)
        >>> preds = np.where(np.arange(100) % 5 == 0, 1 - labels, labels)  # 80% right
        >>> ci = bootstrap_ci(labels, preds, lambda y, p: float(np.mean(y == p)), n_resamples=500)
        >>> ci.estimate, ci.low < 0.8 < ci.high
        (0.8, True)
    """
    labels = _labels(labels)
    n = len(labels)
    metric = _seed_mean(metric_fn, labels, _seeds_first(scores_or_preds, n, "scores_or_preds"))
    units, to_items, described = _units(n, groups, strata)
    method_text = f"{method} bootstrap, {n_resamples} resamples of {described}"
    estimate = metric(np.arange(n)) if n else math.nan
    if len(units) < 2:  # nothing to resample: any interval would be invented
        return ConfidenceInterval(estimate, math.nan, math.nan, confidence, method_text)
    if strata is not None:
        if method not in ("percentile", "basic"):
            raise ValueError(f"a stratified bootstrap interval is 'percentile' or 'basic'; got "
                             f"method={method!r}.")
        values = _stratified_distribution(strata, metric, n_resamples, seed, vectorized)
        low, high = _interval(values, estimate, confidence, method)
        return ConfidenceInterval(estimate, low, high, confidence, method_text)
    statistic = _resample_statistic(metric, to_items, vectorized and groups is None)
    result = _bootstrap(units, statistic, n_resamples, confidence, seed, method)
    low, high = result.confidence_interval
    return ConfidenceInterval(estimate, float(low), float(high), confidence, method_text)


def paired_bootstrap_test(
    labels: np.ndarray,
    preds_a: np.ndarray,
    preds_b: np.ndarray,
    metric_fn: MetricFn,
    *,
    n_resamples: int = 2000,
    seed: int = 0,
    groups: np.ndarray | None = None,
    strata: np.ndarray | None = None,
    vectorized: bool = False,
) -> Comparison:
    """Paired bootstrap test of ``metric(A) - metric(B)`` over the test items.

    Each resample draws the same test items for A and B (and for all their seeds, whose metrics
    are averaged), so item difficulty cancels out of the difference. The two-sided p-value is
    twice the bootstrap mass on the far side of zero, ``2 * (min(#{d* <= 0}, #{d* >= 0}) + 1) /
    (B + 1)`` capped at 1 (Davison & Hinkley 1997, §4.4): the smallest ``1 - confidence`` at which
    the percentile interval of the difference excludes 0, so a report's intervals and tests
    never disagree. The ``+ 1`` keeps it above 0: with B resamples, p cannot go below 2/(B+1).

    Args:
        labels: true classes of the N test items, shape ``(N,)``.
        preds_a: predictions of A, shaped as in :func:`bootstrap_ci` (optionally seeds first).
        preds_b: predictions of B, likewise (its number of seeds may differ from A's).
        metric_fn: ``metric_fn(labels, predictions) -> float`` for one seed.
        n_resamples: number of bootstrap resamples.
        seed: seed of the resampling.
        groups: optional ``(N,)`` group ids whose items are resampled together.
        strata: optional ``(N,)`` stratum ids (e.g. the labels) to resample within.
        vectorized: ``metric_fn`` scores a batch of resamples per call (see :func:`bootstrap_ci`).

    Returns:
        A :class:`Comparison` whose ``difference`` is metric(A) - metric(B) on all items and whose
        ``statistic`` is that same difference; the p-value is NaN (with a note) when there are
        fewer than two items or the metric is undefined on some resample.

    Example:
        >>> labels = np.repeat([0, 1], 100)
        >>> good = np.where(np.arange(200) % 10 == 0, 1 - labels, labels)  # 90% right
        >>> coin = np.tile([0, 1], 100)  # 50% right
        >>> accuracy = lambda y, p: float(np.mean(y == p))
        >>> r = paired_bootstrap_test(labels, good, coin, accuracy, n_resamples=500)
        >>> round(r.difference, 2), r.p_value < 0.01
        (0.4, True)
    """
    labels = _labels(labels)
    n = len(labels)
    metric_a = _seed_mean(metric_fn, labels, _seeds_first(preds_a, n, "preds_a"))
    metric_b = _seed_mean(metric_fn, labels, _seeds_first(preds_b, n, "preds_b"))
    units, to_items, described = _units(n, groups, strata)
    test = f"paired bootstrap ({n_resamples} resamples of {described})"
    if len(units) < 2:
        difference = metric_a(np.arange(n)) - metric_b(np.arange(n)) if n else math.nan
        note = f"needs at least 2 test items (or groups) to resample; got {len(units)}"
        return Comparison(test, difference, math.nan, difference, note)

    def delta(items: np.ndarray) -> float:
        return metric_a(items) - metric_b(items)

    difference = delta(np.arange(n))
    if strata is not None:
        deltas = _stratified_distribution(strata, delta, n_resamples, seed, vectorized)
    else:
        with warnings.catch_warnings():  # only the distribution is used, not scipy's interval
            warnings.simplefilter("ignore", scipy.stats.DegenerateDataWarning)
            statistic = _resample_statistic(delta, to_items, vectorized and groups is None)
            result = _bootstrap(units, statistic, n_resamples, 0.95, seed, "percentile")
            deltas = result.bootstrap_distribution
    undefined = int(np.isnan(deltas).sum())
    if undefined or math.isnan(difference):
        # Dropping the NaN resamples would bias the tails, so make no claim at all.
        note = f"the metric is undefined on {undefined} of {len(deltas)} resamples or on all items"
        return Comparison(test, difference, math.nan, difference, note)
    tail = min(np.sum(deltas <= 0), np.sum(deltas >= 0))
    p_value = min(1.0, 2 * (tail + 1) / (len(deltas) + 1))
    return Comparison(test, difference, float(p_value), difference)


def mcnemar_test(labels: np.ndarray, preds_a: np.ndarray, preds_b: np.ndarray) -> Comparison:
    """Exact McNemar test: do A and B have the same accuracy on these test items?

    Only discordant items carry evidence (A right and B wrong, or the reverse); under the null
    each is equally likely to favour either, so the p-value is the exact two-sided binomial test
    (``scipy.stats.binomtest``, p = 1/2) of the items favouring A among the discordant ones. It is
    for one seed; with several, use :func:`paired_bootstrap_test` (items) or :func:`seed_test`.

    Args:
        labels: true classes, shape ``(N,)``.
        preds_a: A's predicted classes, shape ``(N,)``.
        preds_b: B's predicted classes, shape ``(N,)``.

    Returns:
        A :class:`Comparison` with ``difference`` = accuracy(A) - accuracy(B) and ``statistic`` =
        the number of items A gets right and B wrong. With no discordant items p is 1.0 (the data
        hold no evidence of a difference); with no items it is NaN.

    Raises:
        ValueError: if the predictions are not one seed's classes for the N items.

    Example:
        >>> labels = np.zeros(20, dtype=int)
        >>> a = np.r_[np.zeros(10), np.ones(10)].astype(int)   # 10 right
        >>> b = np.r_[np.zeros(2), np.ones(18)].astype(int)    # 2 right, both also right in A
        >>> r = mcnemar_test(labels, a, b)
        >>> r.statistic, r.difference, round(r.p_value, 6)      # 2 * 0.5**8
        (8.0, 0.4, 0.007812)
    """
    labels = _labels(labels)
    preds_a, preds_b = np.asarray(preds_a), np.asarray(preds_b)
    if preds_a.shape != labels.shape or preds_b.shape != labels.shape:
        raise ValueError(
            f"mcnemar_test compares one seed's predicted classes of shape {labels.shape}; got "
            f"{preds_a.shape} and {preds_b.shape}. For several seeds use paired_bootstrap_test "
            "(resamples items) or seed_test (pairs seeds)."
        )
    test = "McNemar exact (binomial)"
    if len(labels) == 0:
        return Comparison(test, math.nan, math.nan, note="no test items")
    right_a, right_b = preds_a == labels, preds_b == labels
    only_a = int(np.sum(right_a & ~right_b))
    only_b = int(np.sum(right_b & ~right_a))
    difference = (only_a - only_b) / len(labels)
    if only_a + only_b == 0:
        note = "no discordant items: A and B are right on exactly the same items"
        return Comparison(test, difference, 1.0, float(only_a), note)
    p_value = scipy.stats.binomtest(only_a, only_a + only_b, 0.5).pvalue
    return Comparison(test, difference, float(p_value), float(only_a))


def seed_test(
    values_a: Sequence[float] | np.ndarray, values_b: Sequence[float] | np.ndarray
) -> dict[str, Comparison]:
    """Paired tests across training seeds: Wilcoxon signed-rank and paired t.

    ``values_a[i]`` and ``values_b[i]`` are a metric of A and B trained with the same seed ``i``.
    Pairs with a NaN are dropped (and the note says so). With fewer than two pairs, or no
    difference at all, both p-values are NaN with a note, never an exception. Wilcoxon
    (``scipy.stats.wilcoxon``, zero differences dropped) assumes no distribution but cannot reach
    small p-values with few seeds: with n non-zero differences its smallest two-sided p is
    ``2 / 2**n`` (0.25 for 3 seeds), and the note says so whenever that is >= 0.05. The paired t
    test (``scipy.stats.ttest_rel``) assumes normal differences and is undefined (NaN) when every
    seed shows the same difference.

    Args:
        values_a: A's metric per seed.
        values_b: B's metric per seed, in the same seed order.

    Returns:
        ``{"wilcoxon": Comparison, "paired_t": Comparison}``; each ``difference`` is the mean of
        A - B over the kept seeds and each ``statistic`` is scipy's.

    Raises:
        ValueError: if the two sequences differ in length (seeds cannot be paired).

    Example:
        >>> r = seed_test([0.80, 0.82, 0.81], [0.75, 0.78, 0.74])
        >>> round(r["paired_t"].p_value, 3), r["wilcoxon"].p_value
        (0.026, 0.25)
    """
    a = np.asarray(values_a, dtype=np.float64).reshape(-1)
    b = np.asarray(values_b, dtype=np.float64).reshape(-1)
    if a.shape != b.shape:
        raise ValueError(
            f"seed_test pairs values by seed, so both need one value per seed; got {a.size} "
            f"and {b.size} values."
        )
    keep = ~(np.isnan(a) | np.isnan(b))
    notes = [] if keep.all() else [f"dropped {np.sum(~keep)} seed(s) with a NaN value"]
    a, b = a[keep], b[keep]
    d = a - b
    d[np.abs(d) < _ROUNDING] = 0.0
    difference = float(d.mean()) if d.size else math.nan

    def result(test: str, statistic: float, p_value: float, *more: str) -> Comparison:
        note = "; ".join(notes + [m for m in more if m])
        return Comparison(test, difference, float(p_value), float(statistic), note)

    if d.size < 2 or not d.any():
        why = (
            f"needs at least 2 seeds with values for both A and B; got {d.size}"
            if d.size < 2
            else f"A and B are equal on all {d.size} seeds: there is no difference to test"
        )
        return {
            "wilcoxon": result("Wilcoxon signed-rank", math.nan, math.nan, why),
            "paired_t": result("paired t", math.nan, math.nan, why),
        }

    nonzero = int(np.count_nonzero(d))
    floor = 2.0 / 2**nonzero
    wilcoxon = scipy.stats.wilcoxon(d)
    wilcoxon_notes = (
        f"{d.size - nonzero} seed(s) with zero difference dropped" if nonzero < d.size else "",
        f"with {nonzero} non-zero differences the smallest possible p is {floor:.3g}"
        if floor >= 0.05
        else "",
    )
    if np.ptp(d) < _ROUNDING:
        t_stat, t_p = math.nan, math.nan
        t_note = "the difference is the same on every seed (zero variance): t is undefined"
    else:
        t_stat, t_p = scipy.stats.ttest_rel(a, b)
        t_note = ""
    return {
        "wilcoxon": result(
            "Wilcoxon signed-rank", wilcoxon.statistic, wilcoxon.pvalue, *wilcoxon_notes
        ),
        "paired_t": result("paired t", t_stat, t_p, t_note),
    }


def holm(p_values: Sequence[float] | np.ndarray) -> np.ndarray:
    """Holm–Bonferroni adjusted p-values for one family of tests (Holm, 1979).

    Controls the family-wise error rate without assuming independence, and rejects at least what
    Bonferroni rejects. NaN p-values (undefined tests) stay NaN and do not count in the family.

    Args:
        p_values: the raw p-values of the family.

    Returns:
        Adjusted p-values, same shape and order; compare them with the unadjusted alpha.

    Example:
        >>> holm([0.01, 0.04, 0.03, 0.005]).round(3).tolist()
        [0.03, 0.06, 0.06, 0.02]
    """
    p = np.asarray(p_values, dtype=np.float64)
    adjusted = np.full(p.shape, math.nan)
    tested = ~np.isnan(p)
    m = int(tested.sum())
    order = np.argsort(p[tested])
    # The i-th smallest p (0-based) is multiplied by the m - i hypotheses still in play; the
    # running maximum keeps the adjusted values in the order of the raw ones (step-down).
    stepped = np.maximum.accumulate((m - np.arange(m)) * p[tested][order])
    adjusted[tested] = np.minimum(stepped, 1.0)[np.argsort(order)]
    return adjusted


def mean_std(values: Sequence[float] | np.ndarray) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1) of the non-NaN values, e.g. across seeds.

    Example:
        >>> mean_std([0.70, 0.74, float("nan")])  # std is NaN for a single value, both for none
        (0.72, 0.028284271247461926)
    """
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    v = v[~np.isnan(v)]
    if v.size == 0:
        return math.nan, math.nan
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else math.nan


def _labels(labels: np.ndarray) -> np.ndarray:
    return np.asarray(labels).reshape(-1)  # MedMNIST stores labels as (N, 1)


def _seeds_first(values: np.ndarray, n: int, name: str) -> np.ndarray:
    """``values`` with a leading seed axis: one seed's predictions gain an axis of length 1."""
    values = np.asarray(values)
    if values.ndim >= 1 and values.shape[0] == n:
        return values[None]
    if values.ndim >= 2 and values.shape[1] == n:
        return values
    raise ValueError(
        f"{name} must hold predictions of the {n} test items on axis 0 (one seed) or axis 1 "
        f"(seeds first); got shape {values.shape}."
    )


def _seed_mean(
    metric_fn: MetricFn, labels: np.ndarray, values: np.ndarray
) -> Callable[[np.ndarray], float]:
    """``items -> metric on those items``, averaged over the seeds of ``values``."""

    def metric(items: np.ndarray) -> float | np.ndarray:
        mean = np.mean([metric_fn(labels[items], v[items]) for v in values], axis=0)
        return float(mean) if np.ndim(mean) == 0 else mean  # items (B, N): one per resample

    return metric


def _resample_statistic(
    metric: Callable[[np.ndarray], float | np.ndarray],
    to_items: Callable[[np.ndarray], np.ndarray],
    vectorized: bool,
) -> Callable:
    """The statistic handed to ``scipy.stats.bootstrap``: resampled unit ids -> metric values.

    Vectorized, it receives a ``(batch, N)`` array of item ids (scipy's ``axis=-1`` convention)
    and the metric scores all rows at once; otherwise one resample per call.
    """
    if vectorized:
        return lambda units, axis=-1: metric(units)
    return lambda units: metric(to_items(units))


def _units(
    n: int, groups: np.ndarray | None, strata: np.ndarray | None = None
) -> tuple[np.ndarray, Callable[[np.ndarray], np.ndarray], str]:
    """What the bootstrap resamples (item or group ids), how units map to items, and a label."""
    if groups is not None and strata is not None:
        raise ValueError("resample either whole groups or within strata, not both; pass groups "
                         "or strata.")
    if strata is not None:
        strata = np.asarray(strata).reshape(-1)
        if len(strata) != n:
            raise ValueError(f"strata must give one stratum per test item ({n}); got "
                             f"{len(strata)}.")
        k = len(np.unique(strata))
        return np.arange(n), lambda units: units, f"{n} items within {k} strata"
    if groups is None:
        return np.arange(n), lambda units: units, f"{n} items"
    codes = np.unique(np.asarray(groups).reshape(-1), return_inverse=True)[1]
    if len(codes) != n:
        raise ValueError(f"groups must give one group id per test item ({n}); got {len(codes)}.")
    if n == 0:
        return np.arange(0), lambda units: units, "0 groups"
    members = np.split(np.argsort(codes, kind="stable"), np.cumsum(np.bincount(codes))[:-1])
    return (
        np.arange(len(members)),
        lambda units: np.concatenate([members[u] for u in units]),
        f"{len(members)} groups of items",
    )


def _bootstrap(
    units: np.ndarray,
    statistic: Callable[[np.ndarray], float],
    n_resamples: int,
    confidence: float,
    seed: int,
    method: str,
):
    # Resampling *indices* (paired=True over one array of unit ids) lets the statistic index
    # labels and every seed's predictions with the same draw. A statistic with an ``axis``
    # argument scores a whole batch per call; scipy draws the same resamples either way. batch
    # bounds memory to batch x N indices at a time.
    return scipy.stats.bootstrap(
        (units,),
        statistic,
        n_resamples=n_resamples,
        confidence_level=confidence,
        method=method,
        paired=True,
        vectorized="axis" in inspect.signature(statistic).parameters,
        batch=500,
        rng=np.random.default_rng(seed),
    )


def stratified_resamples(strata: np.ndarray, n_resamples: int,
                         rng: np.random.Generator) -> np.ndarray:
    """``(n_resamples, N)`` item indices drawn with replacement *within* each stratum.

    Every row holds, for each stratum, as many draws from that stratum's items as it has items,
    so the strata's sizes (e.g. the class counts of a balanced test split) are the same in every
    resample; this is the stratified bootstrap (Davison & Hinkley 1997, §3.7). Items keep their
    stratum's positions, so ``labels[rows]`` equals ``labels`` when the strata are the labels.

    Example:
        >>> rows = stratified_resamples(np.array([0, 0, 1, 1, 1]), 4, np.random.default_rng(0))
        >>> bool((np.array([0, 0, 1, 1, 1])[rows] == [0, 0, 1, 1, 1]).all())
        True
    """
    strata = np.asarray(strata).reshape(-1)
    rows = np.empty((n_resamples, len(strata)), dtype=np.int64)
    for value in np.unique(strata):
        members = np.flatnonzero(strata == value)
        rows[:, members] = members[rng.integers(0, len(members), (n_resamples, len(members)))]
    return rows


def _stratified_distribution(strata: np.ndarray, metric: Callable, n_resamples: int, seed: int,
                             vectorized: bool, batch: int = 500) -> np.ndarray:
    """The metric on ``n_resamples`` stratified resamples, ``batch`` resamples at a time."""
    rng = np.random.default_rng(seed)
    values = []
    for start in range(0, n_resamples, batch):
        rows = stratified_resamples(strata, min(batch, n_resamples - start), rng)
        values.append(np.asarray(metric(rows), dtype=np.float64).reshape(-1) if vectorized
                      else np.array([metric(row) for row in rows], dtype=np.float64))
    return np.concatenate(values)


def _interval(values: np.ndarray, estimate: float, confidence: float,
              method: str) -> tuple[float, float]:
    """Percentile (or basic) interval of a bootstrap distribution, as scipy computes them."""
    alpha = (1 - confidence) / 2
    if np.isnan(values).any():
        return math.nan, math.nan
    low, high = np.percentile(values, [100 * alpha, 100 * (1 - alpha)])
    if method == "basic":
        low, high = 2 * estimate - high, 2 * estimate - low
    return float(low), float(high)
