"""What every executor is: the :class:`Executor` protocol and what local and Ray executors share.

:func:`octbench.experiment.run_experiment` owns the grid logic (expansion, shards, skipping
complete runs, the summary and exit codes) and hands the pending runs to an executor, which trains
them and yields each run's outcome as it finishes: its :class:`~octbench.results.RunRecord`, a
:class:`~octbench.results.RunLocked` when another process holds the run, or None when another
process finished it meanwhile. Every executor trains the same groups of runs
(:func:`octbench.stacked_runs.plan_stacks`): a run alone, or a stack of same-shaped runs trained
together (``--stack``).

Must not import: the CLI, report or tuning.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

from octbench.config import Component
from octbench.errors import OctbenchError
from octbench.grid import RunSpec
from octbench.progress import GridProgress
from octbench.results import ResultsStore, RunLocked, RunRecord

#: What an executor yields per run: its record, RunLocked (another process holds it) or None
#: (another process completed it meanwhile).
Outcome = RunRecord | RunLocked | None


class Executor(Protocol):
    """Trains pending runs; see the module docstring."""

    #: torch threads per run, for runs whose config leaves ``train.threads`` open; part of
    #: their run ids (:func:`octbench.grid.with_threads`).
    threads: int

    def check(self, pending: list[RunSpec], data: Component) -> None:
        """Refuse impossible settings (raise OctbenchError) before anything is written."""

    def execute(self, pending: list[RunSpec], data: Component, store: ResultsStore, *,
                quiet: bool, progress: GridProgress | None = None
                ) -> Iterator[tuple[RunSpec, Outcome]]:
        """Train ``pending`` and yield ``(spec, outcome)`` for each run as it finishes.

        ``progress`` hears when each run starts, each epoch, and when it ends.
        """

    def close(self) -> None:
        """Release what the executor holds (a Ray connection) once the whole grid is done."""


def silent_progress(pending: list[RunSpec]) -> GridProgress:
    """Where an executor reports its runs' progress when the caller gives none: nowhere."""
    return GridProgress([spec.train.epochs for spec in pending], enabled=False)


def check_cpus(cpus_per_run: int | None) -> None:
    """Refuse a ``--cpus-per-run`` below 1."""
    if cpus_per_run is not None and cpus_per_run < 1:
        raise OctbenchError(f"--cpus-per-run must be an integer >= 1; got {cpus_per_run}.")
