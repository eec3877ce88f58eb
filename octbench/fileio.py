"""Crash-safe file writes: a reader sees the old file or the new one, never half of one.

Must not import: any other octbench module.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import IO

TEMP_SUFFIX = ".tmp"


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], None]) -> None:
    """Write ``path`` through ``write(handle)`` on a temp file, fsync, then ``os.replace``.

    The temp file lives in the same folder (``os.replace`` is only atomic within one file
    system) and is removed if anything fails, so an error or a full disk leaves the previous
    version of ``path`` untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}{TEMP_SUFFIX}")
    try:
        with open(tmp, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(path.parent)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Atomically write ``text`` (UTF-8) to ``path``."""
    atomic_write(path, lambda handle: handle.write(text.encode()))


def _fsync_dir(folder: Path) -> None:
    # Makes the rename itself durable; not every platform lets a folder be opened.
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def remove_stale_temp_files(folder: str | Path, *, all_writers: bool = False) -> list[Path]:
    """Delete temp files that a killed writer left below ``folder``; return what was removed.

    By default only files whose writer (the process id in the name) is no longer running on
    this machine are removed, so a second process started on the same folder never deletes a
    live writer's temp file. ``all_writers=True`` removes every one: for a folder that the
    caller holds exclusively (a claimed run).
    """
    removed = []
    for tmp in Path(folder).rglob(f".*{TEMP_SUFFIX}"):
        if all_writers or not _writer_alive(tmp.name):
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


def _writer_alive(name: str) -> bool:
    pid = name[: -len(TEMP_SUFFIX)].rpartition(".")[2]
    if not pid.isdigit():
        return False
    return pid_alive(int(pid))


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` is running on this machine."""
    if pid == os.getpid():
        return True
    if os.name == "nt":  # os.kill(pid, 0) would terminate the process there
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # it exists (owned by someone else), or we cannot tell: keep its files
    return True
