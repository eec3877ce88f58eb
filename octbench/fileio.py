"""Crash-safe file writes (a reader sees the old file or the new one, never half of one), and
confinement: every path octbench writes or deletes is built by :func:`confined`, from checked
names, and stays inside the folder it was told to use.

Must not import: any other octbench module than errors.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import IO

from octbench.errors import OctbenchError

TEMP_SUFFIX = ".tmp"
#: Part of every temp file name octbench writes: cleanup removes nothing without it.
TEMP_MARKER = ".octbench"
#: ``.<final name>.<writer pid>.octbench.tmp``, e.g. ``.record.json.4242.octbench.tmp``.
TEMP_NAME = re.compile(rf"^\.(?P<target>.+)\.(?P<pid>\d+){re.escape(TEMP_MARKER + TEMP_SUFFIX)}$")
#: One path component: no separator, NUL, or dot-only name ("." and ".." walk out of a folder).
_SAFE_PART = re.compile(r"^(?!\.+$)[^/\\\x00]{1,255}$")


class UnsafePath(OctbenchError):
    """A path that would leave the folder octbench was told to use."""


def is_plain_name(part: object) -> bool:
    """Whether ``part`` can name one file or folder (see :func:`confined`)."""
    return isinstance(part, str) and _SAFE_PART.match(part) is not None


def confined(root: str | Path, *parts: str) -> Path:
    """``root / part / ...``, refused unless every part is a plain name and the result (links
    followed) stays inside ``root``.

    Parts often come from files (run ids, record fields): this is what keeps a crafted value
    such as ``../../victim``, or a link planted in a copied results folder, from making octbench
    write or delete elsewhere.

    Raises:
        UnsafePath: naming the part or the link, and what to do.

    Example:
        >>> confined("results", "quickstart", "record.json")
        PosixPath('results/quickstart/record.json')
    """
    root = Path(root)
    for part in parts:
        if not is_plain_name(part):
            raise UnsafePath(f"refusing the name {part!r} below {root}: a file or folder name "
                             "must not be empty, '.', '..', or contain '/', '\\' or NUL.")
    path = root.joinpath(*parts)
    real_root, real = root.resolve(), path.resolve()
    if real != real_root and real_root not in real.parents:
        raise UnsafePath(f"{path} leads to {real}, outside {root} (a link?); octbench only "
                         f"writes inside {root}. Remove the link or copy the real folder there.")
    return path


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], None]) -> None:
    """Write ``path`` through ``write(handle)`` on a temp file, fsync, then ``os.replace``.

    The temp file lives in the same folder (``os.replace`` is only atomic within one file
    system) and is removed if anything fails, so an error or a full disk leaves the previous
    version of ``path`` untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}{TEMP_MARKER}{TEMP_SUFFIX}")
    try:
        with open(tmp, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(path.parent)


def writable_folder(folder: str | Path, what: str = "output folder") -> Path:
    """Create ``folder`` if needed and check that files can be written in it, before any work.

    Raises:
        OctbenchError: naming the folder (or the file in the way) and what to do instead.
    """
    folder = Path(folder)
    blocker = next((p for p in (folder, *folder.parents) if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        raise OctbenchError(f"cannot write to {what} {folder}: {blocker} is a file, not a "
                            f"folder; choose another {what}.")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OctbenchError(f"cannot create {what} {folder} ({error.strerror or error}); "
                            f"choose another {what} or fix its permissions.") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OctbenchError(f"{what} {folder} is not writable; choose another {what} or fix "
                            "its permissions.")
    return folder


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

    Only regular files named like octbench's own (:data:`TEMP_NAME`, marker included) are
    touched, never a user's ``*.tmp`` file nor anything through a link. By default only those
    whose writer (the process id in the name) is no longer running on this machine are removed,
    so a second process started on the same folder never deletes a live writer's temp file.
    ``all_writers=True`` removes every one: for a folder the caller holds exclusively.
    """
    removed = []
    for tmp in Path(folder).rglob(f".*{TEMP_MARKER}{TEMP_SUFFIX}"):
        match = TEMP_NAME.match(tmp.name)
        if match is None or tmp.is_symlink() or not tmp.is_file():
            continue
        if all_writers or not pid_alive(int(match["pid"])):
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


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
