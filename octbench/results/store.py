"""The results store: a run's folder and files, written atomically, and its lock.

Layout::

    results/<experiment>/<run_id>/record.json       metrics, curves, timing, provenance
    results/<experiment>/<run_id>/predictions.npz   test (and val) scores and labels
    results/<experiment>/<run_id>/robustness_predictions.npz   corrupted test sets' predictions
    results/<experiment>/<run_id>/best.pt           the selected checkpoint
    results/<experiment>/<run_id>/resume.pt         last-epoch state, only while incomplete

A run is COMPLETE only when its record says so and its artifacts are there; the record is written
last, and every file is written atomically (temp file, fsync, rename), so a crash or kill -9
leaves the old version or the new one, never half of one. Folders from several machines can be
copied into one results folder: run ids never collide across devices.

Must not import: config, the runner, engine, report or tuning (torch only inside
:meth:`ResultsStore.save_state`).
"""

from __future__ import annotations

import errno
import io
import logging
import os
import shutil
import socket
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import numpy as np
from filelock import FileLock, Timeout

from octbench.errors import OctbenchError
from octbench.fileio import (
    atomic_write,
    atomic_write_text,
    confined,
    pid_alive,
    remove_stale_temp_files,
)
from octbench.results.checkpoint import read_state
from octbench.results.record import COMPLETE, RunRecord, read_record
from octbench.untrusted import MAX_CLASSES, load_npz, npz_headers, read_json

log = logging.getLogger(__name__)

#: Below this much free space in the results folder, ``prepare`` warns before training.
LOW_DISK_BYTES = 200 * 2**20


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



def _load_predictions(path: Path, expected: dict, kinds: dict) -> dict[str, np.ndarray]:
    """:func:`octbench.untrusted.load_npz`, with labels saved as ``(N, 1)`` accepted too."""
    headers = npz_headers(path)
    for name in [k for k in expected if k.endswith("_labels")]:
        if name in headers and len(headers[name][0]) == 2 and headers[name][0][1] == 1:
            expected = {**expected, name: (*expected[name], 1)}
    arrays = load_npz(path, expected, kinds)
    return {k: v.reshape(-1) if k.endswith("_labels") else v for k, v in arrays.items()}


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
