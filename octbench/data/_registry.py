"""The dataset registry: :data:`DATASETS` (name -> keyword-only factory returning
:class:`~octbench.data.dataset.OCTData`), their availability checks and content fingerprints,
and :func:`load_dataset`. Dataset modules import this and register themselves on import.

Every dataset has a content fingerprint (:func:`data_fingerprint`) that is known *before* the
data are loaded, so that run ids can include it: a file whose content changes gets new run ids
instead of old results. A dataset registers a fast fingerprint with :func:`fingerprinter`; one
without it is loaded and its arrays hashed.

Must not import: the dataset modules (they import this), models, strategies or anything that
trains.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

from octbench.data.dataset import OCTData
from octbench.data.duplicates import apply_policy
from octbench.registry import Registry

DATASETS = Registry("dataset")
_FINGERPRINTS: dict[str, Callable[..., str]] = {}


def fingerprinter(name: str):
    """Register a fast content fingerprint for dataset ``name``: ``f(**params) -> str``.

    It must change whenever the data the dataset's factory returns for ``params`` would.
    """
    def decorator(fn: Callable[..., str]) -> Callable[..., str]:
        _FINGERPRINTS[name] = fn
        return fn
    return decorator


def data_fingerprint(name: str, **params) -> str:
    """The content fingerprint of dataset ``name`` with ``params``, without loading it if the
    dataset registered a fast one (npz: SHA-256 of the file; OCTMNIST: its MD5; synthetic: the
    generator's parameters and version; folder: SHA-256 of its files)."""
    params.pop("on_duplicates", None)  # what a load does with duplicates, not the content
    if name in _FINGERPRINTS:
        return _FINGERPRINTS[name](**params)
    # Loaded to be hashed: kept for the load_dataset call that follows, so it loads once.
    data = DATASETS.get(name)(**params)
    _JUST_LOADED.clear()
    _JUST_LOADED[_load_key(name, params)] = data
    return data.fingerprint


_JUST_LOADED: dict[str, OCTData] = {}


def _load_key(name: str, params: dict) -> str:
    return json.dumps([name, params], sort_keys=True, default=str)


def cache_root() -> Path:
    """Where derived data are cached: ``$OCTBENCH_CACHE`` or ``~/.cache/octbench``."""
    return Path(os.environ.get("OCTBENCH_CACHE", "~/.cache/octbench")).expanduser()
#: Cheap checks that a dataset can be loaded, by registry name: ``check(**params) -> str`` returns
#: where the data will come from, or raises the DataError that loading would raise. They read no
#: images, so ``run --dry-run`` can call them, and ``run`` before it creates a results folder.
AVAILABILITY_CHECKS: dict[str, Callable[..., str]] = {}


def check_available(name: str, **params) -> str:
    """Say where dataset ``name`` will come from, without loading it.

    Raises:
        DataError: the data cannot be loaded (e.g. OCTMNIST offline), with the fix.

    Example:
        >>> check_available("npz", path="no/such.npz")
        Traceback (most recent call last):
        octbench.errors.DataError: data file no/such.npz does not exist; check `data.path` ...
    """
    params.pop("on_duplicates", None)
    check = AVAILABILITY_CHECKS.get(name)
    return check(**params) if check else f"dataset '{name}' (checked when it is loaded)"


def load_dataset(name: str, *, on_duplicates: str = "warn", **params) -> OCTData:
    """Load the dataset registered as ``name``, checked for exact-duplicate images within and
    across splits (``on_duplicates``: warn, error or drop; :mod:`octbench.data.duplicates`).

    Example:
        >>> data = load_dataset("synthetic", scale=0.01)
        >>> data.synthetic, data.class_names, data.duplicates["total"]
        (True, ('CNV', 'DME', 'DRUSEN', 'NORMAL'), 0)
    """
    kept = _JUST_LOADED.pop(_load_key(name, params), None)
    data = kept if kept is not None else DATASETS.get(name)(**params)
    origin = str(params.get("path", name))
    return apply_policy(data, on_duplicates, origin)
