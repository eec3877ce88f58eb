"""Run records and the results store.

One immutable :class:`RunRecord` per run, written once as JSON (atomically) beside its
artifacts::

    results/<experiment>/<run_id>/record.json       metrics, curves, timing, provenance
    results/<experiment>/<run_id>/predictions.npz   test (and val) scores and labels
    results/<experiment>/<run_id>/robustness_predictions.npz   corrupted test sets' predictions
    results/<experiment>/<run_id>/best.pt           the selected checkpoint
    results/<experiment>/<run_id>/resume.pt         last-epoch state, only while incomplete

A run is COMPLETE only when its record says so and its artifacts are there; the record is written
last, and every file is written atomically (temp file, fsync, rename), so a crash or kill -9
leaves the old version or the new one, never half of one. Folders from several machines can be
copied into one results folder: run ids never collide across devices.

Must not import: config, the runner, engine, report or tuning: a record is plain data (torch only
inside checkpoint functions).
"""

from __future__ import annotations

import dataclasses
import errno
import io
import json
import logging
import math
import os

# Only for the exception class torch raises when it refuses a file that needs pickle (a
# weights-only load): octbench never unpickles anything.
import pickle
import shutil
import socket
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import numpy as np
from filelock import FileLock, Timeout

from octbench.errors import OctbenchError
from octbench.fileio import (
    atomic_write,
    atomic_write_text,
    confined,
    is_plain_name,
    pid_alive,
    remove_stale_temp_files,
)
from octbench.registry import SEED_RANGE
from octbench.untrusted import MAX_CLASSES, load_npz, npz_headers, read_json

log = logging.getLogger(__name__)

#: 2: the data's content fingerprint is in ``dataset`` and ``config.data`` (and so in the run id).
#: Version-1 records stay readable; their data fingerprint is unknown.
SCHEMA_VERSION = 2
COMPLETE, FAILED, SKIPPED, INTERRUPTED = "complete", "failed", "skipped", "interrupted"
STATUSES = (COMPLETE, FAILED, SKIPPED, INTERRUPTED)
#: Below this much free space in the results folder, ``prepare`` warns before training.
LOW_DISK_BYTES = 200 * 2**20


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


class RunLocked(OctbenchError):
    """Another live process is working on this run."""


class StorageError(OctbenchError):
    """The results folder cannot be written (not writable, disk full): the grid stops."""


def unwritable(folder: Path, reason: str) -> StorageError:
    """The error for a results folder that cannot be created or written."""
    return StorageError(
        f"results folder {folder} is not writable ({reason}); choose another `results_dir`, "
        "fix its permissions or free disk space. Nothing was trained and existing results are "
        "untouched."
    )


