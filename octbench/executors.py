"""Ways to train a grid's pending runs: in this process one at a time, or as Ray tasks.

:func:`octbench.runner.run_experiment` owns the grid logic (expansion, shards, skipping complete
runs, the summary and exit codes) and hands the pending runs to an executor, which trains them and
yields each run's outcome as it finishes: its :class:`~octbench.results.RunRecord`, a
:class:`~octbench.results.RunLocked` when another process holds the run, or None when another
process finished it meanwhile.

With Ray, the ``run`` process (the driver) stays the only writer of the results folder. It claims
each run, submits one task per run and writes the record, predictions and checkpoint that come
back. Epoch checkpoints travel to a small actor on the driver's node that keeps them in the
results folder, so a task that Ray retries after its worker died (node loss, preemption, OOM)
resumes from its last completed epoch on whichever node it lands. A run that fails for its own
reasons (NaN, a model error) comes back as a FAILED record and is never retried.

Must not import at module level: ray (an optional extra, imported when a Ray executor starts),
the CLI, report or tuning.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from octbench.config import Component
from octbench.data import OCTData, load_dataset
from octbench.errors import OctbenchError
from octbench.progress import GridProgress
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
    execute_run,
    stopped_record,
)
from octbench.stacked_runs import execute_stack, plan_stacks

log = logging.getLogger(__name__)

#: What an executor yields per run: its record, RunLocked (another process holds it) or None
#: (another process completed it meanwhile).
Outcome = RunRecord | RunLocked | None

#: Data up to this size (the file on disk) are loaded once by the driver and put into Ray's
#: object store; larger files are read by each worker from the same path on its own node.
OBJECT_STORE_LIMIT = 2**30

#: Ray retries a task this often when its worker process or node dies (never for run errors).
MAX_RETRIES = 3

RAY_INSTALL = 'pip install "octbench[ray]"  (or, in a checkout: pip install -e ".[ray]")'


class Executor(Protocol):
    """Trains pending runs; see the module docstring."""

    def check(self, pending: list[RunSpec], data: Component) -> None:
        """Refuse impossible settings (raise OctbenchError) before anything is written."""

    def execute(self, pending: list[RunSpec], data: Component, store: ResultsStore, *,
                quiet: bool, progress: GridProgress | None = None
                ) -> Iterator[tuple[RunSpec, Outcome]]:
        """Train ``pending`` and yield ``(spec, outcome)`` for each run as it finishes.

        ``progress`` hears when each run starts (and, where the run trains in this process,
        each epoch) and ends.
        """


class LocalExecutor:
    """In this process, one run at a time; each run is claimed with a lock file.

    Several ``run`` processes may share one results folder: a run claimed by another live
    process is left to it.
    """

    def __init__(self, *, cpus_per_run: int | None = None, stack: int | None = None):
        _check_cpus(cpus_per_run)
        self.cpus_per_run = cpus_per_run
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
        if self.cpus_per_run:
            import torch

            torch.set_num_threads(self.cpus_per_run)  # train.threads, when set, still wins
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
            run_progress = progress.start_run(number, spec.run_id, spec.device)
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
    """What a Ray task sends back: the record and the artifacts the driver writes."""

    record: RunRecord
    predictions: dict = field(default_factory=dict)
    best: bytes | None = None
    resumed_after: int | None = None
    node: str = ""


class RelayStore:
    """The store a run uses inside a Ray task: epoch checkpoints go to the driver's keeper,
    the record and final artifacts are held until the task returns them."""

    def __init__(self, run_id: str, keeper):
        self.run_id = run_id
        self.keeper = keeper
        self.result: RunResult | None = None
        self.predictions: dict = {}
        self.best: bytes | None = None
        self.resumed_after: int | None = None

    def load_state(self, run_id: str, name: str) -> dict | None:
        import ray

        if name != ResultsStore.RESUME:
            return None
        blob = ray.get(self.keeper.load.remote(run_id))
        state = None if blob is None else read_state(io.BytesIO(blob),
                                                     name=f"the resume state of {run_id}")
        if state is not None:
            self.resumed_after = state["state"]["epoch"]
        return state

    def save_state(self, run_id: str, name: str, state: dict) -> None:
        import ray
        import torch

        buffer = io.BytesIO()
        torch.save(state, buffer)
        if name == ResultsStore.RESUME:  # wait: the epoch counts as done once the driver has it
            ray.get(self.keeper.save.remote(run_id, buffer.getvalue()))
        else:
            self.best = buffer.getvalue()

    def save_predictions(self, run_id: str, **arrays) -> None:
        self.predictions = arrays

    def write(self, record: RunRecord) -> None:
        node = _node_name()
        if record.hardware:  # which Ray node trained it: the report's device table stays true
            record = dataclasses.replace(record, hardware={**record.hardware, "ray_node": node})
        self.result = RunResult(record, self.predictions, self.best, self.resumed_after, node)

    def remove(self, run_id: str, name: str) -> None:
        pass  # the driver removes the resume checkpoint once the record is written

    def is_complete(self, run_id: str) -> bool:
        return self.result is not None and self.result.record.status == COMPLETE

    def read(self, run_id: str) -> RunRecord | None:
        return None if self.result is None else self.result.record


class CheckpointKeeper:
    """Ray actor on the driver's node: keeps each run's epoch checkpoint in the results folder."""

    def __init__(self, root: str):
        self.store = ResultsStore(root)

    def load(self, run_id: str) -> bytes | None:
        return self.store.load_bytes(run_id, ResultsStore.RESUME)

    def save(self, run_id: str, blob: bytes) -> None:
        self.store.save_bytes(run_id, ResultsStore.RESUME, blob)


def train_on_worker(spec: RunSpec, data: OCTData | Component, keeper, threads: int,
                    plugins: str) -> RunResult:
    """Body of the Ray task: one run, its failures returned as a FAILED record."""
    import torch

    from octbench.cli import load_plugins

    load_plugins(plugins)
    torch.set_num_threads(threads)  # train.threads, when set, still wins
    if isinstance(data, Component):
        data = load_dataset(data.name, **data.params)
    relay = RelayStore(spec.run_id, keeper)
    execute_run(spec, data, relay, quiet=True)  # every ending writes a record to the relay
    return relay.result


def _node_name() -> str:
    try:
        import ray

        return f"{socket.gethostname()} ({ray.get_runtime_context().get_node_id()[:8]})"
    except Exception:  # outside a Ray worker
        return socket.gethostname()


def _node_has_file(data: Component) -> tuple[str, str, bool]:
    path = data_file(data)
    return _node_name(), str(path), path is not None and path.is_file()


class RayExecutor:
    """One Ray task per run on a local Ray instance or an existing cluster.

    Args:
        address: ``auto``, ``HOST:PORT`` of a running cluster, or None to start a local
            instance with this machine's CPUs and GPUs.
        gpus_per_run: GPUs each GPU run reserves (0 < F <= 1; 0.25 packs four runs on a GPU).
            Default: 1 for runs on ``cuda``/``auto`` when the cluster has GPUs.
        cpus_per_run: CPUs each run reserves; also its torch thread count. Default 1.
    """

    def __init__(self, *, address: str | None = None, gpus_per_run: float | None = None,
                 cpus_per_run: int | None = None):
        if gpus_per_run is not None and not 0 < gpus_per_run <= 1:
            raise OctbenchError(
                f"--gpus-per-run must be a share of one GPU in (0, 1], e.g. 0.25 for four runs "
                f"per GPU; got {gpus_per_run:g}.")
        _check_cpus(cpus_per_run)
        self.address = address
        self.gpus_per_run = gpus_per_run
        self.cpus_per_run = cpus_per_run
        self._started = False

    # -- before anything is written ------------------------------------------------------------

    def check(self, pending: list[RunSpec], data: Component) -> None:
        self._connect()
        nodes = [n for n in self._ray.nodes() if n.get("Alive")]
        gpus = sum(n["Resources"].get("GPU", 0) for n in nodes)
        most_cpus = max((n["Resources"].get("CPU", 0) for n in nodes), default=0)
        if self.gpus_per_run is not None and not gpus:
            self._disconnect()
            raise OctbenchError(
                f"--gpus-per-run {self.gpus_per_run:g}: the Ray cluster ({self._where()}) has no "
                "GPU, so no run could start; drop --gpus-per-run to train on CPUs, or add GPU "
                "nodes.")
        if (self.cpus_per_run or 1) > most_cpus:
            self._disconnect()
            raise OctbenchError(
                f"--cpus-per-run {self.cpus_per_run or 1}: no node of the Ray cluster "
                f"({self._where()}) has that many CPUs (the largest has {most_cpus:g}); "
                f"choose --cpus-per-run {max(int(most_cpus), 1)} or less.")
        self._gpus = gpus
        path = data_file(data)
        self._big_data = (path is not None and path.is_file()
                          and path.stat().st_size > OBJECT_STORE_LIMIT)
        if self._big_data:
            try:
                self._check_nodes_have(data)
            except OctbenchError:
                self._disconnect()
                raise

    def _where(self) -> str:
        return f"at {self.address}" if self.address else "started here"

    def _connect(self) -> None:
        ray = self._ray = import_ray()
        if self.address and self.address != "auto" and not self.address.startswith("ray://"):
            _check_reachable(self.address)  # ray.init would wait for minutes
        if ray.is_initialized():  # e.g. a test or a notebook that set Ray up itself
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
        self._started = True

    def _disconnect(self) -> None:
        if self._started:
            self._ray.shutdown()
            self._started = False

    # -- training ------------------------------------------------------------------------------

    def execute(self, pending: list[RunSpec], data: Component, store: ResultsStore, *,
                quiet: bool, progress: GridProgress | None = None
                ) -> Iterator[tuple[RunSpec, Outcome]]:
        # Runs train on Ray workers: the driver reports when each starts and ends, not epochs.
        progress = progress or GridProgress([s.train.epochs for s in pending], enabled=False)
        started = {}
        ray = self._ray
        try:
            payload, dataset = self._data_payload(data)
            keeper = self._start_keeper(store)
            task = ray.remote(max_retries=MAX_RETRIES, retry_exceptions=False)(train_on_worker)
            threads = self.cpus_per_run or 1
            plugins = os.environ.get("OCTBENCH_PLUGINS", "")
            claims, running = {}, {}
            try:
                for number, spec in enumerate(pending, 1):
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
                    claims[spec.run_id] = claim
                    gpus = self._gpus_for(spec)
                    ref = task.options(num_cpus=threads, num_gpus=gpus).remote(
                        spec, payload, keeper, threads, plugins)
                    running[ref] = spec
                    started[spec.run_id] = progress.start_run(number, spec.run_id, spec.device)
                while running:
                    ready, _ = ray.wait(list(running), num_returns=1, timeout=1.0)
                    if not ready:
                        continue
                    spec = running.pop(ready[0])
                    record = self._finish(spec, ready[0], store, dataset)
                    claims.pop(spec.run_id).__exit__(None, None, None)
                    started.pop(spec.run_id).finished()
                    yield spec, record
            except BaseException:
                # Ctrl-C / SIGTERM (or a full disk): stop the tasks, say which runs stopped.
                for ref, spec in running.items():
                    ray.cancel(ref, force=True)
                    if not store.is_complete(spec.run_id):
                        store.write(stopped_record(spec, INTERRUPTED, INTERRUPTED_MESSAGE,
                                                   dataset=dataset))
                raise
            finally:
                for claim in claims.values():
                    claim.__exit__(None, None, None)
        finally:
            self._disconnect()

    def _gpus_for(self, spec: RunSpec) -> float:
        if spec.device == "cpu" or not self._gpus:
            return 0  # a cuda run without GPUs is recorded as skipped, as it is locally
        return self.gpus_per_run or 1

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
        ray = self._ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        here = ray.get_runtime_context().get_node_id()
        actor = ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=-1)(CheckpointKeeper)
        return actor.options(scheduling_strategy=NodeAffinitySchedulingStrategy(here, soft=False)
                             ).remote(str(store.root.absolute()))

    def _finish(self, spec: RunSpec, ref, store: ResultsStore, dataset: dict) -> RunRecord:
        """Write what a finished task sent back; a task Ray gave up on becomes FAILED."""
        ray = self._ray
        try:
            result: RunResult = ray.get(ref)
        except ray.exceptions.RayError as error:
            reason = str(error).strip().splitlines()[0]
            record = stopped_record(
                spec, FAILED, f"the Ray task failed (retried up to {MAX_RETRIES} times when its "
                f"worker died): {reason}", dataset=dataset)
            store.write(record)
            return record
        if result.resumed_after:
            log.info("%s resumed after epoch %d on %s", spec.run_id, result.resumed_after,
                     result.node)
        if result.record.status == COMPLETE:
            store.save_predictions(spec.run_id, **result.predictions)
            store.save_bytes(spec.run_id, ResultsStore.BEST, result.best)
        store.write(result.record)  # last: a run is complete once its record says so
        if result.record.status == COMPLETE:
            store.remove(spec.run_id, ResultsStore.RESUME)
        return result.record


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


def _check_reachable(address: str) -> None:
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=5):
            return
    except (OSError, ValueError) as error:
        reason = getattr(error, "strerror", None) or error
    raise OctbenchError(
        f"cannot reach a Ray cluster at --address {address} ({reason}); start its head with "
        "`ray start --head --port PORT`, check HOST:PORT and the firewall, or leave out "
        "--address to start Ray here.")

