"""Image folders (``DIR/{train,val,test}/<class>/*.png``), the way OCT2017 (Kermany et al. 2018)
is distributed: every scan is preprocessed exactly as ``predict`` does it (the MedMNIST way,
:func:`octbench.data.preprocess.load_scan`) and the result is cached as a MedMNIST-format npz
keyed by the folder's content fingerprint, so a folder is decoded once.

Class names are the class folders under ``train/``, sorted (as torchvision's ``ImageFolder``).
Without ``val/``, a stratified share of ``train/`` (``val_fraction``, drawn with ``seed``) is
the validation split, and the run record says so.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import re
from pathlib import Path

import numpy as np

from octbench.data._registry import AVAILABILITY_CHECKS, DATASETS, cache_root, fingerprinter
from octbench.data.dataset import SPLITS, OCTData, from_arrays
from octbench.data.npz import read_npz
from octbench.data.preprocess import load_scan
from octbench.errors import DataError
from octbench.fileio import atomic_write, remove_stale_temp_files
from octbench.registry import Interval
from octbench.untrusted import printable

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
#: Cached arrays from an older preprocessing are not reused: bump when it changes.
CACHE_VERSION = 2  # 2: test_groups (patient ids) from Kermany file names
_LISTED_BAD_FILES = 20


def list_images(root: str | Path) -> dict[str, dict[str, list[Path]]]:
    """``{split: {class: [files]}}`` of an image folder, checked for the expected layout.

    Raises:
        DataError: no ``train/`` or ``test/`` folder, fewer than 2 classes, an empty class
            folder, or a val/test class that ``train/`` does not have.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f"image folder {root} does not exist; check `data.path` in your YAML.")
    missing = [s for s in ("train", "test") if not (root / s).is_dir()]
    if missing:
        raise DataError(
            f"image folder {root} has no {' or '.join(f'{s}/' for s in missing)} folder; "
            "expected DIR/train/<class>/*.png and DIR/test/<class>/*.png (val/ optional).")
    layout, empty = {}, []
    for split in SPLITS:
        if not (root / split).is_dir():
            continue
        classes = sorted(p.name for p in (root / split).iterdir()
                         if p.is_dir() and not p.name.startswith("."))
        layout[split] = {}
        for name in classes:
            files = sorted(f for f in (root / split / name).rglob("*")
                           if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES
                           and not f.name.startswith("."))
            if not files:
                empty.append(f"{split}/{name}/")
            layout[split][name] = files
    _refuse_links_out(root, layout)
    if empty:
        raise DataError(f"image folder {root} has empty class folder(s) {', '.join(empty)}; "
                        f"add their scans ({', '.join(IMAGE_SUFFIXES)}) or remove the folders.")
    train_classes = list(layout["train"])
    if len(train_classes) < 2:
        raise DataError(
            f"image folder {root}/train/ has {len(train_classes)} class folder(s) "
            f"{train_classes}; a classifier needs at least 2 (one sub-folder per class).")
    for split in ("val", "test"):
        extra = sorted(set(layout.get(split, {})) - set(train_classes))
        if extra:
            raise DataError(f"image folder {root}/{split}/ has class(es) {', '.join(extra)} that "
                            f"train/ does not ({', '.join(train_classes)}); add their training "
                            "scans or remove them.")
    return layout


def _refuse_links_out(root: Path, layout: dict[str, dict[str, list[Path]]]) -> None:
    """Refuse split folders, class folders or scans that are links leading out of ``root``:
    the dataset is what is inside it (its fingerprint, cache and run ids say so), and a link
    could make octbench read, hash and cache any file on the machine.

    Raises:
        DataError: listing the links (and where they lead) and what to do.
    """
    real_root = root.resolve()
    outside = []
    for split, classes in layout.items():
        for folder in (root / split, *(root / split / name for name in classes)):
            if not folder.resolve().is_relative_to(real_root):
                outside.append(folder)
        for name, files in classes.items():
            if (root / split / name).resolve().is_relative_to(real_root):
                outside += [f for f in files if not f.resolve().is_relative_to(real_root)]
    if outside:
        shown = ", ".join(f"{printable(p.relative_to(root))} -> {printable(p.resolve())}"
                          for p in outside[:_LISTED_BAD_FILES])
        more = f" and {len(outside) - _LISTED_BAD_FILES} more" if (
            len(outside) > _LISTED_BAD_FILES) else ""
        raise DataError(f"image folder {root} has {len(outside)} link(s) leading outside it: "
                        f"{shown}{more}. octbench reads a dataset only from inside its folder; "
                        "copy those scans in, or remove the links.")


def _folder_available(*, path: str, **_) -> str:
    layout = list_images(path)
    count = sum(len(files) for split in layout.values() for files in split.values())
    return (f"image folder {path}: {count:,} scans of {len(layout['train'])} classes "
            f"({', '.join(layout['train'])})")


AVAILABILITY_CHECKS["folder"] = _folder_available


@fingerprinter("folder")
def folder_fingerprint(*, path: str, **_) -> str:
    """SHA-256 over every scan's path (relative to the folder) and bytes."""
    layout = list_images(path)
    root = Path(path).expanduser().resolve()
    files = tuple((str(f.resolve().relative_to(root)), f.stat().st_size, f.stat().st_mtime_ns)
                  for split in layout.values() for group in split.values() for f in group)
    return _hash_tree(str(root), files)


@functools.lru_cache(maxsize=16)
def _hash_tree(root: str, files: tuple[tuple[str, int, int], ...]) -> str:
    # Keyed by every file's size and mtime so that a changed file is hashed again.
    digest = hashlib.sha256()
    for relative, _, _ in files:
        with open(Path(root) / relative, "rb") as handle:
            digest.update(relative.encode() + b"\0")
            digest.update(hashlib.file_digest(handle, "sha256").digest())
    return f"sha256:{digest.hexdigest()}"


