"""Run an experiment: expand the grid, skip what is complete, train the rest, record everything.

The grid logic (expansion, ``--shard`` slices, skipping complete runs, the summary) is here; an
executor (:mod:`octbench.executors`) trains the pending runs, here or on a Ray cluster, through
:func:`execute_run`. Each run is claimed with a lock file, checkpointed every epoch (so an
interrupted run resumes where it stopped), and ends with exactly one record: COMPLETE, FAILED
(with its error), SKIPPED (device unavailable) or INTERRUPTED. One failing run never stops the
grid.

Must not import: the CLI, report or tuning (tuning imports the runner).
"""

from __future__ import annotations

import copy
import datetime as dt
import functools
import itertools
import json
import logging
import os
import platform
import random
import re
import subprocess
import traceback
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from octbench.augment import build_augmenter
from octbench.calibration import calibration_summary, fit_temperature
from octbench.config import (
    Component,
    EvaluateConfig,
    ExperimentConfig,
    TrainConfig,
    config_hash,
    swept_values,
)
from octbench.corrupted_eval import PARTIAL, CorruptionPlan, evaluate_corruptions
from octbench.data import OCTData, check_available, data_fingerprint
from octbench.devices import check_precision, describe, resolve_device
from octbench.dotted import values_label
from octbench.engine import (
    Predictions,
    default_eval_batch,
    evaluate,
    make_optimizer,
    make_scheduler,
    seed_everything,
    train_one_epoch,
)
from octbench.errors import ConfigError, DataError, DeviceUnavailable, OctbenchError
from octbench.fileio import UnsafePath
from octbench.metrics import METRICS, compute_metrics
from octbench.models import (
    build_model,
    count_parameters,
    describe_weights,
    freeze_all_but_head,
    input_normalization,
    timm_name,
    use_cosine_head,
    weights_fit_problem,
)
from octbench.progress import GridProgress, RunObserver, RunProgress, single_run
from octbench.results import (
    COMPLETE,
    FAILED,
    INTERRUPTED,
    SKIPPED,
    ResultsStore,
    RunLocked,
    RunRecord,
    StorageError,
    check_writable,
)
from octbench.robustness.corruptions import require_medmnistc
from octbench.strategies import build_strategy

if TYPE_CHECKING:
    from octbench.executors import Executor

log = logging.getLogger(__name__)

#: ``on_epoch(epoch, val_metrics)`` after each epoch; tuning uses it to report and prune.
EpochCallback = Callable[[int, dict], None]


@dataclass(frozen=True)
class RunSpec:
    """One cell of the grid: everything that determines a run's result."""

    experiment: str
    data: Component
    model: Component
    strategy: Component
    seed: int
    device: str
    train: TrainConfig
    #: the swept values of this run's sweep combination (``{"data.size": 64}``), if any
    sweep: dict = field(default_factory=dict)
    #: The data's content fingerprint (:func:`octbench.data.data_fingerprint`): new data, new id.
    data_fingerprint: str = ""
    #: Corrupted test sets to score at the end (``evaluate.corruptions``); not part of the id.
    corruptions: CorruptionPlan | None = None

    def config(self) -> dict:
        """The run's resolved configuration, stored in its record and hashed into its id."""
        fingerprint = {"fingerprint": self.data_fingerprint} if self.data_fingerprint else {}
        return {
            "data": {"name": self.data.name, **self.data.params, **fingerprint},
            "model": {"name": self.model.name, **self.model.params},
            "strategy": {"name": self.strategy.name, **self.strategy.params},
            "seed": self.seed,
            "device": self.device,
            "train": self.train.to_dict(),
        }

    @functools.cached_property
    def run_id(self) -> str:
        """Readable and unique: model, strategy, seed, device, swept values (``size=64``), and
        a hash of the config."""
        parts = [self.model.label, self.strategy.label, f"seed{self.seed}", self.device,
                 *([values_label(self.sweep, short=True)] if self.sweep else []),
                 config_hash(self.config())]
        run_id = "__".join(_slug(p) for p in parts)
        if len(run_id) > MAX_RUN_ID:  # a file name must fit the file system (255 bytes)
            run_id = "__".join(_slug(p)[:60] for p in parts)
        return run_id


#: Longer ids (long parameter lists in labels) are shortened; the hash keeps them unique.
MAX_RUN_ID = 255


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_.=" else "-" for c in text).strip("-")


def expand_grid(config: ExperimentConfig, *, threads: int | None = None) -> list[RunSpec]:
    """All runs of an experiment: sweep combination x model x strategy x seed x device, in
    that nesting order.

    Each run's id includes its data's content fingerprint, which this computes once per dataset
    setting (e.g. hashes the npz file; see :func:`octbench.data.data_fingerprint`), and its
    thread count: ``train.threads``, or where the config leaves it open ``threads`` (the
    executor's count per run; default: the local executor's, :func:`default_threads`).
    """
    return with_threads(configured_grid(config), threads or default_threads())


def default_threads() -> int:
    """Torch threads per run of the local executor: all cores (torch's own default)."""
    return torch.get_num_threads()


