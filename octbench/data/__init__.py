"""Datasets: keyword-only factories registered in :data:`DATASETS` that return
:class:`OCTData`, one module per source (npz file, OCTMNIST, image folder, synthetic scans).

:mod:`octbench.data.dataset` holds what every dataset returns and its validator,
:mod:`octbench.data._registry` the registry, fingerprints and :func:`load_dataset`; importing
this package registers every dataset.

Must not import: models, strategies, the engine, runner, report or tuning: data knows nothing of
training.
"""

from __future__ import annotations

from octbench.data import folder, npz, octmnist, synthetic  # noqa: F401  (they register)
from octbench.data._registry import (
    AVAILABILITY_CHECKS,
    DATASETS,
    cache_root,
    check_available,
    data_fingerprint,
    fingerprinter,
    load_dataset,
)
from octbench.data.dataset import (
    OCT_CLASSES,
    SPLITS,
    OCTData,
    Split,
    arrays_fingerprint,
    from_arrays,
)

__all__ = ["AVAILABILITY_CHECKS", "DATASETS", "OCT_CLASSES", "OCTData", "SPLITS", "Split",
           "arrays_fingerprint", "cache_root", "check_available", "data_fingerprint",
           "fingerprinter", "from_arrays", "load_dataset"]
