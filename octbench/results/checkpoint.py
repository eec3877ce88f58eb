"""Reading torch checkpoints that may come from a stranger, without ever running their code.

Must not import: config, the runner, engine, report or tuning (torch only inside functions).
"""

from __future__ import annotations

import logging

# Only for the exception class torch raises when it refuses a file that needs pickle (a
# weights-only load): octbench never unpickles anything.
import pickle
from pathlib import Path
from typing import IO

from octbench.errors import OctbenchError

log = logging.getLogger(__name__)


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
