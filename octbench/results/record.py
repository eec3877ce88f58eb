"""Run records: one immutable :class:`RunRecord` per run, its schema and the one check of it.

A record is plain data written once as JSON (``record.json``); :func:`read_record` reads one back
from a file that may come from a stranger, checking every field's type, range and size before
anything uses it.

Must not import: config, the runner, engine, report or tuning: a record is plain data.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from octbench.fileio import is_plain_name
from octbench.registry import SEED_RANGE
from octbench.untrusted import MAX_CLASSES, read_json

#: 2: the data's content fingerprint is in ``dataset`` and ``config.data`` (and so in the run id).
#: Version-1 records stay readable; their data fingerprint is unknown.
SCHEMA_VERSION = 2
COMPLETE, FAILED, SKIPPED, INTERRUPTED = "complete", "failed", "skipped", "interrupted"
STATUSES = (COMPLETE, FAILED, SKIPPED, INTERRUPTED)


@dataclass(frozen=True)
class RunRecord:
    """Everything known about one run: what was asked, what happened, where and when."""

    run_id: str
    experiment: str
    status: str
    model: str
    strategy: str
    seed: int
    device: str
    precision: str = "fp32"
    config: dict = field(default_factory=dict)
    dataset: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    best_epoch: int | None = None
    epochs_trained: int = 0
    history: list = field(default_factory=list)
    timing: dict = field(default_factory=dict)
    hardware: dict = field(default_factory=dict)
    versions: dict = field(default_factory=dict)
    parameters: int | None = None
    #: where the weights came from (random, timm's, a file + digests), input normalisation, mode
    model_init: dict = field(default_factory=dict)
    #: the values of the experiment's ``sweep:`` this run was made with ({} without a sweep)
    sweep: dict = field(default_factory=dict)
    #: temperature scaling fitted on validation: ``temperature``, ``fitted_on`` and validation
    #: NLL / ECE before and after ({} for runs made before it existed)
    calibration: dict = field(default_factory=dict)
    git_commit: str | None = None
    created_utc: str = ""
    error: str | None = None
    kind: str = "run"  # "run", or "trial" for tuning trials
    #: corrupted evaluation (MedMNIST-C), versioned on its own (its ``version``); {} if none
    robustness: dict = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    @property
    def synthetic(self) -> bool:
        return bool(self.dataset.get("synthetic", False))

    def to_json(self) -> str:
        """Strict JSON: NaN (e.g. an undefined AUC) is written as null, which any reader takes."""
        return json.dumps(nan_to_none(dataclasses.asdict(self)), indent=2, sort_keys=True,
                          allow_nan=False)

    @classmethod
    def from_dict(cls, data: dict) -> RunRecord:
        """Read a record of this or an older schema; unknown fields are ignored.

        Raises:
            ValueError: for a newer schema, missing required fields or wrongly typed ones; the
                message says which (readers such as the report skip the record with a warning).
        """
        if not isinstance(data, dict):
            raise ValueError(f"a run record must be a JSON object, not {type(data).__name__}")
        version = data.get("schema_version", 0)
        if not isinstance(version, int) or version > SCHEMA_VERSION:
            raise ValueError(
                f"schema_version {version!r} is newer than this octbench reads "
                f"({SCHEMA_VERSION}); upgrade octbench to read it"
            )
        names = {f.name for f in dataclasses.fields(cls)}
        missing = {"run_id", "experiment", "status", "model", "strategy", "seed", "device"}
        missing -= data.keys()
        if missing:
            raise ValueError(f"missing fields {', '.join(sorted(missing))}")
        for f in dataclasses.fields(cls):
            if f.default_factory in (dict, list) and not isinstance(
                    data.get(f.name, f.default_factory()), f.default_factory):
                raise ValueError(f"field '{f.name}' must be a JSON "
                                 f"{'object' if f.default_factory is dict else 'array'}, "
                                 f"got {data[f.name]!r}")
        if not is_plain_name(data["run_id"]):  # it names the run's folder
            raise ValueError(f"field 'run_id' must be a plain folder name, got {data['run_id']!r}")
        problem = _field_problem(data)
        if problem is not None:
            raise ValueError(problem)
        known = {k: v for k, v in data.items() if k in names}
        return cls(**{**known, "schema_version": version})


#: Longer histories than this are not records octbench wrote (train.epochs <= 10,000).
MAX_HISTORY = 10_000
_TEXT_FIELDS = ("run_id", "experiment", "status", "model", "strategy", "device", "precision",
                "kind", "created_utc")
_COUNT_FIELDS = ("best_epoch", "epochs_trained", "parameters")


def _shown(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _is_number(value) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value))


def _numbers_problem(value, where: str) -> str | None:
    """The first leaf below ``value`` that is neither a finite number nor null, described."""
    stack = [(value, where)]
    while stack:
        node, path = stack.pop()
        if isinstance(node, dict):
            stack.extend((v, f"{path}.{k}") for k, v in node.items())
        elif isinstance(node, list):
            stack.extend((v, f"{path}[{i}]") for i, v in enumerate(node))
        elif node is not None and not _is_number(node):
            return f"field '{path}' must be a finite number or null, got {_shown(node)}"
    return None


def _field_problem(data: dict) -> str | None:
    """What makes a record's fields unusable (type, range, size), or None: the one schema check
    every reader of records relies on (report, export, dry-run estimate, tuning)."""
    for name in _TEXT_FIELDS:
        if name in data and not isinstance(data[name], str):
            return f"field '{name}' must be a string, got {_shown(data[name])}"
    for name in ("error", "git_commit"):
        if data.get(name) is not None and not isinstance(data[name], str):
            return f"field '{name}' must be a string or null, got {_shown(data[name])}"
    if data["status"] not in STATUSES:
        return f"field 'status' must be one of {', '.join(STATUSES)}, got {_shown(data['status'])}"
    seed = data["seed"]
    if isinstance(seed, bool) or not isinstance(seed, int) or seed not in SEED_RANGE:
        return f"field 'seed' must be an integer {SEED_RANGE}, got {_shown(seed)}"
    for name in _COUNT_FIELDS:
        value = data.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                  or value < 0):
            return f"field '{name}' must be an integer >= 0 or null, got {_shown(value)}"
    for split, values in data.get("metrics", {}).items():  # {split: {metric: value}}
        problem = _split_metrics_problem(values, f"metrics.{split}")
        if problem:
            return problem
    problem = _numbers_problem(data.get("timing", {}), "timing")
    if problem:
        return problem
    history = data.get("history", [])
    if len(history) > MAX_HISTORY:
        return f"field 'history' has {len(history):,} epochs, more than {MAX_HISTORY:,}"
    for index, entry in enumerate(history):
        if not isinstance(entry, dict):
            return f"field 'history[{index}]' must be a JSON object, got {_shown(entry)}"
        stamp = entry.get("time_utc")  # when the epoch ended (ISO 8601), else all numbers
        if stamp is not None and not (isinstance(stamp, str) and len(stamp) <= 40):
            return (f"field 'history[{index}].time_utc' must be an ISO time string, got "
                    f"{_shown(stamp)}")
        problem = _numbers_problem({k: v for k, v in entry.items() if k != "time_utc"},
                                   f"history[{index}]")
        if problem:
            return problem
    return _dataset_problem(data.get("dataset", {}))


#: Structured entries of a split's metrics (see octbench.metrics.compute_metrics): their JSON
#: type; every other entry is a number or null.
_STRUCTURED_METRICS = {"per_class": dict, "confusion": list, "absent_classes": list}


def _split_metrics_problem(values, where: str) -> str | None:
    if not isinstance(values, dict):
        return f"field '{where}' must be a JSON object, got {_shown(values)}"
    for key, value in values.items():
        kind = _STRUCTURED_METRICS.get(key)
        if kind is None:
            if value is not None and not _is_number(value):
                return (f"field '{where}.{key}' must be a finite number or null, got "
                        f"{_shown(value)}")
        elif not isinstance(value, kind):
            return f"field '{where}.{key}' must be a JSON {kind.__name__}, got {_shown(value)}"
        elif key == "absent_classes":
            if not all(isinstance(name, str) for name in value):
                return f"field '{where}.{key}' must list class names, got {_shown(value)}"
        elif key == "per_class" and not all(isinstance(v, dict) for v in value.values()):
            name, bad = next((n, v) for n, v in value.items() if not isinstance(v, dict))
            return (f"field '{where}.{key}.{name}' must be a JSON object of the class's "
                    f"metrics, got {_shown(bad)}")
        else:
            problem = _numbers_problem(value, f"{where}.{key}")
            if problem:
                return problem
    return None


def _dataset_problem(dataset: dict) -> str | None:
    names = dataset.get("class_names")
    if names is not None:
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            return f"field 'dataset.class_names' must be a list of strings, got {_shown(names)}"
        if not 2 <= len(names) <= MAX_CLASSES:
            return (f"field 'dataset.class_names' must name 2 to {MAX_CLASSES} classes, got "
                    f"{len(names):,}")
    counts = dataset.get("class_counts", {})
    if not isinstance(counts, dict):
        return f"field 'dataset.class_counts' must be a JSON object, got {_shown(counts)}"
    for split, per_class in counts.items():
        if not (isinstance(per_class, list) and all(
                isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in per_class)
                and (names is None or len(per_class) == len(names))):
            return (f"field 'dataset.class_counts.{split}' must list one count >= 0 per class, "
                    f"got {_shown(per_class)}")
    for name in ("fingerprint", "name"):
        if dataset.get(name) is not None and not isinstance(dataset[name], str):
            return f"field 'dataset.{name}' must be a string, got {_shown(dataset[name])}"
    size = dataset.get("size")
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
        return f"field 'dataset.size' must be an integer >= 1, got {_shown(size)}"
    return None


def read_record(path: str | Path) -> RunRecord:
    """Read and check a ``record.json`` (bounded JSON, then :meth:`RunRecord.from_dict`).

    Raises:
        ValueError: the file is not a usable record; the message says which field and why.
        OSError: the file cannot be read.
    """
    return RunRecord.from_dict(read_json(path))



def nan_to_none(value):
    """``value`` with every NaN float, however deeply nested, replaced by None (JSON null)."""
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, dict):
        return {k: nan_to_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [nan_to_none(v) for v in value]
    return value
