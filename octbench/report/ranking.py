"""All-pairs ranking of the configurations (model x strategy) of each sweep combination.

Every configuration of one setup (device, precision and sweep values) is ranked on test
macro-F1 within each seed the configurations share; :mod:`octbench.rankings` gives the mean
ranks, the Friedman test, Nemenyi's critical difference and the pairwise effect sizes.

Must not import: markdown, export, build or summary (they import this module), tuning, or the
engine.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations

import numpy as np
import pandas as pd

from octbench.rankings import Ranking, cliffs_delta, mean_difference, rank_configurations
from octbench.report.collect import ReportData, group_runs

#: The metric configurations are ranked on (checkpoints are selected on it too).
RANK_METRIC = "macro_f1"


@dataclass(frozen=True)
class SetupRanking:
    """The ranking of one setup: which seeds, the :class:`~octbench.rankings.Ranking`, and one
    row per pair of configurations (``a, b, delta, low, high, cliffs_delta, rank_gap,
    different``), best-ranked first."""

    setup: str
    seeds: tuple[int, ...]
    ranking: Ranking
    pairs: pd.DataFrame


def rank_setups(data: ReportData, alpha: float = 0.05) -> list[SetupRanking]:
    """One :class:`SetupRanking` per setup with at least two configurations."""
    by_setup: dict[str, dict[str, dict[int, float]]] = {}
    multi_model = len({key[0] for key in group_runs(data.runs)}) > 1
    for (model, strategy, setup), runs in group_runs(data.runs).items():
        name = f"{model} / {strategy}" if multi_model else strategy
        by_setup.setdefault(setup, {})[name] = {r.record.seed: r.test.get(RANK_METRIC)
                                                for r in runs}
    out = []
    for setup, configs in by_setup.items():
        if len(configs) < 2:
            continue
        names = list(configs)
        seeds = tuple(sorted(set.intersection(*(set(c) for c in configs.values()))))
        values = np.array([[configs[name][seed] for name in names] for seed in seeds],
                          dtype=np.float64).reshape(len(seeds), len(names))
        ranking = rank_configurations(values, names, alpha=alpha)
        out.append(SetupRanking(setup, seeds, ranking, _pairs(ranking)))
    return out


def _pairs(ranking: Ranking) -> pd.DataFrame:
    """Every pair, the better-ranked first: mean difference (t CI), Cliff's delta, rank gap."""
    order = sorted(range(len(ranking.names)), key=lambda i: ranking.mean_ranks[i])
    rows = []
    for i, j in combinations(order, 2):
        a, b = ranking.values[:, i], ranking.values[:, j]
        delta, low, high = mean_difference(a, b)
        gap = float(ranking.mean_ranks[j] - ranking.mean_ranks[i])
        rows.append({"a": ranking.names[i], "b": ranking.names[j], "delta": delta, "low": low,
                     "high": high, "cliffs_delta": cliffs_delta(a, b), "rank_gap": gap,
                     "different": bool(gap > ranking.critical_difference)})
    return pd.DataFrame(rows, columns=["a", "b", "delta", "low", "high", "cliffs_delta",
                                       "rank_gap", "different"])