def configured_grid(config: ExperimentConfig) -> list[RunSpec]:
    """The grid as configured: :func:`expand_grid` without a thread count filled in."""
    fingerprints: dict[str, str] = {}

    def fingerprint_of(data: Component) -> str:
        key = _data_key(data)
        if key not in fingerprints:
            fingerprints[key] = data_fingerprint(data.name, **data.params)
        return fingerprints[key]

    specs = [
        RunSpec(config.name, cell.data, model, strategy, seed, device, cell.train,
                swept_values(values, strategy), fingerprint_of(cell.data),
                corruption_plan(cell.evaluate))
        for values, cell in config.variants()
        for model in cell.models
        for strategy in cell.strategies
        for seed in cell.seeds
        for device in cell.devices
    ]
    # A strategy that does not take a swept parameter makes the same runs in every combination:
    # they are trained once and shared (the report compares each combination with them).
    return list({spec.run_id: spec for spec in specs}.values())


def corruption_plan(evaluate: EvaluateConfig) -> CorruptionPlan | None:
    """The corrupted evaluation an experiment asks for, or None."""
    if not evaluate.corruptions:
        return None
    return CorruptionPlan(evaluate.corruptions, evaluate.severities, evaluate.seed)


@dataclass(frozen=True)
class Shard:
    """The ``index``-th of ``count`` disjoint slices of a grid; ``index`` counts from 1.

    The grid's run ids are sorted and dealt round-robin, so the slices differ in size by at most
    one run and do not depend on the order the grid was written in. Adding runs to a grid may
    move other runs to another slice: harmless, as complete runs are skipped and every run is
    claimed with a lock, whichever slice holds it.
    """

    index: int
    count: int

    @classmethod
    def parse(cls, text: str, environ: Mapping[str, str] | None = None) -> Shard:
        """``"K/N"`` with 1 <= K <= N, or ``"auto"`` / ``"auto/N"`` inside a SLURM array job.

        ``auto`` reads ``SLURM_ARRAY_TASK_ID``, ``SLURM_ARRAY_TASK_MIN`` and
        ``SLURM_ARRAY_TASK_COUNT``: task ``MIN`` is shard 1 of ``COUNT``, e.g. ``--array=0-3``
        or ``--array=1-4`` for 4 shards. ``auto/N`` fixes the number of shards and takes
        ``SLURM_ARRAY_TASK_ID`` as K (``--array=1-N``), so resubmitting some tasks
        (``--array=3,5``) trains the same slices as the first submission.

        Raises:
            OctbenchError: not K/N with 1 <= K <= N, or ``auto`` outside a fitting array job.
        """
        if text.strip() == "auto" or text.strip().startswith("auto/"):
            return cls._from_slurm(text.strip(), os.environ if environ is None else environ)
        # ASCII digits only: str.isdigit() also takes '²', which int() then refuses.
        match = re.fullmatch(r"\s*([0-9]{1,9})\s*/\s*([0-9]{1,9})\s*", text, re.ASCII)
        if match is None:
            raise OctbenchError(f"--shard must look like K/N in digits 0-9 (e.g. --shard 2/4) or "
                                f"auto, got {text!r}")
        index, count = int(match[1]), int(match[2])
        if not 1 <= index <= count:
            raise OctbenchError(
                f"--shard {text}: K must be between 1 and N ({count}); shards count from 1, "
                "so a SLURM array for N shards is `#SBATCH --array=1-N`.")
        return cls(index, count)

    @classmethod
    def _from_slurm(cls, text: str, environ: Mapping[str, str]) -> Shard:
        names = ("SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_MIN", "SLURM_ARRAY_TASK_MAX",
                 "SLURM_ARRAY_TASK_COUNT")
        values = {name: environ.get(name, "").strip() for name in names}
        if not values["SLURM_ARRAY_TASK_ID"].isdigit():
            raise OctbenchError(
                f"--shard {text} reads $SLURM_ARRAY_TASK_ID, which is not set here (got "
                f"{values['SLURM_ARRAY_TASK_ID']!r}); use it in a SLURM array job "
                "(`#SBATCH --array=1-N`), or give the slice as --shard K/N.")
        task = int(values["SLURM_ARRAY_TASK_ID"])
        _, slash, count = text.partition("/")
        if slash:
            if not count.strip().isdigit():
                raise OctbenchError(f"--shard {text}: N must be a whole number, e.g. auto/4")
            return cls.parse(f"{task}/{count}")  # task ids are shard numbers: --array=1-N
        if not all(values[name].isdigit() for name in names[1:]):
            raise OctbenchError(
                "--shard auto needs $SLURM_ARRAY_TASK_MIN, _MAX and _COUNT, which SLURM sets in "
                "array jobs; they are not all set here; give --shard auto/N or K/N instead.")
        low, high, count = (int(values[name]) for name in names[1:])
        if high - low + 1 != count:  # --array=3,5: a resubmission of some of the tasks
            raise OctbenchError(
                f"--shard auto: this array job holds {count} task(s) between {low} and {high} "
                f"(e.g. a resubmission of some of them), so the number of shards is unknown; "
                f"give it: --shard auto/N with task ids 1..N (`#SBATCH --array=1-N`).")
        return cls(task - low + 1, count)

    def select(self, specs: list[RunSpec]) -> list[RunSpec]:
        """This slice's runs, in grid order."""
        ranked = sorted(range(len(specs)), key=lambda i: specs[i].run_id)
        mine = {i for rank, i in enumerate(ranked) if rank % self.count == self.index - 1}
        return [spec for i, spec in enumerate(specs) if i in mine]

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


