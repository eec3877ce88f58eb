"""Datasets: every split held once as a uint8 tensor, ready for tensor-resident batching.

A dataset is a keyword-only factory registered in :data:`DATASETS` that returns
:class:`OCTData`. All loaders share one validator (:func:`from_arrays`) for the MedMNIST layout
``{train,val,test}_{images,labels}``.

Must not import: models, strategies, the engine, runner, report or tuning: data knows nothing of
training.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np
import torch

from octbench.errors import DataError
from octbench.registry import Registry

DATASETS = Registry("dataset")

SPLITS = ("train", "val", "test")
OCT_CLASSES = ("CNV", "DME", "DRUSEN", "NORMAL")


@dataclass(frozen=True)
class Split:
    """One split: ``images`` uint8 (N, H, W) and ``labels`` int64 (N,)."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)

    def class_counts(self, num_classes: int) -> list[int]:
        return torch.bincount(self.labels, minlength=num_classes).tolist()


@dataclass(frozen=True)
class OCTData:
    """A loaded dataset with its provenance.

    Attributes:
        name: registry name (``octmnist``, ``npz``, ``synthetic``).
        synthetic: True for generated data: every table made from it must say so.
        size: image side in pixels.
        class_names: one name per label index.
        train, val, test: the official splits.
        source: where the data came from (path, generator parameters), for run records.
    """

    name: str
    synthetic: bool
    size: int
    class_names: tuple[str, ...]
    train: Split
    val: Split
    test: Split
    source: dict = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def split(self, name: str) -> Split:
        return {"train": self.train, "val": self.val, "test": self.test}[name]

    def class_counts(self) -> dict[str, list[int]]:
        """Per-split class counts, e.g. ``{"train": [33484, 10213, 7754, 46026], ...}``."""
        return {s: self.split(s).class_counts(self.num_classes) for s in SPLITS}

    def describe(self) -> dict:
        """A JSON-serialisable summary stored in every run record."""
        return {
            "name": self.name,
            "synthetic": self.synthetic,
            "size": self.size,
            "class_names": list(self.class_names),
            "class_counts": self.class_counts(),
            "source": self.source,
        }


def from_arrays(
    arrays: Mapping[str, np.ndarray],
    *,
    name: str,
    origin: str,
    synthetic: bool,
    class_names: tuple[str, ...] = OCT_CLASSES,
    source: dict | None = None,
) -> OCTData:
    """Validate MedMNIST-layout arrays and wrap them as :class:`OCTData`.

    ``origin`` names the file or generator in error messages. Images must be uint8
    (N, H, W) or (N, H, W, 1) with square H == W; labels integer (N,) or (N, 1) in
    ``[0, len(class_names))``; no split may be empty.
    """
    problems = []
    expected = [f"{s}_{kind}" for s in SPLITS for kind in ("images", "labels")]
    missing = [k for k in expected if k not in arrays]
    if missing:
        raise DataError(
            f"{origin} is not a MedMNIST-format file: missing {', '.join(missing)} "
            f"(expected keys {', '.join(expected)}; found {', '.join(sorted(arrays)) or 'none'})."
        )
    splits = {}
    size = None
    for s in SPLITS:
        images, labels = np.asarray(arrays[f"{s}_images"]), np.asarray(arrays[f"{s}_labels"])
        if images.ndim == 4 and images.shape[-1] == 1:
            images = images[..., 0]
        if labels.ndim == 2 and labels.shape[1] == 1:
            labels = labels[:, 0]
        if images.dtype != np.uint8:
            problems.append(f"{s}_images has dtype {images.dtype}; expected uint8 (0-255)")
        if images.ndim != 3 or images.shape[1] != images.shape[2]:
            problems.append(
                f"{s}_images has shape {images.shape}; expected (N, H, W) grayscale with H == W"
            )
        elif size not in (None, images.shape[1]):
            problems.append(f"{s}_images are {images.shape[1]} px but other splits are {size} px")
        else:
            size = images.shape[1]
        if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
            problems.append(
                f"{s}_labels has shape {labels.shape} and dtype {labels.dtype}; "
                "expected integers of shape (N,) or (N, 1)"
            )
        elif len(labels) != len(images):
            problems.append(f"{s} has {len(images)} images but {len(labels)} labels")
        elif len(labels) == 0:
            problems.append(f"the {s} split is empty")
        elif labels.min() < 0 or labels.max() >= len(class_names):
            problems.append(
                f"{s}_labels range over [{labels.min()}, {labels.max()}]; expected 0..."
                f"{len(class_names) - 1} ({', '.join(class_names)})"
            )
        if not problems:
            splits[s] = Split(torch.from_numpy(images.copy()),
                              torch.from_numpy(labels.astype(np.int64)))
    if problems:
        raise DataError(f"{origin} is not a valid dataset: " + "; ".join(problems) + ".")
    return OCTData(
        name=name,
        synthetic=synthetic,
        size=int(size),
        class_names=tuple(class_names),
        source=dict(source or {}),
        **splits,
    )


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
    check = AVAILABILITY_CHECKS.get(name)
    return check(**params) if check else f"dataset '{name}' (checked when it is loaded)"


def load_dataset(name: str, **params) -> OCTData:
    """Load the dataset registered as ``name``.

    Example:
        >>> data = load_dataset("synthetic", scale=0.01)
        >>> data.synthetic, data.class_names
        (True, ('CNV', 'DME', 'DRUSEN', 'NORMAL'))
    """
    return DATASETS.get(name)(**params)


# Importing the modules registers their datasets.
from octbench.data import npz as _npz  # noqa: E402,F401
from octbench.data import octmnist as _octmnist  # noqa: E402,F401
from octbench.data import synthetic as _synthetic  # noqa: E402,F401

__all__ = ["DATASETS", "OCT_CLASSES", "OCTData", "SPLITS", "Split", "from_arrays", "load_dataset"]
