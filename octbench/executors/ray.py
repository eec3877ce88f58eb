"""The Ray executor: one Ray task per run (or per stack of runs), on a local Ray instance or a
cluster.

With Ray, the ``run`` process (the driver) stays the only writer of the results folder. It claims
each run, submits one task per run (or per stack) and writes the record, predictions and
checkpoint of each run that come back (the task's side: :mod:`octbench.executors.ray_worker`). A
task that Ray retries after its worker died (node loss, preemption, OOM) resumes from its last
completed epoch on whichever node it lands. A run that fails for its own reasons (NaN, a model
error) comes back as a FAILED record and is never retried.

Ray is started (or joined, :mod:`octbench.executors.ray_address`) once per executor and kept for
every dataset of a sweep. The driver prints the workers' progress as for local runs; GPU tasks
get a fresh process each (CUDA binds a process to one GPU). When runs wait for resources and none
trains, the driver says what they ask and what the cluster has.

Must not import at module level: ray (an optional extra, imported when a Ray executor starts),
the CLI, report or tuning.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

from octbench.config import Component
from octbench.data import load_dataset
from octbench.errors import OctbenchError
from octbench.executors.base import Outcome, check_cpus, silent_progress
from octbench.executors.ray_address import (
    check_reachable,
    import_ray,
    resolve_address,
    use_cluster_token,
)
from octbench.executors.ray_worker import (
    CheckpointKeeper,
    RunResult,
    data_file,
    import_octbench,
    node_has_file,
    train_on_worker,
)
from octbench.grid import RunSpec, run_numbers
from octbench.plugins import plugin_names
from octbench.progress import GridProgress, RunProgress
from octbench.results import COMPLETE, FAILED, INTERRUPTED, ResultsStore, RunLocked, RunRecord
from octbench.runner import INTERRUPTED_MESSAGE, stopped_record
from octbench.stacked_runs import plan_stacks

log = logging.getLogger(__name__)

#: Data up to this size (the file on disk) are loaded once by the driver and put into Ray's
#: object store; larger files are read by each worker from the same path on its own node.
OBJECT_STORE_LIMIT = 2**30

#: Ray retries a task this often when its worker process or node dies (never for run errors).
MAX_RETRIES = 3

#: The other files of a run's folder that a task sends back (its traceback, its corrupted
#: evaluation's predictions and sample strip): the driver writes them before the record.
RETURNED_FILES = (ResultsStore.TRACEBACK, ResultsStore.ROBUSTNESS_PREDICTIONS,
                  ResultsStore.ROBUSTNESS_SAMPLES)


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
        check_cpus(cpus_per_run)
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
            check_reachable(self.address, resolve_address(self.address))
        if ray.is_initialized():  # e.g. a test or a notebook that set Ray up itself
            self._connected = True
            return
        if self.address:
            use_cluster_token()
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
        progress = progress or silent_progress(pending)
        ray = self._ray
        self._warm_up(pending)
        payload, dataset = self._data_payload(data)
        keeper = self._start_keeper(store)
        plugins = plugin_names()
        claims, running, started, by_id, submitted = {}, {}, {}, {}, {}
        numbers = run_numbers(pending)
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
        task = self._task(import_octbench, cpu_runs[0])
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

        probe = ray.remote(num_cpus=0)(node_has_file)
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