class GridIds:
    """Which records belong to a grid (``specs``: :func:`configured_grid`).

    Where the config leaves ``train.threads`` open, the
    executor's thread count is part of each run's id (:func:`with_threads`), so a record
    belongs when its id is the grid's id at the record's thread count, or the id as configured
    (records made before the thread count was part of the id)."""

    def __init__(self, specs: list[RunSpec]):
        self.specs = specs
        self.runs = len(specs)  # the number of runs in the grid
        self._ids: dict[int | None, set[str]] = {None: {spec.run_id for spec in specs}}

    def holds(self, record: RunRecord) -> bool:
        threads = (record.config.get("train") or {}).get("threads")
        if not isinstance(threads, int) or isinstance(threads, bool) or threads < 1:
            threads = default_threads()  # a record that does not say: as expand_grid does
        if threads not in self._ids:
            self._ids[threads] = {spec.run_id for spec in with_threads(self.specs, threads)}
        return record.run_id in self._ids[threads] or record.run_id in self._ids[None]


def with_threads(specs: list[RunSpec], threads: int) -> list[RunSpec]:
    """The specs with ``train.threads`` set to ``threads`` where the config left it open.

    The thread count changes a run's numbers (the order of floating-point sums), so it is part
    of the run's config and id: runs trained with different thread counts never share an id.
    """
    return [spec if spec.train.threads else
            replace(spec, train=replace(spec.train, threads=threads)) for spec in specs]


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
    from octbench.executors import LocalExecutor

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
    groups = _by_data(pending)  # a sweep over data settings: one dataset after another
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
    number = {spec.run_id: n for n, spec in enumerate(pending, 1)}
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


def _data_key(data: Component) -> str:
    return json.dumps(data.to_yaml(), sort_keys=True, default=str)


def distinct_data(config: ExperimentConfig) -> list[Component]:
    """The dataset settings of an experiment: one, or one per data setting of its sweep."""
    settings = {_data_key(cell.data): cell.data for _, cell in config.variants()}
    return list(settings.values())


def _by_data(specs: list[RunSpec]) -> list[tuple[Component, list[RunSpec]]]:
    """The specs grouped by their dataset setting, in order of first appearance."""
    groups: dict[str, tuple[Component, list[RunSpec]]] = {}
    for spec in specs:
        groups.setdefault(_data_key(spec.data), (spec.data, []))[1].append(spec)
    return list(groups.values())


def check_pretrained_weights(config: ExperimentConfig, specs: list[RunSpec]) -> None:
    """Fetch or find timm's pretrained weights of every model that asks for them, before any
    run trains: offline without a cache, this fails with how to fill it (OctbenchError)."""
    # by the specs, not config.models: a sweep over model.pretrained sets it per cell
    needed = {spec.model.label: spec.model for spec in specs
              if spec.model.params.get("pretrained") is True}
    if not needed:
        return
    from octbench.models.timm_models import ensure_pretrained_weights

    # The hub client logs each retry as a warning; octbench's own message (raised) says it all.
    noisy = [logging.getLogger(name) for name in ("huggingface_hub", "urllib3", "timm")]
    levels = [logger.level for logger in noisy]
    for logger in noisy:
        logger.setLevel(logging.CRITICAL)
    try:
        for model in needed.values():
            index = next((i for i, m in enumerate(config.models) if m.name == model.name), 0)
            ensure_pretrained_weights(timm_name(model.name), f"models[{index}] ({model.label})")
    finally:
        for logger, level in zip(noisy, levels, strict=True):
            logger.setLevel(level)


def check_fingerprint(data: OCTData, expected: str) -> None:
    """Refuse data whose content changed between computing the run ids and loading it."""
    if expected and data.fingerprint != expected:
        raise DataError(
            f"the {data.name} data changed while octbench was reading it (fingerprint "
            f"{expected} when the run ids were made, {data.fingerprint} when loaded); rerun "
            "once the file or folder is no longer being written.")


