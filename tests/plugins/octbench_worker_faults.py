"""Test-only plugin: one fault at a chosen epoch of a chosen run, in a Ray worker or its driver.

Loaded with ``OCTBENCH_PLUGINS=octbench_worker_faults``: the driver imports it, and so does every
Ray worker before its run (the executor passes the plugin names on). The test writes
``fault.json`` into the folder named by ``$OCTBENCH_TEST_FAULTS`` (set when the Ray instance
starts, so that its workers see it too)::

    {"run": RUN_ID, "epoch": N, "action": "kill-worker" | "raise" | "interrupt-driver"}

* ``kill-worker``: the worker SIGKILLs itself once the checkpoint of epoch N (1-based) has
  reached the driver's keeper;
* ``raise``: the worker raises ``RuntimeError`` there, an ordinary failure of the run;
* ``interrupt-driver``: the driver sends itself SIGINT when it hears that epoch N has ended.

The process that acts renames the file to ``fault.taken`` first, so the fault happens exactly
once: Ray's retry of a killed task runs clean and resumes from that checkpoint. Nothing polls:
the fault is where the run is, not where a timer happens to find it.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

from octbench import progress
from octbench.executors import ray_worker
from octbench.results import ResultsStore

FOLDER = os.environ.get("OCTBENCH_TEST_FAULTS")


def _take(run_id: str, epochs_done: int, actions: tuple[str, ...]) -> str | None:
    """The fault's action when it is for this run and epoch and still untaken (taking it)."""
    if not FOLDER:
        return None
    path = Path(FOLDER) / "fault.json"
    try:
        fault = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if (fault["run"], fault["epoch"]) != (run_id, epochs_done) or fault["action"] not in actions:
        return None
    try:
        path.rename(path.with_name("fault.taken"))  # atomic: one process takes it
    except FileNotFoundError:
        return None
    return fault["action"]


_save_state = ray_worker.RelayStore.save_state


def _faulty_save_state(self, run_id: str, name: str, state: dict) -> None:
    _save_state(self, run_id, name, state)
    if name != ResultsStore.RESUME:
        return
    epochs_done = state["state"]["epoch"]
    action = _take(run_id, epochs_done, ("kill-worker", "raise"))
    if action == "kill-worker":
        os.kill(os.getpid(), signal.SIGKILL)
    if action == "raise":
        raise RuntimeError(f"fault injected into {run_id} after epoch {epochs_done}")


_start_run = progress.GridProgress.start_run
_epoch_done = progress.RunProgress.epoch_done


def _start_run_knowing_its_id(self, number: int, run_id: str, device: str, **details):
    run = _start_run(self, number, run_id, device, **details)
    run.fault_run_id = run_id
    return run


def _faulty_epoch_done(self, epoch: int, epochs: int, **details) -> None:
    _epoch_done(self, epoch, epochs, **details)
    run_id = getattr(self, "fault_run_id", None)
    if run_id and _take(run_id, epoch + 1, ("interrupt-driver",)):
        os.kill(os.getpid(), signal.SIGINT)  # KeyboardInterrupt here, as a Ctrl-C would


ray_worker.RelayStore.save_state = _faulty_save_state
progress.GridProgress.start_run = _start_run_knowing_its_id
progress.RunProgress.epoch_done = _faulty_epoch_done
