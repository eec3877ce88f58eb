"""The differences to the baseline: paired bootstrap, Holm and the across-seed t test
recomputed, and the verdict's wording."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import scipy.stats
from report_helpers import RESAMPLES, SKLEARN, Built, class_stratified_draws, stored


def test_paired_test_and_holm_recomputed(built: Built) -> None:
    comparisons = built.comparisons.set_index("strategy")
    assert set(comparisons.index) == {"weighted_ce", "oversample"}
    base, runs = stored(built.folder, "none"), stored(built.folder, "oversample")
    labels = runs[0][0]
    f1 = SKLEARN["macro_f1"]
    delta = np.mean([f1(y, s) - f1(y, b) for (y, s), (_, b) in zip(runs, base, strict=True)])
    assert comparisons.loc["oversample", "macro_f1_delta"] == pytest.approx(delta, abs=1e-12)

    def diff(items):  # the same resampled items for all seeds of both strategies
        return (np.mean([f1(labels[items], s[items]) for _, s in runs])
                - np.mean([f1(labels[items], b[items]) for _, b in base]))

    deltas = np.array([diff(items) for items in class_stratified_draws(labels)])
    tail = min(np.sum(deltas <= 0), np.sum(deltas >= 0))
    p = min(1.0, 2 * (tail + 1) / (RESAMPLES + 1))
    assert comparisons.loc["oversample", "macro_f1_p"] == pytest.approx(p)
    seeds_t = scipy.stats.ttest_rel([f1(y, s) for y, s in runs], [f1(y, b) for y, b in base])
    assert comparisons.loc["oversample", "seed_t_p"] == pytest.approx(seeds_t.pvalue)
    # Holm for two tests: the smaller p times 2, the larger times 1, kept monotone.
    raw = comparisons["macro_f1_p"]
    small, large = raw.idxmin(), raw.idxmax()
    assert comparisons.loc[small, "macro_f1_p_holm"] == pytest.approx(min(1, 2 * raw[small]))
    assert comparisons.loc[large, "macro_f1_p_holm"] == pytest.approx(
        min(1, max(2 * raw[small], raw[large])))
    assert comparisons.loc["oversample", "macro_f1_p_holm"] < 0.05  # a real, large gain


def test_report_names_test_correction_and_verdicts(built: Built) -> None:
    assert "**Test used:** a paired bootstrap over the test items" in built.text
    assert "Holm–Bonferroni over all comparisons of each metric" in built.text
    comparisons = built.comparisons.set_index("strategy")
    for strategy in ("weighted_ce", "oversample"):
        section = built.text.split("## Differences to the baseline")[1].split("\n## ")[0]
        row = next(line for line in section.splitlines() if line.startswith(f"| {strategy} "))
        verdict = row.rstrip(" |").rsplit("|", 1)[-1].strip()
        p = comparisons.loc[strategy, "macro_f1_p_holm"]
        delta = comparisons.loc[strategy, "macro_f1_delta"]
        seed_p = comparisons.loc[strategy, "seed_t_p_holm"]
        expected = "not significant" if p >= 0.05 else "better" if delta > 0 else "worse"
        if p < 0.05 and not seed_p < 0.05:
            expected += " on the test items, not confirmed across seeds"
        assert verdict == expected


def test_seed_wording_for_identical_one_and_constant_differences() -> None:
    from octbench.report.sections.comparison import macro_f1_verdict, seed_wording

    def row(differences, p=0.5, seed_p=math.nan, delta=0.0):
        return pd.Series({"seed_differences": differences, "seed_t_p_holm": seed_p,
                          "macro_f1_p_holm": p, "macro_f1_delta": delta})

    assert seed_wording(row([0.0, 0.0, 0.0])) == "identical on every seed (3 seeds)"
    assert macro_f1_verdict(row([0.0, 0.0, 0.0], p=1.0)) == "identical on every seed"
    assert seed_wording(row([0.1])) == "untestable with one seed"
    assert macro_f1_verdict(row([0.1], p=0.01, delta=0.1)) == (
        "better on the test items; across seeds untestable with one seed")
    assert seed_wording(row([0.02, 0.02])).startswith("the same difference on every seed")
    assert seed_wording(row([0.01, 0.03], seed_p=0.2)) == "Holm p = 0.200"
    assert macro_f1_verdict(row([0.01, 0.03], p=0.01, seed_p=0.2, delta=0.02)) == (
        "better on the test items, not confirmed across seeds")
    assert seed_wording(row([])) == "n/a (no paired seed)"