def check_buildable(pending: list[RunSpec], data: OCTData) -> None:
    """Build every strategy (with the data's class counts) and model (shapes only) of the
    pending runs once, so a parameter that only the data can judge (focal's ``alpha`` per
    class, a model's size) fails here, before training, instead of as one FAILED run per seed.

    Raises:
        ConfigError: every problem found, by grid entry.
    """
    counts = data.train.class_counts(data.num_classes)
    problems = []
    cosine = set()  # strategies whose loss needs a cosine classifier head (LDAM)
    for strategy in {spec.strategy.label: spec.strategy for spec in pending}.values():
        try:
            if build_strategy(strategy.name, counts, **strategy.params).cosine_head:
                cosine.add(strategy.label)
        except (OctbenchError, TypeError, ValueError) as error:
            problems.append(f"strategy {strategy.label}: {error}")
    for model in {spec.model.label: spec.model for spec in pending}.values():
        try:
            with torch.device("meta"), warnings.catch_warnings():  # sizes are checked only
                warnings.simplefilter("ignore")  # "zero-element tensors": data too small
                built = build_model(model.name, num_classes=data.num_classes, in_chans=1,
                                    img_size=data.size,  # a weights file is matched below
                                    **{k: v for k, v in model.params.items() if k != "pretrained"})
                if any(s.model == model and s.strategy.label in cosine for s in pending):
                    use_cosine_head(built)
            problem = weights_fit_problem(model.name, model.params, built)
            if problem is None and not _runs_at(built, data.size):
                problem = _too_small(model, data)
        except (OctbenchError, TypeError, ValueError) as error:
            problem = str(error)
        except Exception:  # noqa: BLE001 - a layer that cannot live on "meta": the run will tell
            continue
        if problem:
            problems.append(f"model {model.label}: {problem}")
    if problems:
        raise ConfigError(problems, None)


#: Sizes tried, on the meta device, to name the smallest input a model takes.
MIN_SIZE_PROBES = (2, 4, 8, 16, 28, 32, 64, 128, 224)


def _runs_at(net: torch.nn.Module, size: int) -> bool:
    """Whether a model built on the meta device runs a batch of ``size`` px images: shapes are
    checked without memory or weights (a 1-pixel image must fail here, before training, not
    inside the first epoch)."""
    with torch.device("meta"), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "zero-element tensors": a layer of a too-small size
        try:
            net.eval()(torch.empty(2, 1, size, size))
        except RuntimeError:
            return False
    return True


def _too_small(model: Component, data: OCTData) -> str:
    """Why ``model`` cannot take the data's images, naming the smallest size it takes."""
    def fits(size: int) -> bool:
        try:
            with torch.device("meta"), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                net = build_model(model.name, num_classes=data.num_classes, in_chans=1,
                                  img_size=size, **{k: v for k, v in model.params.items()
                                                    if k != "pretrained"})
            return _runs_at(net, size)
        except Exception:  # noqa: BLE001 - a size the model cannot even be built for
            return False

    smallest = next((size for size in MIN_SIZE_PROBES if size > data.size and fits(size)), None)
    need = (f"it needs images of at least {smallest} px" if smallest else
            f"it takes none up to {MIN_SIZE_PROBES[-1]} px")
    return (f"cannot take the data's {data.size} px images: {need}. Use larger images "
            "(e.g. data.size), or a model made for small inputs.")


def execute_run(spec: RunSpec, data: OCTData, store: ResultsStore, *, quiet: bool = True,
                on_epoch: EpochCallback | None = None, evaluate_test: bool = True,
                kind: str = "run", progress: RunProgress | None = None) -> RunRecord:
    """Run one spec and write its record; failures become FAILED records, not exceptions.

    KeyboardInterrupt (Ctrl-C, or SIGTERM turned into it by the CLI) writes an INTERRUPTED
    record and propagates; the epoch checkpoint stays so the next call resumes from it.
    Exceptions raised by ``on_epoch`` (e.g. ``optuna.TrialPruned``) propagate as well.
    """
    finish = RecordWriter(spec, data, store, kind=kind)
    try:
        device = resolve_device(spec.device)
        check_precision(device, spec.train.precision)
    except DeviceUnavailable as reason:
        return finish(SKIPPED, str(reason))
    if spec.train.threads:  # before describing the hardware, which records the thread count
        torch.set_num_threads(spec.train.threads)
    finish.base["hardware"] = describe(device)
    try:
        if progress is None:
            progress = single_run(spec.train.epochs, quiet=quiet)
        return _train(spec, data, store, device, finish, progress=progress, on_epoch=on_epoch,
                      evaluate_test=evaluate_test)
    except KeyboardInterrupt:
        # An interrupt that lands after the COMPLETE record was written must not replace it.
        if not store.is_complete(spec.run_id):
            finish(INTERRUPTED, INTERRUPTED_MESSAGE)
        raise
    except (StorageError, UnsafePath):
        # A full or unwritable disk: no record can be written, so stop the grid. A link that
        # leaves the run's folder (e.g. resume.pt): refused, and never written through.
        raise
    except Exception as error:
        if on_epoch is not None and type(error).__module__.startswith("optuna"):
            raise
        if store.is_complete(spec.run_id):  # failed only in the cleanup after the record
            log.warning("run %s: cleanup after completion failed: %s", spec.run_id, error)
            return store.read(spec.run_id)
        log.debug("run %s failed", spec.run_id, exc_info=True)
        # The record keeps the error's last line; the whole traceback goes beside it.
        store.save_bytes(spec.run_id, ResultsStore.TRACEBACK, traceback.format_exc().encode())
        return finish(FAILED, failure_detail(error))


