"""Any MedMNIST-format ``.npz`` file (``{train,val,test}_{images,labels}``).

Must not import: octbench beyond ``octbench.data`` and errors.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from octbench.data import AVAILABILITY_CHECKS, DATASETS, OCT_CLASSES, OCTData, from_arrays
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
        class_names: label names, default OCTMNIST's.
    """
    arrays = read_npz(path)
    # Files written by `octbench data synth` say they are synthetic; that label must follow them.
    synthetic = synthetic or bool(arrays.pop("octbench_synthetic", np.array(False)))
    return from_arrays(
        arrays,
        name="npz",
        origin=str(path),
        synthetic=synthetic,
        class_names=tuple(class_names or OCT_CLASSES),
        source={"path": str(Path(path).expanduser().resolve())},
    )
