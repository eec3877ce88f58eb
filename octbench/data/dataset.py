"""What every dataset returns: :class:`OCTData` (splits held once as uint8 tensors, ready for
tensor-resident batching), built by the one validator :func:`from_arrays` for the MedMNIST
layout ``{train,val,test}_{images,labels}``.

Must not import: other modules of ``octbench.data`` (they import this), models, strategies or
anything that trains.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import torch

from octbench.errors import DataError
from octbench.untrusted import MAX_CLASSES

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
OCT_CLASSES = ("CNV", "DME", "DRUSEN", "NORMAL")


@dataclass(frozen=True)
class Split:
    """One split: ``images`` uint8 (N, H, W), ``labels`` int64 (N,) and optional ``groups``.

    ``groups`` (int64 (N,), or None) numbers the group of each image, e.g. its patient: images
    of one patient are not independent, so the report can resample whole groups.
    """

    images: torch.Tensor
    labels: torch.Tensor
    groups: np.ndarray | None = None

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
        fingerprint: the content fingerprint (:func:`data_fingerprint`), e.g. ``sha256:...``.
        duplicates: exact-duplicate counts (:mod:`octbench.data.duplicates`), set by
            :func:`load_dataset`; None for data built otherwise.
    """

    name: str
    synthetic: bool
    size: int
    class_names: tuple[str, ...]
    train: Split
    val: Split
    test: Split
    source: dict = field(default_factory=dict)
    fingerprint: str = ""
    duplicates: dict | None = None

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
            "fingerprint": self.fingerprint,
            **({"duplicates": self.duplicates} if self.duplicates is not None else {}),
        }


def from_arrays(
    arrays: Mapping[str, np.ndarray],
    *,
    name: str,
    origin: str,
    synthetic: bool,
    class_names: tuple[str, ...] | list[str] | None = None,
    source: dict | None = None,
    fingerprint: str = "",
) -> OCTData:
    """Validate MedMNIST-layout arrays and wrap them as :class:`OCTData`.

    ``origin`` names the file or generator in error messages. Images must be uint8
    (N, H, W) or (N, H, W, 1) with square H == W; labels integer (N,) or (N, 1); no split may be
    empty. The class names are ``class_names`` if given, else the arrays' ``class_names`` entry
    (a string array, as octbench writes it), else ``"0" ... "K-1"`` with K one more than the
    largest label of any split. Every class must have training images (a gap in the labels, or
    a name too many, is an error); a class missing from val or test only logs a warning, as
    its metrics there are undefined.
    """
    problems = []
    expected = [f"{s}_{kind}" for s in SPLITS for kind in ("images", "labels")]
    missing = [k for k in expected if k not in arrays]
    if missing:
        raise DataError(
            f"{origin} is not a MedMNIST-format file: missing {', '.join(missing)} "
            f"(expected keys {', '.join(expected)}; found {', '.join(sorted(arrays)) or 'none'})."
        )
    names = _given_class_names(arrays, class_names, origin)
    checked, groups = {}, {}
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
        elif labels.min() < 0 or labels.max() >= (MAX_CLASSES if names is None else len(names)):
            # Without names, labels number the classes: bounded before a name is made for each.
            expect = (f"0...{len(names) - 1} ({', '.join(names)}), one label per class name"
                      if names is not None else f"labels from 0 to {MAX_CLASSES - 1}")
            problems.append(f"{s}_labels range over [{labels.min()}, {labels.max()}]; "
                            f"expected {expect}")
        checked[s] = (images, labels)
        groups[s] = _groups(arrays, s, len(labels), problems)
    if problems:
        raise DataError(f"{origin} is not a valid dataset: " + "; ".join(problems) + ".")
    names = names or tuple(str(i) for i in range(max(int(lab.max()) for _, lab in
                                                     checked.values()) + 1))
    _check_every_class_trains(checked, names, origin)
    splits = {s: Split(torch.from_numpy(images.copy()), torch.from_numpy(labels.astype(np.int64)),
                       groups[s])
              for s, (images, labels) in checked.items()}
    return OCTData(
        name=name,
        synthetic=synthetic,
        size=int(size),
        class_names=names,
        source=dict(source or {}),
        fingerprint=fingerprint or arrays_fingerprint(arrays),
        **splits,
    )