def failure_detail(error: BaseException) -> str:
    """The error line a FAILED record keeps."""
    return "".join(traceback.format_exception_only(type(error), error)).strip()


class RecordWriter:
    """``finish(status, error=None, **fields)`` writes ``spec``'s record and returns it;
    ``finish.base`` holds the fields every record of the run shares."""

    def __init__(self, spec: RunSpec, data: OCTData, store: ResultsStore, *, kind: str = "run"):
        self.base = record_fields(spec, dataset=data.describe(), kind=kind)
        self.store = store

    def __call__(self, status: str, error: str | None = None, **fields) -> RunRecord:
        record = RunRecord(status=status, error=error, created_utc=_utc_now(), **self.base,
                           **fields)
        self.store.write(record)
        if status != FAILED:  # an earlier attempt's traceback no longer describes this run
            self.store.remove(record.run_id, ResultsStore.TRACEBACK)
        return record


def record_fields(spec: RunSpec, *, dataset: dict, kind: str = "run") -> dict:
    """The fields every record of ``spec`` carries, whatever its status."""
    return dict(run_id=spec.run_id, experiment=spec.experiment, model=spec.model.label,
                strategy=spec.strategy.label, seed=spec.seed, device=spec.device,
                precision=spec.train.precision, config=spec.config(), dataset=dataset,
                versions=versions(), git_commit=git_commit(), kind=kind, sweep=dict(spec.sweep))


def stopped_record(spec: RunSpec, status: str, error: str, *, dataset: dict) -> RunRecord:
    """The record of a run that ended without training to the end (interrupted, failed)."""
    return RunRecord(status=status, error=error, created_utc=_utc_now(),
                     **record_fields(spec, dataset=dataset))


INTERRUPTED_MESSAGE = "interrupted (Ctrl-C or SIGTERM); rerun to resume from the last epoch"


@dataclass
class RunSetup:
    """One run's training pieces, built (and resumed) by :func:`setup_run`; the sequential loop
    here and the stacked one (:mod:`octbench.stacked_runs`) both train from it."""

    spec: RunSpec
    model: torch.nn.Module
    normalize: tuple[float, float]
    model_init: dict
    frozen: list
    strategy: object
    criterion: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: object
    scaler: torch.amp.GradScaler | None
    order_rng: torch.Generator
    augmenter: object
    state: dict


def setup_run(spec: RunSpec, data: OCTData, store: ResultsStore,
              device: torch.device) -> RunSetup:
    """Seed, build the model, strategy and optimiser of ``spec``, and resume its epoch
    checkpoint when there is one (restoring the random states too)."""
    cfg = spec.train
    check_fingerprint(data, spec.data_fingerprint)  # e.g. another file on a Ray node
    seed_everything(spec.seed, deterministic=cfg.deterministic)
    class_counts = data.train.class_counts(data.num_classes)
    model = build_model(spec.model.name, num_classes=data.num_classes, in_chans=1,
                        img_size=data.size, **spec.model.params)
    strategy = build_strategy(spec.strategy.name, class_counts, **spec.strategy.params)
    if strategy.cosine_head:
        use_cosine_head(model)
    normalize = input_normalization(spec.model.name, spec.model.params)
    model_init = {**describe_weights(spec.model.name, spec.model.params, model),
                  "normalization": {"mean": normalize[0], "std": normalize[1]}, "mode": cfg.mode}
    frozen = freeze_all_but_head(model) if cfg.mode == "linear_probe" else []
    model = model.to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    criterion = strategy.criterion.to(device)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = make_optimizer(trainable, cfg.optimizer, lr=cfg.lr,
                               weight_decay=cfg.weight_decay, momentum=cfg.momentum,
                               fused=True if device.type == "cuda" else None,
                               capturable=device.type == "cuda")
    scheduler = make_scheduler(optimizer, cfg.schedule, epochs=cfg.epochs,
                               step_every=cfg.step_every, step_gamma=cfg.step_gamma)
    scaler = torch.amp.GradScaler(device.type) if cfg.precision == "fp16" else None
    order_rng = torch.Generator().manual_seed(spec.seed)
    augmenter = build_augmenter(cfg.augment, seed=spec.seed, device=device)
    state = {"epoch": 0, "history": [], "best": None, "best_epoch": None, "best_value": None,
             "stale": 0}
    run = RunSetup(spec, model, normalize, model_init, frozen, strategy, criterion, optimizer,
                   scheduler, scaler, order_rng, augmenter, state)

    resume = store.load_state(spec.run_id, ResultsStore.RESUME)
    problem = _resume_problem(resume, cfg.epochs) if resume is not None else None
    if problem is not None:
        # Checked before anything is applied, so the model is still a clean start.
        log.warning("%s is inconsistent (%s); it is discarded and the run starts from scratch",
                    store.run_dir(spec.run_id) / ResultsStore.RESUME, problem)
        store.remove(spec.run_id, ResultsStore.RESUME)
        resume = None
    if resume is not None:
        try:
            model.load_state_dict(resume["model"])
            optimizer.load_state_dict(resume["optimizer"])
            if scheduler is not None:
                scheduler.load_state_dict(resume["scheduler"])
            if scaler is not None:
                scaler.load_state_dict(resume["scaler"])
            order_rng.set_state(resume["order_rng"])
            if augmenter is not None:
                augmenter.load_state_dict(resume["augment_rng"])
            set_rng_state(resume["rng"])
            run.state = resume["state"]
            epoch = int(run.state["epoch"])
        except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as error:
            # Half-applied, the model is no longer a clean start: drop the file and fail this
            # attempt; the rerun trains from scratch.
            store.remove(spec.run_id, ResultsStore.RESUME)
            raise OctbenchError(
                f"{store.run_dir(spec.run_id) / ResultsStore.RESUME} does not fit this run "
                f"({type(error).__name__}: {error}); it was removed, rerun to train this run "
                "from scratch") from None
        log.info("resuming %s after epoch %d", spec.run_id, epoch)
    return run


