"""Reports: what the stored runs say, without over-claiming.

:func:`build_report` turns an experiment's run records into ``reports/<experiment>/report.md``
with figures (:mod:`octbench.figures`), or (``formats=("csv",)``) into a tidy CSV of all runs
plus the test predictions in the medmnist Evaluator format. Every table number is recomputed
from the stored test predictions, so tables, intervals, tests and exports agree:

* mean ± std over seeds, and a 95% bootstrap interval over the test items, pooled over seeds;
* the difference of each strategy to the baseline strategy, with a paired bootstrap test over
  the test items, Holm-adjusted over the comparisons of each metric;
* per-class recall and F1, device throughput and CPU parity.

A report never raises on thin data (no runs, failed runs, one seed, NaN metrics): what cannot
be computed reads "n/a", and a warning in the report says why.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from octbench.errors import OctbenchError
from octbench.fileio import atomic_write, atomic_write_text
from octbench.metrics import METRICS, compute_metrics, expected_calibration_error
from octbench.results import COMPLETE, FAILED, INTERRUPTED, SKIPPED, ResultsStore, RunRecord
from octbench.stats import bootstrap_ci, holm, mean_std, paired_bootstrap_test, seed_test

SUMMARY_METRICS = ("accuracy", "balanced_accuracy", "macro_f1", "macro_auc")
#: Columns of the main table, in order.
TABLE_METRICS = ("accuracy", "balanced_accuracy", "macro_f1", "macro_auc", "ece")
#: Metrics with a bootstrap interval. ECE has none: binning noise biases it upwards on every
#: resample, so percentile, basic and BCa intervals all can miss the estimate itself.
CI_METRICS = ("accuracy", "balanced_accuracy", "macro_f1", "macro_auc")
#: Metrics compared with the baseline (ECE is a property of calibration, not of ranking).
COMPARE_METRICS = ("accuracy", "balanced_accuracy", "macro_f1", "macro_auc")
METRIC_LABELS = {"accuracy": "Accuracy", "balanced_accuracy": "Balanced acc.",
                 "macro_f1": "Macro-F1", "macro_auc": "Macro AUC", "ece": "ECE"}
#: The metric whose difference to the baseline the main table shows (checkpoints select on it).
PRIMARY = "macro_f1"
ALPHA = 0.05
MIN_SEEDS = 3
#: A std across seeds above this (in metric units) means seeds disagree enough to warn.
LARGE_STD = 0.03
DEFAULT_CLASSES = ("CNV", "DME", "DRUSEN", "NORMAL")
OCTMNIST_TEST = [250, 250, 250, 250]  # the official, balanced test split

#: Published OCTMNIST test results (official split), by the image size they were trained on.
#: MedMNIST v2's "224" models saw the 28 px images upsampled, so they belong to 28 px.
PUBLISHED = (
    (28, "ResNet-18 (28)", 0.743, 0.943, "MedMNIST v2 (Yang et al., 2023)"),
    (28, "ResNet-50 (28)", 0.762, 0.952, "MedMNIST v2 (Yang et al., 2023)"),
    (28, "ResNet-50 (224, upsampled from 28 px)", 0.776, 0.958, "MedMNIST v2 (Yang et al., 2023)"),
    (28, "Google AutoML Vision", 0.771, 0.963, "MedMNIST v2 (Yang et al., 2023)"),
    (28, "ResNet-18, ImageNet-pretrained (28)", 0.691, math.nan,
     "MedMNIST+ (Doerrich et al., 2024), mean of 3 seeds"),
    (28, "VGG16, ImageNet-pretrained (28)", 0.775, math.nan,
     "MedMNIST+ (Doerrich et al., 2024), mean of 3 seeds"),
    (128, "VGG16, ImageNet-pretrained (128)", 0.905, math.nan,
     "MedMNIST+ (Doerrich et al., 2024), mean of 3 seeds"),
)

MetricFn = Callable[[np.ndarray, np.ndarray], float]
GroupKey = tuple[str, str, str]  # (model, strategy, setup)


# ---------------------------------------------------------------------------------------------
# Loading


def resolve_source(source: str | Path) -> tuple[str, Path, set[str] | None]:
    """Turn an experiment YAML or a results folder into (name, folder, run ids or None).

    From a YAML only the runs of its current grid are reported (a changed config gets new run
    ids); from a folder every record in it is.
    """
    source = Path(source)
    if source.suffix in (".yaml", ".yml"):
        from octbench.config import load_config
        from octbench.runner import expand_grid

        config = load_config(source)
        folder = Path(config.results_dir) / config.name
        return config.name, folder, {spec.run_id for spec in expand_grid(config)}
    if source.is_dir():
        return source.name, source, None
    raise OctbenchError(f"{source} is neither an experiment YAML nor a results folder; "
                        "pass e.g. experiments/quickstart.yaml or results/quickstart.")


def load_records(source: str | Path, warnings: list[str] | None = None
                 ) -> tuple[str, Path, list[RunRecord]]:
    """The records a report is made from (runs of tuning trials excluded)."""
    name, folder, run_ids = resolve_source(source)
    records = [r for r in ResultsStore(folder).records(warn=warnings) if r.kind == "run"
               and (run_ids is None or r.run_id in run_ids)]
    return name, folder, records


@dataclass(frozen=True)
class Run:
    """A complete run with its test metrics (recomputed from its predictions when stored).

    Attributes:
        record: the stored record.
        test: scalar test metrics (NaN where undefined), ``per_class`` and ``confusion``.
        labels: test labels ``(N,)`` from ``predictions.npz``, or None when not stored.
        scores: test scores ``(N, K)``, or None.
    """

    record: RunRecord
    test: dict
    labels: np.ndarray | None = None
    scores: np.ndarray | None = None

    @property
    def key(self) -> GroupKey:
        return (self.record.model, self.record.strategy, setup_label(self.record))

    @property
    def preds(self) -> np.ndarray | None:
        return None if self.scores is None else self.scores.argmax(axis=1)


@dataclass
class ReportData:
    """Everything a report is made from.

    Attributes:
        name: the experiment's name.
        folder: its results folder.
        records: every run record of the report (any status).
        runs: the complete runs, in grid order.
        baseline: the strategy the others are compared with.
        expected: number of runs in the YAML's grid (None when reporting a folder).
        strategy_order: strategies in display order.
        warnings: problems a reader must see (unreadable records, missing predictions, ...).
    """

    name: str
    folder: Path
    records: list[RunRecord]
    runs: list[Run]
    baseline: str | None
    expected: int | None = None
    strategy_order: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def dataset(self) -> dict:
        """The dataset description of the first record that has one."""
        return next((r.dataset for r in self.records if r.dataset), {})

    @property
    def synthetic(self) -> bool:
        return any(r.synthetic for r in self.records)

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(self.dataset.get("class_names") or DEFAULT_CLASSES)

    @property
    def dataset_label(self) -> str:
        labels = sorted({dataset_label(r) for r in self.records if r.dataset})
        return "; ".join(labels) if labels else "unknown dataset"

    @property
    def real_octmnist_size(self) -> int | None:
        """The image size when every record is real OCTMNIST at one size, else None.

        The test split must be the official one (250 per class, when the records say).
        """
        sizes = {r.dataset.get("size") for r in self.records}
        names = {r.dataset.get("name") for r in self.records}
        test = (self.dataset.get("class_counts") or {}).get("test", OCTMNIST_TEST)
        if (self.records and names == {"octmnist"} and not self.synthetic and len(sizes) == 1
                and list(test) == OCTMNIST_TEST):
            return sizes.pop()
        return None


def collect(source: str | Path, *, baseline: str | None = None) -> ReportData:
    """Load the records of ``source`` and the test predictions of its complete runs.

    Args:
        source: an experiment YAML (only its grid's runs) or a results folder (all runs).
        baseline: the strategy to compare with; default the YAML's ``report.baseline``, else
            ``none`` when present, else the first strategy.

    Raises:
        OctbenchError: if ``source`` is neither a YAML nor a folder.
    """
    warnings: list[str] = []
    source = Path(source)
    name, folder, run_ids = resolve_source(source)
    order: list[str] = []
    if run_ids is not None:
        from octbench.config import load_config

        config = load_config(source)
        order = [s.label for s in config.strategies]
        baseline = baseline or config.report.baseline
    store = ResultsStore(folder)
    records = [r for r in store.records(warn=warnings) if r.kind == "run"
               and (run_ids is None or r.run_id in run_ids)]
    for strategy in sorted({r.strategy for r in records} - set(order)):
        order.append(strategy)
    if baseline is None:
        baseline = "none" if "none" in order else (order[0] if order else None)
    if len({json.dumps(_comparable(r.dataset), sort_keys=True) for r in records}) > 1:
        warnings.append("the runs were made on different datasets "
                        f"({', '.join(sorted({dataset_label(r) for r in records}))}); "
                        "their numbers are not comparable")
    class_names = next((tuple(r.dataset["class_names"]) for r in records
                        if r.dataset.get("class_names")), DEFAULT_CLASSES)
    runs = [_load_run(store, r, class_names, warnings) for r in records if r.status == COMPLETE]
    rank = {s: i for i, s in enumerate(order)}
    runs.sort(key=lambda run: (run.record.model, rank.get(run.record.strategy, len(rank)),
                               setup_label(run.record), run.record.seed))
    if baseline is not None and runs and baseline not in {r.record.strategy for r in runs}:
        warnings.append(f"the baseline strategy '{baseline}' has no complete run; differences "
                        "to it cannot be computed (choose another with --baseline)")
    return ReportData(name, folder, records, runs, baseline,
                      len(run_ids) if run_ids is not None else None, order, warnings)


def _comparable(dataset: dict) -> dict:
    # The resolved path of a file differs between machines; name, size and counts do not.
    return {k: v for k, v in dataset.items() if k != "source"}


def _load_run(store: ResultsStore, record: RunRecord, class_names: Sequence[str],
              warnings: list[str]) -> Run:
    saved = (record.metrics or {}).get("test") or {}
    stored = {k: _number(saved.get(k)) for k in METRICS}  # every key, NaN when missing
    stored["per_class"] = saved.get("per_class") or {}
    stored["confusion"] = saved.get("confusion")
    try:
        arrays = store.predictions(record.run_id)
        labels = np.asarray(arrays["test_labels"]).reshape(-1).astype(np.int64)
        scores = np.asarray(arrays["test_scores"], dtype=np.float64)
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile) as error:
        warnings.append(f"run {record.run_id}: no readable test predictions ({error}); its "
                        "stored metrics are shown, without intervals or tests")
        return Run(record, stored)
    try:
        if not np.isfinite(scores).all():
            raise ValueError("the scores contain NaN or infinity")
        test = compute_metrics(labels, scores, class_names)
    except ValueError as error:
        warnings.append(f"run {record.run_id}: its test predictions cannot be scored ({error}); "
                        "its stored metrics are shown, without intervals or tests")
        return Run(record, stored)
    return Run(record, {k: _number(v) for k, v in test.items()}, labels, scores)


def _number(value):
    """JSON null (an undefined metric) becomes NaN; other values pass unchanged."""
    return math.nan if value is None else value


def setup_label(record: RunRecord) -> str:
    """Where a run ran: its device and precision, e.g. ``cpu fp32``."""
    return f"{record.device} {record.precision}"


def dataset_label(record: RunRecord) -> str:
    """E.g. ``octmnist (28 px)`` or ``synthetic (28 px) [SYNTHETIC]``."""
    data = record.dataset
    label = f"{data.get('name', '?')} ({data.get('size', '?')} px)"
    return f"{label} [SYNTHETIC]" if record.synthetic else label


def _groups(runs: Sequence[Run]) -> dict[GroupKey, list[Run]]:
    groups: dict[GroupKey, list[Run]] = {}
    for run in runs:
        groups.setdefault(run.key, []).append(run)
    return groups


# ---------------------------------------------------------------------------------------------
# Fast metrics for the bootstrap (the same values as metrics.compute_metrics)


def metric_fn(name: str, num_classes: int) -> MetricFn:
    """``fn(labels, values) -> float`` for one seed, fast enough for thousands of resamples.

    Accuracy, balanced accuracy and macro-F1 take predicted classes; macro AUC and ECE take
    scores ``(N, K)``. Values equal :func:`octbench.metrics.compute_metrics`.
    """
    k = num_classes

    def counts(labels, preds):
        confusion = np.bincount(labels * k + preds, minlength=k * k).reshape(k, k)
        return np.diag(confusion), confusion.sum(axis=1), confusion.sum(axis=0)

    def accuracy(labels, preds):
        return float(np.mean(labels == preds))

    def balanced_accuracy(labels, preds):
        tp, support, _ = counts(labels, preds)
        present = support > 0
        return float(np.mean(tp[present] / support[present]))

    def macro_f1(labels, preds):
        tp, support, predicted = counts(labels, preds)
        den = support + predicted
        return float(np.mean(np.divide(2 * tp, den, out=np.zeros(k), where=den > 0)))

    def macro_auc(labels, scores):
        # Mann-Whitney form of the one-vs-rest AUC, all classes at once (ties get mid-ranks).
        positive = labels[:, None] == np.arange(k)
        n_pos = positive.sum(axis=0)
        n_neg = len(labels) - n_pos
        if (n_pos == 0).any() or (n_neg == 0).any():
            return math.nan
        rank_sum = np.array([_mid_ranks(scores[:, c])[positive[:, c]].sum() for c in range(k)])
        return float(np.mean((rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)))

    def ece(labels, scores):
        return expected_calibration_error(scores.max(axis=1), scores.argmax(axis=1) == labels)

    return {"accuracy": accuracy, "balanced_accuracy": balanced_accuracy, "macro_f1": macro_f1,
            "macro_auc": macro_auc, "ece": ece}[name]


def _mid_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks with ties sharing their mean rank (``scipy.stats.rankdata``, 5x faster)."""
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    group = np.cumsum(np.r_[True, ordered[1:] != ordered[:-1]]) - 1
    size = np.bincount(group)
    mean_rank = np.cumsum(size) - (size - 1) / 2
    ranks = np.empty(len(values))
    ranks[order] = mean_rank[group]
    return ranks


def _uses_scores(metric: str) -> bool:
    return metric in ("macro_auc", "ece")


def _stack(runs: Sequence[Run], metric: str) -> tuple[np.ndarray, np.ndarray] | None:
    """(labels, seeds-first predictions or scores) when every run has the same test items."""
    if not runs or any(r.scores is None for r in runs):
        return None
    labels = runs[0].labels
    if any(len(r.labels) != len(labels) or (r.labels != labels).any() for r in runs):
        return None
    values = [r.scores if _uses_scores(metric) else r.preds for r in runs]
    return labels, np.stack(values)


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
    for (model, strategy, setup), runs in _groups(data.runs).items():
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
                interval = bootstrap_ci(*stacked, metric_fn(metric, k), n_resamples=n_resamples)
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
    """Each (model, strategy, setup) against the baseline strategy of the same model and setup.

    Only seeds both have are paired. Per metric of :data:`COMPARE_METRICS`: ``<metric>_delta``
    (mean over paired seeds of A - baseline), ``<metric>_p`` (paired bootstrap over the test
    items, the same items for both and for every seed) and ``<metric>_p_holm`` (Holm-adjusted
    over all comparisons of that metric). For :data:`PRIMARY` also the across-seed paired t test
    (``seed_t_p``, ``seed_t_p_holm``) and Wilcoxon signed-rank (``seed_wilcoxon_p``).
    """
    groups = _groups(data.runs)
    k = len(data.class_names)
    rows = []
    for (model, strategy, setup), runs in groups.items():
        base = groups.get((model, data.baseline, setup))
        if strategy == data.baseline or base is None:
            continue
        by_seed = {r.record.seed: r for r in runs}
        base_by_seed = {r.record.seed: r for r in base}
        seeds = sorted(by_seed.keys() & base_by_seed.keys())
        a, b = [by_seed[s] for s in seeds], [base_by_seed[s] for s in seeds]
        row = {"model": model, "strategy": strategy, "setup": setup, "seeds": len(seeds),
               "note": "" if seeds else "no seed in common with the baseline"}
        for metric in COMPARE_METRICS:
            diffs = [x.test[metric] - y.test[metric] for x, y in zip(a, b, strict=True)]
            delta = float(np.mean(diffs)) if diffs else math.nan
            p = math.nan
            sa, sb = _stack(a, metric), _stack(b, metric)
            same_items = (sa is not None and sb is not None and len(sa[0]) == len(sb[0])
                          and (sa[0] == sb[0]).all())
            if seeds and same_items and not math.isnan(delta):
                p = paired_bootstrap_test(sa[0], sa[1], sb[1], metric_fn(metric, k),
                                          n_resamples=n_resamples).p_value
            row.update({f"{metric}_delta": delta, f"{metric}_p": p})
        seed_level = seed_test([x.test[PRIMARY] for x in a], [y.test[PRIMARY] for y in b])
        row.update(seed_t_p=seed_level["paired_t"].p_value,
                   seed_wilcoxon_p=seed_level["wilcoxon"].p_value)
        rows.append(row)
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    for metric in COMPARE_METRICS:
        table[f"{metric}_p_holm"] = holm(table[f"{metric}_p"].to_numpy(dtype=float))
    table["seed_t_p_holm"] = holm(table["seed_t_p"].to_numpy(dtype=float))
    return table


def per_class_table(data: ReportData) -> pd.DataFrame:
    """Mean and std over seeds of test recall and F1 per class, per (model, strategy, setup)."""
    rows = []
    for (model, strategy, setup), runs in _groups(data.runs).items():
        row = {"model": model, "strategy": strategy, "setup": setup, "seeds": len(runs)}
        for name in data.class_names:
            for stat in ("recall", "f1"):
                values = [_number(((r.test.get("per_class") or {}).get(name) or {}).get(stat))
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
            reference.setdefault((r.model, r.strategy, r.seed), run)
    rows = []
    keys: dict[tuple, list[Run]] = {}
    for run in data.runs:
        r = run.record
        keys.setdefault((r.model, r.device, hardware_name(r), r.precision), []).append(run)
    for (model, device, hardware, precision), runs in keys.items():
        timing = pd.DataFrame([{k: _number(v) for k, v in r.record.timing.items()}
                               for r in runs])
        row = {"model": model, "device": device, "hardware": hardware, "precision": precision,
               "runs": len(runs)}
        for column in ("seconds_per_epoch", "train_images_per_s", "eval_images_per_s"):
            row[column] = float(timing[column].mean()) if column in timing else math.nan
        pairs = [(run, reference.get((run.record.model, run.record.strategy, run.record.seed)))
                 for run in runs]
        pairs = [(x, y) for x, y in pairs if y is not None and y is not x]
        row["is_reference"] = all(
            reference.get((x.record.model, x.record.strategy, x.record.seed)) is x for x in runs)
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


def runs_frame(data: ReportData) -> pd.DataFrame:
    """One tidy row per run (every status): provenance, test and val metrics, per-class, timing.

    Test metrics are the recomputed ones; the ``synthetic`` column marks generated data.
    """
    complete = {run.record.run_id: run for run in data.runs}
    rows = []
    for record in data.records:
        row = {"experiment": record.experiment, "dataset": record.dataset.get("name"),
               "synthetic": record.synthetic, "image_size": record.dataset.get("size"),
               "run_id": record.run_id, "status": record.status, "model": record.model,
               "strategy": record.strategy, "seed": record.seed, "device": record.device,
               "precision": record.precision, "hardware": record.hardware.get("name"),
               "best_epoch": record.best_epoch, "epochs_trained": record.epochs_trained,
               "parameters": record.parameters, "git_commit": record.git_commit,
               "created_utc": record.created_utc, "error": record.error}
        run = complete.get(record.run_id)
        test = run.test if run else {}
        for split, metrics in (("test", test), ("val", record.metrics.get("val") or {})):
            for metric in METRICS:
                row[f"{split}_{metric}"] = _number(metrics.get(metric, math.nan))
        for name, values in (test.get("per_class") or {}).items():
            for stat in ("precision", "recall", "f1"):
                row[f"test_{stat}_{name}"] = _number(values.get(stat))
        for name in ("train_seconds", "seconds_per_epoch", "train_images_per_s",
                     "eval_images_per_s"):
            row[name] = _number(record.timing.get(name, math.nan))
        rows.append(row)
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------------
# Markdown


_MD_SPECIAL = re.compile(r"([\\`*|\[\]<>#])|((?<![A-Za-z0-9])_|_(?![A-Za-z0-9]))")


def md_escape(text: object) -> str:
    """Make any name safe inside a markdown table cell (``|``, ``*``, ``_`` ... escaped).

    Underscores inside words (``weighted_ce``) never start emphasis, so they stay readable.

    Example:
        >>> md_escape("a|b*c weighted_ce _x")
        'a\\\\|b\\\\*c weighted_ce \\\\_x'
    """
    text = " ".join(str(text).split())  # a newline would end the table row
    return _MD_SPECIAL.sub(lambda m: "\\" + m.group(0), text)


def md_code(text: object) -> str:
    """Inline code for a table cell: only ``|`` needs escaping there (GFM), backticks go."""
    return "`" + " ".join(str(text).split()).replace("`", "'").replace("|", "\\|") + "`"


def md_table(headers: Sequence[str], rows: Sequence[Sequence[str]],
             align: Sequence[str] | None = None) -> str:
    """A GitHub-flavoured markdown table; cells are used as given (escape names first).

    ``align`` holds ``"l"`` or ``"r"`` per column (default: first column left, others right).
    """
    align = align or ["l"] + ["r"] * (len(headers) - 1)
    rule = ["---:" if a == "r" else ":---" for a in align]
    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join(rule) + " |"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def fmt(value: float, digits: int = 3, sign: bool = False) -> str:
    """A number for a table, or ``n/a`` for NaN/None."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    text = f"{value:+.{digits}f}" if sign else f"{value:.{digits}f}"
    return text.replace("-", "−")  # a real minus sign lines up with "+" in proportional fonts


def fmt_p(p: float, prefix: str = "p") -> str:
    """``p = 0.012``, ``p < 0.001`` or ``p n/a``."""
    if p is None or math.isnan(p):
        return f"{prefix} n/a"
    return f"{prefix} < 0.001" if p < 0.001 else f"{prefix} = {p:.3f}"


def _best(values: Sequence[float], metric: str) -> float:
    defined = [v for v in values if not math.isnan(v)]
    if not defined:
        return math.nan
    return max(defined) if METRICS[metric] == "max" else min(defined)


def _name(*parts: str) -> str:
    return " / ".join(md_escape(p) for p in parts)


def data_description(data: ReportData) -> str:
    """The dataset in words for captions, e.g. ``OCTMNIST (28 px, official splits)``."""
    if not data.records:
        return "no data"
    labels = {dataset_label(r) for r in data.records if r.dataset}
    size = data.dataset.get("size", "?")
    if data.synthetic:
        text = f"**synthetic data** ({size} px, generated by octbench — not OCTMNIST)"
    elif data.real_octmnist_size:
        text = f"OCTMNIST ({size} px, official splits)"
    else:
        name = data.dataset.get("name", "?")
        path = (data.dataset.get("source") or {}).get("path")
        text = f"{md_code(name)} data ({size} px{f', {md_escape(path)}' if path else ''})"
    if len(labels) > 1:
        text += f" — ⚠ mixed: {md_escape(', '.join(sorted(labels)))}"
    return text


def _when(stamp: str) -> str:
    return stamp[:19].replace("T", " ")


def _synthetic_tag(data: ReportData) -> str:
    return " **— SYNTHETIC DATA, not OCTMNIST**" if data.synthetic else ""


def render_markdown(data: ReportData, *, table: pd.DataFrame, comparisons: pd.DataFrame,
                    per_class: pd.DataFrame, devices: pd.DataFrame,
                    figures: Sequence[tuple[Path, str]], n_resamples: int,
                    study_figures: Sequence[Path] = ()) -> str:
    """The whole report as markdown (figures are linked relative to the report)."""
    out = [f"# octbench report: {md_escape(data.name)}", ""]
    if data.synthetic:
        out += ["> [!WARNING]",
                "> **SYNTHETIC DATA.** Every number in this report comes from octbench's "
                "procedurally generated OCT scans, **not from OCTMNIST or any real patient "
                "data**. It shows that the pipeline works and how the methods behave on a "
                "controlled problem; it says nothing about performance on real retinal OCT.", ""]
    out += _header(data)
    warnings = list(data.warnings)
    if not data.records and study_figures:
        warnings.insert(0, f"no run records in {data.folder}: it holds a tuning study, whose "
                        "figures are below; test results come from running the best experiment "
                        "it wrote (python -m octbench run experiments/generated/STUDY-best.yaml)")
    elif not data.records:
        warnings.insert(0, f"no run records in {data.folder}; run the experiment first "
                        "(python -m octbench run EXPERIMENT.yaml)")
    elif not data.runs:
        warnings.insert(0, "no run is complete, so there are no results to show; see "
                        "'Failed, skipped and missing runs' below")
    if warnings:
        out += ["", "**Warnings**", ""] + [f"- ⚠ {md_escape(w)}" for w in warnings]
    out += ["", *_dataset_section(data)]
    if data.runs:
        out += ["", *_results_section(data, table, n_resamples)]
        out += ["", *_comparison_section(data, comparisons, n_resamples)]
        out += ["", *_per_class_section(data, per_class)]
        out += ["", *_device_section(data, devices)]
    out += ["", *_figure_section(data, figures, study_figures)]
    out += ["", *_problem_section(data)]
    out += ["", *_method_section(data, n_resamples)]
    return "\n".join(out).rstrip() + "\n"


def _header(data: ReportData) -> list[str]:
    counts = {s: sum(r.status == s for r in data.records) for s in
              (COMPLETE, FAILED, SKIPPED, INTERRUPTED)}
    runs = (f"{counts[COMPLETE]} complete, {counts[FAILED]} failed, {counts[SKIPPED]} skipped"
            + (f", {counts[INTERRUPTED]} interrupted" if counts[INTERRUPTED] else ""))
    if data.expected is not None:
        missing = data.expected - len({r.run_id for r in data.records})
        runs += f" — {data.expected} in the experiment's grid" + (
            f", {missing} not run yet" if missing > 0 else "")
    dataset = data_description(data)
    times = sorted(r.created_utc for r in data.records if r.created_utc)
    commits = sorted({r.git_commit or "unknown" for r in data.records})
    versions = sorted({r.versions.get("octbench") or "?" for r in data.records if r.versions})
    hardware = {}
    for r in data.records:
        if r.hardware:
            h = r.hardware
            text = f"{md_code(r.device)} {r.precision}: {md_escape(hardware_name(r))}"
            extra = [f"torch {h['torch']}" if h.get("torch") else "",
                     f"CUDA {h['cuda']}" if h.get("cuda") else "",
                     md_escape(h.get("platform", ""))]
            text += "".join(f"; {e}" for e in extra if e)
            hardware[text] = hardware.get(text, 0) + 1
    rows = [
        ["Dataset", dataset],
        ["Results folder", md_code(data.folder)],
        ["Runs", runs],
        ["Runs made", f"{_when(times[0])} to {_when(times[-1])} UTC" if times else "n/a"],
        ["Git commit of the runs", ", ".join(md_code(c) for c in commits) or "n/a"],
        ["octbench version", ", ".join(versions) or "n/a"],
        ["Hardware", "<br>".join(f"{text} ({n} runs)" for text, n in hardware.items())
         or "n/a (no run reached a device)"],
        ["Report written", f"{dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC"],
    ]
    if data.baseline is not None and data.runs:
        rows.insert(3, ["Baseline strategy", md_code(data.baseline)])
    return [md_table(["Experiment", f"**{md_escape(data.name)}**"], rows, align=["l", "l"])]


def _dataset_section(data: ReportData) -> list[str]:
    out = ["## Dataset", ""]
    counts = data.dataset.get("class_counts") or {}
    names = data.class_names
    if not counts:
        return out + ["The run records hold no class counts (n/a)."]
    rows = []
    for split in ("train", "val", "test"):
        c = counts.get(split)
        if not c:
            continue
        ratio = max(c) / min(c) if min(c) > 0 else math.inf
        rows.append([split, *[f"{n:,}" for n in c], f"{sum(c):,}", f"{ratio:.1f} : 1"])
    out.append(md_table(["Split", *map(md_escape, names), "Total", "Largest : smallest"], rows))
    source = data.dataset.get("source") or {}
    what = ("OCTMNIST (MedMNIST v2), official splits" if data.real_octmnist_size else
            md_code(data.dataset.get("name", "?")))
    if data.synthetic:
        what = ("octbench's **synthetic** OCT scans (procedural B-scans with OCTMNIST's classes "
                "and imbalance; not real data)")
    out += ["", f"Data: {what}, {data.dataset.get('size', '?')} px."]
    if source:
        params = ", ".join(f"{k}={v}" for k, v in source.items())
        out[-1] += f" Source: {md_escape(params)}."
    test, train = counts.get("test"), counts.get("train")
    if test and train:
        balanced = len(set(test)) == 1
        small = names[int(np.argmin(train))]
        large = names[int(np.argmax(train))]
        ratio = max(train) / max(min(train), 1)
        shape = "imbalanced" if ratio >= 1.5 else "nearly balanced"
        text = (f"The training split is {shape} ({md_escape(large)} : {md_escape(small)} = "
                f"{ratio:.1f} : 1), ")
        if balanced:
            like = "" if data.real_octmnist_size else ", as in OCTMNIST"
            text += (
                f"while the test split is balanced ({test[0]:,} per class){like}. On a balanced "
                "test split plain accuracy already weights every class equally (it equals "
                "balanced accuracy), but a model trained on imbalanced data can still buy its "
                "accuracy on the frequent classes with poor recall on the rare ones; macro-F1, "
                "per-class recall and F1 show that trade-off, so they are reported next to "
                "accuracy.")
        else:
            text += ("and the test split is imbalanced too, so plain accuracy favours the "
                     "frequent classes: read balanced accuracy and macro-F1 next to it.")
        out += ["", text]
    return out


def _cell(row, metric: str, best: float) -> str:
    mean, std = row[f"{metric}_mean"], row[f"{metric}_std"]
    if math.isnan(mean):
        return "n/a"
    text = fmt(mean)
    if not math.isnan(best) and round(mean, 3) == round(best, 3):
        text = f"**{text}**"
    text += f" ± {fmt(std)}" if not math.isnan(std) else ""
    if metric not in CI_METRICS:
        return text
    low, high = row[f"{metric}_low"], row[f"{metric}_high"]
    ci = f"[{fmt(low)}, {fmt(high)}]" if not math.isnan(low) else "[n/a]"
    return f"{text}<br>{ci}"


def _key_columns(data: ReportData, frame: pd.DataFrame) -> tuple[list[str], Callable]:
    """Headers and a row -> cells function for model / strategy / setup (shown when varied)."""
    columns = [c for c in ("model", "strategy", "setup")
               if c == "strategy" or frame[c].nunique() > 1]

    def cells(row) -> list[str]:
        out = []
        for c in columns:
            text = md_escape(row[c])
            if c == "strategy" and row[c] == data.baseline:
                text += " (baseline)"
            out.append(text)
        return out

    return [c.capitalize() for c in columns], cells


def _results_section(data: ReportData, table: pd.DataFrame, n_resamples: int) -> list[str]:
    out = ["## Results on the test split" + _synthetic_tag(data), ""]
    headers, cells = _key_columns(data, table)
    best = {m: _best(table[f"{m}_mean"].tolist(), m) for m in TABLE_METRICS}
    delta_header = f"Δ Macro-F1 vs {md_escape(data.baseline)}"
    dagger = False
    rows = []
    for _, row in table.iterrows():
        if row.strategy == data.baseline:
            delta = "—"
        elif math.isnan(row.delta):
            delta = "n/a"
        else:
            delta = f"{fmt(row.delta, sign=True)} ({fmt_p(row.p_holm, 'Holm p')})"
            if not row.p_holm < ALPHA:
                delta += " not significant"
            elif not row.seed_p_holm < ALPHA:
                delta += " †"
                dagger = True
        rows.append([*cells(row), str(row.seeds),
                     *[_cell(row, m, best[m]) for m in TABLE_METRICS], delta])
    arrows = {m: "↑" if METRICS[m] == "max" else "↓" for m in TABLE_METRICS}
    out.append(md_table([*headers, "Seeds", *[f"{METRIC_LABELS[m]} {arrows[m]}"
                                             for m in TABLE_METRICS], delta_header], rows,
                        align=["l"] * len(headers) + ["r"] * (len(TABLE_METRICS) + 2)))
    out += ["", f"*Test split of {data_description(data)}.* Each cell: mean ± standard "
            "deviation over seeds, and below it the 95% confidence interval from a percentile "
            f"bootstrap over the test items ({n_resamples:,} resamples; each resample scores "
            "every seed on the same items, so the interval reflects the finite test set). "
            "↑ higher is better, ↓ lower is better. ECE (expected calibration error, 15 bins) "
            "has no interval: binning noise biases it upwards on every bootstrap resample, so "
            "an interval would be misleading; compare it by its std over seeds. "
            "The best mean per column is **bold**. Δ Macro-F1: mean over paired seeds of "
            "(strategy − baseline); p from a paired bootstrap test over the test items, "
            "Holm-adjusted over all comparisons with the baseline; a difference is called "
            f"significant only when that p < {ALPHA}."]
    if dagger:
        out[-1] += (" † significant over the test items but not confirmed across seeds (paired "
                    "t test): see the next section.")
    notes = []
    for _, row in table.iterrows():
        name = _name(row.model, row.strategy) + (
            f" ({md_escape(row.setup)})" if table.setup.nunique() > 1 else "")
        if row.seeds < MIN_SEEDS:
            notes.append(f"{name}: only {row.seeds} seed(s); the std and across-seed tests need "
                         f"at least {MIN_SEEDS}, so differences from this row are not reliable.")
        large = [f"{METRIC_LABELS[m]} {fmt(row[f'{m}_std'])}" for m in TABLE_METRICS
                 if row[f"{m}_std"] > LARGE_STD]
        if large:
            notes.append(f"{name}: large spread across seeds (std {', '.join(large)} > "
                         f"{LARGE_STD}); one seed's result could differ a lot from another's.")
        undefined = [METRIC_LABELS[m] for m in TABLE_METRICS if math.isnan(row[f"{m}_mean"])]
        if undefined:
            notes.append(f"{name}: {', '.join(undefined)} undefined (n/a) — e.g. macro AUC "
                         "needs every class in the test labels.")
    if notes:
        out += ["", *[f"- ⚠ {n}" for n in notes]]
    out += ["", *_published_section(data, table)]
    return out


def _published_section(data: ReportData, table: pd.DataFrame) -> list[str]:
    size = data.real_octmnist_size
    if data.synthetic:
        return ["Published OCTMNIST results are not shown: these results come from synthetic "
                "data, and the two are not comparable."]
    published = [p for p in PUBLISHED if p[0] == size]
    if not published:
        if {r.dataset.get("name") for r in data.records} != {"octmnist"}:
            why = "the data are not OCTMNIST"
        elif size is None:
            why = ("the runs mix image sizes, or the test split is not OCTMNIST's official one "
                   "(250 per class)")
        else:
            why = f"octbench knows no published result at {size} px"
        return [f"Published OCTMNIST results are not shown: {why}."]
    rows = [[f"ours: {_name(r.model, r.strategy)}", f"{fmt(r.accuracy_mean)} ± "
             f"{fmt(r.accuracy_std)}", f"{fmt(r.macro_auc_mean)} ± {fmt(r.macro_auc_std)}",
             f"this report ({r.seeds} seeds)"] for r in table.itertuples()]
    rows += [[f"*{name}*", fmt(acc), fmt(auc), source] for _, name, acc, auc, source in published]
    return [f"**Published results on OCTMNIST ({size} px, official test split)** beside ours "
            "(accuracy and macro AUC, the metrics the papers report):", "",
            md_table(["Method", "Accuracy", "Macro AUC", "Source"], rows,
                     align=["l", "r", "r", "l"])]


def _verdict(row) -> str:
    """Macro-F1 verdict: significant over the test items, and whether retraining confirms it."""
    p, seed_p = row[f"{PRIMARY}_p_holm"], row.seed_t_p_holm
    if math.isnan(p):
        return "n/a"
    if not p < ALPHA:
        return "not significant"
    direction = "better" if row[f"{PRIMARY}_delta"] > 0 else "worse"
    if seed_p < ALPHA:
        return direction
    # Significant on the test items but not across seeds: the gap may be luck of these seeds.
    return f"{direction} on the test items, not confirmed across seeds"


def _comparison_section(data: ReportData, comparisons: pd.DataFrame,
                        n_resamples: int) -> list[str]:
    out = [f"## Differences to the baseline {md_code(data.baseline)}" + _synthetic_tag(data),
           ""]
    if comparisons.empty:
        return out + [f"n/a: no strategy other than {md_code(data.baseline)} has complete "
                      "runs beside a complete baseline run of the same model and setup."]
    headers, cells = _key_columns(data, comparisons)
    rows = []
    for _, row in comparisons.iterrows():
        deltas = []
        for metric in COMPARE_METRICS:
            delta, p = row[f"{metric}_delta"], row[f"{metric}_p_holm"]
            text = f"{fmt(delta, sign=True)} ({fmt_p(p, 'Holm p')})"
            if math.isnan(delta):
                text = "n/a"
            elif not p < ALPHA:
                text += " not significant"
            deltas.append(text)
        verdict = _verdict(row)
        seed_p = row.seed_t_p_holm
        seed_text = (fmt_p(seed_p, "Holm p") if not math.isnan(seed_p)
                     else f"n/a ({row.seeds} paired seed(s))")
        rows.append([*cells(row), str(row.seeds), *deltas, seed_text, verdict])
    out.append(md_table([*headers, "Paired seeds", *[f"Δ {METRIC_LABELS[m]}"
                                                   for m in COMPARE_METRICS],
                         "Across seeds (paired t, macro-F1)", "Macro-F1 verdict"], rows,
                        align=["l"] * len(headers) + ["r"] * (len(COMPARE_METRICS) + 2) + ["l"]))
    out += ["", f"*Test split of {data_description(data)}.* Δ = strategy − baseline, "
            "averaged over the seeds both have (runs are paired by seed). **Test used:** a "
            f"paired bootstrap over the test items ({n_resamples:,} resamples; both models and "
            "all their seeds are scored on the same resampled items), two-sided; **multiple "
            "comparisons:** Holm–Bonferroni over all comparisons of each metric. *Across "
            "seeds* repeats the macro-F1 comparison with a paired t test over the seeds "
            "(Holm-adjusted), which asks whether the gain survives retraining; with 3 seeds it "
            "has little power. **Verdict:** *better* or *worse* only when both tests agree; "
            "*not confirmed across seeds* when the test items show a difference that the "
            "seeds do not (the seeds' spread could explain it); \"not significant\" means the "
            f"adjusted p ≥ {ALPHA}: the data do not show a difference, not that there is none."]
    return out


def _per_class_section(data: ReportData, per_class: pd.DataFrame) -> list[str]:
    out = ["## Per-class recall and F1" + _synthetic_tag(data), ""]
    counts = (data.dataset.get("class_counts") or {}).get("train")
    names = data.class_names
    headers, cells = _key_columns(data, per_class)
    for stat, title in (("recall", "Recall (sensitivity)"), ("f1", "F1")):
        best = {n: _best(per_class[f"{stat}_{n}_mean"].tolist(), "macro_f1") for n in names}
        rows = []
        for _, row in per_class.iterrows():
            values = []
            for n in names:
                mean, std = row[f"{stat}_{n}_mean"], row[f"{stat}_{n}_std"]
                text = fmt(mean)
                if not math.isnan(mean) and round(mean, 3) == round(best[n], 3):
                    text = f"**{text}**"
                values.append(text + (f" ± {fmt(std)}" if not math.isnan(std) else ""))
            rows.append([*cells(row), *values])
        class_headers = [md_escape(n) + (f" (train {counts[i]:,})" if counts else "")
                         for i, n in enumerate(names)]
        out += [f"**{title}** per class, mean ± std over seeds:", "",
                md_table([*headers, *class_headers], rows,
                         align=["l"] * len(headers) + ["r"] * len(names)), ""]
    out.append(f"*Test split of {data_description(data)}.* The header gives each class's "
               "number of training images: imbalance strategies should lift recall of the rare "
               "classes, usually at some cost on the frequent ones. Best per column in **bold**.")
    story = _minority_story(data, per_class)
    if story:
        out += ["", story]
    return out


def _minority_story(data: ReportData, per_class: pd.DataFrame) -> str:
    """One sentence on the rarest training class: baseline recall vs the best strategy."""
    counts = (data.dataset.get("class_counts") or {}).get("train")
    if not counts or per_class.empty or data.baseline is None:
        return ""
    rare = data.class_names[int(np.argmin(counts))]
    column = f"recall_{rare}_mean"
    sentences = []
    for (model, setup), rows in per_class.groupby(["model", "setup"], sort=False):
        base = rows[rows.strategy == data.baseline]
        others = rows[(rows.strategy != data.baseline) & rows[column].notna()]
        if base.empty or others.empty or math.isnan(base[column].iloc[0]):
            continue
        top = others.loc[others[column].idxmax()]
        where = f"{md_escape(model)} ({md_escape(setup)})" if per_class.setup.nunique() > 1 else (
            md_escape(model))
        sentences.append(
            f"{where}: recall of {md_escape(rare)}, the rarest training class, is "
            f"{fmt(base[column].iloc[0])} with {md_code(data.baseline)} and "
            f"{fmt(top[column])} with {md_code(top.strategy)} (the highest).")
    return " ".join(sentences)


def _device_section(data: ReportData, devices: pd.DataFrame) -> list[str]:
    out = ["## Devices: speed and parity", ""]
    rows = []
    for row in devices.itertuples():
        if row.is_reference:
            parity = "reference", "reference", "reference", "reference"
        elif row.paired == 0:
            parity = ("n/a (no CPU fp32 run of the same seeds)",) + ("n/a",) * 3
        else:
            parity = (str(row.paired), fmt(row.delta_accuracy, sign=True),
                      f"{fmt(row.delta_macro_f1, sign=True)} (largest "
                      f"{fmt(row.max_abs_delta_macro_f1)})", fmt(100 * row.agreement, 1) + "%")
        speedup = "n/a" if math.isnan(row.speedup) else f"{row.speedup:.1f}×"
        rows.append([md_escape(row.model), md_code(row.device),
                     md_escape(row.hardware), row.precision, str(row.runs),
                     fmt(row.seconds_per_epoch, 1), fmt(row.train_images_per_s, 0),
                     fmt(row.eval_images_per_s, 0), speedup, *parity])
    out.append(md_table(["Model", "Device", "Hardware", "Precision", "Runs", "s / epoch",
                         "Train img/s", "Eval img/s", "Train speed vs CPU fp32", "Runs paired",
                         "Δ Accuracy vs CPU", "Δ Macro-F1 vs CPU", "Same prediction"], rows,
                        align=["l", "l", "l", "l"] + ["r"] * 9))
    out += ["", "Speed is the mean over runs: training images per second (forward, backward, "
            "update, including the data pipeline) and evaluation images per second. Parity "
            "pairs each run with the CPU fp32 run of the same model, strategy and seed: Δ is "
            "this setup − CPU, and *same prediction* is the share of test items on which both "
            "predict the same class. Identical settings rarely give identical numbers across "
            "devices (kernels differ), so small Δ are expected; large ones point to a precision "
            "or determinism problem. Runs copied from several machines into one results folder "
            "appear here side by side."]
    if data.synthetic:
        out[-1] += " (Metrics from synthetic data; the timings do not depend on it.)"
    return out


def _figure_section(data: ReportData, figures: Sequence[tuple[Path, str]],
                    study_figures: Sequence[Path]) -> list[str]:
    out = ["## Figures" + _synthetic_tag(data), ""]
    if not figures and not study_figures:
        return out + ["No figures: there are no complete runs to plot."]
    for path, caption in figures:
        title = path.stem.replace("_", " ")
        out += [f"![{title}](figures/{path.name})", "", f"*{caption}*", ""]
    if study_figures:
        out += ["### Hyper-parameter tuning", "",
                "The Optuna study behind this experiment: every trial was scored on the "
                "validation split only (the test split was never seen while tuning).", ""]
        for path in study_figures:
            out += [f"![{path.stem.replace('_', ' ')}](figures/{path.name})", ""]
    return out


def _problem_section(data: ReportData) -> list[str]:
    out = ["## Failed, skipped and missing runs", ""]
    problems = [r for r in data.records if r.status != COMPLETE]
    if not problems and not (data.expected and data.expected > len(data.records)):
        return out + ["None: every run of the grid is complete."]
    rows = [[md_escape(r.model), md_escape(r.strategy), str(r.seed), md_code(r.device),
             r.status, md_escape((r.error or "no message")[:300])] for r in problems]
    if rows:
        out.append(md_table(["Model", "Strategy", "Seed", "Device", "Status", "Reason"], rows,
                            align=["l", "l", "r", "l", "l", "l"]))
    if data.expected and data.expected > len({r.run_id for r in data.records}):
        out += ["", f"{data.expected - len({r.run_id for r in data.records})} run(s) of the "
                "grid have no record yet: `python -m octbench run` trains them (finished runs "
                "are skipped)."]
    return out


def _method_section(data: ReportData, n_resamples: int) -> list[str]:
    return [
        "## How to read this report", "",
        "- **Runs and seeds.** Each run trains one model with one class-imbalance strategy and "
        "one seed; checkpoints are selected on the validation split (never on test). Mean ± std "
        "over seeds show how much retraining alone moves a number.",
        "- **Metrics** (test split, recomputed from the stored predictions): accuracy; balanced "
        "accuracy (mean per-class recall); macro-F1 (unweighted mean of per-class F1); macro AUC "
        "(one-vs-rest ROC AUC averaged over classes); ECE (expected calibration error of the "
        "top-class probability, 15 equal-width bins; lower is better).",
        f"- **Confidence intervals**: 95% percentile bootstrap over the test items "
        f"({n_resamples:,} resamples), pooled over seeds. They describe the uncertainty due to "
        "the finite test set; the std describes the seeds.",
        "- **Significance**: paired bootstrap test over the test items against the baseline "
        "strategy, Holm–Bonferroni-adjusted per metric over all comparisons; a paired t test "
        f"across seeds as a second opinion. α = {ALPHA}. With {n_resamples:,} resamples the "
        f"smallest possible bootstrap p is {2 / (n_resamples + 1):.4f} (before Holm). With "
        f"fewer than {MIN_SEEDS} seeds the across-seed tests are undefined or powerless.",
        "- **Exports**: `python -m octbench report SOURCE --format csv` writes `runs.csv` "
        "(one tidy row per run) and the test predictions in the medmnist Evaluator format "
        "(`medmnist/`), which `python -m medmnist evaluate FILE` re-scores.",
    ] + ([
        "- **Synthetic data**: every number above comes from generated images, never from "
        "OCTMNIST; published OCTMNIST results are deliberately not shown beside them.",
    ] if data.synthetic else [])


# ---------------------------------------------------------------------------------------------
# Figures, exports and the entry point


def _make_figures(data: ReportData, table: pd.DataFrame, devices: pd.DataFrame,
                  folder: Path, warnings: list[str]) -> list[tuple[Path, str]]:
    from octbench import figures

    size = data.dataset.get("size", "?")
    prefix = "SYNTHETIC DATA (not OCTMNIST) — " if data.synthetic else ""
    name = "OCTMNIST" if data.real_octmnist_size else data.dataset.get("name", "?")
    dataset = f"{size} px" if data.synthetic else f"{name}, {size} px"
    source = f"test split, {dataset}"
    groups = _groups(data.runs)
    multi_model = len({k[0] for k in groups}) > 1
    multi_setup = len({k[2] for k in groups}) > 1

    def label(key: GroupKey) -> str:
        model, strategy, setup = key
        parts = ([model] if multi_model else []) + [strategy] + ([setup] if multi_setup else [])
        return " / ".join(parts)

    made = []
    panels = []
    for key, runs in groups.items():
        # Choose on validation macro-F1: picking the best *test* run would flatter every matrix.
        best = max(runs, key=lambda r: _number(
            (r.record.metrics.get("val") or {}).get("macro_f1", -1.0)) or -1.0)
        confusion = best.test.get("confusion")
        if confusion is not None:
            panels.append((f"{label(key)}\nseed {best.record.seed}", np.asarray(confusion)))
    jobs = [
        ("confusion.png", lambda p: figures.confusion_grid(
            panels, data.class_names, f"{prefix}Normalised confusion matrices ({source})", p),
         "Row-normalised test confusion matrices (each row sums to 1, so the diagonal is "
         "per-class recall), for the seed with the best validation macro-F1 of each "
         "strategy."),
        ("training_curves.png", lambda p: figures.training_curves(
            _curves(data, label), f"{prefix}Training curves ({dataset})", p),
         "Training loss and validation macro-F1 per epoch: mean over seeds, the band spans the "
         "seeds' minimum to maximum."),
        ("macro_f1_ci.png", lambda p: figures.interval_plot(
            _interval_frame(table, label, data.baseline), "Macro-F1 (test)",
            f"{prefix}Macro-F1 with 95% bootstrap CI ({source})", p),
         "Test macro-F1 per strategy: mean over seeds (diamond) with its 95% bootstrap "
         "interval, and each seed (dots). The dashed line marks the baseline's mean."),
        ("throughput.png", lambda p: figures.throughput(
            _throughput_frame(devices), "Throughput per device", p),
         "Training and evaluation throughput (images per second) per model and device; "
         "higher is faster."),
    ]
    for name, draw, caption in jobs:
        try:
            path = draw(folder / name)
        except Exception as error:  # a figure must never cost the whole report
            warnings.append(f"figure {name} could not be drawn: {type(error).__name__}: {error}")
            continue
        if path is not None:
            made.append((path, caption))
    return made


def _curves(data: ReportData, label: Callable[[GroupKey], str]) -> pd.DataFrame:
    rows = [{"label": label(run.key), "seed": run.record.seed, "epoch": h.get("epoch"),
             "train_loss": _number(h.get("train_loss")),
             "val_macro_f1": _number(h.get("val_macro_f1"))}
            for run in data.runs for h in run.record.history]
    return pd.DataFrame(rows, columns=["label", "seed", "epoch", "train_loss", "val_macro_f1"])


def _interval_frame(table: pd.DataFrame, label: Callable[[GroupKey], str],
                    baseline: str | None) -> pd.DataFrame:
    return pd.DataFrame([{
        "label": label((r.model, r.strategy, r.setup)), "mean": r.macro_f1_mean,
        "low": r.macro_f1_low, "high": r.macro_f1_high, "values": r.macro_f1_values,
        "baseline": r.strategy == baseline} for r in table.itertuples()])


def _throughput_frame(devices: pd.DataFrame) -> pd.DataFrame:
    if devices.empty:
        return devices
    label = devices.model + "\n" + devices.device + " " + devices.precision + " · " + (
        devices.hardware.str.slice(0, 40))
    return pd.DataFrame({"label": label, "train": devices.train_images_per_s,
                         "eval": devices.eval_images_per_s})


def export_medmnist(data: ReportData, folder: Path, warnings: list[str]) -> list[Path]:
    """Write each complete run's test scores as a medmnist Evaluator result file.

    Files are named as ``Evaluator.get_standard_evaluation_filename`` names them,
    ``octmnist{_SIZE}_test_[AUC]0.943_[ACC]0.743@{run}.csv`` (size flag empty at 28 px), and hold
    ``pandas.DataFrame(scores).to_csv(path, header=None)``: the item index, then K scores.
    ``python -m medmnist evaluate FILE`` re-scores a file against the labels it finds in
    ``~/.medmnist/octmnist{_SIZE}.npz``. For data other than real OCTMNIST the test labels are
    written beside the files in ``.medmnist/`` (run it with ``HOME`` set to this folder), and
    run names start with ``synthetic-`` when the data are synthetic.
    """
    size = data.dataset.get("size") or 28
    size_flag = "" if size == 28 else f"_{size}"
    real = data.real_octmnist_size is not None
    written, tokens = [], set()
    labels = None
    for run in data.runs:
        if run.scores is None:
            continue
        r = run.record
        token = re.sub(r"[^A-Za-z0-9_-]+", "-", f"{r.model}-{r.strategy}-seed{r.seed}-"
                       f"{r.device}-{r.precision}").strip("-")
        token = ("synthetic-" if r.synthetic else "") + token
        if token in tokens:  # two configs of one cell (e.g. an edited YAML): keep both
            token += "-" + re.sub(r"[^A-Za-z0-9]", "", r.run_id.rsplit("__", 1)[-1])[:8]
        tokens.add(token)
        auc, acc = run.test["macro_auc"], run.test["accuracy"]
        name = f"octmnist{size_flag}_test_[AUC]{auc:.3f}_[ACC]{acc:.3f}@{token}.csv"
        path = folder / name
        atomic_write(path, lambda handle, s=run.scores: handle.write(
            pd.DataFrame(s).to_csv(header=None).encode()))
        written.append(path)
        if labels is None:
            labels = run.labels
        elif len(labels) != len(run.labels) or (labels != run.labels).any():
            warnings.append("runs disagree on the test labels; the label file is not written")
            labels = np.array([])
    if written and not real and labels is not None and len(labels):
        root = folder / ".medmnist"
        atomic_write(root / f"octmnist{size_flag}.npz", lambda handle: np.savez(
            handle, test_labels=labels.astype(np.uint8)[:, None]))
    if written:
        command = ("python -m medmnist evaluate 'FILE'" if real
                   else "cd to this folder, then `HOME=$PWD python -m medmnist evaluate 'FILE'")
        note = ["# Test predictions in the medmnist Evaluator format", "",
                f"Experiment `{data.name}`, {data.dataset_label}.", "",
                "Each file holds one run's test scores: the item index, then one probability "
                "per class, no header. Its name carries the AUC and accuracy octbench computed.",
                "", f"Re-score a file: {'`' if real else ''}{command}` (quote the name: its "
                "`[AUC]` and `[ACC]` are shell wildcards)."]
        if not real:
            note += ["", "These are **not OCTMNIST predictions**"
                     + (" (synthetic data)" if data.synthetic else "")
                     + ": `.medmnist/` holds this dataset's test labels under the file name "
                     "medmnist expects, and `HOME` points medmnist at it. Scoring these files "
                     "against the real OCTMNIST labels would give meaningless numbers."]
        atomic_write_text(folder / "README.md", "\n".join(note) + "\n")
    return written


def build_report(source: str | Path, out: str | Path = "reports", *,
                 formats: Sequence[str] = ("md",), baseline: str | None = None,
                 n_resamples: int = 2000, study: str | Path | None = None) -> list[Path]:
    """Write the report of an experiment to ``<out>/<experiment>/``.

    Args:
        source: experiment YAML or results folder.
        out: the reports folder.
        formats: ``"md"`` for ``report.md`` and ``figures/*.png``; ``"csv"`` for ``runs.csv``
            and the medmnist Evaluator files in ``medmnist/``.
        baseline: strategy to compare with (default: the YAML's, else ``none``).
        n_resamples: bootstrap resamples of the intervals and tests.
        study: an Optuna study folder whose figures to include (default: :func:`find_study`).

    Returns:
        The paths written (report, CSV, exported files); figures are listed in the report.

    Raises:
        OctbenchError: if the source does not exist or an option is out of range.

    Example:
        >>> build_report("experiments/quickstart.yaml")  # doctest: +SKIP
        [PosixPath('reports/quickstart/report.md')]
    """
    unknown = set(formats) - {"md", "csv"}
    if unknown or not formats:
        raise OctbenchError(f"report formats must be among md, csv. Got {sorted(formats)!r}.")
    if not isinstance(n_resamples, int) or n_resamples < 100:
        raise OctbenchError(f"the number of bootstrap resamples must be an int >= 100. Got "
                            f"{n_resamples!r} instead; 2000 is a good default.")
    data = collect(source, baseline=baseline)
    folder = Path(out) / data.name
    written = []
    if "csv" in formats:
        path = folder / "runs.csv"
        atomic_write_text(path, runs_frame(data).to_csv(index=False))
        written += [path, *export_medmnist(data, folder / "medmnist", data.warnings)]
    if "md" in formats:
        comparisons = compare_to_baseline(data, n_resamples=n_resamples)
        table = main_table(data, n_resamples=n_resamples, comparisons=comparisons)
        per_class = per_class_table(data)
        devices = device_table(data)
        figure_dir = folder / "figures"
        figure_dir.mkdir(parents=True, exist_ok=True)
        for old in figure_dir.glob("*.png"):  # a figure of a previous report must not linger
            old.unlink()
        figures = (_make_figures(data, table, devices, figure_dir, data.warnings)
                   if data.runs else [])
        tuning = _study_figures(study, data, figure_dir)
        text = render_markdown(data, table=table, comparisons=comparisons,
                               per_class=per_class, devices=devices, figures=figures,
                               n_resamples=n_resamples, study_figures=tuning)
        path = folder / "report.md"
        atomic_write_text(path, text)
        written.insert(0, path)
    return written


def find_study(data: ReportData) -> Path | None:
    """The Optuna study folder of a report: the results folder itself, or for ``<study>-best``
    (the experiment ``octbench tune`` writes) the sibling ``<study>``; None when neither is one.
    """
    candidates = [data.folder]
    if data.folder.name.endswith("-best"):
        candidates.append(data.folder.with_name(data.folder.name.removesuffix("-best")))
    return next((c for c in candidates if _is_study(c)), None)


def _is_study(folder: Path) -> bool:
    return any((folder / name).is_file() for name in ("study.json", "study.db", "journal.log"))


def _study_figures(study: str | Path | None, data: ReportData, figure_dir: Path) -> list[Path]:
    """Tuning figures from ``octbench.tuning.study_figures`` when it and a study exist."""
    import importlib

    folder = Path(study) if study is not None else find_study(data)
    if folder is None:
        return []
    if not _is_study(folder):
        data.warnings.append(f"no Optuna study (study.json, study.db or journal.log) in {folder}")
        return []
    try:
        draw = importlib.import_module("octbench.tuning").study_figures
    except (ImportError, AttributeError):
        return []  # tuning is optional: the report stands without its figures
    try:
        return [Path(p) for p in draw(folder, figure_dir)]
    except Exception as error:  # the tuning figures are extra: the report goes on without them
        data.warnings.append(f"tuning figures of {folder} could not be drawn: "
                             f"{type(error).__name__}: {error}")
        return []


# ---------------------------------------------------------------------------------------------
# Terminal summary


def summary_table(records: list[RunRecord]) -> pd.DataFrame:
    """Mean ± std over seeds of the test metrics, per (model, strategy, setup)."""
    rows = [
        {"model": r.model, "strategy": r.strategy, "setup": setup_label(r), "seed": r.seed,
         **{m: _number(r.metrics.get("test", {}).get(m, math.nan)) for m in SUMMARY_METRICS}}
        for r in records if r.status == COMPLETE
    ]
    if not rows:
        return pd.DataFrame()
    frame = pd.DataFrame(rows)
    grouped = frame.groupby(["model", "strategy", "setup"], sort=False)
    table = grouped[list(SUMMARY_METRICS)].agg(["mean", "std"])
    table[("seeds", "")] = grouped["seed"].nunique()  # "" lets table["seeds"] be a Series
    return table


def print_summary(source: str | Path) -> None:
    """Print mean ± std per (model, strategy, device and precision) to the terminal."""
    warnings: list[str] = []
    name, folder, records = load_records(source, warnings)
    for warning in warnings:
        print(f"warning: {warning}")
    if not records:
        print(f"{name}: no run records in {folder}; run the experiment first.")
        return
    datasets = sorted({dataset_label(r) for r in records})
    counts = pd.Series([r.status for r in records]).value_counts().to_dict()
    print(f"{name}: test metrics on {', '.join(datasets)} "
          f"({', '.join(f'{n} {s}' for s, n in counts.items())})")
    table = summary_table(records)
    if table.empty:
        print("no complete runs yet.")
        return
    header = f"{'model':<22} {'strategy':<22} {'setup':<12}" + "".join(
        f" {m:>18}" for m in SUMMARY_METRICS) + "  seeds"
    print(header)
    for (model, strategy, setup), row in table.iterrows():
        cells = "".join(f" {_mean_std(row[(m, 'mean')], row[(m, 'std')]):>18}"
                        for m in SUMMARY_METRICS)
        print(f"{model:<22} {strategy:<22} {setup:<12}{cells}  {int(row[('seeds', '')])}")
    if any(r.synthetic for r in records):
        print("SYNTHETIC DATA: these numbers come from octbench's generated scans, not OCTMNIST.")
    if table["seeds"].min() < 3:
        print("note: fewer than 3 seeds per cell; differences are not reliable.")


def _mean_std(mean: float, std: float) -> str:
    if pd.isna(mean):
        return "n/a"
    return f"{mean:.3f}" if pd.isna(std) else f"{mean:.3f} ± {std:.3f}"
