"""Reading files that may come from a stranger (run records, predictions) within fixed bounds,
and printing names from such files without letting them act on the terminal.

Every bound is checked before the work it guards: a JSON file's size before it is read, its
numbers and nesting while it is parsed, an npz member's declared shape and dtype (from its
header) before its array is allocated.

Must not import: any other octbench module than errors.
"""

from __future__ import annotations

import json
import math
import unicodedata
import zipfile
from pathlib import Path

import numpy as np

#: Records are a few hundred KB (a 10,000-epoch history is ~3 MB); anything far bigger is not one.
MAX_JSON_BYTES = 32 * 2**20
#: Records nest 5 levels; deeper nesting only serves to exhaust the recursion of their readers.
MAX_JSON_DEPTH = 32
#: More classes than this is not a classification task octbench can report on (OCTMNIST has 4;
#: the largest MedMNIST task 11); it bounds tables, figures and per-class loops.
MAX_CLASSES = 100
#: Digits in a JSON integer (2**64 has 20): 10**400 would not fit any field, nor a float.
MAX_INT_DIGITS = 24


class UntrustedFileError(ValueError):
    """A file that does not fit its schema or its bounds (the message names file and field)."""


def _refuse_constant(name: str):
    raise UntrustedFileError(f"holds {name}, which strict JSON does not allow")


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise UntrustedFileError(f"holds an integer of {len(text)} digits")
    return int(text)


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise UntrustedFileError(f"holds the number {text}, which is not finite")
    return value


def depth(value) -> int:
    """How deeply ``value``'s lists and dicts nest (a scalar: 0), without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        node, level = stack.pop()
        children = node.values() if isinstance(node, dict) else node if isinstance(
            node, list) else None
        if children is None:
            continue
        deepest = max(deepest, level)
        if deepest > MAX_JSON_DEPTH:
            return deepest
        stack.extend((child, level + 1) for child in children)
    return deepest


def read_json(path: str | Path, *, max_bytes: int = MAX_JSON_BYTES):
    """Parse a JSON file within bounds: size, finite numbers, integer length, nesting depth.

    Raises:
        UntrustedFileError: what is wrong (the caller names the file).
        OSError: the file cannot be read.
    """
    path = Path(path)
    size = path.stat().st_size
    if size > max_bytes:
        raise UntrustedFileError(f"is {size:,} bytes, more than the {max_bytes:,} a record "
                                 "may have")
    try:
        value = json.loads(path.read_bytes(), parse_constant=_refuse_constant,
                           parse_int=_bounded_int, parse_float=_finite_float)
    except RecursionError:
        raise UntrustedFileError("nests lists or objects too deeply") from None
    except UnicodeDecodeError as error:
        raise UntrustedFileError(f"is not UTF-8 text ({error.reason})") from None
    except UntrustedFileError:
        raise
    except ValueError as error:
        raise UntrustedFileError(f"is not valid JSON ({error})") from None
    if depth(value) > MAX_JSON_DEPTH:
        raise UntrustedFileError(f"nests lists or objects more than {MAX_JSON_DEPTH} deep")
    return value


def npz_headers(path: str | Path) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """``{name: (shape, dtype)}`` of every array in an npz file, read from the headers only.

    Raises:
        UntrustedFileError: not an npz of plain arrays (object arrays are refused here).
        OSError: the file cannot be read.
    """
    found = {}
    try:
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                if not info.filename.endswith(".npy"):
                    continue
                with archive.open(info) as handle:
                    version = np.lib.format.read_magic(handle)
                    read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                            else np.lib.format.read_array_header_2_0)
                    shape, _, dtype = read(handle, max_header_size=10_000)
                if dtype.hasobject:
                    raise UntrustedFileError(f"{info.filename} holds Python objects")
                found[info.filename[:-4]] = (tuple(shape), dtype)
    except (zipfile.BadZipFile, EOFError, ValueError) as error:
        if isinstance(error, UntrustedFileError):
            raise
        raise UntrustedFileError(f"is not a readable npz file ({error})") from None
    return found


def load_npz(path: str | Path, expected: dict[str, tuple[int | None, ...]],
             kinds: dict[str, str]) -> dict[str, np.ndarray]:
    """Load the arrays named in ``expected`` from an npz file, after checking each declared
    shape against ``expected`` (None: any length) and its dtype kind against ``kinds``
    (numpy's one-letter kinds, e.g. ``"iu"``) from the headers, so no array is allocated
    before its size is known to fit. Other arrays in the file are not read.

    Raises:
        UntrustedFileError: a missing array, or one of another shape or dtype (named).
    """
    headers = npz_headers(path)
    for name, shape in expected.items():
        if name not in headers:
            raise UntrustedFileError(f"has no array '{name}'")
        found, dtype = headers[name]
        if len(found) != len(shape) or any(
                want is not None and want != got for want, got in zip(shape, found, strict=True)):
            wanted = tuple("N" if s is None else s for s in shape)
            raise UntrustedFileError(f"array '{name}' has shape {found}; expected {wanted}")
        if dtype.kind not in kinds[name]:
            raise UntrustedFileError(f"array '{name}' has dtype {dtype}")
    if hasattr(path, "seek"):  # a file object (e.g. bytes held in memory): read it again
        path.seek(0)
    with np.load(path, allow_pickle=False) as npz:
        return {name: npz[name] for name in expected}


def printable(text: object, keep: str = "") -> str:
    """``text`` with control and format characters escaped (``\\x1b``, ``\\r``, ``\\u202e``), so
    that a name from a file can neither move the cursor, clear the screen, nor forge a line;
    characters in ``keep`` (e.g. ``"\\n"`` for a multi-line message) stay as they are.

    Example:
        >>> printable("NORMAL\\x1b[2J\\rCNV")
        'NORMAL\\\\x1b[2J\\\\rCNV'
    """
    text = str(text)
    if text.isprintable() and not keep:
        return text
    out = []
    for char in text:
        if char in keep or unicodedata.category(char) not in ("Cc", "Cf", "Zl", "Zp"):
            out.append(char)
        else:
            out.append(repr(char)[1:-1] if ord(char) < 0x80 else f"\\u{ord(char):04x}")
    return "".join(out)
