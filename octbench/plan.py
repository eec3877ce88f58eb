"""What ``run`` would do, without doing it: ``run --dry-run``.

Checks that the data can be loaded, the results folder written and the pretrained weights of the
runs left found (fetching them if they can be fetched; creating nothing else), lists which
runs are complete, and estimates the training time of the others from past records of the same
model, data, device and batch settings found anywhere under the results folder.

Must not import: the CLI, report or tuning.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass
from pathlib import Path

from octbench.config import ExperimentConfig
from octbench.data import check_available
from octbench.grid import Shard, configured_grid, default_threads, distinct_data, with_threads
from octbench.preflight import check_pretrained_weights
from octbench.progress import format_duration
from octbench.results import ResultsStore, check_writable, read_record

#: Past records read for an estimate, at most (a huge results tree must not make a dry run slow).
MAX_RECORDS = 5000


@dataclass(frozen=True)
class PlannedRun:
    """One run of the grid: its id, whether it is complete, and its estimated training time."""

    run_id: str
    complete: bool
    estimate_seconds: float | None  # None: no past record to estimate from


@dataclass(frozen=True)
class Plan:
    """The answer of a dry run."""

    data: str
    results: str
    runs: list[PlannedRun]

    @property
    def pending(self) -> list[PlannedRun]:
        return [run for run in self.runs if not run.complete]

    def lines(self) -> list[str]:
        """The dry run's printout, one line per run and a total."""
        pending = self.pending
        out = [f"data: {self.data}", f"results: {self.results}"]
        for run in self.runs:
            if run.complete:
                out.append(f"  done  {run.run_id}")
            else:
                guess = ("" if run.estimate_seconds is None
                         else f"  ~{format_duration(run.estimate_seconds)}")
                out.append(f"  to do {run.run_id}{guess}")
        known = [run.estimate_seconds for run in pending if run.estimate_seconds is not None]
        total = f"{len(self.runs) - len(pending)} of {len(self.runs)} runs complete"
        if not pending:
            out.append(f"{total}; nothing to train.")
        elif not known:
            out.append(f"{total}; no past runs of these models on this data and device, so no "
                       "time estimate yet (the first finished run gives one).")
        else:
            unknown = len(pending) - len(known)
            out.append(f"{total}; estimated training time of the {len(known)} run(s) with past "
                       f"records: ~{format_duration(sum(known))} (up to, without early stopping)"
                       + (f"; {unknown} run(s) without one" if unknown else "") + ".")
        return out


def plan_experiment(config: ExperimentConfig, *, shard: Shard | None = None,
                    threads: int | None = None) -> Plan:
    """Check data and results folder and estimate the grid's time (or a shard's); create nothing.

    ``threads``: the executor's thread count per run, which is part of the run ids of runs whose
    config leaves ``train.threads`` open (see :func:`octbench.grid.with_threads`); default:
    the local executor's (all cores).

    Raises:
        DataError: the data cannot be loaded (the same message as the real run).
        StorageError: the results folder cannot be written.
    """
    data = "; ".join(dict.fromkeys(check_available(d.name, **d.params)
                                   for d in distinct_data(config)))
    specs = configured_grid(config)  # after the checks: run ids need the data's fingerprint
    store = ResultsStore(Path(config.results_dir) / config.name)
    results = check_writable(store.root)
    past = past_epoch_seconds(Path(config.results_dir))
    runs = []
    data += "; content fingerprint " + ", ".join(dict.fromkeys(s.data_fingerprint for s in specs))
    if shard is not None:
        specs = shard.select(specs)
    specs = with_threads(specs, threads or default_threads())
    for spec in specs:
        per_epoch = past.get(_timing_key(spec.config()))
        estimate = None if per_epoch is None else per_epoch * spec.train.epochs
        runs.append(PlannedRun(spec.run_id, store.is_complete(spec.run_id), estimate))
    # As the run would: missing pretrained weights fail now, not after the dry run said "to do".
    pending = {run.run_id for run in runs if not run.complete}
    check_pretrained_weights(config, [spec for spec in specs if spec.run_id in pending])
    return Plan(data, results, runs)


def past_epoch_seconds(results_dir: Path) -> dict[str, float]:
    """Median training seconds per epoch of complete past runs, by :func:`_timing_key`."""
    seen: dict[str, list[float]] = {}
    for count, path in enumerate(results_dir.glob("*/*/record.json")):
        if count >= MAX_RECORDS:
            break
        try:  # the one schema check: finite numbers, bounded size and depth
            record = read_record(path)
            per_epoch = float(record.timing["seconds_per_epoch"])
            key = _timing_key(record.config)
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            continue  # unreadable or incomplete records give no estimate, and no error here
        if record.status == "complete" and per_epoch > 0:
            seen.setdefault(key, []).append(per_epoch)
    return {key: statistics.median(values) for key, values in seen.items()}


def _timing_key(config: dict) -> str:
    """What decides the time of an epoch: model, data, device, batch size and precision."""
    train = config.get("train", {})
    return json.dumps([config.get("model"), config.get("data"), config.get("device"),
                       train.get("batch_size"), train.get("precision"),
                       train.get("compile"), train.get("channels_last")], sort_keys=True)


__all__ = ["Plan", "PlannedRun", "plan_experiment"]