def epoch_order(run: RunSetup, train_labels: torch.Tensor) -> torch.Tensor:
    """Start the run's next epoch (the strategy's hook) and draw its training order."""
    epoch, epochs = run.state["epoch"], run.spec.train.epochs
    if run.strategy.on_epoch_start is not None:
        run.strategy.on_epoch_start(epoch, epochs)
    if run.strategy.sampler is not None:
        return run.strategy.sampler(train_labels, run.order_rng)
    return torch.randperm(len(train_labels), generator=run.order_rng)


def end_epoch(run: RunSetup, store: ResultsStore, data: OCTData, *, stats: dict, lr: float,
              val_pred: Predictions, val_seconds: float, progress: RunProgress,
              on_epoch: EpochCallback | None, rng: dict) -> None:
    """Record a trained epoch: history, best weights, early stopping, the epoch checkpoint.

    ``rng`` is the random state saved for the resume (the global one for a run alone).
    """
    cfg, state, model = run.spec.train, run.state, run.model
    epoch = state["epoch"]
    val_metrics = compute_metrics(val_pred.labels, val_pred.scores, data.class_names)
    value = val_metrics[cfg.select_on]
    state["history"].append({
        "epoch": epoch + 1, "train_loss": stats["loss"], "lr": lr,
        "train_seconds": stats["seconds"], "train_images": stats["images"],
        "val_seconds": val_seconds,
        **{f"val_{k}": v for k, v in val_metrics.items() if k in METRICS},
        # when the epoch ended: tracking tools plot curves against real time
        "time_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds"),
    })
    direction = METRICS[cfg.select_on]
    improved = state["best_value"] is None or (
        value > state["best_value"] if direction == "max" else value < state["best_value"])
    if improved:
        state.update(best=copy.deepcopy(model.state_dict()), best_epoch=epoch + 1,
                     best_value=value, stale=0,
                     # tensors, not a Predictions object: a resume state loads weights-only
                     best_val=({"scores": torch.from_numpy(val_pred.scores),
                                "labels": torch.from_numpy(val_pred.labels)},
                               val_metrics))
    else:
        state["stale"] += 1
    state["epoch"] = epoch + 1
    if on_epoch is not None:
        on_epoch(epoch, val_metrics)
    stop = cfg.patience is not None and state["stale"] >= cfg.patience
    progress.epoch_done(epoch, cfg.epochs, images=stats["images"],
                        train_seconds=stats["seconds"], loss=stats["loss"],
                        metric=cfg.select_on, value=value,
                        stopping=stop and state["epoch"] < cfg.epochs,
                        entry=state["history"][-1])
    if stop:
        state["epoch"] = cfg.epochs
    scheduler, scaler, augmenter = run.scheduler, run.scaler, run.augmenter
    store.save_state(run.spec.run_id, ResultsStore.RESUME, {
        "model": model.state_dict(), "optimizer": run.optimizer.state_dict(),
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "scaler": scaler.state_dict() if scaler is not None else None,
        "order_rng": run.order_rng.get_state(), "rng": rng, "state": state,
        "augment_rng": augmenter.state_dict() if augmenter is not None else None,
    })


def _train(spec: RunSpec, data: OCTData, store: ResultsStore, device: torch.device, finish, *,
           progress: RunProgress, on_epoch: EpochCallback | None,
           evaluate_test: bool) -> RunRecord:
    cfg = spec.train
    run = setup_run(spec, data, store, device)
    # Static shapes: the last, smaller batch gets its own graph instead of a dynamic recompile.
    step_model = torch.compile(run.model, dynamic=False) if cfg.compile else run.model
    train, val, _ = (on_device(data, s, device) for s in ("train", "val", "test"))
    eval_batch = cfg.eval_batch_size or default_eval_batch(device)
    while run.state["epoch"] < cfg.epochs:
        order = epoch_order(run, data.train.labels)
        with progress.epoch(run.state["epoch"], cfg.epochs, len(order)) as bar:
            stats = train_one_epoch(step_model, *train, order, criterion=run.criterion,
                                    optimizer=run.optimizer, batch_size=cfg.batch_size,
                                    precision=cfg.precision, scaler=run.scaler,
                                    channels_last=cfg.channels_last, normalize=run.normalize,
                                    eval_modules=run.frozen, augment=run.augmenter,
                                    progress=bar)
        lr = run.optimizer.param_groups[0]["lr"]
        if run.scheduler is not None:
            run.scheduler.step()
        val_pred, val_seconds = evaluate(run.model, *val, batch_size=eval_batch,
                                         precision=cfg.precision,
                                         logit_offset=run.strategy.logit_offset,
                                         channels_last=cfg.channels_last,
                                         normalize=run.normalize)
        end_epoch(run, store, data, stats=stats, lr=lr, val_pred=val_pred,
                  val_seconds=val_seconds, progress=progress, on_epoch=on_epoch,
                  rng=get_rng_state())
    return complete_run(run, data, store, device, finish, evaluate_test=evaluate_test)