def _groups(arrays: Mapping[str, np.ndarray], split: str, n: int,
            problems: list[str]) -> np.ndarray | None:
    """The optional ``<split>_groups`` entry (e.g. patient ids) as group numbers 0..G-1."""
    key = f"{split}_groups"
    if key not in arrays:
        return None
    values = np.asarray(arrays[key])
    if values.ndim == 2 and values.shape[1] == 1:
        values = values[:, 0]
    if values.ndim != 1 or values.dtype.kind not in "iuUS" or len(values) != n:
        problems.append(f"{key} has shape {values.shape} and dtype {values.dtype}; expected one "
                        f"integer or string group id (e.g. a patient id) per image, shape ({n},)")
        return None
    return np.unique(values, return_inverse=True)[1].astype(np.int64).reshape(-1)


def _given_class_names(arrays: Mapping[str, np.ndarray], class_names, origin: str
                       ) -> tuple[str, ...] | None:
    """The class names from the caller or the file, validated; None to number the labels."""
    where = "data.class_names"
    if class_names is None and "class_names" in arrays:
        class_names, where = np.asarray(arrays["class_names"]), f"the class_names array of {origin}"
        if class_names.ndim != 1 or class_names.dtype.kind not in "US":
            raise DataError(f"{where} has shape {class_names.shape} and dtype "
                            f"{class_names.dtype}; expected a 1-D string array, e.g. "
                            "np.array(['cat', 'dog'])")
        class_names = [n.decode() if isinstance(n, bytes) else str(n) for n in class_names]
    if class_names is None:
        return None
    names = tuple(class_names)
    if len(names) < 2:
        raise DataError(f"{where} lists {len(names)} class(es) {list(names)}; a classifier "
                        "needs at least 2. Give one name per label.")
    if len(names) > MAX_CLASSES:
        raise DataError(f"{where} lists {len(names):,} classes, more than the {MAX_CLASSES} "
                        "octbench can report on (tables, figures and per-class metrics); "
                        "group the classes, or check that this is the class-names array.")
    blank = [n for n in names if not str(n).strip()]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if blank or repeated:
        raise DataError(f"{where} must be distinct, non-empty names; got {list(names)} "
                        f"({'repeated: ' + ', '.join(repeated) if repeated else 'a blank name'}).")
    return names


def _check_every_class_trains(checked: dict, names: tuple[str, ...], origin: str) -> None:
    present = {s: set(np.unique(labels).tolist()) for s, (_, labels) in checked.items()}
    label_max = max(max(p) for p in present.values())
    if len(names) < 2:
        raise DataError(f"{origin} has one class only (label 0); a classifier needs at least 2 "
                        "classes. Add the other classes' images.")
    if label_max < len(names) - 1:
        raise DataError(
            f"{origin}: {len(names)} class names ({', '.join(names)}) but the labels only go up "
            f"to {label_max}; give exactly one name per label 0...{label_max}.")
    absent = [f"{i} ({names[i]})" for i in range(len(names)) if i not in present["train"]]
    if absent:
        raise DataError(
            f"{origin}: class(es) {', '.join(absent)} have no training images, so no model can "
            "learn them; add their images, or relabel to 0...K-1 without gaps (and drop their "
            "names from class_names).")
    for split in ("val", "test"):
        lacking = [names[i] for i in range(len(names)) if i not in present[split]]
        if lacking:
            log.warning("%s: the %s split has no images of %s; their %s metrics are undefined",
                        origin, split, ", ".join(lacking), split)


def arrays_fingerprint(arrays: Mapping[str, np.ndarray]) -> str:
    """A SHA-256 over the splits' arrays (key, dtype, shape, bytes), for data held in memory."""
    digest = hashlib.sha256()
    for key in sorted(arrays):
        array = np.ascontiguousarray(arrays[key])
        digest.update(f"{key}:{array.dtype.str}:{array.shape};".encode())
        digest.update(array.tobytes() if array.dtype.kind in "US" else memoryview(array).cast("B"))
    return f"sha256:{digest.hexdigest()}"
