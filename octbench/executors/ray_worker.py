"""Inside a Ray task: train one run or a stack (:func:`train_on_worker`), and the relay that
sends what the runs save to the driver, which stays the only writer of the results folder.

Epoch checkpoints travel to a small actor on the driver's node (:class:`CheckpointKeeper`) that
keeps them in the results folder, so a task that Ray retries after its worker died resumes from
its last completed epoch on whichever node it lands. Workers report when a run starts and each
epoch through the same actor; each run's record and final artifacts come back as the task's
result (:class:`RunResult`), with the worker's output as the run's log. A worker process keeps
the last dataset it used (and its device copy) for the next run on the same data.

Must not import at module level: ray (imported inside the functions that run in a task), the
CLI, report or tuning.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from octbench.config import Component
from octbench.data import OCTData, load_dataset
from octbench.data.octmnist import octmnist_file
from octbench.grid import RunSpec, run_numbers
from octbench.plugins import load_plugins
from octbench.results import COMPLETE, ResultsStore, RunRecord, read_state
from octbench.stacked_runs import train_stack


def data_file(data: Component) -> Path | None:
    """The file a dataset is read from (npz, OCTMNIST), or None for generated data."""
    if data.name == "npz":
        return Path(data.params["path"]).expanduser().absolute()
    if data.name == "octmnist":
        return octmnist_file(data.params.get("size", 28), data.params.get("root"))[0]
    return None


@dataclass
class RunResult:
    """What a Ray task sends back per run: the record and the artifacts the driver writes."""

    record: RunRecord | None = None
    predictions: dict = field(default_factory=dict)
    best: bytes | None = None
    resumed_after: int | None = None
    node: str = ""
    #: the worker's output (stdout, stderr, octbench's log) while it ran this run (its stack)
    log: str = ""
    #: other files of the run's folder (the traceback): name -> content, None to remove it
    files: dict = field(default_factory=dict)
    #: the worker process, and whether this run loaded the data into it (else: reused)
    pid: int = 0
    loaded_data: bool = False


class RelayStore:
    """The store the runs of a Ray task (one run, or a stack) use: epoch checkpoints go to the
    driver's keeper, each run's record and final artifacts are held until the task returns
    them."""

    def __init__(self, keeper, node: str):
        self.keeper, self.node = keeper, node
        self.results: dict[str, RunResult] = {}

    def _result(self, run_id: str) -> RunResult:
        return self.results.setdefault(run_id, RunResult(node=self.node))

    def load_state(self, run_id: str, name: str) -> dict | None:
        import ray

        if name != ResultsStore.RESUME:
            return None
        blob = ray.get(self.keeper.load.remote(run_id))
        state = None if blob is None else read_state(io.BytesIO(blob),
                                                     name=f"the resume state of {run_id}")
        if state is not None:
            self._result(run_id).resumed_after = state["state"]["epoch"]
        return state

    def save_state(self, run_id: str, name: str, state: dict) -> None:
        import ray
        import torch

        buffer = io.BytesIO()
        torch.save(state, buffer)
        if name == ResultsStore.RESUME:  # wait: the epoch counts as done once the driver has it
            ray.get(self.keeper.save.remote(run_id, buffer.getvalue()))
        else:
            self._result(run_id).best = buffer.getvalue()

    def save_bytes(self, run_id: str, name: str, blob: bytes) -> None:
        self._result(run_id).files[name] = blob

    def load_bytes(self, run_id: str, name: str) -> bytes | None:
        """What this task saved as ``name``: a worker never reads the driver's run folder."""
        return self._result(run_id).files.get(name)

    def save_predictions(self, run_id: str, **arrays) -> None:
        self._result(run_id).predictions = arrays

    def write(self, record: RunRecord) -> None:
        if record.hardware:  # which Ray node trained it: the report's device table stays true
            record = dataclasses.replace(record, hardware={**record.hardware,
                                                           "ray_node": self.node})
        self._result(record.run_id).record = record

    def remove(self, run_id: str, name: str) -> None:
        if name != ResultsStore.RESUME:  # the driver removes that once the record is written
            self._result(run_id).files[name] = None

    def is_complete(self, run_id: str) -> bool:
        record = self.read(run_id)
        return record is not None and record.status == COMPLETE

    def read(self, run_id: str) -> RunRecord | None:
        result = self.results.get(run_id)
        return None if result is None else result.record


class CheckpointKeeper:
    """Ray actor on the driver's node: keeps each run's epoch checkpoint in the results folder
    and holds the workers' progress events (a run started, an epoch ended) for the driver."""

    def __init__(self, root: str):
        self.store = ResultsStore(root)
        self.events: list[tuple] = []

    def load(self, run_id: str) -> bytes | None:
        return self.store.load_bytes(run_id, ResultsStore.RESUME)

    def save(self, run_id: str, blob: bytes) -> None:
        self.store.save_bytes(run_id, ResultsStore.RESUME, blob)

    def set_root(self, root: str) -> None:
        self.store = ResultsStore(root)

    def report(self, run_id: str, kind: str, details: dict) -> None:
        self.events.append((run_id, kind, details))

    def drain(self) -> list[tuple]:
        events, self.events = self.events, []
        return events


class RelayGridProgress:
    """The progress of a Ray task's runs: when a run starts, the driver hears it (with the
    node) and prints it as a local run's start."""

    def __init__(self, keeper, node: str):
        self.keeper, self.node = keeper, node

    def start_run(self, number: int, run_id: str, device: str, *,
                  spec: Any = None) -> RelayProgress:
        """Tell the driver the run started; its observers hear of ``spec`` there, not here."""
        import ray

        # Waited for: the driver's "start" line comes when the run really starts.
        ray.get(self.keeper.report.remote(run_id, "start", {"node": self.node}))
        return RelayProgress(self.keeper, run_id)


class RelayProgress:
    """A run's progress inside a Ray task: each epoch's line goes to the driver, which prints
    it as a local run's (the workers' own output is captured into the run's log)."""

    def __init__(self, keeper, run_id: str):
        self.keeper, self.run_id = keeper, run_id
        self.started: float | None = None

    def finished(self) -> None:
        pass  # the driver ends the run's progress when its result comes back

    @contextmanager
    def epoch(self, epoch: int, epochs: int, images: int):
        self.started = time.perf_counter()
        yield _NoCount()

    def epoch_done(self, epoch: int, epochs: int, **details) -> None:
        import ray

        wall = time.perf_counter() - self.started if self.started is not None else None
        # Waited for, so every event of a run reaches the keeper before the run's result.
        ray.get(self.keeper.report.remote(
            self.run_id, "epoch", {"epoch": epoch, "epochs": epochs, "wall": wall, **details}))


class _NoCount:
    def update(self, n: int = 1) -> None:
        pass


#: The data the last run in this worker process used: ``(fingerprint, OCTData)``. Runs on the
#: same data reuse it and its copy on the device (:func:`octbench.runner.on_device`) instead of
#: fetching it.
_WORKER_DATA: list = []


def _worker_data(spec: RunSpec, payload) -> tuple[OCTData, bool]:
    """The run's data, and whether it was loaded now (False: reused from an earlier run)."""
    import ray

    key = spec.data_fingerprint or repr(payload)
    if _WORKER_DATA and _WORKER_DATA[0][0] == key:
        return _WORKER_DATA[0][1], False
    _WORKER_DATA.clear()  # one dataset per worker: the previous one can be freed first
    if isinstance(payload, Component):
        data = load_dataset(payload.name, **payload.params)
    else:
        data = ray.get(payload)
    _WORKER_DATA.append((key, data))
    return data, True


@contextmanager
def _captured_output() -> Iterator[io.StringIO]:
    """stdout, stderr and octbench's log (INFO and up) into one buffer, while a run trains."""
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger = logging.getLogger("octbench")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        with redirect_stdout(buffer), redirect_stderr(buffer):
            yield buffer
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def train_on_worker(specs: list[RunSpec], boxed_data: list, keeper,
                    plugins: str) -> list[RunResult]:
    """Body of the Ray task: one run, or a stack of runs trained together
    (:func:`octbench.stacked_runs.train_stack`); one result per run, in the order of ``specs``,
    failures returned as FAILED records.

    ``boxed_data`` holds the data's object reference (or, for big files, what to load) inside a
    list, so Ray does not fetch the data before this looks in the worker's cache.
    """

    load_plugins(plugins)
    node = _node_name()
    relay = RelayStore(keeper, node)
    with _captured_output() as output:
        names = specs[0].run_id if len(specs) == 1 else (
            f"stack of {len(specs)} runs: {', '.join(s.run_id for s in specs)}")
        print(f"octbench run {names} on Ray node {node}, process {os.getpid()}, "
              f"started {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}")
        data, loaded = _worker_data(specs[0], boxed_data[0])
        numbers = run_numbers(specs)
        for _ in train_stack(specs, data, relay, quiet=True,
                             progress=RelayGridProgress(keeper, node), numbers=numbers):
            pass
    results = [relay.results[spec.run_id] for spec in specs]  # every ending writes a record
    for result in results:
        result.log, result.pid = output.getvalue(), os.getpid()
    results[0].loaded_data = loaded
    return results


def import_octbench() -> None:
    """A no-op task whose worker process imports what a run needs: running it imports this
    module, and with it the runner and torch."""


def _node_name() -> str:
    try:
        import ray

        return f"{socket.gethostname()} ({ray.get_runtime_context().get_node_id()[:8]})"
    except Exception:  # outside a Ray worker
        return socket.gethostname()


def node_has_file(data: Component) -> tuple[str, str, bool]:
    """Whether this node holds the data's file: (node, path, there); a probe task per node."""
    path = data_file(data)
    return _node_name(), str(path), path is not None and path.is_file()
