"""Ways to train a grid's pending runs: in this process, or as Ray tasks.

:func:`octbench.runner.run_experiment` owns the grid logic (expansion, shards, skipping complete
runs, the summary and exit codes) and hands the pending runs to an executor, which trains them and
yields each run's outcome as it finishes: its :class:`~octbench.results.RunRecord`, a
:class:`~octbench.results.RunLocked` when another process holds the run, or None when another
process finished it meanwhile. Both train the same groups of runs
(:func:`octbench.stacked_runs.plan_stacks`): a run alone, or a stack of same-shaped runs trained
together (``--stack``).

With Ray, the ``run`` process (the driver) stays the only writer of the results folder. It claims
each run, submits one task per run (or per stack) and writes the record, predictions and
checkpoint of each run that come back. Epoch checkpoints travel to a small actor on the
driver's node that keeps them in the results folder, so a task that Ray retries after its
worker died (node loss, preemption, OOM) resumes from its last completed epoch on whichever node
it lands. A run that fails for its own reasons (NaN, a model error) comes back as a FAILED record
and is never retried.

Ray is started (or joined) once per executor and kept for every dataset of a sweep. Workers
report when a run starts and each epoch through the same actor, so the driver prints progress as
for local runs; each run's worker output comes back as its ``run.log``. A worker process keeps
the last dataset it used (and its device copy) for the next run on the same data; GPU tasks get
a fresh process each (CUDA binds a process to one GPU). When runs wait for resources and none
trains, the driver says what they ask and what the cluster has.

Over ~450 lines: one idea (how pending runs are trained) until the planned split into
``executors/`` (base, local, ray) lands.

Must not import at module level: ray (an optional extra, imported when a Ray executor starts),
the CLI, report or tuning.
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
from typing import Any, Protocol

from octbench.config import Component
from octbench.data import OCTData, load_dataset
from octbench.errors import OctbenchError
from octbench.plugins import load_plugins, plugin_names
from octbench.progress import GridProgress, RunProgress
from octbench.results import (
    COMPLETE,
    FAILED,
    INTERRUPTED,
    ResultsStore,
    RunLocked,
    RunRecord,
    read_state,
)
from octbench.runner import (
    INTERRUPTED_MESSAGE,
    RunSpec,
    check_buildable,
    default_threads,
    execute_run,
    stopped_record,
)
from octbench.stacked_runs import execute_stack, plan_stacks, train_stack

log = logging.getLogger(__name__)

#: What an executor yields per run: its record, RunLocked (another process holds it) or None
#: (another process completed it meanwhile).
Outcome = RunRecord | RunLocked | None

#: Data up to this size (the file on disk) are loaded once by the driver and put into Ray's
#: object store; larger files are read by each worker from the same path on its own node.
OBJECT_STORE_LIMIT = 2**30

#: Ray retries a task this often when its worker process or node dies (never for run errors).
MAX_RETRIES = 3

#: The other files of a run's folder that a task sends back (its traceback, its corrupted
#: evaluation's predictions and sample strip): the driver writes them before the record.
RETURNED_FILES = (ResultsStore.TRACEBACK, ResultsStore.ROBUSTNESS_PREDICTIONS,
                  ResultsStore.ROBUSTNESS_SAMPLES)

RAY_INSTALL = 'pip install "octbench[ray]"  (or, in a checkout: pip install -e ".[ray]")'


class Executor(Protocol):
    """Trains pending runs; see the module docstring."""

    #: torch threads per run, for runs whose config leaves ``train.threads`` open; part of
    #: their run ids (:func:`octbench.runner.with_threads`).
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


class LocalExecutor:
    """In this process, one run at a time; each run is claimed with a lock file.

    Several ``run`` processes may share one results folder: a run claimed by another live
    process is left to it.
    """

    def __init__(self, *, cpus_per_run: int | None = None, stack: int | None = None):
        _check_cpus(cpus_per_run)
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
        progress = progress or GridProgress([s.train.epochs for s in pending], enabled=False)
        if self._checked is not None and self._checked[0] == data:
            loaded = self._checked[1]
        else:
            loaded = load_dataset(data.name, **data.params)
        self._checked = None  # one data set in memory at a time
        numbers = {spec.run_id: number for number, spec in enumerate(pending, 1)}
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


# ---------------------------------------------------------------------------------------------
# Ray


def _check_cpus(cpus_per_run: int | None) -> None:
    if cpus_per_run is not None and cpus_per_run < 1:
        raise OctbenchError(f"--cpus-per-run must be an integer >= 1; got {cpus_per_run}.")


def import_ray():
    """The ``ray`` module, or an OctbenchError that gives the install command."""
    try:
        import ray
    except ImportError:
        raise OctbenchError(
            f"--executor ray needs Ray, which is not installed; install it with {RAY_INSTALL}, "
            "or leave out --executor to train here, one run at a time."
        ) from None
    return ray


def data_file(data: Component) -> Path | None:
    """The file a dataset is read from (npz, OCTMNIST), or None for generated data."""
    if data.name == "npz":
        return Path(data.params["path"]).expanduser().absolute()
    if data.name == "octmnist":
        from octbench.data.octmnist import octmnist_file

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
#: same data reuse it and its copy on the device (``runner._on_device``) instead of fetching it.
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
        numbers = {spec.run_id: number for number, spec in enumerate(specs, 1)}
        for _ in train_stack(specs, data, relay, quiet=True,
                             progress=RelayGridProgress(keeper, node), numbers=numbers):
            pass
    results = [relay.results[spec.run_id] for spec in specs]  # every ending writes a record
    for result in results:
        result.log, result.pid = output.getvalue(), os.getpid()
    results[0].loaded_data = loaded
    return results


def _import_octbench() -> None:
    """A no-op task whose worker process imports what a run needs."""
    import octbench.runner  # noqa: F401


def _node_name() -> str:
    try:
        import ray

        return f"{socket.gethostname()} ({ray.get_runtime_context().get_node_id()[:8]})"
    except Exception:  # outside a Ray worker
        return socket.gethostname()


def _node_has_file(data: Component) -> tuple[str, str, bool]:
    path = data_file(data)
    return _node_name(), str(path), path is not None and path.is_file()


#: Default of ``--stuck-after``: minutes without any run starting or ending, while runs wait
#: for resources and none is training, before the driver says why.
STUCK_AFTER_MINUTES = 10.0


class RayExecutor:
    """One Ray task per run, or per stack of runs, on a local Ray instance or a cluster.

    Ray is started (or joined) once per executor and kept until :meth:`close`, across every
    dataset of a sweep over data settings.

    Args:
        address: ``auto``, ``HOST:PORT`` of a running cluster, or None to start a local
            instance with this machine's CPUs and GPUs.
        gpus_per_run: GPUs each GPU run reserves (0 < F <= 1; 0.25 packs four runs on a GPU).
            Default: 1 for runs on ``cuda``/``auto`` when the cluster has GPUs.
        cpus_per_run: CPUs each run reserves and its torch thread count (unless the config
            sets ``train.threads``). Default 1.
        stack: most runs per task, trained as one stacked model (``run --stack``; the
            stacks are those of the local executor, :func:`~octbench.stacked_runs.plan_stacks`).
            A stack's task reserves what one run's does, so ``gpus_per_run`` packs stacks.
            None: each device's default.
        stuck_after: seconds without a run starting or ending while runs wait for resources
            and none trains, before the driver says what they ask and what the cluster has.
        exit_when_stuck: then stop with an OctbenchError (exit 2) instead of waiting on.
    """

    def __init__(self, *, address: str | None = None, gpus_per_run: float | None = None,
                 cpus_per_run: int | None = None, stack: int | None = None,
                 stuck_after: float = STUCK_AFTER_MINUTES * 60, exit_when_stuck: bool = False):
        if gpus_per_run is not None and not 0 < gpus_per_run <= 1:
            raise OctbenchError(
                f"--gpus-per-run must be a share of one GPU in (0, 1], e.g. 0.25 for four runs "
                f"per GPU; got {gpus_per_run:g}.")
        _check_cpus(cpus_per_run)
        if not stuck_after > 0:
            raise OctbenchError(f"--stuck-after must be a number of minutes > 0; got "
                                f"{stuck_after / 60:g}.")
        self.address = address
        self.gpus_per_run = gpus_per_run
        self.cpus_per_run = cpus_per_run
        self.threads = cpus_per_run or 1
        self.stack = stack
        self.stuck_after = stuck_after
        self.exit_when_stuck = exit_when_stuck
        self._started = False
        self._connected = False
        self._keeper = None
        self._remote_functions: dict = {}
        self._warmed = False
        self._warming: list = []
        #: run id -> (worker pid, whether that run loaded the data): what each task reported
        self.workers: dict[str, tuple[int, bool]] = {}
        #: run id -> seconds from submitting its task to the run starting on a worker
        #: (scheduling, starting or reusing a worker process, imports): Ray's overhead per run
        self.start_delays: dict[str, float] = {}

    # -- before anything is written ------------------------------------------------------------

    def check(self, pending: list[RunSpec], data: Component) -> None:
        self._connect()
        nodes = [n for n in self._ray.nodes() if n.get("Alive")]
        gpus = sum(n["Resources"].get("GPU", 0) for n in nodes)
        most_cpus = max((n["Resources"].get("CPU", 0) for n in nodes), default=0)
        threads = self.cpus_per_run or max(
            (spec.train.threads or self.threads for spec in pending), default=1)
        if self.gpus_per_run is not None and not gpus:
            self.close()
            raise OctbenchError(
                f"--gpus-per-run {self.gpus_per_run:g}: the Ray cluster ({self._where()}) has no "
                "GPU, so no run could start; drop --gpus-per-run to train on CPUs, or add GPU "
                "nodes.")
        if threads > most_cpus:
            self.close()
            raise OctbenchError(
                f"--cpus-per-run {threads}: no node of the Ray cluster ({self._where()}) has "
                f"that many CPUs (the largest has {most_cpus:g}); choose --cpus-per-run "
                f"{max(int(most_cpus), 1)} or less (and train.threads no larger).")
        self._gpus = gpus
        path = data_file(data)
        self._big_data = (path is not None and path.is_file()
                          and path.stat().st_size > OBJECT_STORE_LIMIT)
        if self._big_data:
            try:
                self._check_nodes_have(data)
            except OctbenchError:
                self.close()
                raise

    def _where(self) -> str:
        return f"at {self.address}" if self.address else "started here"

    def _connect(self) -> None:
        if self._connected:
            return
        ray = self._ray = import_ray()
        if self.address and not self.address.startswith("ray://"):
            # Checked here, within seconds: ray.init would wait for minutes, or for ever.
            _check_reachable(self.address, _resolve_address(self.address))
        if ray.is_initialized():  # e.g. a test or a notebook that set Ray up itself
            self._connected = True
            return
        if self.address:
            _use_cluster_token()
        try:
            ray.init(address=self.address or "local", include_dashboard=False, log_to_driver=False,
                     logging_level=logging.WARNING, configure_logging=False)
        except (ConnectionError, RuntimeError, ValueError) as error:
            raise OctbenchError(
                f"cannot connect to a Ray cluster at --address {self.address} ({error}); start "
                "one with `ray start --head` (then --address auto on that machine), give the "
                "head's HOST:PORT, or leave out --address to start Ray here.") from None
        self._started = self._connected = True

    def close(self) -> None:
        """Shut down the Ray instance this executor started (one that was there stays)."""
        self._keeper = None
        self._remote_functions.clear()
        self._warmed = False
        for ref in self._warming:  # still queued when the grid stopped early (--on-stuck exit)
            self._ray.cancel(ref)
        self._warming = []
        if self._started:
            self._ray.shutdown()
        self._started = self._connected = False

    # -- training ------------------------------------------------------------------------------

    def execute(self, pending: list[RunSpec], data: Component, store: ResultsStore, *,
                quiet: bool, progress: GridProgress | None = None
                ) -> Iterator[tuple[RunSpec, Outcome]]:
        progress = progress or GridProgress([s.train.epochs for s in pending], enabled=False)
        ray = self._ray
        self._warm_up(pending)
        payload, dataset = self._data_payload(data)
        keeper = self._start_keeper(store)
        plugins = plugin_names()
        claims, running, started, by_id, submitted = {}, {}, {}, {}, {}
        numbers = {spec.run_id: number for number, spec in enumerate(pending, 1)}
        try:
            for group in plan_stacks(pending, self.stack):
                mine = []  # the group's runs that this driver claims and that are not done
                for spec in group:
                    claim = store.claim(spec.run_id)
                    try:
                        claim.__enter__()
                    except RunLocked as busy:
                        yield spec, busy
                        continue
                    if store.is_complete(spec.run_id):
                        claim.__exit__(None, None, None)
                        yield spec, None
                        continue
                    claims[spec.run_id], by_id[spec.run_id] = claim, spec
                    submitted[spec.run_id] = time.monotonic()
                    mine.append(spec)
                if mine:
                    task = self._task(train_on_worker, mine[0])
                    running[task.remote(mine, [payload], keeper, plugins)] = mine
            quiet_since = time.monotonic()
            while running:
                ready, _ = ray.wait(list(running), num_returns=1, timeout=1.0)
                for run_id, kind, details in ray.get(keeper.drain.remote()):
                    quiet_since = time.monotonic()
                    if kind == "start" and run_id not in started:
                        self.start_delays[run_id] = time.monotonic() - submitted[run_id]
                        device = by_id[run_id].device
                        started[run_id] = progress.start_run(
                            numbers[run_id], run_id, f"{device}, Ray node {details['node']}",
                            spec=by_id[run_id])
                    elif kind == "epoch" and run_id in started:
                        started[run_id].epoch_done(**details)
                if not ready:
                    waiting = {s.run_id for specs in running.values() for s in specs}
                    if time.monotonic() - quiet_since > self.stuck_after and \
                            not set(started) & waiting:
                        self._stuck(running, time.monotonic() - quiet_since)
                        quiet_since = time.monotonic()
                    continue
                quiet_since = time.monotonic()
                specs = running.pop(ready[0])
                records = self._finish(specs, ready[0], store, dataset)
                for spec, record in zip(specs, records, strict=True):
                    claims.pop(spec.run_id).__exit__(None, None, None)
                    run_progress = started.pop(spec.run_id, None)
                    if run_progress is None:  # it never started (Ray gave up on it)
                        run_progress = RunProgress(progress, numbers[spec.run_id] - 1)
                    run_progress.finished()
                    yield spec, record
        except _Stuck:
            for ref in running:  # none of them started: nothing to record
                ray.cancel(ref, force=True)
            raise
        except BaseException:
            # Ctrl-C / SIGTERM (or a full disk): stop the tasks, say which runs stopped.
            for ref, specs in running.items():
                ray.cancel(ref, force=True)
                for spec in specs:
                    if not store.is_complete(spec.run_id):
                        store.write(stopped_record(spec, INTERRUPTED, INTERRUPTED_MESSAGE,
                                                   dataset=dataset))
            raise
        finally:
            for claim in claims.values():
                claim.__exit__(None, None, None)

    def _warm_up(self, pending: list[RunSpec]) -> None:
        """Have the CPU workers import octbench (torch: seconds) while the driver loads the
        data; Ray then reuses these processes for the runs. Once per executor."""
        if self._warmed:
            return
        self._warmed = True
        cpu_runs = [spec for spec in pending if not self._resources(spec)["num_gpus"]]
        if not cpu_runs:
            return  # GPU runs get a fresh process each: nothing to warm
        slots = int(self._ray.cluster_resources().get("CPU", 0)
                    // self._resources(cpu_runs[0])["num_cpus"])
        task = self._task(_import_octbench, cpu_runs[0])
        # Not waited for: a run may start before its worker is warm.
        self._warming = [task.remote() for _ in range(min(len(cpu_runs), slots))]

    def _resources(self, spec: RunSpec) -> dict:
        """The Ray resources a run's task asks for."""
        gpus = 0
        if spec.device != "cpu" and self._gpus:  # else a cuda run is recorded as skipped
            gpus = self.gpus_per_run or 1
        return {"num_cpus": self.cpus_per_run or spec.train.threads or self.threads,
                "num_gpus": gpus}

    def _task(self, function, spec: RunSpec):
        """``function`` as the Ray task of ``spec``. A GPU task gets a fresh worker process
        (max_calls 1): CUDA binds a process to the GPU it first used, and Ray reuses worker
        processes, so a reused one would train on another task's GPU. CPU workers are reused
        (and keep their data)."""
        resources = self._resources(spec)
        gpu = resources["num_gpus"] > 0
        key = (function, gpu)
        if key not in self._remote_functions:
            self._remote_functions[key] = self._ray.remote(
                max_retries=MAX_RETRIES, retry_exceptions=False,
                **({"max_calls": 1} if gpu else {}))(function)
        return self._remote_functions[key].options(**resources)

    def _stuck(self, running: dict, seconds: float) -> None:
        """Say why the waiting runs do not start; raise _Stuck if told to stop then."""
        ray = self._ray
        asked = self._resources(next(iter(running.values()))[0])
        asked = {"CPU": asked["num_cpus"], "GPU": asked["num_gpus"]}
        waiting = sum(len(specs) for specs in running.values())
        total, free = ray.cluster_resources(), ray.available_resources()
        have = ", ".join(f"{name} {free.get(name, 0):g} free of {total.get(name, 0):g}"
                         for name in ("CPU", "GPU"))
        alive = sum(1 for n in ray.nodes() if n.get("Alive"))
        message = (
            f"{waiting} run(s) have waited {seconds / 60:.1f} min for Ray to start them and "
            f"none is training: each asks "
            f"{', '.join(f'{k} {v:g}' for k, v in asked.items())}; "
            f"the Ray cluster ({self._where()}, {alive} node(s) alive) has {have}. Add or "
            "restart nodes, lower --cpus-per-run / --gpus-per-run, or free what holds them")
        if self.exit_when_stuck:
            raise _Stuck(message + "; rerun to train the missing runs.")
        log.warning("%s; still waiting (--on-stuck exit stops instead).", message)

    def _data_payload(self, data: Component) -> tuple[object, dict]:
        """The driver's data in the object store, or, for big files, what each worker loads."""
        if self._big_data:
            path = data_file(data)
            if data.name == "npz":
                data = Component(data.name, {**data.params, "path": str(path)})
            return data, {"name": data.name, "source": {"path": str(path)}}
        loaded = load_dataset(data.name, **data.params)
        return self._ray.put(loaded), loaded.describe()

    def _check_nodes_have(self, data: Component) -> None:
        ray = self._ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        probe = ray.remote(num_cpus=0)(_node_has_file)
        refs = [probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(
            node["NodeID"], soft=False)).remote(data)
            for node in ray.nodes() if node.get("Alive")]
        missing = [(node, path) for node, path, there in ray.get(refs) if not there]
        if missing:
            names = ", ".join(node for node, _ in missing)
            raise OctbenchError(
                f"data file {missing[0][1]} is larger than {OBJECT_STORE_LIMIT / 2**30:g} GiB, so "
                f"every Ray node reads it from its own disk, but it is missing on node(s) {names}; "
                "copy it to the same path there (or use a shared filesystem) and rerun.")

    def _start_keeper(self, store: ResultsStore):
        """The keeper actor, started once and kept for every dataset of the grid."""
        root = str(store.root.absolute())
        if self._keeper is not None:
            self._ray.get(self._keeper.set_root.remote(root))
            return self._keeper
        ray = self._ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        here = ray.get_runtime_context().get_node_id()
        actor = ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=-1)(CheckpointKeeper)
        self._keeper = actor.options(
            scheduling_strategy=NodeAffinitySchedulingStrategy(here, soft=False)).remote(root)
        return self._keeper

    def _finish(self, specs: list[RunSpec], ref, store: ResultsStore,
                dataset: dict) -> list[RunRecord]:
        """Write what a finished task sent back, per run; a task Ray gave up on fails each of
        its runs (FAILED)."""
        ray = self._ray
        try:
            results: list[RunResult] = ray.get(ref)
        except ray.exceptions.RayError as error:
            lines = str(error).strip().splitlines() or [type(error).__name__]
            if isinstance(error, ray.exceptions.RayTaskError):  # raised outside the run itself
                message = f"the Ray task raised {lines[-1]}"
            else:
                message = (f"the Ray task failed (retried up to {MAX_RETRIES} times when its "
                           f"worker died): {lines[0]}")
            records = []
            for spec in specs:
                records.append(stopped_record(spec, FAILED, message, dataset=dataset))
                store.save_bytes(spec.run_id, ResultsStore.TRACEBACK, str(error).encode())
                store.write(records[-1])
            return records
        return [self._write(spec, result, store)
                for spec, result in zip(specs, results, strict=True)]

    def _write(self, spec: RunSpec, result: RunResult, store: ResultsStore) -> RunRecord:
        """Write one run's record and artifacts, as a run alone writes them."""
        self.workers[spec.run_id] = (result.pid, result.loaded_data)
        if result.resumed_after:
            log.info("%s resumed after epoch %d on %s", spec.run_id, result.resumed_after,
                     result.node)
        if result.log:
            store.save_bytes(spec.run_id, ResultsStore.LOG, result.log.encode())
        for name, blob in result.files.items():
            if name not in RETURNED_FILES:  # a task's scratch files (partial results) stay out
                continue
            if blob is None:
                store.remove(spec.run_id, name)
            else:
                store.save_bytes(spec.run_id, name, blob)
        if result.record.status == COMPLETE:
            store.save_predictions(spec.run_id, **result.predictions)
            store.save_bytes(spec.run_id, ResultsStore.BEST, result.best)
        store.write(result.record)  # last: a run is complete once its record says so
        if result.record.status == COMPLETE:
            store.remove(spec.run_id, ResultsStore.RESUME)
        return result.record


