"""Rankings across seeds: mean ranks, Friedman and Nemenyi recomputed with scipy and Demšar's
table; effect sizes against brute force and scipy; the report's section and diagram."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import scipy.stats
from report_helpers import make_grid, stored
from sklearn.metrics import f1_score

from octbench import report
from octbench.rankings import cliffs_delta, mean_difference, nemenyi_q, rank_configurations
from octbench.report.ranking import rank_setups

# 6 seeds x 4 configurations, with a tie in seed 3 (values fixed, not generated)
VALUES = np.array([[0.71, 0.69, 0.64, 0.60],
                   [0.73, 0.70, 0.66, 0.61],
                   [0.70, 0.72, 0.65, 0.63],
                   [0.69, 0.69, 0.67, 0.58],
                   [0.74, 0.68, 0.62, 0.64],
                   [0.72, 0.71, 0.66, 0.59]])
NAMES = ["a", "b", "c", "d"]


def test_mean_ranks_friedman_and_cd_equal_scipy_and_demsar() -> None:
    r = rank_configurations(VALUES, NAMES)
    expected_ranks = np.vstack([scipy.stats.rankdata(-row) for row in VALUES])
    assert r.ranks.tolist() == expected_ranks.tolist()
    assert r.ranks[3].tolist() == [1.5, 1.5, 3.0, 4.0]  # the tie shares its mean rank
    assert r.mean_ranks == pytest.approx(expected_ranks.mean(axis=0))
    friedman = scipy.stats.friedmanchisquare(*VALUES.T)
    assert r.friedman_statistic == pytest.approx(friedman.statistic)
    assert r.friedman_p == pytest.approx(friedman.pvalue)
    # Demšar 2006, Table 5(a): q_0.05 = 2.569 for 4 classifiers; CD = q sqrt(k(k+1)/(6N))
    assert r.critical_difference == pytest.approx(2.569 * math.sqrt(4 * 5 / 36), abs=1e-3)
    for k, q in {2: 1.960, 3: 2.343, 5: 2.728, 6: 2.850, 10: 3.164}.items():
        assert nemenyi_q(k) == pytest.approx(q, abs=2e-3)
    # a and d are further apart than the CD, a and b are not
    assert r.mean_ranks[3] - r.mean_ranks[0] > r.critical_difference
    assert abs(r.mean_ranks[1] - r.mean_ranks[0]) <= r.critical_difference
    assert (0, 1, 2) in r.cliques() or (0, 1) in r.cliques()


def test_effect_sizes_against_brute_force_and_scipy() -> None:
    a, b = VALUES[:, 0], VALUES[:, 2]
    pairs = [(x, y) for x in a for y in b]
    brute = (sum(x > y for x, y in pairs) - sum(x < y for x, y in pairs)) / len(pairs)
    assert cliffs_delta(a, b) == pytest.approx(brute)
    assert cliffs_delta(b, a) == pytest.approx(-brute)
    mean, low, high = mean_difference(a, b)
    interval = scipy.stats.ttest_rel(a, b).confidence_interval(0.95)
    assert (mean, low, high) == pytest.approx((np.mean(a - b), interval.low, interval.high))


def test_too_few_seeds_or_configurations_say_so() -> None:
    one = rank_configurations(VALUES[:1], NAMES)
    assert math.isnan(one.friedman_p) and "at least 2 are needed" in one.note
    two = rank_configurations(VALUES[:, :2], NAMES[:2])
    assert math.isnan(two.friedman_p) and "at least 3" in two.note
    few = rank_configurations(VALUES[:3], NAMES)
    assert not math.isnan(few.friedman_p) and "little power" in few.note
    same = rank_configurations(np.full((3, 3), 0.5), NAMES[:3])
    assert math.isnan(same.friedman_p) and "same rank" in same.note


def test_report_ranks_every_configuration_of_a_setup_recomputed(tmp_path: Path) -> None:
    folder = make_grid(tmp_path / "results" / "demo")
    data = report.collect(folder)
    [item] = rank_setups(data)
    names = list(item.ranking.names)
    assert sorted(names) == ["none", "oversample", "weighted_ce"] and item.seeds == (0, 1, 2)
    f1 = {s: [f1_score(y, p.argmax(1), average="macro", zero_division=0)
              for y, p in stored(folder, s)] for s in names}
    values = np.array([[f1[s][seed] for s in names] for seed in range(3)])
    ranks = np.vstack([scipy.stats.rankdata(-row) for row in values]).mean(axis=0)
    assert item.ranking.mean_ranks == pytest.approx(ranks)
    assert item.ranking.friedman_p == pytest.approx(
        scipy.stats.friedmanchisquare(*values.T).pvalue)
    best = names[int(np.argmin(ranks))]
    assert item.pairs.a.iloc[0] == best  # the better-ranked of each pair first
    paths = report.build_report(folder, tmp_path / "reports", n_resamples=100)
    text = paths[0].read_text()
    assert "## Rankings across seeds" in text and "Friedman χ² =" in text
    assert "![ranking cd](figures/ranking_cd.png)" in text
    cd = tmp_path / "reports" / "demo" / "figures" / "ranking_cd"
    assert cd.with_suffix(".png").is_file() and cd.with_suffix(".svg").is_file()
    assert "only 3 seeds" in text  # too few for much power, and the report says so
