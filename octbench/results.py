"""Run records and the results store.

One immutable :class:`RunRecord` per run, written once as JSON (atomically) beside its
artifacts::

    results/<experiment>/<run_id>/record.json       metrics, curves, timing, provenance
    results/<experiment>/<run_id>/predictions.npz   test (and val) scores and labels
    results/<experiment>/<run_id>/best.pt           the selected checkpoint
    results/<experiment>/<run_id>/resume.pt         last-epoch state, only while incomplete

A run is COMPLETE only when its record says so, and that record is written last. Folders from
several machines can be copied into one results folder: run ids never collide across devices.
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from octbench.errors import OctbenchError
from octbench.fileio import atomic_write, atomic_write_text, remove_stale_temp_files

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
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
    git_commit: str | None = None
    created_utc: str = ""
    error: str | None = None
    kind: str = "run"  # "run", or "trial" for tuning trials
    schema_version: int = SCHEMA_VERSION

    @property
    def synthetic(self) -> bool:
        return bool(self.dataset.get("synthetic", False))

    def to_json(self) -> str:
        """Strict JSON: NaN (e.g. an undefined AUC) is written as null, which any reader takes."""
        return json.dumps(_nan_to_none(dataclasses.asdict(self)), indent=2, sort_keys=True,
                          allow_nan=False)

    @classmethod
    def from_dict(cls, data: dict) -> RunRecord:
        """Read a record of this or an older schema; unknown fields are ignored."""
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
        return cls(**{k: v for k, v in data.items() if k in names})


class RunLocked(OctbenchError):
    """Another live process is working on this run."""


class ResultsStore:
    """The run records of one experiment, in ``<results_dir>/<experiment>/``."""

    RECORD, PREDICTIONS, BEST, RESUME, LOCK = (
        "record.json", "predictions.npz", "best.pt", "resume.pt", ".lock")

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def run_dir(self, run_id: str) -> Path:
        return self.root / run_id

    # -- writing -------------------------------------------------------------------------------

    def prepare(self) -> None:
        """Create the folder, prove it is writable, and clean what killed writers left."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            probe = self.root / f".write-test-{os.getpid()}"
            probe.write_bytes(b"ok")
            probe.unlink()
        except OSError as error:
            raise OctbenchError(
                f"results folder {self.root} is not writable ({error.strerror}); choose "
                "another `results_dir` or fix its permissions. Nothing was trained."
            ) from None
        for tmp in remove_stale_temp_files(self.root):
            log.info("removed a half-written file left by an interrupted run: %s", tmp)

    def write(self, record: RunRecord) -> Path:
        """Write (or replace) a run's record atomically."""
        path = self.run_dir(record.run_id) / self.RECORD
        atomic_write_text(path, record.to_json())
        return path

    def save_predictions(self, run_id: str, **arrays: np.ndarray) -> None:
        atomic_write(self.run_dir(run_id) / self.PREDICTIONS,
                     lambda handle: np.savez_compressed(handle, **arrays))

    def save_state(self, run_id: str, name: str, state: dict) -> None:
        """Atomically save a torch state (checkpoint) as ``name`` in the run's folder."""
        import torch

        buffer = io.BytesIO()
        torch.save(state, buffer)
        atomic_write(self.run_dir(run_id) / name, lambda handle: handle.write(buffer.getvalue()))

    def load_state(self, run_id: str, name: str) -> dict | None:
        import torch

        path = self.run_dir(run_id) / name
        if not path.is_file():
            return None
        return torch.load(path, map_location="cpu", weights_only=False)

    def remove(self, run_id: str, name: str) -> None:
        (self.run_dir(run_id) / name).unlink(missing_ok=True)

    @contextmanager
    def claim(self, run_id: str) -> Iterator[None]:
        """Hold an exclusive lock on a run for this process (stale locks are taken over).

        The lock file is created with O_EXCL, which is atomic on local file systems, so two
        ``run`` processes on the same experiment never train the same run.
        """
        path = self.run_dir(run_id) / self.LOCK
        path.parent.mkdir(parents=True, exist_ok=True)
        owner = f"{socket.gethostname()} {os.getpid()}"
        for _ in range(2):
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                if not _lock_is_stale(path):
                    raise RunLocked(f"run {run_id} is being trained by another process "
                                    f"({_read(path) or 'unknown'})") from None
                path.unlink(missing_ok=True)  # its owner died (kill -9): take it over
                continue
            with os.fdopen(fd, "w") as handle:
                handle.write(owner)
            break
        else:
            raise RunLocked(f"run {run_id} is locked by another process")
        try:
            yield
        finally:
            if _read(path) == owner:
                path.unlink(missing_ok=True)

    # -- reading -------------------------------------------------------------------------------

    def read(self, run_id: str) -> RunRecord | None:
        path = self.run_dir(run_id) / self.RECORD
        if not path.is_file():
            return None
        return RunRecord.from_dict(json.loads(path.read_text()))

    def is_complete(self, run_id: str) -> bool:
        try:
            record = self.read(run_id)
        except (ValueError, OSError):
            return False
        return record is not None and record.status == COMPLETE and (
            self.run_dir(run_id) / self.PREDICTIONS).is_file()

    def records(self, *, warn: list[str] | None = None) -> list[RunRecord]:
        """All readable records; unreadable ones are skipped and described in ``warn``."""
        records = []
        for path in sorted(self.root.glob(f"*/{self.RECORD}")):
            try:
                records.append(RunRecord.from_dict(json.loads(path.read_text())))
            except (ValueError, TypeError, OSError) as error:
                message = f"skipped {path}: {error}"
                log.warning(message)
                if warn is not None:
                    warn.append(message)
        return records

    def predictions(self, run_id: str) -> dict[str, np.ndarray]:
        with np.load(self.run_dir(run_id) / self.PREDICTIONS) as npz:
            return {key: npz[key] for key in npz.files}


def _nan_to_none(value):
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, dict):
        return {k: _nan_to_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_nan_to_none(v) for v in value]
    return value


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _lock_is_stale(path: Path) -> bool:
    owner = _read(path)
    if not owner:
        return True
    host, _, pid = owner.rpartition(" ")
    if host != socket.gethostname() or not pid.isdigit():
        return False  # another machine's lock: only its owner can tell
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def load_results(path: str | Path) -> "pandas.DataFrame":  # noqa: F821
    """Load every run record below ``path`` as a tidy DataFrame (one row per run).

    Example:
        >>> df = load_results("results/quickstart")
        >>> df.groupby(["model", "strategy"])["test_macro_f1"].mean()  # doctest: +SKIP
    """
    import pandas as pd

    rows = []
    for record_path in sorted(Path(path).rglob(ResultsStore.RECORD)):
        try:
            record = RunRecord.from_dict(json.loads(record_path.read_text()))
        except (ValueError, TypeError, OSError) as error:
            log.warning("skipped %s: %s", record_path, error)
            continue
        row = {k: getattr(record, k) for k in (
            "experiment", "run_id", "kind", "status", "model", "strategy", "seed", "device",
            "precision", "best_epoch", "epochs_trained", "parameters", "created_utc", "error")}
        row["dataset"] = record.dataset.get("name")
        row["synthetic"] = record.synthetic
        row["hardware"] = record.hardware.get("name")
        for split, metrics in record.metrics.items():
            for name, value in metrics.items():
                if isinstance(value, (int, float)):
                    row[f"{split}_{name}"] = value
        for name, value in record.timing.items():
            row[name] = value
        rows.append(row)
    return pd.DataFrame(rows)
