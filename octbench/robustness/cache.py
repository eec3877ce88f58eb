"""Corrupted test sets, generated once and cached as uint8 arrays beside the data cache.

One ``.npy`` file per (source data fingerprint, corruption, severity, seed, output size), under
``<cache root>/medmnist_c/``; the file name carries a hash of everything that decides its pixels
(including the ``medmnistc`` version), so a changed input never reuses a stale set. Files are
written atomically and read without pickle; one of the wrong shape or type is regenerated.

Must not import: torch, or octbench above L1.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np

from octbench.data import cache_root
from octbench.fileio import atomic_write
from octbench.progress import counting
from octbench.robustness.corruptions import corrupt_images, medmnistc_version

log = logging.getLogger(__name__)

#: Bumped when the way a set is generated changes (new files, old ones left unused).
CACHE_VERSION = 1


def cache_path(source_fingerprint: str, name: str, severity: int, *, seed: int, size: int,
               source_shape: tuple[int, ...], root: Path | None = None) -> Path:
    """Where the set for these inputs is cached."""
    key = json.dumps([CACHE_VERSION, source_fingerprint, list(source_shape), name, severity,
                      seed, size, medmnistc_version()])
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    folder = (root or cache_root()) / "medmnist_c"
    return folder / f"{name}-s{severity}-seed{seed}-{size}px-{digest}.npy"


def corrupted_set(source: np.ndarray, source_fingerprint: str, name: str, severity: int, *,
                  seed: int, size: int, root: Path | None = None) -> tuple[np.ndarray, bool]:
    """The corrupted set (N, size, size) uint8, from the cache or generated (with progress).

    Returns:
        ``(images, generated)``: ``generated`` is False when the cache held it.
    """
    path = cache_path(source_fingerprint, name, severity, seed=seed, size=size,
                      source_shape=source.shape, root=root)
    expected = (len(source), size, size)
    if path.is_file():
        try:
            images = np.load(path, allow_pickle=False)
            if images.dtype == np.uint8 and images.shape == expected:
                return images, False
            log.warning("%s holds %s %s, not uint8 %s; generating it again", path, images.dtype,
                        images.shape, expected)
        except (OSError, ValueError) as error:
            log.warning("cannot read cached corrupted set %s (%s); generating it again", path,
                        error)
    with counting(len(source), f"corrupting the test set: {name}, severity {severity}") as bar:
        images = corrupt_images(source, name, severity, seed=seed, size=size, progress=bar)
    try:
        atomic_write(path, lambda handle: np.save(handle, images, allow_pickle=False))
    except OSError as error:  # a read-only cache only costs time
        log.warning("cannot cache corrupted set in %s (%s)", path, error)
    return images, True
