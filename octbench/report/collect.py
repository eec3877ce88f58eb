"""Records -> :class:`ReportData`: the runs a report is made from, with their test predictions.

Owns finding the records of an experiment (YAML or results folder), keeping the comparable ones,
reading each complete run's stored test predictions (recomputing its metrics), and grouping
runs by (model, strategy, setup), where a run that a sweep leaves unchanged (its strategy does
not take the swept parameter) is shared by every combination of the sweep.

Must not import: the other report modules (they import this one), tuning, or the engine.
"""

from __future__ import annotations

import json
import math
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from octbench.config import Component, swept_values
from octbench.dotted import values_label
from octbench.errors import OctbenchError
from octbench.grid import GridIds, configured_grid
from octbench.metrics import METRICS, compute_metrics
from octbench.results import COMPLETE, ResultsStore, RunRecord

if TYPE_CHECKING:
    from octbench.config import ExperimentConfig

DEFAULT_CLASSES = ("CNV", "DME", "DRUSEN", "NORMAL")
OCTMNIST_TEST = [250, 250, 250, 250]  # the official, balanced test split

GroupKey = tuple[str, str, str]  # (model, strategy, setup)



def experiment_of(source) -> ExperimentConfig | None:
    """The experiment a report source names: the config itself (e.g. loaded with ``--set``
    values), a YAML file's, or None for a results folder."""
    from octbench.config import ExperimentConfig, load_config

    if isinstance(source, ExperimentConfig):
        return source
    return load_config(source) if Path(source).suffix in (".yaml", ".yml") else None


def resolve_source(source: str | Path | ExperimentConfig
                   ) -> tuple[str, Path, GridIds | None]:
    """Turn an experiment (YAML or config) or a results folder into (name, folder, its grid's
    ids or None).

    From an experiment only the runs of its current grid are reported (a changed config gets
    new run ids); from a folder every record in it is.
    """
    config = experiment_of(source)
    if config is not None:
        folder = Path(config.results_dir) / config.name
        return config.name, folder, GridIds(configured_grid(config))  # at any thread count
    source = Path(source)
    if source.is_dir():
        # The real folder's name: `results/tiny/..` is `results`, never a `..` to write to.
        return source.resolve().name, source, None
    raise OctbenchError(f"{source} is neither an experiment YAML nor a results folder; "
                        "pass e.g. experiments/quickstart.yaml or results/quickstart.")


def load_records(source: str | Path, warnings: list[str] | None = None, *,
                 allow_mixed_data: bool = False) -> tuple[str, Path, list[RunRecord]]:
    """The records a report is made from (runs of tuning trials excluded).

    Raises:
        OctbenchError: the records come from data of different content fingerprints and
            ``allow_mixed_data`` is False (:func:`check_one_dataset`).
    """
    name, folder, run_ids = resolve_source(source)
    records = [r for r in ResultsStore(folder).records(warn=warnings) if r.kind == "run"
               and (run_ids is None or run_ids.holds(r))]
    check_one_dataset(records, folder, allow_mixed=allow_mixed_data, warnings=warnings)
    return name, folder, records


#: What records made before data fingerprints existed (schema 1) are grouped under.
UNKNOWN_FINGERPRINT = "unknown (recorded before data fingerprints)"


def check_one_dataset(records: Sequence[RunRecord], folder: Path, *, allow_mixed: bool,
                      warnings: list[str] | None = None) -> None:
    """Refuse records of different data (content fingerprints) in one report, naming them.

    A sweep over data settings (``data.size: [28, 64]``) legitimately gives one fingerprint per
    combination, and the report compares runs only within a combination; so the rule is one
    fingerprint per sweep combination. With ``allow_mixed`` they are kept, and a warning says
    that their numbers do not compare.

    Raises:
        OctbenchError: more than one fingerprint in a combination and not ``allow_mixed``.
    """
    by_combination: dict[str, dict[str, list[RunRecord]]] = {}
    for record in records:
        fingerprint = record.dataset.get("fingerprint") or UNKNOWN_FINGERPRINT
        combination = json.dumps(record.sweep, sort_keys=True, default=str)
        by_combination.setdefault(combination, {}).setdefault(fingerprint, []).append(record)
    groups: dict[str, list[RunRecord]] = {}
    for fingerprints in by_combination.values():
        if len(fingerprints) > 1:
            groups.update(fingerprints)
    if len(groups) < 2:
        return
    described = "; ".join(
        f"{fingerprint[:23]} ({len(group)} run(s), "
        f"{', '.join(sorted({dataset_label(r) for r in group}))})"
        for fingerprint, group in sorted(groups.items()))
    if not allow_mixed:
        raise OctbenchError(
            f"the runs in {folder} come from {len(groups)} different data: {described}. One "
            "table must not mix them: report the experiment YAML (only its current data's "
            "runs), move the other runs out of the folder, or pass --allow-mixed-data to show "
            "them together anyway.")
    if warnings is not None:
        warnings.append(f"the runs come from {len(groups)} different data ({described}), shown "
                        "together because of --allow-mixed-data: their numbers are not "
                        "comparable")


