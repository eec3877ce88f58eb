"""Any MedMNIST-format ``.npz`` file (``{train,val,test}_{images,labels}``).

Must not import: octbench beyond ``octbench.data`` and errors.
"""

from __future__ import annotations

import functools
import hashlib
import zipfile
from pathlib import Path

import numpy as np

from octbench.data._registry import AVAILABILITY_CHECKS, DATASETS, fingerprinter
from octbench.data.dataset import OCT_CLASSES, OCTData, from_arrays
from octbench.errors import DataError


def read_npz(path: str | Path) -> dict[str, np.ndarray]:
    """Read every array of an ``.npz`` file, turning I/O and format failures into DataError."""
    path = _existing(path)
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {key: npz[key] for key in npz.files}
    except ValueError as error:
        if "Object arrays" not in str(error):
            raise _unreadable(path, error) from None
        raise DataError(
            f"{path} holds object arrays (Python objects), which octbench never loads: reading "
            "them would need pickle, which can run code. Save plain numeric arrays (uint8 "
            "images, integer labels), e.g. np.savez(path, train_images=images.astype('uint8'), "
            "...)."
        ) from None
    except (OSError, EOFError, zipfile.BadZipFile) as error:
        raise _unreadable(path, error) from None


def _unreadable(path: Path, error: Exception) -> DataError:
        # numpy's own message for a non-zip file suggests allow_pickle, which is the wrong
        # advice here (and unsafe): say what the file is not instead.
    reason = "not an npz archive" if "pickle" in str(error) else str(error)
    return DataError(
        f"cannot read {path} as an .npz file ({reason}); the file may be truncated or not "
        "an npz archive -- download or write it again."
    )


def file_fingerprint(path: str | Path) -> str:
    """SHA-256 of a file's bytes, as ``sha256:<hex>``; remembered per (path, size, mtime) so a
    file is hashed once per process.

    Raises:
        DataError: the file does not exist or cannot be read.
    """
    path = Path(path).expanduser()
    try:
        stat = path.resolve().stat()
    except OSError:
        raise DataError(f"data file {path} does not exist; check `data.path` in your YAML."
                        ) from None
    return _hash_file(str(path.resolve()), stat.st_size, stat.st_mtime_ns, stat.st_ino)


@functools.lru_cache(maxsize=64)
def _hash_file(path: str, size: int, mtime_ns: int, inode: int) -> str:
    try:
        with open(path, "rb") as handle:
            return "sha256:" + hashlib.file_digest(handle, "sha256").hexdigest()
    except OSError as error:
        raise DataError(f"cannot read data file {path} ({error.strerror or error}); check "
                        "`data.path` and the file's permissions.") from None


@fingerprinter("npz")
def npz_fingerprint(*, path: str, **_) -> str:
    """The npz file's SHA-256 (the bytes, so rewriting equal arrays compressed differs)."""
    return file_fingerprint(path)
def _existing(path: str | Path) -> Path:
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"data file {path} does not exist; check `data.path` in your YAML.")
    return path


def _npz_available(*, path: str, **_) -> str:
    return f"{_existing(path)} (validated when it is loaded)"


AVAILABILITY_CHECKS["npz"] = _npz_available


@DATASETS.register
def npz(*, path: str, synthetic: bool = False, class_names: list[str] | None = None) -> OCTData:
    """A MedMNIST-format file on disk, validated on load (keys, dtypes, shapes, labels).

    Args:
        path: the ``.npz`` file.
        synthetic: mark the data as synthetic (e.g. a file from ``octbench data synth``);
            files written by octbench carry this flag themselves.
        class_names: one name per label; default the file's ``class_names`` array, else
            OCTMNIST's for octbench's synthetic files, else ``0 ... K-1``.
    """
    fingerprint = file_fingerprint(path)
    arrays = read_npz(path)
    # Files written by `octbench data synth` say they are synthetic; that label must follow them.
    made_by_octbench = bool(arrays.pop("octbench_synthetic", np.array(False)))
    if made_by_octbench and class_names is None and "class_names" not in arrays:
        class_names = list(OCT_CLASSES)  # written before files carried their class names
    return from_arrays(
        arrays,
        name="npz",
        origin=str(path),
        synthetic=synthetic or made_by_octbench,
        class_names=class_names,
        source={"path": str(Path(path).expanduser().resolve())},
        fingerprint=fingerprint,
    )
