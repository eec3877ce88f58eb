"""The local executor: the pending runs in this process, one run (or one stack) at a time.

Must not import: the CLI, report or tuning.
"""

from __future__ import annotations

from collections.abc import Iterator

from octbench.config import Component
from octbench.data import load_dataset
from octbench.executors.base import Outcome, check_cpus, silent_progress
from octbench.grid import RunSpec, default_threads, run_numbers
from octbench.preflight import check_buildable
from octbench.progress import GridProgress
from octbench.results import ResultsStore, RunLocked
from octbench.runner import execute_run
from octbench.stacked_runs import execute_stack, plan_stacks


class LocalExecutor:
    """In this process, one run at a time; each run is claimed with a lock file.

    Several ``run`` processes may share one results folder: a run claimed by another live
    process is left to it.
    """

    def __init__(self, *, cpus_per_run: int | None = None, stack: int | None = None):
        check_cpus(cpus_per_run)
        self.cpus_per_run = cpus_per_run
        self.threads = cpus_per_run or default_threads()
        self.stack = stack  # most runs per stack (octbench.stacked_runs); None: per device
        self._checked: tuple[Component, object] | None = None  # the last data checked, loaded

    def check(self, pending: list[RunSpec], data: Component) -> None:
        # Loading validates the data (class names, labels, images), so data that cannot be
        # used fail here, before the results folder exists. The last set loaded is kept for
        # `execute`: without a sweep over data settings, the data are loaded once.
        self._checked = None
        loaded = load_dataset(data.name, **data.params)
        check_buildable(pending, loaded)
        self._checked = (data, loaded)

    def execute(self, pending: list[RunSpec], data: Component, store: ResultsStore, *,
                quiet: bool, progress: GridProgress | None = None
                ) -> Iterator[tuple[RunSpec, Outcome]]:
        progress = progress or silent_progress(pending)
        if self._checked is not None and self._checked[0] == data:
            loaded = self._checked[1]
        else:
            loaded = load_dataset(data.name, **data.params)
        self._checked = None  # one data set in memory at a time
        numbers = run_numbers(pending)
        for group in plan_stacks(pending, self.stack):
            if len(group) > 1:  # same-shaped runs train together, one record each
                yield from execute_stack(group, loaded, store, quiet=quiet, progress=progress,
                                         numbers=numbers)
                continue
            spec, number = group[0], numbers[group[0].run_id]
            run_progress = progress.start_run(number, spec.run_id, spec.device, spec=spec)
            try:
                with store.claim(spec.run_id):
                    if store.is_complete(spec.run_id):  # finished by another process meanwhile
                        outcome = None
                    else:
                        outcome = execute_run(spec, loaded, store, quiet=quiet,
                                              progress=run_progress)
            except RunLocked as busy:
                outcome = busy
            finally:
                run_progress.finished()
            yield spec, outcome

    def close(self) -> None:
        self._checked = None
