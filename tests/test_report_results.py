"""The results section: the main table and its intervals, recomputed with scikit-learn and
scipy, under each bootstrap scheme; the best value in bold."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest
import scipy.stats
from report_helpers import (
    N_TEST,
    QUALITY,
    RESAMPLES,
    SKLEARN,
    Built,
    class_stratified_draws,
    stored,
    write_run,
)

from octbench import report
from octbench.errors import OctbenchError
from octbench.results import ResultsStore


def test_main_table_recomputed_with_sklearn(built: Built) -> None:
    table = built.table.set_index("strategy")
    for strategy in QUALITY:
        runs = stored(built.folder, strategy)
        row = table.loc[strategy]
        assert row.seeds == 3
        for metric, fn in SKLEARN.items():
            values = [fn(y, s) for y, s in runs]
            assert row[f"{metric}_mean"] == pytest.approx(np.mean(values), abs=1e-12)
            assert row[f"{metric}_std"] == pytest.approx(np.std(values, ddof=1), abs=1e-12)
            cell = f"{np.mean(values):.3f}".replace("-", "−")
            assert re.search(rf"\*?\*?{cell}\*?\*? ± {np.std(values, ddof=1):.3f}", built.text)
            if metric in report.CI_METRICS:
                assert row[f"{metric}_low"] <= row[f"{metric}_mean"] <= row[f"{metric}_high"]
                assert f"[{row[f'{metric}_low']:.3f}, {row[f'{metric}_high']:.3f}]" in built.text
            else:
                assert math.isnan(row[f"{metric}_low"])


@pytest.mark.parametrize("metric", ["macro_f1", "macro_auc"])
def test_confidence_interval_recomputed_with_scipy(built: Built, metric: str) -> None:
    row = built.table.set_index("strategy").loc["weighted_ce"]
    runs = stored(built.folder, "weighted_ce")
    labels = runs[0][0]

    def pooled(items):  # the metric of every seed on the same resampled items, averaged
        return np.mean([SKLEARN[metric](labels[items], s[items]) for _, s in runs])

    values = [pooled(items) for items in class_stratified_draws(labels)]
    low, high = np.percentile(values, [2.5, 97.5])
    assert row[f"{metric}_low"] == pytest.approx(low, abs=1e-9)
    assert row[f"{metric}_high"] == pytest.approx(high, abs=1e-9)


def test_unstratified_interval_recomputed_with_scipy(tmp_path: Path) -> None:
    folder = tmp_path / "results" / "demo"
    store = ResultsStore(folder)
    for seed in range(3):
        write_run(store, strategy="weighted_ce", seed=seed)
    built = report.build_report(folder, tmp_path / "reports", n_resamples=RESAMPLES,
                                stratify="none")
    assert "items resampled freely" in built[0].read_text()
    table = report.main_table(report.collect(folder, stratify="none"), n_resamples=RESAMPLES)
    runs = stored(folder, "weighted_ce")
    labels = runs[0][0]

    def pooled(items):
        return np.mean([SKLEARN["macro_f1"](labels[items], s[items]) for _, s in runs])

    expected = scipy.stats.bootstrap(
        (np.arange(N_TEST),), pooled, n_resamples=RESAMPLES, method="percentile", paired=True,
        vectorized=False, batch=500, rng=np.random.default_rng(0)).confidence_interval
    assert table.macro_f1_low[0] == pytest.approx(expected.low, abs=1e-9)
    assert table.macro_f1_high[0] == pytest.approx(expected.high, abs=1e-9)


def test_best_value_bold_by_direction(built: Built) -> None:
    for metric in ("macro_f1", "ece"):
        means = built.table[f"{metric}_mean"]
        best = means.max() if metric == "macro_f1" else means.min()
        worst = means.min() if metric == "macro_f1" else means.max()
        assert f"**{best:.3f}**" in built.text
        assert f"**{worst:.3f}**" not in built.text


def test_groups_bootstrap_resamples_whole_groups(tmp_path: Path) -> None:
    folder = tmp_path / "results" / "demo"
    store = ResultsStore(folder)
    patients = np.arange(N_TEST) // 4  # 30 patients with 4 scans each
    for strategy in ("none", "oversample"):
        for seed in range(3):
            record = write_run(store, strategy=strategy, seed=seed)
            arrays = store.predictions(record.run_id)
            store.save_predictions(record.run_id, **arrays, test_groups=patients)
    data = report.collect(folder, stratify="groups")
    table = report.main_table(data, n_resamples=RESAMPLES)
    runs = stored(folder, "oversample")
    labels = runs[0][0]

    def pooled(groups):  # independent cluster bootstrap: draw patients, take all their scans
        items = np.concatenate([np.flatnonzero(patients == g) for g in groups])
        return np.mean([SKLEARN["macro_f1"](labels[items], s[items]) for _, s in runs])

    expected = scipy.stats.bootstrap(
        (np.arange(30),), pooled, n_resamples=RESAMPLES, method="percentile", paired=True,
        vectorized=False, batch=500, rng=np.random.default_rng(0)).confidence_interval
    row = table.set_index("strategy").loc["oversample"]
    assert row.macro_f1_low == pytest.approx(expected.low, abs=1e-9)
    assert row.macro_f1_high == pytest.approx(expected.high, abs=1e-9)
    text = report.build_report(folder, tmp_path / "reports", n_resamples=RESAMPLES,
                               stratify="groups")[0].read_text()
    assert "cluster bootstrap" in text
    with pytest.raises(OctbenchError, match="stratify must be class, groups or none"):
        report.build_report(folder, tmp_path / "reports", stratify="patients")


def test_groups_requested_without_groups_falls_back_to_classes_and_says_so(
        tmp_path: Path) -> None:
    folder = tmp_path / "results" / "demo"
    for seed in range(2):
        write_run(ResultsStore(folder), strategy="none", seed=seed)
    data = report.collect(folder, stratify="groups")
    report.main_table(data, n_resamples=RESAMPLES)
    assert any("resampled within classes instead" in w for w in data.warnings)