def check_writable(folder: Path) -> str:
    """Say whether ``folder`` exists or would be created, creating nothing.

    Raises:
        StorageError: the folder, or the nearest existing folder above it, cannot be written.
    """
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise unwritable(folder, "Not a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise unwritable(folder, "Permission denied")
    return str(folder) if existing == folder else f"{folder} (created when the run starts)"


@contextmanager
def _writing(path: Path) -> Iterator[None]:
    try:
        yield
    except OSError as error:
        fix = ("shorten the experiment's `name` or the model and strategy parameters that "
               "make up run ids" if error.errno == errno.ENAMETOOLONG
               else "free disk space or choose a writable `results_dir`")
        raise StorageError(
            f"cannot write {path} ({error.strerror or error}); {fix}, then rerun: completed "
            "runs are kept and unfinished ones resume from their last epoch."
        ) from error


class ResultsStore:
    """The run records of one experiment, in ``<results_dir>/<experiment>/``."""

    RECORD, PREDICTIONS, BEST, RESUME, LOCK = (
        "record.json", "predictions.npz", "best.pt", "resume.pt", ".lock")
    #: A FAILED run's full traceback; a Ray worker's output while it ran the run.
    TRACEBACK, LOG = "traceback.txt", "run.log"
    #: Corrupted evaluation: each cell's predictions, and one scan at every cell.
    ROBUSTNESS_PREDICTIONS, ROBUSTNESS_SAMPLES = (
        "robustness_predictions.npz", "robustness_samples.npz")

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def run_dir(self, run_id: str) -> Path:
        """The run's folder; a run id that would lead outside the experiment is refused."""
        return confined(self.root, run_id)

    def _file(self, run_id: str, name: str) -> Path:
        return confined(self.root, run_id, name)

    # -- writing -------------------------------------------------------------------------------

    def prepare(self) -> None:
        """Before training: create the folder, prove it is writable, clean what killed runs left.

        Raises:
            StorageError: the folder cannot be created or written (nothing was trained).
        """
        probe = self.root / f".write-test-{os.getpid()}"
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            with open(probe, "wb") as handle:
                handle.write(b"ok")
                handle.flush()
                os.fsync(handle.fileno())  # a full disk may only say so here
        except OSError as error:
            raise unwritable(self.root, error.strerror or str(error)) from None
        finally:
            with suppress(OSError):
                probe.unlink(missing_ok=True)
        try:
            free = shutil.disk_usage(self.root).free
        except OSError:
            free = None
        if free is not None and free < LOW_DISK_BYTES:
            log.warning("only %d MB free in %s; runs stop (without losing results) if it fills",
                        free // 2**20, self.root)
        # Live writers' temp files and locks are left alone: another `run` may share the folder.
        for tmp in remove_stale_temp_files(self.root):
            log.info("removed a half-written file left by an interrupted run: %s", tmp)
        for lock in self.root.glob(f"*/{self.LOCK}"):  # left by a killed run that had finished
            if lock.is_symlink() or lock.parent.is_symlink():
                continue  # never delete through a link planted in a copied folder
            pid = _owner_pid(lock)
            if (pid is None and _read(lock)) or (pid is not None and pid_alive(pid)):
                continue  # another machine's lock, or a live owner's
            held = _try_lock(lock)
            if held is not None:
                _release(lock, held)

    def write(self, record: RunRecord) -> Path:
        """Write (or replace) a run's record atomically."""
        path = self._file(record.run_id, self.RECORD)
        text = record.to_json()
        with _writing(path):
            atomic_write_text(path, text)
        return path

    def save_predictions(self, run_id: str, **arrays: np.ndarray) -> None:
        path = self._file(run_id, self.PREDICTIONS)
        with _writing(path):
            atomic_write(path, lambda handle: np.savez_compressed(handle, **arrays))

    def save_state(self, run_id: str, name: str, state: dict) -> None:
        """Atomically save a torch state (checkpoint) as ``name`` in the run's folder.

        ``state`` must hold only what a weights-only load accepts (tensors, numbers, strings,
        None, and lists, tuples and dicts of them), so reading it back never runs code.
        """
        import torch

        buffer = io.BytesIO()
        torch.save(state, buffer)
        self.save_bytes(run_id, name, buffer.getvalue())

    def save_bytes(self, run_id: str, name: str, blob: bytes) -> None:
        """Atomically write ``blob`` (e.g. a checkpoint serialised elsewhere) as ``name``."""
        path = self._file(run_id, name)
        with _writing(path):
            atomic_write(path, lambda handle: handle.write(blob))

    def load_bytes(self, run_id: str, name: str) -> bytes | None:
        """The raw content of the run's file ``name``, or None when there is none."""
        try:
            return self._file(run_id, name).read_bytes()
        except (FileNotFoundError, IsADirectoryError):
            return None

    def load_state(self, run_id: str, name: str) -> dict | None:
        """A saved state, or None when there is none or it cannot be read (then it is ignored).

        A state that would need pickle (a file written by an older octbench, or crafted to run
        code) is never unpickled: it is ignored like a damaged one and the run starts over.
        """
        path = self._file(run_id, name)
        if not path.is_file():
            return None
        return read_state(path)

    def remove(self, run_id: str, name: str) -> None:
        self._file(run_id, name).unlink(missing_ok=True)

    def clear_stale_lock(self, run_id: str) -> None:
        """Remove a run's lock file when no live process holds it (a kill between the final
        record and the release leaves one; another host's name in it does not keep it alive)."""
        path = self._file(run_id, self.LOCK)
        if path.is_file() and not path.is_symlink():
            held = _try_lock(path)
            if held is not None:
                _release(path, held)

    @contextmanager
    def claim(self, run_id: str) -> Iterator[None]:
        """Hold an exclusive lock on a run for this process, or raise :class:`RunLocked`.

        The lock is a :class:`filelock.FileLock` on ``<run_id>/.lock`` (``flock`` on Unix): the
        operating system drops it when its owner exits in any way (kill -9 included), so a dead
        owner never blocks a rerun, and two ``run`` processes on one experiment never train the
        same run. The file names its owner (``host pid``) and is deleted on release. Once the lock
        is held, temp files that killed writers left in the run's folder are removed (nobody else
        writes there).
        """
        path = self._file(run_id, self.LOCK)
        with _writing(path):
            path.parent.mkdir(parents=True, exist_ok=True)
            held = _try_lock(path)
        if held is None:
            raise RunLocked(f"run {run_id} is being trained by another process "
                            f"({_read(path) or 'unknown'})")
        try:
            for tmp in remove_stale_temp_files(path.parent, all_writers=True):
                log.info("removed a half-written file left by an interrupted run: %s", tmp)
            yield
        finally:
            _release(path, held)

    # -- reading -------------------------------------------------------------------------------

    def read(self, run_id: str) -> RunRecord | None:
        path = self.run_dir(run_id) / self.RECORD
        if not path.is_file():
            return None
        return read_record(path)

    def is_complete(self, run_id: str) -> bool:
        """Whether the run's record says COMPLETE and its artifacts are there.

        Only the status is read, so a complete record of a newer schema also counts (it is never
        retrained or overwritten here; the report says it cannot read it).
        """
        folder = self.run_dir(run_id)
        try:
            data = read_json(folder / self.RECORD)
        except (OSError, ValueError):
            return False
        return isinstance(data, dict) and data.get("status") == COMPLETE and all(
            (folder / name).is_file() for name in (self.PREDICTIONS, self.BEST))

    def records(self, *, warn: list[str] | None = None) -> list[RunRecord]:
        """All readable records; unreadable ones are skipped and described in ``warn``."""
        records = []
        for path in sorted(self.root.glob(f"*/{self.RECORD}")):
            try:
                records.append(read_record(path))
            except (ValueError, TypeError, OSError) as error:
                message = f"skipped {path}: {error}"
                log.warning(message)
                if warn is not None:
                    warn.append(message)
        return records

    def predictions(self, run_id: str, record: RunRecord | None = None,
                    splits: tuple[str, ...] | None = None) -> dict[str, np.ndarray]:
        """The run's saved scores and labels of ``splits`` (default: the val and test splits
        the file has), checked before they are loaded.

        Each array's shape and dtype are read from the file's headers first: scores are
        ``(N, classes)`` floats and labels ``(N,)`` or ``(N, 1)`` integers, with the class count
        and N from ``record`` when given (its class names and counts), and labels are in range.
        So a crafted file can neither make octbench allocate what it declares nor feed it
        labels that index outside the classes.

        Raises:
            ValueError: the file does not fit (which array, which way).
            OSError: the file cannot be read.
        """
        path = self._file(run_id, self.PREDICTIONS)
        if splits is None:
            found = npz_headers(path)
            splits = tuple(s for s in ("val", "test")
                           if f"{s}_scores" in found and f"{s}_labels" in found)
        dataset = record.dataset if record is not None else {}
        classes = len(dataset.get("class_names") or ()) or None
        expected, kinds = {}, {}
        for split in splits:
            counts = (dataset.get("class_counts") or {}).get(split)
            n = sum(counts) if counts else None
            expected[f"{split}_scores"], kinds[f"{split}_scores"] = (n, classes), "f"
            expected[f"{split}_labels"], kinds[f"{split}_labels"] = (n,), "iu"
        if "test" in splits and "test_groups" in npz_headers(path):  # e.g. patients (optional)
            expected["test_groups"], kinds["test_groups"] = expected["test_labels"], "iu"
        try:
            arrays = _load_predictions(path, expected, kinds)
        except ValueError as error:
            raise ValueError(f"{path}: {error}") from None
        for split in splits:
            scores, labels = arrays[f"{split}_scores"], arrays[f"{split}_labels"]
            width = scores.shape[1]
            if len(labels) != len(scores) or width > MAX_CLASSES or width < 2:
                raise ValueError(f"{path}: {split} has {len(scores)} score rows of {width} "
                                 f"classes and {len(labels)} labels")
            if len(labels) and (labels.min() < 0 or labels.max() >= width):
                raise ValueError(f"{path}: {split}_labels range over [{labels.min()}, "
                                 f"{labels.max()}]; expected 0...{width - 1}")
        return arrays


    def robustness_predictions(self, run_id: str, cells: list[tuple[str, int]], *,
                               items: int | None, classes: int | None,
                               scores: bool = False) -> dict:
        """The stored predictions of the corrupted test sets ``cells`` ((corruption, severity)
        pairs), checked before they are loaded as :meth:`predictions` checks its file: ``labels``
        ``(N,)`` and, per cell, ``(corruption, severity)``: predicted classes ``(N,)`` (or
        ``(preds, scores)`` with ``scores`` ``(N, K)`` float16 when ``scores``). ``items`` and
        ``classes`` (from the record) bound N and K; None leaves one free.

        Raises:
            ValueError: the file does not fit (which array, which way).
            OSError: the file cannot be read.
        """
        path = self._file(run_id, self.ROBUSTNESS_PREDICTIONS)
        expected, kinds = {"labels": (items,)}, {"labels": "iu"}
        for name, severity in cells:
            member = robustness_member(name, severity)
            expected[f"{member}_preds"], kinds[f"{member}_preds"] = (items,), "iu"
            if scores:
                expected[f"{member}_scores"], kinds[f"{member}_scores"] = (items, classes), "f"
        try:
            arrays = load_npz(path, expected, kinds)
        except ValueError as error:
            raise ValueError(f"{path}: {error}") from None
        width = classes or MAX_CLASSES
        labels = arrays["labels"]
        found = {"labels": labels}
        for name, severity in cells:
            member = robustness_member(name, severity)
            preds = arrays[f"{member}_preds"]
            for what, values in (("labels", labels), (f"{member}_preds", preds)):
                if len(values) != len(labels) or (len(values) and (
                        values.min() < 0 or values.max() >= width)):
                    raise ValueError(f"{path}: {what} holds {len(values)} values over "
                                     f"[{values.min() if len(values) else 0}, "
                                     f"{values.max() if len(values) else 0}]; expected "
                                     f"{len(labels)} classes 0...{width - 1}")
            found[(name, severity)] = ((preds, arrays[f"{member}_scores"]) if scores
                                       else preds)
        return found


def robustness_member(name: str, severity: int) -> str:
    """The name under which a corrupted set's arrays are stored, e.g. ``pixelate_s3``."""
    return f"{name}_s{severity}"


class UnsafeCheckpoint(OctbenchError):
    """A checkpoint that can only be read by unpickling it, which could run code it contains."""


def load_checkpoint(path: str | Path | IO[bytes], *, name: str | None = None):
    """Read a torch checkpoint without ever running code from it (``weights_only=True``).

    ``path`` may also be an open binary file (e.g. a resume state sent by a Ray task's keeper);
    ``name`` then says what it is in messages.

    Raises:
        UnsafeCheckpoint: the file needs pickle (an older octbench's resume state, or a file not
            written by octbench); it is refused, not loaded.
        OctbenchError: the file is missing, damaged or not a torch checkpoint.
    """
    import torch

    name = name or path
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        if hasattr(path, "seek"):
            path.seek(0)
        try:  # names what the file would import, read without running any of it
            needs = ", ".join(torch.serialization.get_unsafe_globals_in_checkpoint(path)[:5])
        except Exception:  # noqa: BLE001 - the refusal stands either way
            needs = ""
        raise UnsafeCheckpoint(
            f"{name} holds Python objects that only pickle can load"
            f"{f' ({needs})' if needs else ''}; loading it could run code it contains, so "
            "octbench refuses it") from None
    except (OSError, RuntimeError, EOFError, ValueError, TypeError, AttributeError,
            IndexError, KeyError) as error:
        raise OctbenchError(f"{name} is not a readable torch checkpoint ({error})") from None


def read_state(path: str | Path | IO[bytes], *, name: str | None = None) -> dict | None:
    """A resume state read with :func:`load_checkpoint`, or None (with a warning) if refused."""
    try:
        state = load_checkpoint(path, name=name)
    except OctbenchError as error:
        log.warning("ignoring %s (%s); the run starts from scratch", name or path, error)
        return None
    return state if isinstance(state, dict) else None


def _load_predictions(path: Path, expected: dict, kinds: dict) -> dict[str, np.ndarray]:
    """:func:`octbench.untrusted.load_npz`, with labels saved as ``(N, 1)`` accepted too."""
    headers = npz_headers(path)
    for name in [k for k in expected if k.endswith("_labels")]:
        if name in headers and len(headers[name][0]) == 2 and headers[name][0][1] == 1:
            expected = {**expected, name: (*expected[name], 1)}
    arrays = load_npz(path, expected, kinds)
    return {k: v.reshape(-1) if k.endswith("_labels") else v for k, v in arrays.items()}


def nan_to_none(value):
    """``value`` with every NaN float, however deeply nested, replaced by None (JSON null)."""
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, dict):
        return {k: nan_to_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [nan_to_none(v) for v in value]
    return value


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _owner_pid(path: Path) -> int | None:
    """The process id in a lock file written on this machine, else None."""
    host, _, pid = (_read(path) or "").rpartition(" ")
    return int(pid) if host == socket.gethostname() and pid.isdigit() else None


def _try_lock(path: Path) -> FileLock | None:
    """Take the lock file ``path`` without waiting: the held lock, or None if another has it."""
    lock = FileLock(path, blocking=False, on_acquired=_write_owner)
    try:
        lock.acquire()
    except Timeout:
        return None
    return lock


def _write_owner(fd: int) -> None:
    """Name the holder in the lock file, for the message of a process that finds it held."""
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, f"{socket.gethostname()} {os.getpid()}".encode())


def _release(path: Path, lock: FileLock) -> None:
    # Deleted while still held: a process that opened the old file meanwhile and then gets its
    # flock finds it unlinked, which filelock counts as not acquired, so two holders of one path
    # never overlap. Where an open file cannot be deleted (Windows), it stays for the next claim.
    with suppress(OSError):
        path.unlink(missing_ok=True)
    lock.release()


def load_results(path: str | Path) -> pandas.DataFrame:  # noqa: F821
    """Load every run record below ``path`` as a tidy DataFrame (one row per run).

    Columns: the run's identity (``model``, ``strategy``, ``seed``, ``device``, ...), its
    resolved configuration flattened to ``config.<dotted.path>`` (``config.train.lr``) and its
    swept values to ``sweep.<path>``, every scalar metric as ``<split>_<metric>``
    (``test_macro_f1``), per-class metrics as ``<split>_<metric>_<class>`` (``test_recall_CNV``)
    and the timing fields (``train_seconds``, ...). Unreadable records are skipped with a
    warning on the ``octbench`` logger.

    Example:
        >>> df = load_results("results/quickstart")
        >>> df.groupby(["model", "strategy"])["test_macro_f1"].mean()  # doctest: +SKIP
    """
    import pandas as pd

    rows = []
    for record_path in sorted(Path(path).rglob(ResultsStore.RECORD)):
        try:
            record = read_record(record_path)
        except (ValueError, TypeError, OSError) as error:
            log.warning("skipped %s: %s", record_path, error)
            continue
        row = {k: getattr(record, k) for k in (
            "experiment", "run_id", "kind", "status", "model", "strategy", "seed", "device",
            "precision", "best_epoch", "epochs_trained", "parameters", "created_utc", "error")}
        row["dataset"] = record.dataset.get("name")
        row["synthetic"] = record.synthetic
        row["hardware"] = record.hardware.get("name")
        row.update(_flatten(record.config, "config."))
        row.update({f"sweep.{key}": value for key, value in record.sweep.items()})
        for split, metrics in record.metrics.items():
            for name, value in metrics.items():
                if isinstance(value, (int, float)):
                    row[f"{split}_{name}"] = value
            per_class = metrics.get("per_class")
            for label, values in (per_class.items() if isinstance(per_class, dict) else ()):
                for name, value in (values.items() if isinstance(values, dict) else ()):
                    if isinstance(value, (int, float)):
                        row[f"{split}_{name}_{label}"] = value
        for name, value in record.timing.items():
            row[name] = value
        rows.append(row)
    return pd.DataFrame(rows)


def _flatten(data: dict, prefix: str) -> dict:
    """``{"train": {"lr": 0.1}}`` as ``{"<prefix>train.lr": 0.1}``; lists stay values."""
    flat = {}
    for key, value in data.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat
