"""Exact-duplicate images (pixel hashes) within and across splits: leakage a test score hides.

An image in val or test whose pixels also occur in an earlier split (train; or val, for test) is
scored on something the model has seen; a repeat inside one split weighs that image twice. Images
are compared by a BLAKE2 hash of their uint8 pixels, which equals byte-for-byte identity for any
practical purpose. ``data: {on_duplicates: warn | error | drop}`` chooses what a load does
(default ``warn``); ``drop`` keeps the first copy (train before val before test).

Must not import: models, strategies, the engine, runner, report or tuning.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging

import numpy as np
import torch

from octbench.data.dataset import Split
from octbench.errors import DataError

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
POLICIES = ("warn", "error", "drop")
DEFAULT_POLICY = "warn"


def image_hashes(images: torch.Tensor) -> list[bytes]:
    """One 16-byte BLAKE2 digest of each uint8 image's pixels (and shape)."""
    array = np.ascontiguousarray(images.numpy())
    shape = str(array.shape[1:]).encode()
    return [hashlib.blake2b(memoryview(image), digest_size=16, key=shape).digest()
            for image in array]


def find_duplicates(data) -> dict:
    """Count exact duplicates of an :class:`~octbench.data.OCTData`, and which items repeat.

    Returns:
        ``{"within": {split: n}, "across": {"train-val": n, "train-test": n, "val-test": n},
        "conflicting_labels": n, "total": n, "repeats": {split: [index, ...]}}``: ``within``
        counts the items of a split that repeat an earlier item of the same split; ``across``
        the items of the later split whose pixels occur in the earlier one; conflicting labels
        the repeated images that carry different labels; ``repeats`` every item that repeats an
        earlier one (what ``drop`` removes).
    """
    seen: dict[bytes, tuple[str, int]] = {}  # hash -> (first split, first label)
    by_split: dict[str, set[bytes]] = {}
    within = {s: 0 for s in SPLITS}
    across = {"train-val": 0, "train-test": 0, "val-test": 0}
    repeats: dict[str, list[int]] = {s: [] for s in SPLITS}
    conflicting = 0
    for split in SPLITS:
        part = data.split(split)
        hashes = image_hashes(part.images)
        labels = part.labels.tolist()
        here: set[bytes] = set()
        for index, (digest, label) in enumerate(zip(hashes, labels, strict=True)):
            if digest in here:
                within[split] += 1
            else:
                for earlier in SPLITS[:SPLITS.index(split)]:
                    if digest in by_split[earlier]:
                        across[f"{earlier}-{split}"] += 1
            if digest in seen:
                repeats[split].append(index)
                conflicting += seen[digest][1] != label
            else:
                seen[digest] = (split, label)
            here.add(digest)
        by_split[split] = here
    total = sum(len(r) for r in repeats.values())
    return {"within": within, "across": across, "conflicting_labels": conflicting,
            "total": total, "repeats": repeats}


def summary(found: dict) -> str:
    """One line, e.g. ``2 repeats within train; 1 test image identical to a train image``."""
    parts = [f"{n:,} repeat{'s' if n != 1 else ''} within {split}"
             for split, n in found["within"].items() if n]
    parts += [f"{n:,} {pair.split('-')[1]} image{'s' if n != 1 else ''} identical to "
              f"{pair.split('-')[0]} images" for pair, n in found["across"].items() if n]
    if found.get("conflicting_labels"):
        parts.append(f"{found['conflicting_labels']:,} with a different label than their copy")
    return "; ".join(parts) if parts else "no exact duplicates"


def record_counts(found: dict, policy: str) -> dict:
    """What a run record keeps: the counts (not the indices) and the policy applied."""
    return {"within": found["within"], "across": found["across"],
            "conflicting_labels": found["conflicting_labels"], "total": found["total"],
            "on_duplicates": policy, "dropped": found["total"] if policy == "drop" else 0}


def apply_policy(data, policy: str = DEFAULT_POLICY, origin: str = ""):
    """Find duplicates in ``data`` and warn, refuse or drop them; return the data with the
    counts attached (``data.duplicates``).

    Raises:
        DataError: ``policy == "error"`` and duplicates exist, with the counts and the fix.
    """
    if policy not in POLICIES:
        raise DataError(f"data.on_duplicates must be one of {', '.join(POLICIES)}. Got "
                        f"{policy!r} instead.")
    found = find_duplicates(data)
    where = origin or data.name
    if found["total"] and policy == "error":
        raise DataError(f"{where} has exact duplicate images: {summary(found)}. Remove them "
                        "from the data, or set data.on_duplicates: drop (keeps the first copy) "
                        "or warn.")
    if found["total"] and policy == "warn":
        log.warning("%s has exact duplicate images: %s; scores on repeated images are "
                    "inflated. Set data.on_duplicates: drop to remove them, or error to refuse "
                    "such data.", where, summary(found))
    if found["total"] and policy == "drop":
        log.warning("%s: dropped %d exact duplicate images (%s), keeping the first copy",
                    where, found["total"], summary(found))
        data = _drop(data, found["repeats"])
    return dataclasses.replace(data, duplicates=record_counts(found, policy))


def _drop(data, repeats: dict[str, list[int]]):
    splits = {}
    for split in SPLITS:
        part = data.split(split)
        keep = torch.ones(len(part), dtype=torch.bool)
        keep[repeats[split]] = False
        if not keep.any():
            raise DataError(f"{data.name}: every {split} image repeats an earlier one; "
                            "nothing would be left after dropping duplicates.")
        splits[split] = Split(part.images[keep], part.labels[keep],
                              None if part.groups is None else part.groups[keep.numpy()])
    return dataclasses.replace(data, **splits)
