"""The numbers of a report, as DataFrames with one row per group.

Owns the main table (mean ± std over seeds, pooled bootstrap intervals), the differences to the
baseline (paired bootstrap tests, Holm-adjusted), the per-class table and the device table.
Tables hold numbers only; how they read is the business of :mod:`octbench.report.sections`.

Must not import: markdown, export, build or summary (they import this module), tuning, or the
engine.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from octbench.metrics import SCORE_METRICS, metric_fn
from octbench.report.collect import ReportData, Run, group_runs, null_to_nan
from octbench.results import RunRecord
from octbench.stats import bootstrap_ci, holm, mean_std, paired_bootstrap_test, seed_test

#: Columns of the main table, in order.
TABLE_METRICS = ("accuracy", "balanced_accuracy", "macro_f1", "macro_auc", "ece")
#: Metrics with a bootstrap interval. ECE has none: binning noise biases it upwards on every
#: resample, so percentile, basic and BCa intervals all can miss the estimate itself.
CI_METRICS = ("accuracy", "balanced_accuracy", "macro_f1", "macro_auc")
#: Metrics compared with the baseline (ECE is a property of calibration, not of ranking).
COMPARE_METRICS = ("accuracy", "balanced_accuracy", "macro_f1", "macro_auc")
#: The metric whose difference to the baseline the main table shows (checkpoints select on it).
PRIMARY = "macro_f1"


def _stack(runs: Sequence[Run], metric: str) -> tuple[np.ndarray, np.ndarray] | None:
    """(labels, seeds-first predictions or scores) when every run has the same test items."""
    if not runs or any(r.scores is None for r in runs):
        return None
    labels = runs[0].labels
    if any(len(r.labels) != len(labels) or (r.labels != labels).any() for r in runs):
        return None
    values = [r.scores if metric in SCORE_METRICS else r.preds for r in runs]
    return labels, np.stack(values)


def resampling(data: ReportData, runs: Sequence[Run], labels: np.ndarray) -> dict:
    """The bootstrap's design for these runs' test items: ``strata`` (class), ``groups`` or
    neither (``data.stratify`` none). Groups must be the same for every run, else the classes
    stratify and a warning says so."""
    if data.stratify == "none":
        return {}
    if data.stratify == "groups":
        groups = runs[0].groups if runs else None
        if groups is not None and all(r.groups is not None and len(r.groups) == len(groups)
                                      and (r.groups == groups).all() for r in runs):
            return {"groups": groups}
        _warn_once(data, "report.bootstrap.stratify is 'groups' but the test predictions hold "
                   "no (or differing) test_groups; resampled within classes instead")
    return {"strata": labels}


# ---------------------------------------------------------------------------------------------
# Tables (numbers): DataFrames with one row per group


def main_table(data: ReportData, *, n_resamples: int = 2000,
               comparisons: pd.DataFrame | None = None) -> pd.DataFrame:
    """Test metrics per (model, strategy, setup): mean, std, 95% CI, seeds, and Δ to baseline.

    Columns: ``model, strategy, setup, seeds`` and, per metric of :data:`TABLE_METRICS`,
    ``<metric>_mean, _std, _low, _high`` (the interval: percentile bootstrap over the test items,
    each resample scoring every seed on the same items; NaN for ECE, see :data:`CI_METRICS`),
    then ``<metric>_values`` (per seed),
    and from :func:`compare_to_baseline` (computed unless given) ``delta``, ``p_holm`` and
    ``seed_p_holm`` (across seeds) of :data:`PRIMARY`.
    """
    rows = []
    for (model, strategy, setup), runs in group_runs(data.runs).items():
        row = {"model": model, "strategy": strategy, "setup": setup,
               "seeds": len({r.record.seed for r in runs})}
        if row["seeds"] < len(runs):
            _warn_once(data, f"{model} / {strategy} ({setup}): {len(runs)} runs for "
                       f"{row['seeds']} seeds, so the folder mixes configurations (e.g. an "
                       "edited YAML); report from the YAML to keep only its current grid")
        k = len(data.class_names)
        for metric in TABLE_METRICS:
            values = [r.test.get(metric, math.nan) for r in runs]
            mean, std = mean_std(values)
            low = high = math.nan
            stacked = _stack(runs, metric) if metric in CI_METRICS else None
            if stacked is None and metric == PRIMARY and all(r.scores is not None for r in runs):
                _warn_once(data, f"{model} / {strategy} ({setup}): its seeds were tested on "
                           "different test items, so they cannot be pooled; no interval")
            if stacked is not None and not math.isnan(mean):
                interval = bootstrap_ci(*stacked, metric_fn(metric, k), n_resamples=n_resamples,
                                        vectorized=True, **resampling(data, runs, stacked[0]))
                low, high = interval.low, interval.high
            row.update({f"{metric}_mean": mean, f"{metric}_std": std, f"{metric}_low": low,
                        f"{metric}_high": high, f"{metric}_values": values})
        rows.append(row)
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    if comparisons is None:
        comparisons = compare_to_baseline(data, n_resamples=n_resamples)
    table["delta"] = table["p_holm"] = table["seed_p_holm"] = math.nan
    for _, comp in comparisons.iterrows():
        at = (table.model == comp.model) & (table.strategy == comp.strategy) & (
            table.setup == comp.setup)
        table.loc[at, "delta"] = comp[f"{PRIMARY}_delta"]
        table.loc[at, "p_holm"] = comp[f"{PRIMARY}_p_holm"]
        table.loc[at, "seed_p_holm"] = comp["seed_t_p_holm"]
    return table


def _warn_once(data: ReportData, message: str) -> None:
    if message not in data.warnings:
        data.warnings.append(message)


def compare_to_baseline(data: ReportData, *, n_resamples: int = 2000) -> pd.DataFrame:
    """Each (model, strategy, setup) against the baseline strategy of the same model and setup
    (in a sweep, its runs of the same combination, or those shared by every combination).

    Only seeds both have are paired. Per metric of :data:`COMPARE_METRICS`: ``<metric>_delta``
    (mean over paired seeds of A - baseline), ``<metric>_p`` (paired bootstrap over the test
    items, the same items for both and for every seed) and ``<metric>_p_holm`` (Holm-adjusted
    over all distinct comparisons of that metric). For :data:`PRIMARY` also the across-seed
    paired t test (``seed_t_p``, ``seed_t_p_holm``) and Wilcoxon signed-rank
    (``seed_wilcoxon_p``), and the per-seed differences (``seed_differences``).
    """
    groups = group_runs(data.runs)
    k = len(data.class_names)
    rows = []
    for (model, strategy, setup), runs in groups.items():
        baseline = data.baseline_in(setup)
        base = groups.get((model, baseline, setup))
        if strategy == baseline or base is None:
            continue
        by_seed = {r.record.seed: r for r in runs}
        base_by_seed = {r.record.seed: r for r in base}
        seeds = sorted(by_seed.keys() & base_by_seed.keys())
        a, b = [by_seed[s] for s in seeds], [base_by_seed[s] for s in seeds]
        pair = " ".join(r.record.run_id for r in [*a, *b]) or repr((model, strategy, setup))
        row = {"model": model, "strategy": strategy, "setup": setup, "seeds": len(seeds),
               "note": "" if seeds else "no seed in common with the baseline", "pair": pair}
        for metric in COMPARE_METRICS:
            diffs = [x.test[metric] - y.test[metric] for x, y in zip(a, b, strict=True)]
            delta = float(np.mean(diffs)) if diffs else math.nan
            p = math.nan
            sa, sb = _stack(a, metric), _stack(b, metric)
            same_items = (sa is not None and sb is not None and len(sa[0]) == len(sb[0])
                          and (sa[0] == sb[0]).all())
            if seeds and same_items and not math.isnan(delta):
                p = paired_bootstrap_test(sa[0], sa[1], sb[1], metric_fn(metric, k),
                                          n_resamples=n_resamples, vectorized=True,
                                          **resampling(data, [*a, *b], sa[0])).p_value
            row.update({f"{metric}_delta": delta, f"{metric}_p": p})
        seed_level = seed_test([x.test[PRIMARY] for x in a], [y.test[PRIMARY] for y in b])
        row.update(seed_t_p=seed_level["paired_t"].p_value,
                   seed_wilcoxon_p=seed_level["wilcoxon"].p_value,
                   seed_differences=[x.test[PRIMARY] - y.test[PRIMARY]
                                     for x, y in zip(a, b, strict=True)])
        rows.append(row)
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    # Runs shared by a sweep's combinations (both strategies unswept) make the same comparison
    # in each: it counts once among the comparisons that Holm adjusts for.
    pairs = table.pop("pair")
    once = ~pairs.duplicated()
    for column in [f"{metric}_p" for metric in COMPARE_METRICS] + ["seed_t_p"]:
        adjusted = holm(table.loc[once, column].to_numpy(dtype=float))
        table[f"{column}_holm"] = pairs.map(dict(zip(pairs[once], adjusted, strict=True)))
    return table


def per_class_table(data: ReportData) -> pd.DataFrame:
    """Mean and std over seeds of test recall and F1 per class, per (model, strategy, setup)."""
    rows = []
    for (model, strategy, setup), runs in group_runs(data.runs).items():
        row = {"model": model, "strategy": strategy, "setup": setup, "seeds": len(runs)}
        for name in data.class_names:
            for stat in ("recall", "f1"):
                values = [null_to_nan(((r.test.get("per_class") or {}).get(name) or {}).get(stat))
                          for r in runs]
                row[f"{stat}_{name}_mean"], row[f"{stat}_{name}_std"] = mean_std(values)
        rows.append(row)
    return pd.DataFrame(rows)


def device_table(data: ReportData) -> pd.DataFrame:
    """Speed per (model, device, hardware, precision) and parity with CPU fp32 on the same seeds.

    Parity pairs each run with the CPU fp32 run of the same model, strategy and seed:
    ``delta_accuracy`` and ``delta_macro_f1`` are mean differences (this setup - CPU),
    ``max_abs_delta_macro_f1`` the largest, and ``agreement`` the fraction of test items on which
    both predict the same class.
    """
    reference = {}
    for run in data.runs:
        r = run.record
        if _is_cpu(r) and r.precision == "fp32":
            reference.setdefault(_pair_key(r), run)
    rows = []
    keys: dict[tuple, list[Run]] = {}
    for run in data.runs:
        r = run.record
        keys.setdefault((r.model, r.device, hardware_name(r), r.precision), []).append(run)
    for (model, device, hardware, precision), runs in keys.items():
        timing = pd.DataFrame([{k: null_to_nan(v) for k, v in r.record.timing.items()}
                               for r in runs])
        row = {"model": model, "device": device, "hardware": hardware, "precision": precision,
               "runs": len(runs)}
        for column in ("seconds_per_epoch", "train_images_per_s", "eval_images_per_s"):
            row[column] = float(timing[column].mean()) if column in timing else math.nan
        pairs = [(run, reference.get(_pair_key(run.record))) for run in runs]
        pairs = [(x, y) for x, y in pairs if y is not None and y is not x]
        row["is_reference"] = all(
            reference.get(_pair_key(x.record)) is x for x in runs)
        row["paired"] = len(pairs)
        acc = [x.test["accuracy"] - y.test["accuracy"] for x, y in pairs]
        f1 = [x.test["macro_f1"] - y.test["macro_f1"] for x, y in pairs]
        agree = [float(np.mean(x.preds == y.preds)) for x, y in pairs
                 if x.preds is not None and y.preds is not None and len(x.preds) == len(y.preds)]
        row["delta_accuracy"] = float(np.mean(acc)) if acc else math.nan
        row["delta_macro_f1"] = float(np.mean(f1)) if f1 else math.nan
        row["max_abs_delta_macro_f1"] = float(np.max(np.abs(f1))) if f1 else math.nan
        row["agreement"] = float(np.mean(agree)) if agree else math.nan
        rows.append(row)
    table = pd.DataFrame(rows)
    if not table.empty:
        cpu = table[table.device.str.startswith("cpu") & (table.precision == "fp32")]
        speed = cpu.groupby("model")["train_images_per_s"].mean()
        table["speedup"] = [row.train_images_per_s / speed.get(row.model, math.nan)
                            for row in table.itertuples()]
    return table


def _pair_key(record: RunRecord) -> tuple:
    """Runs that differ only in where they ran: same model, strategy, seed and sweep values."""
    return (record.model, record.strategy, record.seed,
            json.dumps(record.sweep, sort_keys=True, default=str))


def _is_cpu(record: RunRecord) -> bool:
    return record.hardware.get("type", record.device) == "cpu" or record.device == "cpu"


def hardware_name(record: RunRecord) -> str:
    hardware = record.hardware
    name = hardware.get("name") or "unknown hardware"
    if hardware.get("type") == "cpu" and hardware.get("threads"):
        name += f", {hardware['threads']} threads"
    if hardware.get("memory_gib"):
        name += f", {hardware['memory_gib']} GiB"
    return name