def complete_run(run: RunSetup, data: OCTData, store: ResultsStore, device: torch.device,
                 finish, *, evaluate_test: bool, timing: dict | None = None) -> RunRecord:
    """The end of a trained run: best weights, test evaluation, predictions, checkpoint and
    record (``timing`` adds entries to the record's timing)."""
    spec, state, model, cfg = run.spec, run.state, run.model, run.spec.train
    model.load_state_dict(state["best"])
    best_val, val_metrics = state["best_val"]
    val_pred = Predictions(scores=best_val["scores"].numpy(), labels=best_val["labels"].numpy())
    arrays = {"val_scores": val_pred.scores.astype(np.float32), "val_labels": val_pred.labels}
    metrics = {"val": val_metrics}
    eval_seconds = sum(h["val_seconds"] for h in state["history"])
    eval_images = len(val_pred.labels) * len(state["history"])
    eval_batch = cfg.eval_batch_size or default_eval_batch(device)
    if evaluate_test:
        test = on_device(data, "test", device)
        test_pred, test_seconds = evaluate(model, *test, batch_size=eval_batch,
                                           precision=cfg.precision,
                                           logit_offset=run.strategy.logit_offset,
                                           channels_last=cfg.channels_last,
                                           normalize=run.normalize)
        metrics["test"] = compute_metrics(test_pred.labels, test_pred.scores, data.class_names)
        arrays.update(test_scores=test_pred.scores.astype(np.float32),
                      test_labels=test_pred.labels)
        if data.test.groups is not None:  # e.g. patients: the report resamples them whole
            arrays["test_groups"] = data.test.groups
        eval_seconds += test_seconds
        eval_images += len(test_pred.labels)
    robustness = {}
    if evaluate_test and spec.corruptions is not None:
        # Each scored cell is saved at once: an interrupted run resumes here (its last epoch is
        # checkpointed) and scores only the cells left.
        robustness = evaluate_corruptions(
            model, data, spec.corruptions, clean=metrics["test"], data_params=spec.data.params,
            normalize=run.normalize, logit_offset=run.strategy.logit_offset, device=device,
            batch_size=eval_batch, precision=cfg.precision, channels_last=cfg.channels_last,
            store=store, run_id=spec.run_id)
        robustness["timing"]["clean_eval_seconds"] = test_seconds
    store.save_predictions(spec.run_id, **arrays)
    # Temperature scaling on validation only (Guo et al. 2017): the test split stays unseen.
    temperature = fit_temperature(val_pred.scores, val_pred.labels)
    calibration = {"temperature": temperature, "fitted_on": "val", **{
        f"val_{k}": v for k, v in
        calibration_summary(val_pred.scores, val_pred.labels, temperature).items()}}
    store.save_state(spec.run_id, ResultsStore.BEST, {
        "temperature": temperature,
        "model": state["best"], "model_config": spec.config()["model"],
        "class_names": list(data.class_names), "img_size": data.size,
        "logit_offset": run.strategy.logit_offset, "epoch": state["best_epoch"],
        "cosine_head": run.strategy.cosine_head,
        "normalization": list(run.normalize),
        "provenance": provenance(data, run.normalize),
        # How evaluation fed the model, so evaluate / predict rebuild its inputs bit for bit.
        "inputs": {"normalization": list(run.normalize), "in_chans": 1,
                   "img_size": int(data.size), "channels_last": bool(cfg.channels_last),
                   "precision": cfg.precision, "eval_batch_size": int(eval_batch)},
    })
    history = state["history"]
    train_seconds = sum(h["train_seconds"] for h in history)
    train_images = sum(h["train_images"] for h in history)
    record = finish(
        COMPLETE, metrics=metrics, best_epoch=state["best_epoch"], epochs_trained=len(history),
        history=history, parameters=count_parameters(model), model_init=run.model_init,
        calibration=calibration,
        timing={
            "train_seconds": train_seconds,
            "seconds_per_epoch": train_seconds / len(history),
            "train_images_per_s": train_images / train_seconds if train_seconds else None,
            "eval_images_per_s": eval_images / eval_seconds if eval_seconds else None,
            **(timing or {}),
        },
        **({"robustness": robustness} if robustness else {}),
    )
    store.remove(spec.run_id, ResultsStore.RESUME)
    store.remove(spec.run_id, PARTIAL)
    return record