@dataclass(frozen=True)
class Run:
    """A complete run with its test metrics (recomputed from its predictions when stored).

    Attributes:
        record: the stored record.
        test: scalar test metrics (NaN where undefined), ``per_class`` and ``confusion``.
        labels: test labels ``(N,)`` from ``predictions.npz``, or None when not stored.
        scores: test scores ``(N, K)``, or None.
        groups: test group numbers ``(N,)`` (e.g. patients), when the data had them.
    """

    record: RunRecord
    test: dict
    labels: np.ndarray | None = None
    scores: np.ndarray | None = None
    groups: np.ndarray | None = None

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
    #: how the bootstrap resamples test items: "class" (within classes), "groups" or "none"
    stratify: str = "class"
    #: the baseline's label per sweep combination (``values_label``), where a swept strategy
    #: parameter changes it (``focal(gamma=1.0)``, ``focal(gamma=3.0)``)
    baselines: dict[str, str] = field(default_factory=dict)

    @property
    def baseline_label(self) -> str | None:
        """The baseline for people: its label, or where a sweep changes it, its name."""
        if len(set(self.baselines.values())) > 1:
            return f"{self.baseline.partition('(')[0]} (of each sweep combination)"
        return self.baseline

    def baseline_in(self, setup: str) -> str | None:
        """The baseline strategy's label among the runs of ``setup`` (a sweep combination)."""
        return self.baselines.get(setup.partition(SWEPT)[2], self.baseline)

    @property
    def dataset(self) -> dict:
        """The dataset description of the first record that has one."""
        return next((r.dataset for r in self.records if r.dataset), {})

    @property
    def data_swept(self) -> bool:
        """Whether the runs differ in data settings on purpose (a sweep over ``data.*``)."""
        return any(k.startswith("data.") for r in self.records for k in r.sweep)

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
        sizes = self.real_octmnist_sizes
        return sizes[0] if len(sizes) == 1 else None

    @property
    def real_octmnist_sizes(self) -> list[int]:
        """The image sizes when every record is real OCTMNIST with the official test split
        (a sweep over ``data.size`` has several), else []."""
        names = {r.dataset.get("name") for r in self.records}
        tests = [(r.dataset.get("class_counts") or {}).get("test", OCTMNIST_TEST)
                 for r in self.records]
        if (self.records and names == {"octmnist"} and not self.synthetic
                and all(list(t) == OCTMNIST_TEST for t in tests)):
            return sorted({r.dataset.get("size") for r in self.records})
        return []


def collect(source: str | Path, *, baseline: str | None = None,
            allow_mixed_data: bool = False, stratify: str | None = None) -> ReportData:
    """Load the records of ``source`` and the test predictions of its complete runs.

    Args:
        source: an experiment YAML (only its grid's runs) or a results folder (all runs).
        baseline: the strategy to compare with; default the YAML's ``report.baseline``, else
            ``none`` when present, else the first strategy.
        allow_mixed_data: keep records of different data fingerprints (with a warning).
        stratify: the bootstrap's resampling scheme (``class``, ``groups``, ``none``); default
            the YAML's ``report.bootstrap.stratify``, else ``class``.

    Raises:
        OctbenchError: if ``source`` is neither a YAML nor a folder, or its records come from
            different data and ``allow_mixed_data`` is False.
    """
    warnings: list[str] = []
    name, folder, run_ids = resolve_source(source)
    order: list[str] = []
    baselines: dict[str, str] = {}
    if run_ids is not None:
        config = experiment_of(source)
        order = [s.label for s in config.strategies]
        if config.sweep:  # a swept strategy parameter changes labels, the baseline's too
            variants = config.variants()
            # in the YAML's order (every combination lists as many strategies)
            by_entry = zip(*(cell.strategies for _, cell in variants), strict=True)
            order = list(dict.fromkeys(s.label for entry in by_entry for s in entry))
            if baseline is None:
                baselines = {values_label(values): cell.report.baseline
                             for values, cell in variants}
        baseline = baseline or config.report.baseline
        stratify = stratify or config.report.bootstrap.stratify
    store = ResultsStore(folder)
    records = [r for r in store.records(warn=warnings) if r.kind == "run"
               and (run_ids is None or run_ids.holds(r))]
    check_one_dataset(records, folder, allow_mixed=allow_mixed_data, warnings=warnings)
    for strategy in sorted({r.strategy for r in records} - set(order)):
        order.append(strategy)
    if baseline is None:
        baseline = "none" if "none" in order else (order[0] if order else None)
    # Runs of one data setting must share their data; a sweep over data settings varies it.
    settings: dict[str, set[str]] = {}
    for r in records:
        swept = {k: v for k, v in r.sweep.items() if k.startswith("data.")}
        settings.setdefault(json.dumps(swept, sort_keys=True, default=str), set()).add(
            json.dumps(_comparable(r.dataset), sort_keys=True))
    if any(len(found) > 1 for found in settings.values()):
        warnings.append("the runs were made on different datasets "
                        f"({', '.join(sorted({dataset_label(r) for r in records}))}); "
                        "their numbers are not comparable")
    class_names = next((tuple(r.dataset["class_names"]) for r in records
                        if r.dataset.get("class_names")), DEFAULT_CLASSES)
    runs = [_load_run(store, r, class_names, warnings) for r in records if r.status == COMPLETE]
    rank = {s: i for i, s in enumerate(order)}
    runs.sort(key=lambda run: (run.record.model, rank.get(run.record.strategy, len(rank)),
                               setup_label(run.record), run.record.seed))
    data = ReportData(name, folder, records, runs, baseline,
                      run_ids.runs if run_ids is not None else None, order, warnings,
                      stratify or "class", baselines)
    if baseline is not None and runs and not any(
            strategy == data.baseline_in(setup) for _, strategy, setup in group_runs(runs)):
        warnings.append(f"the baseline strategy '{baseline}' has no complete run; differences "
                        "to it cannot be computed (choose another with --baseline)")
    return data


