"""The grid of an experiment: one :class:`RunSpec` per run, its run id, ``--shard`` slices.

Plain data and pure functions: importing this module does not import torch, so the report (which
finds a grid's records by their run ids) and the dry run use it without paying for torch. Only
expanding a grid loads the dataset registry (each run id holds its data's content fingerprint),
and only a record without a thread count asks torch for the local default.

Must not import at module level: torch, the data, models or strategies (all import torch), or
anything that trains.
"""

from __future__ import annotations

import functools
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from octbench.config import (
    Component,
    EvaluateConfig,
    ExperimentConfig,
    TrainConfig,
    config_hash,
    swept_values,
)
from octbench.dotted import values_label
from octbench.errors import OctbenchError

if TYPE_CHECKING:
    from octbench.results import RunRecord


@dataclass(frozen=True)
class CorruptionPlan:
    """Which corrupted sets to score: corruptions x severities, generated with ``seed``
    (:func:`octbench.corrupted_eval.evaluate_corruptions` scores them)."""

    corruptions: tuple[str, ...]
    severities: tuple[int, ...]
    seed: int = 0

    def cells(self) -> list[tuple[str, int]]:
        return [(name, severity) for name in self.corruptions for severity in self.severities]


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
    import torch  # only here: the grid itself is plain data

    return torch.get_num_threads()


def configured_grid(config: ExperimentConfig) -> list[RunSpec]:
    """The grid as configured: :func:`expand_grid` without a thread count filled in."""
    # The dataset registry imports torch (its datasets): only expanding a grid pays for it.
    from octbench.data import data_fingerprint

    fingerprints: dict[str, str] = {}

    def fingerprint_of(data: Component) -> str:
        key = data_key(data)
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


def run_numbers(specs: list[RunSpec]) -> dict[str, int]:
    """Each run's number in the progress lines (``[3/12]``): its place in ``specs``, from 1."""
    return {spec.run_id: number for number, spec in enumerate(specs, 1)}


def data_key(data: Component) -> str:
    """What tells two dataset settings apart (runs on equal settings share one load)."""
    return json.dumps(data.to_yaml(), sort_keys=True, default=str)


def distinct_data(config: ExperimentConfig) -> list[Component]:
    """The dataset settings of an experiment: one, or one per data setting of its sweep."""
    settings = {data_key(cell.data): cell.data for _, cell in config.variants()}
    return list(settings.values())


def by_data(specs: list[RunSpec]) -> list[tuple[Component, list[RunSpec]]]:
    """The specs grouped by their dataset setting, in order of first appearance."""
    groups: dict[str, tuple[Component, list[RunSpec]]] = {}
    for spec in specs:
        groups.setdefault(data_key(spec.data), (spec.data, []))[1].append(spec)
    return list(groups.values())