class _Stuck(OctbenchError):
    """Runs wait for resources that the Ray cluster does not have (``--on-stuck exit``)."""


def _use_cluster_token() -> None:
    # `ray start` clusters require the token in ~/.ray/auth_token, but ray.init(address=...)
    # only sends it when RAY_AUTH_MODE says so; Ray's own helper turns it on if a token exists.
    try:
        from ray._private.authentication.authentication_token_setup import (
            maybe_enable_token_auth_if_token_available,
        )
    except ImportError:  # a Ray without token authentication
        return
    maybe_enable_token_auth_if_token_available(warn_if_disabled=False)


#: Seconds each step of the address check may take (TCP connect, then the gRPC greeting).
CONNECT_TIMEOUT = 5.0

#: What an HTTP/2 (gRPC) client sends first: the preface and an empty SETTINGS frame.
_HTTP2_HELLO = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])


def _resolve_address(address: str) -> str:
    """HOST:PORT of ``--address`` (``auto``: the cluster `ray start` last started here)."""
    if address != "auto":
        return address
    from ray._private.services import canonicalize_bootstrap_address

    try:
        resolved = canonicalize_bootstrap_address("auto")
    except (ConnectionError, ValueError):
        resolved = None
    if not resolved:
        raise OctbenchError(
            "--address auto: no Ray cluster is running on this machine (Ray records none); "
            "start one here with `ray start --head`, give the head's HOST:PORT as --address, "
            "or leave out --address to start Ray just for this run.")
    return resolved