def _resume_problem(resume: dict, epochs: int) -> str | None:
    """What makes a resume state unusable for a run of ``epochs`` epochs, or None.

    A state comes from a file (a copied results folder, a crafted one): one that claims
    trained epochs must also hold their history and the best model so far, or finishing the
    run would fail every time it is rerun.
    """
    missing = [k for k in ("model", "optimizer", "order_rng", "rng", "state") if k not in resume]
    if missing:
        return f"it lacks {', '.join(missing)}"
    state = resume["state"]
    if not isinstance(state, dict):
        return "its training state is not a mapping"
    epoch, history = state.get("epoch"), state.get("history")
    if isinstance(epoch, bool) or not isinstance(epoch, int) or not 0 <= epoch <= epochs:
        return f"its epoch {epoch!r} is not a whole number from 0 to {epochs}"
    if not isinstance(history, list) or len(history) > epoch or (epoch and not history):
        return f"its history does not match its epoch {epoch}"
    if epoch == 0:
        return None
    best_epoch, best_val = state.get("best_epoch"), state.get("best_val")
    if not isinstance(state.get("best"), dict) or not (
            isinstance(best_epoch, int) and 1 <= best_epoch <= len(history)):
        return f"it claims {epoch} trained epoch(s) but holds no best model"
    if not (isinstance(best_val, (tuple, list)) and len(best_val) == 2
            and isinstance(best_val[0], dict) and {"scores", "labels"} <= best_val[0].keys()):
        return "its best model's validation predictions are missing"
    for key in ("stale", "best_value"):
        if key not in state:
            return f"its training state lacks {key}"
    return None


def provenance(data: OCTData, normalize: tuple[float, float]) -> dict:
    """What a checkpoint must say about the data it learned from and how its pixels were fed to
    the model (plain types only, so that ``torch.load(weights_only=True)`` reads it)."""
    return {
        "dataset": data.name,
        "fingerprint": data.fingerprint,
        "synthetic": bool(data.synthetic),
        "class_names": list(data.class_names),
        "img_size": int(data.size),
        "normalisation": {"scale": 1 / 255, "mean": normalize[0], "std": normalize[1]},
        "source": {k: v for k, v in data.source.items() if isinstance(v, str | int | float)},
    }


def on_device(data: OCTData, split: str, device: torch.device):
    """The split's (images, labels) on ``device``."""
    # Cached so a grid moves each split to a GPU once, not once per run.
    # The entry keeps its dataset, so a new dataset that reuses a freed one's id is not mistaken
    # for it (a sweep over data settings loads one after another).
    key = (id(data), split, str(device))
    if key not in _DEVICE_CACHE or _DEVICE_CACHE[key][0] is not data:
        part = data.split(split)
        _DEVICE_CACHE.clear() if len(_DEVICE_CACHE) > 6 else None
        _DEVICE_CACHE[key] = (data, part.images.to(device), part.labels.to(device))
    return _DEVICE_CACHE[key][1:]


_DEVICE_CACHE: dict = {}


def get_rng_state() -> dict:
    """The global random states (torch, NumPy, Python, CUDA, MPS) as a resume saves them."""
    # Only tensors, numbers and tuples, so that resume.pt loads with weights_only=True.
    bit_generator, key, pos, has_gauss, cached_gaussian = np.random.get_state()
    state = {"torch": torch.get_rng_state(),
             "numpy": {"bit_generator": bit_generator,
                       "key": torch.from_numpy(key.astype(np.int64)),
                       "pos": int(pos), "has_gauss": int(has_gauss),
                       "cached_gaussian": float(cached_gaussian)},
             "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    if torch.backends.mps.is_available():  # dropout on MPS draws from the MPS generator
        state["mps"] = torch.mps.get_rng_state()
    return state


def set_rng_state(state: dict) -> None:
    """Restore what :func:`get_rng_state` returned."""
    torch.set_rng_state(state["torch"])
    numpy_state = state["numpy"]
    np.random.set_state((numpy_state["bit_generator"], numpy_state["key"].numpy().astype(np.uint32),
                         numpy_state["pos"], numpy_state["has_gauss"],
                         numpy_state["cached_gaussian"]))
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if "mps" in state and torch.backends.mps.is_available():
        torch.mps.set_rng_state(state["mps"])


def _utc_now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


@functools.cache
def versions() -> dict:
    """Versions of Python and the libraries that decide a run's numbers."""
    import importlib.metadata as md

    found = {"python": platform.python_version()}
    for package in ("octbench", "torch", "torchvision", "timm", "numpy", "scikit-learn"):
        try:
            found[package] = md.version(package)
        except md.PackageNotFoundError:
            found[package] = None
    return found


@functools.cache
def git_commit() -> str | None:
    """The octbench source commit (with ``-dirty`` for local changes), when it is a checkout."""
    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"],
                                capture_output=True, text=True, timeout=5)
        if commit.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--", "."],
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return commit.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None