@DATASETS.register(size=Interval(8, 1024), val_fraction=Interval(0, 1, low_open=True,
                                                                  high_open=True))
def folder(*, path: str, size: int = 28, skip_bad: bool = False, val_fraction: float = 0.1,
           seed: int = 0, cache: bool = True) -> OCTData:
    """An image folder DIR/{train,val,test}/<class>/*.png, preprocessed like OCTMNIST.

    Args:
        path: the folder holding ``train/``, ``test/`` and optionally ``val/``.
        size: image side after preprocessing (28 as OCTMNIST; 64, 128, 224 as MedMNIST+).
        skip_bad: skip unreadable scans (counted in the run record) instead of failing.
        val_fraction: without ``val/``, this stratified share of ``train/`` becomes val.
        seed: the seed of that split.
        cache: keep the preprocessed arrays as an npz keyed by the folder's content.
    """
    layout = list_images(path)
    fingerprint = folder_fingerprint(path=path)
    options = {"size": size, "skip_bad": skip_bad, "version": CACHE_VERSION,
               **({} if "val" in layout else {"val_fraction": val_fraction, "seed": seed})}
    key = hashlib.sha256(json.dumps([fingerprint, options], sort_keys=True).encode())
    cached = cache_root() / "folder" / f"folder-{size}px-{key.hexdigest()[:16]}.npz"
    if cache and cached.is_file():
        arrays = read_npz(cached)
    else:
        arrays = _build(layout, Path(path).expanduser(), size=size, skip_bad=skip_bad,
                        val_fraction=val_fraction, seed=seed)
        if cache:
            remove_stale_temp_files(cached.parent)
            atomic_write(cached, lambda handle: np.savez(handle, **arrays))
    skipped = [str(s) for s in arrays.pop("skipped_files", np.array([], dtype=str))]
    source = {"path": str(Path(path).expanduser().resolve()),
              "val": ("the folder's val/" if "val" in layout else
                      f"a stratified {val_fraction:.0%} of train/, seed {seed}"),
              "skipped_bad_files": len(skipped)}
    if skipped:
        source["skipped_examples"] = skipped[:_LISTED_BAD_FILES]
    return from_arrays(arrays, name="folder", origin=f"image folder {path}", synthetic=False,
                       source=source, fingerprint=fingerprint)


def _build(layout: dict, root: Path, *, size: int, skip_bad: bool, val_fraction: float,
           seed: int) -> dict[str, np.ndarray]:
    from tqdm.auto import tqdm

    class_names = list(layout["train"])
    total = sum(len(files) for split in layout.values() for files in split.values())
    arrays, bad = {}, []
    with tqdm(total=total, unit="scan", desc=f"preprocessing {root} ({size} px)",
              disable=None, leave=False) as bar:
        for split, classes in layout.items():
            images, labels, patients = [], [], []
            for name, files in classes.items():
                for file in files:
                    bar.update()
                    try:
                        images.append(load_scan(file, size=size))
                    except DataError as error:
                        bad.append((file, str(error)))
                        continue
                    labels.append(class_names.index(name))
                    patients.append(patient_id(file))
            arrays[f"{split}_images"] = np.stack(images) if images else np.zeros(
                (0, size, size), np.uint8)
            arrays[f"{split}_labels"] = np.asarray(labels, dtype=np.int64)
            if split == "test" and patients and None not in patients:
                arrays["test_groups"] = np.asarray(patients, dtype=str)
    if bad and not skip_bad:
        shown = "; ".join(f"{file.relative_to(root)}" for file, _ in bad[:_LISTED_BAD_FILES])
        more = f" and {len(bad) - _LISTED_BAD_FILES} more" if len(bad) > _LISTED_BAD_FILES else ""
        raise DataError(
            f"image folder {root}: {len(bad)} scan(s) cannot be read: {shown}{more} "
            f"(first: {bad[0][1]}). Fix or remove them, or set `data.skip_bad: true` to skip "
            "them (the run record counts them).")
    if bad:
        log.warning("image folder %s: skipped %d unreadable scan(s)", root, len(bad))
    if "val" not in layout:
        arrays.update(_stratified_val(arrays.pop("train_images"), arrays.pop("train_labels"),
                                      val_fraction=val_fraction, seed=seed))
    arrays["class_names"] = np.array(class_names)
    arrays["skipped_files"] = np.array([str(f.relative_to(root)) for f, _ in bad], dtype=str)
    return arrays


#: Kermany et al.'s OCT file names: CLASS-PATIENT-SCAN, e.g. CNV-451136-1.jpeg.
_KERMANY_NAME = re.compile(r"^[A-Za-z]+-(\d+)-\d+$")


def patient_id(file: Path) -> str | None:
    """The patient of a scan named as in Kermany et al. (``CNV-451136-1.jpeg`` -> ``451136``),
    or None for any other name; the report resamples a patient's scans together."""
    match = _KERMANY_NAME.match(file.stem)
    return match.group(1) if match else None


def _stratified_val(images: np.ndarray, labels: np.ndarray, *, val_fraction: float, seed: int
                    ) -> dict[str, np.ndarray]:
    from sklearn.model_selection import train_test_split

    try:
        train, val = train_test_split(np.arange(len(labels)), test_size=val_fraction,
                                      stratify=labels, random_state=seed)
    except ValueError as error:  # too few scans of a class to put one in each part
        raise DataError(f"cannot split a validation set off train/ ({error}); add a val/ "
                        "folder or more training scans per class.") from None
    train, val = np.sort(train), np.sort(val)
    return {"train_images": images[train], "train_labels": labels[train],
            "val_images": images[val], "val_labels": labels[val]}