def _comparable(dataset: dict) -> dict:
    # The resolved path of a file differs between machines; name, size and counts do not.
    # Duplicate counts follow from the content (fingerprint) and are missing in older records.
    return {k: v for k, v in dataset.items() if k not in ("source", "duplicates")}


def _load_run(store: ResultsStore, record: RunRecord, class_names: Sequence[str],
              warnings: list[str]) -> Run:
    saved = (record.metrics or {}).get("test") or {}
    stored = {k: null_to_nan(saved.get(k)) for k in METRICS}  # every key, NaN when missing
    stored["per_class"] = saved.get("per_class") or {}
    stored["confusion"] = saved.get("confusion")
    try:
        arrays = store.predictions(record.run_id, record, splits=("test",))
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
    groups = arrays.get("test_groups")
    if groups is not None:
        groups = np.asarray(groups).reshape(-1)
        if len(groups) != len(labels) or groups.dtype.kind not in "iu":
            warnings.append(f"run {record.run_id}: its test_groups do not fit its {len(labels)} "
                            "test items; resampled without groups")
            groups = None
    return Run(record, {k: null_to_nan(v) for k, v in test.items()}, labels, scores, groups)


def null_to_nan(value):
    """JSON null (an undefined metric) becomes NaN; other values pass unchanged."""
    return math.nan if value is None else value


def setup_label(record: RunRecord, sweep: dict | None = None) -> str:
    """Where and how a run ran: device and precision, then the values of its sweep
    combination (``sweep``, default the record's), e.g. ``cpu fp32`` or
    ``cpu fp32 · data.size=64, model.pretrained=True``.
    Runs are grouped and compared only within one setup: strategies only within a combination.
    """
    where = f"{record.device} {record.precision}"
    sweep = record.sweep if sweep is None else sweep
    return f"{where}{SWEPT}{values_label(sweep)}" if sweep else where


#: What separates the device from the sweep combination in a setup label.
SWEPT = " · "


def dataset_label(record: RunRecord) -> str:
    """E.g. ``octmnist (28 px)`` or ``synthetic (28 px) [SYNTHETIC]``."""
    data = record.dataset
    label = f"{data.get('name', '?')} ({data.get('size', '?')} px)"
    return f"{label} [SYNTHETIC]" if record.synthetic else label


def group_runs(runs: Sequence[Run]) -> dict[GroupKey, list[Run]]:
    """The runs by (model, strategy, setup), in order. A run whose strategy does not take a
    swept strategy parameter was made once for every combination of the sweep, so it is in the
    group of each combination it belongs to (and each compares with it)."""
    shared = _shared_combinations(runs)
    groups: dict[GroupKey, list[Run]] = {}
    for run in runs:
        r = run.record
        for sweep in shared(r):
            groups.setdefault((r.model, r.strategy, setup_label(r, sweep)), []).append(run)
    return groups


def _shared_combinations(runs: Sequence[Run]):
    """A function: record -> the sweep combinations it belongs to (its own, unless shared)."""
    combinations: dict[tuple, dict[str, dict]] = {}
    for run in runs:
        r = run.record
        combinations.setdefault((r.device, r.precision), {})[_key(r.sweep)] = r.sweep
    swept = {where: {path for sweep in found.values() for path in sweep}
             for where, found in combinations.items()}
    changing: dict[tuple[str, str], dict] = {}  # (strategy, combination) -> what changes it

    def of(record: RunRecord) -> list[dict]:
        where = (record.device, record.precision)
        if swept[where] <= record.sweep.keys():  # every swept value applies: not shared
            return [record.sweep]
        written = record.config.get("strategy")
        strategy = str(written.get("name") if isinstance(written, dict)
                       else record.strategy.partition("(")[0])
        found = []
        for key, sweep in combinations[where].items():
            if (strategy, key) not in changing:
                changing[(strategy, key)] = swept_values(sweep, Component(strategy))
            if len(sweep) > len(record.sweep) and changing[(strategy, key)] == record.sweep:
                found.append(sweep)
        return found or [record.sweep]
    return of


def _key(sweep: dict) -> str:
    return json.dumps(sweep, sort_keys=True, default=str)
