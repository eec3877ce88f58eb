"""Run an experiment: expand the grid, skip what is complete, train the rest, record everything.

The grid logic (expansion, ``--shard`` slices, skipping complete runs, the summary) is here; an
executor (:mod:`octbench.executors`) trains the pending runs, here or on a Ray cluster, through
:func:`octbench.runner.execute_run`. Each run is claimed with a lock file, checkpointed every
epoch (so an interrupted run resumes where it stopped), and ends with exactly one record:
COMPLETE, FAILED (with its error), SKIPPED (device unavailable) or INTERRUPTED. One failing run
never stops the grid.

Must not import: the CLI, report or tuning.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from octbench.config import Component, ExperimentConfig
from octbench.data import check_available
from octbench.dotted import values_label
from octbench.executors import Executor, LocalExecutor
from octbench.grid import (
    RunSpec,
    Shard,
    by_data,
    configured_grid,
    distinct_data,
    run_numbers,
    with_threads,
)
from octbench.preflight import check_pretrained_weights
from octbench.progress import GridProgress, RunObserver
from octbench.results import COMPLETE, SKIPPED, ResultsStore, RunLocked, check_writable
from octbench.robustness.corruptions import require_medmnistc


@dataclass
class RunSummary:
    """What ``run_experiment`` did, run by run."""

    already_complete: list[str] = field(default_factory=list)
    completed: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    busy: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed


def run_experiment(config: ExperimentConfig, *, quiet: bool = False,
                   say: Callable[[str], None] = print, executor: Executor | None = None,
                   shard: Shard | None = None, progress: GridProgress | None = None,
                   observers: Sequence[RunObserver] = ()) -> RunSummary:
    """Train and evaluate every run of ``config`` that is not complete yet.

    The grid logic lives here (expansion, sharding, skipping complete runs, the summary); how
    the pending runs are trained is the ``executor``'s business: in this process one at a time
    (default, :class:`octbench.executors.LocalExecutor`) or as Ray tasks
    (:class:`octbench.executors.RayExecutor`). ``say`` gets one line per finished run;
    ``progress`` (default: on stderr unless ``quiet``) a start line per run and a line per epoch;
    ``observers`` (e.g. :class:`octbench.export_mlflow.LiveLogger`) hear the same events.

    Example:
        >>> from octbench.config import load_config
        >>> summary = run_experiment(load_config("experiments/quickstart.yaml"))  # doctest: +SKIP
    """
    store = ResultsStore(Path(config.results_dir) / config.name)
    # An unwritable folder fails before the data are looked at (the run ids need the data's
    # fingerprint, which may take a while to compute), and bad or missing data before the folder
    # is created.
    check_writable(store.root)
    if config.evaluate.corruptions or any(
            a.name == "medmnist_c" for _, cell in config.variants() for a in cell.train.augment):
        require_medmnistc()  # a missing extra fails now, not after training
    for data in distinct_data(config):
        check_available(data.name, **data.params)
    executor = executor or LocalExecutor()
    specs = configured_grid(config)
    if shard is not None:  # dealt by the ids as configured: the same slices on every machine
        total = len(specs)
        specs = shard.select(specs)
        say(f"Shard {shard} holds {len(specs)} of the {total} runs of '{config.name}'.")
    specs = with_threads(specs, executor.threads)
    summary = RunSummary()
    pending = []
    for spec in specs:
        if store.is_complete(spec.run_id):
            summary.already_complete.append(spec.run_id)
            store.remove(spec.run_id, ResultsStore.RESUME)  # left if killed right at the end
            store.clear_stale_lock(spec.run_id)  # likewise; `prepare` is skipped when all done
        else:
            pending.append(spec)
    _hint_unscored(store, [s for s in specs if s.run_id in set(summary.already_complete)], say)
    if not pending:
        say(f"All {len(specs)} runs of '{config.name}' are already complete in {store.root}; "
            "nothing to train.")
        return summary
    if summary.already_complete:
        say(f"{len(summary.already_complete)} of {len(specs)} runs already complete; "
            f"training the other {len(pending)}.")

    # Missing pretrained weights and impossible executor settings fail before the folder is
    # created.
    groups = by_data(pending)  # a sweep over data settings: one dataset after another
    check_pretrained_weights(config, pending)
    try:
        for data, specs in groups:
            executor.check(specs, data)
        store.prepare()
        _train_pending(groups, pending, store, executor, summary, quiet=quiet, say=say,
                       progress=progress, observers=observers)
    finally:
        executor.close()  # e.g. Ray, started once for every dataset of a sweep
    return summary


def _train_pending(groups: list[tuple[Component, list[RunSpec]]], pending: list[RunSpec],
                   store: ResultsStore, executor: Executor, summary: RunSummary, *, quiet: bool,
                   say: Callable[[str], None], progress: GridProgress | None,
                   observers: Sequence[RunObserver]) -> None:
    if progress is None:
        progress = GridProgress([spec.train.epochs for spec in pending], enabled=not quiet)
    progress.observers.extend(observers)
    number = run_numbers(pending)
    outcomes = itertools.chain.from_iterable(
        executor.execute(specs, data, store, quiet=quiet, progress=progress)
        for data, specs in groups)
    for spec, outcome in outcomes:
        progress.run_ended(spec.run_id, outcome)
        head = (f"[{number[spec.run_id]}/{len(pending)}] {spec.model.label} | "
                f"{spec.strategy.label} | seed {spec.seed} | {spec.device}"
                + (f" | {values_label(spec.sweep)}" if spec.sweep else ""))
        if outcome is None:  # finished by another process meanwhile
            summary.already_complete.append(spec.run_id)
        elif isinstance(outcome, RunLocked):
            summary.busy.append(spec.run_id)
            say(f"{head}: {outcome}; left to it")
        elif outcome.status == COMPLETE:
            summary.completed.append(spec.run_id)
            test = outcome.metrics["test"]
            tag = " [synthetic data]" if outcome.synthetic else ""
            corrupted = outcome.robustness.get("summary", {}).get("mean", {}).get("macro_f1")
            robust = (f", corrupted macro-F1 {corrupted:.3f}" if corrupted is not None else "")
            say(f"{head}: test acc {test['accuracy']:.3f}, macro-F1 {test['macro_f1']:.3f}"
                f"{robust} (best epoch {outcome.best_epoch}, "
                f"{outcome.timing['train_seconds']:.0f} s){tag}")
        elif outcome.status == SKIPPED:
            summary.skipped.append((spec.run_id, outcome.error))
            say(f"{head}: skipped: {outcome.error}")
        else:
            summary.failed.append((spec.run_id, outcome.error))
            say(f"{head}: FAILED: {outcome.error}")


def _hint_unscored(store: ResultsStore, complete: list[RunSpec],
                   say: Callable[[str], None]) -> None:
    """Say which complete runs lack the corrupted evaluation the YAML now asks for (it is not
    part of run ids, so they are not retrained) and how to score them."""
    unscored = []
    for spec in complete:
        if spec.corruptions is None:
            continue
        record = store.read(spec.run_id)
        if record is not None and not record.robustness.get("cells"):
            unscored.append(spec)
    if unscored:
        plan = unscored[0].corruptions
        say(f"{len(unscored)} complete run(s) have no corrupted evaluation (evaluate."
            "corruptions was added after they ran; it does not retrain them). Score each with "
            f"`python -m octbench evaluate --run {store.run_dir(unscored[0].run_id)} "
            f"EXPERIMENT.yaml --corruptions {','.join(plan.corruptions)} --severities "
            f"{','.join(map(str, plan.severities))} --corruption-seed {plan.seed}`.")