def _check_reachable(address: str, resolved: str) -> None:
    """Refuse within 2 x CONNECT_TIMEOUT an address where no Ray head answers: nothing listens,
    packets are dropped, or a server that is not Ray's (it does not speak gRPC) listens."""
    shown = address if address == resolved else f"{address} (= {resolved})"
    host, _, port = resolved.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)),
                                      timeout=CONNECT_TIMEOUT) as connection:
            connection.sendall(_HTTP2_HELLO)
            reply = b""
            while len(reply) < 9:  # a gRPC server answers with its SETTINGS frame
                chunk = connection.recv(9 - len(reply))
                if not chunk:
                    break
                reply += chunk
    except TimeoutError:
        reply = None
    except (OSError, ValueError) as error:
        reason = getattr(error, "strerror", None) or error
        raise OctbenchError(
            f"cannot reach a Ray cluster at --address {shown} ({reason}); start its head with "
            "`ray start --head --port PORT`, check HOST:PORT and the firewall, or leave out "
            "--address to start Ray here.") from None
    if reply is None and not _connected_before_timeout(host, port):
        raise OctbenchError(
            f"no answer from --address {shown} within {CONNECT_TIMEOUT:g} s (packets dropped?); "
            "check HOST:PORT, that the head is up (`ray status` there) and that the firewall "
            "lets this machine in, or leave out --address to start Ray here.")
    if reply is None or len(reply) < 9 or reply[3] != 4:
        raise OctbenchError(
            f"something listens at --address {shown}, but it is not a Ray cluster (it does not "
            "answer as Ray's GCS server does); check the port: `ray start --head` prints the "
            "address to use (port 6379 unless --port was given).")


def _connected_before_timeout(host: str, port: str) -> bool:
    # Only to word the message: a connect that timed out vs a server that stayed silent.
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT):
            return True
    except OSError:
        return False
