"""Test-only plugin: a dataset whose npz file is deleted as soon as it has been read.

``data: {name: vanishing_npz, path: FILE}``: after the Ray driver has loaded it, no process
anywhere can read the file again, so runs that complete prove that workers got the data from
Ray's object store and never from a path.
"""

from __future__ import annotations

from pathlib import Path

from octbench.data import DATASETS, OCTData
from octbench.data.npz import npz


@DATASETS.register
def vanishing_npz(*, path: str) -> OCTData:
    """A MedMNIST-format npz file, deleted once read (tests only)."""
    data = npz(path=path, synthetic=True)
    Path(path).unlink()
    return data
