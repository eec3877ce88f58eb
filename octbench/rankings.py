"""Ranking many configurations across seeds: Friedman test, Nemenyi critical difference, effect
sizes (Demšar 2006, "Statistical comparisons of classifiers over multiple data sets", JMLR 7).

Each *block* (here: a training seed) scores every configuration once; configurations are ranked
within each block (1 = best, ties share the mean rank) and the mean ranks are compared. The
Friedman test asks whether any configuration ranks differently from the others; the Nemenyi
post-hoc test calls two configurations different when their mean ranks differ by more than the
critical difference ``CD = q_alpha * sqrt(k (k + 1) / (6 n))``. Effect sizes say by how much:
the mean paired difference with its t interval, and Cliff's delta.

Nothing here raises on thin data: too few blocks or configurations give NaN with a note.

Must not import: any octbench module (L0: numpy and scipy only).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import scipy.stats

#: Below this many blocks (seeds) a ranking is not attempted at all.
MIN_BLOCKS = 2
#: Fewer blocks than this make the Friedman chi-square approximation and Nemenyi test weak
#: (Demšar 2006 asks for more than 10 data sets and 5 classifiers); reports say so.
FEW_BLOCKS = 5


@dataclass(frozen=True)
class Ranking:
    """Mean ranks of k configurations over n blocks, with the Friedman and Nemenyi results.

    Attributes:
        names: the configurations, in the input's order.
        values: the scores, shape ``(n, k)``: one row per block (seed).
        ranks: rank of each configuration within each block, ``(n, k)``; 1 is best.
        mean_ranks: mean rank per configuration, ``(k,)``.
        friedman_statistic: Friedman's chi-square (``scipy.stats.friedmanchisquare``).
        friedman_p: its p-value; NaN with fewer than 3 configurations or 2 blocks.
        critical_difference: Nemenyi's CD at ``alpha``; NaN when undefined.
        alpha: the significance level.
        note: why something is NaN, or a caveat a reader must see; empty otherwise.
    """

    names: tuple[str, ...]
    values: np.ndarray
    ranks: np.ndarray
    mean_ranks: np.ndarray
    friedman_statistic: float
    friedman_p: float
    critical_difference: float
    alpha: float
    note: str = ""

    def cliques(self) -> list[tuple[int, ...]]:
        """Maximal runs of configurations (sorted by mean rank) whose mean ranks lie within one
        critical difference: the bars a critical-difference diagram draws."""
        if math.isnan(self.critical_difference):
            return []
        order = np.argsort(self.mean_ranks, kind="stable")
        found: list[tuple[int, ...]] = []
        for start in range(len(order)):
            end = start
            while (end + 1 < len(order) and self.mean_ranks[order[end + 1]]
                   - self.mean_ranks[order[start]] <= self.critical_difference):
                end += 1
            group = tuple(int(i) for i in order[start:end + 1])
            if len(group) > 1 and not any(set(group) <= set(g) for g in found):
                found.append(group)
        return found


def nemenyi_q(k: int, alpha: float = 0.05) -> float:
    """The Nemenyi test's critical value: the studentized range quantile over sqrt(2).

    Example:
        >>> round(nemenyi_q(4), 3)  # Demšar 2006, Table 5(a): 2.569
        2.569
    """
    return float(scipy.stats.studentized_range.ppf(1 - alpha, k, np.inf) / math.sqrt(2))


def rank_configurations(values: np.ndarray | Sequence[Sequence[float]], names: Sequence[str], *,
                        higher_is_better: bool = True, alpha: float = 0.05) -> Ranking:
    """Rank k configurations over n blocks and test them (Friedman, then Nemenyi).

    Args:
        values: scores of shape ``(n, k)``: block (seed) ``i``, configuration ``j``.
        names: the k configurations' names.
        higher_is_better: rank the highest score first (e.g. macro-F1); False for losses.
        alpha: significance level of the critical difference.

    Returns:
        A :class:`Ranking`; with fewer than :data:`MIN_BLOCKS` blocks or 3 configurations the
        tests are NaN and ``note`` says why.

    Example:
        >>> r = rank_configurations([[0.9, 0.8, 0.7], [0.8, 0.9, 0.6]], ["a", "b", "c"])
        >>> r.mean_ranks.tolist()
        [1.5, 1.5, 3.0]
    """
    values = np.asarray(values, dtype=np.float64)
    n, k = values.shape
    if len(names) != k:
        raise ValueError(f"rank_configurations needs one name per column; got {len(names)} "
                         f"names for {k} configurations.")
    signed = -values if higher_is_better else values
    ranks = np.vstack([scipy.stats.rankdata(row) for row in signed]) if n else np.zeros((0, k))
    mean_ranks = ranks.mean(axis=0) if n else np.full(k, math.nan)
    notes = []
    statistic = p = cd = math.nan
    if np.isnan(values).any():
        notes.append("some scores are NaN: no test")
    elif n < MIN_BLOCKS:
        notes.append(f"{n} seed(s): at least {MIN_BLOCKS} are needed to rank across seeds")
    elif k < 3:
        notes.append(f"{k} configuration(s): the Friedman test needs at least 3")
    else:
        if np.ptp(ranks, axis=0).max() == 0 and len(set(mean_ranks)) == 1:
            notes.append("every configuration has the same rank on every seed")
        else:
            statistic, p = scipy.stats.friedmanchisquare(*values.T)
        cd = nemenyi_q(k, alpha) * math.sqrt(k * (k + 1) / (6 * n))
        if n < FEW_BLOCKS:
            notes.append(f"only {n} seeds: the Friedman and Nemenyi tests have little power "
                         "(Demšar 2006 asks for many more blocks); read the ranks as a summary")
    return Ranking(tuple(names), values, ranks, mean_ranks, float(statistic), float(p),
                   float(cd), alpha, "; ".join(notes))


def cliffs_delta(a: Sequence[float], b: Sequence[float]) -> float:
    """Cliff's delta of ``a`` over ``b``: P(a > b) - P(a < b) over all pairs, in [-1, 1].

    Example:
        >>> cliffs_delta([3, 4, 5], [1, 2, 3])
        0.8888888888888888
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.size == 0 or b.size == 0:
        return math.nan
    diff = a[:, None] - b[None, :]
    return float((np.sum(diff > 0) - np.sum(diff < 0)) / diff.size)


def mean_difference(a: Sequence[float], b: Sequence[float],
                    confidence: float = 0.95) -> tuple[float, float, float]:
    """Mean of the paired differences ``a - b`` (block by block) with its t interval.

    Returns ``(mean, low, high)``; the interval is NaN with fewer than two blocks, and has zero
    width when every block shows the same difference.

    Example:
        >>> [round(x, 3) for x in mean_difference([0.8, 0.82, 0.81], [0.75, 0.78, 0.74])]
        [0.053, 0.015, 0.091]
    """
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    if d.size == 0:
        return math.nan, math.nan, math.nan
    mean = float(d.mean())
    if d.size < 2:
        return mean, math.nan, math.nan
    half = scipy.stats.t.ppf((1 + confidence) / 2, d.size - 1) * d.std(ddof=1) / math.sqrt(d.size)
    return mean, float(mean - half), float(mean + half)
