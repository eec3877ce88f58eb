"""Built-in synthetic OCT data with OCTMNIST's split sizes and class ratios.

The images are procedural B-scans (:mod:`octbench.data.render`). They let every test, demo and
benchmark run offline; they are *not* OCTMNIST, and everything made from them is labelled
synthetic. Generated sets are cached as MedMNIST-format npz files keyed by their parameters.

Must not import: octbench beyond ``octbench.data``, fileio and the registry.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path

import numpy as np

from octbench.data._registry import AVAILABILITY_CHECKS, DATASETS, cache_root, fingerprinter
from octbench.data.dataset import OCT_CLASSES, SPLITS, OCTData, from_arrays
from octbench.data.npz import read_npz
from octbench.data.render import render_scans
from octbench.fileio import atomic_write, remove_stale_temp_files
from octbench.progress import counting
from octbench.registry import Interval, OneOf

log = logging.getLogger(__name__)

#: OCTMNIST's official per-class counts (CNV, DME, DRUSEN, NORMAL), medmnist 3.x.
OCTMNIST_COUNTS = {
    "train": (33484, 10213, 7754, 46026),
    "val": (3721, 1135, 862, 5114),
    "test": (250, 250, 250, 250),
}
GENERATOR_VERSION = 2  # bump when the renderer changes, so stale caches are not reused


def split_counts(scale: float, test_scale: float = 1.0) -> dict[str, list[int]]:
    """OCTMNIST's class counts scaled (train and val by ``scale``, test by ``test_scale``)."""
    factors = {"train": scale, "val": scale, "test": test_scale}
    return {s: [max(1, round(c * factors[s])) for c in counts]
            for s, counts in OCTMNIST_COUNTS.items()}


def generate_arrays(
    *, size: int = 28, scale: float = 1.0, test_scale: float = 1.0, seed: int = 0,
    difficulty: float = 1.0, label_noise: float = 0.0,
) -> dict[str, np.ndarray]:
    """Generate a synthetic OCT dataset as MedMNIST-format arrays (uint8 images, (N, 1) labels).

    Label noise flips that fraction of train and val labels to a uniformly drawn other class;
    the test labels stay clean so that the test split measures the truth.
    """
    arrays = {}
    counts = split_counts(scale, test_scale)
    total = sum(sum(per_class) for per_class in counts.values())
    with counting(total, f"generating synthetic OCT data ({size} px)") as progress:
        for index, split in enumerate(SPLITS):
            arrays.update(_generate_split(index, split, counts[split], size=size, seed=seed,
                                          difficulty=difficulty, label_noise=label_noise,
                                          progress=progress))
    arrays["class_names"] = np.array(OCT_CLASSES)
    return arrays


def _generate_split(index: int, split: str, counts: list[int], *, size: int, seed: int,
                    difficulty: float, label_noise: float, progress) -> dict[str, np.ndarray]:
    rng = np.random.default_rng([seed, index])
    labels = rng.permutation(np.repeat(np.arange(len(counts)), counts))
    images = render_scans(labels, size=size, seed=seed * 1000 + index, difficulty=difficulty,
                          progress=progress)
    if label_noise > 0 and split != "test":
        flip = rng.random(len(labels)) < label_noise
        shift = rng.integers(1, len(counts), size=len(labels))
        labels = np.where(flip, (labels + shift) % len(counts), labels)
    return {f"{split}_images": images, f"{split}_labels": labels.astype(np.uint8)[:, None]}


def cache_dir() -> Path:
    """Where generated sets are cached: ``$OCTBENCH_CACHE`` or ``~/.cache/octbench``."""
    return cache_root() / "synthetic"


def _generator_key(params: dict) -> str:
    return hashlib.sha256(
        json.dumps({**params, "version": GENERATOR_VERSION}, sort_keys=True).encode()
    ).hexdigest()


@fingerprinter("synthetic")
def synthetic_fingerprint(*, size: int = 28, scale: float = 1.0, test_scale: float = 1.0,
                          seed: int = 0, difficulty: float = 1.0, label_noise: float = 0.0,
                          cache: bool = True) -> str:
    """The generator's parameters and version: the same ones always render the same scans."""
    params = dict(size=size, scale=scale, test_scale=test_scale, seed=seed,
                  difficulty=difficulty, label_noise=label_noise)
    return f"synthetic-v{GENERATOR_VERSION}:{_generator_key(params)}"


def cached_file(*, size: int = 28, **params) -> Path:
    """The cache file of the synthetic set with these parameters (it may not exist yet)."""
    params = {"size": size, "scale": 1.0, "test_scale": 1.0, "seed": 0, "difficulty": 1.0,
              "label_noise": 0.0, **{k: v for k, v in params.items() if k != "cache"}}
    return cache_dir() / f"synthetic-{size}px-{_generator_key(params)[:16]}.npz"


def _synthetic_available(**params) -> str:
    path = cached_file(**params)
    if params.get("cache", True) and path.is_file():
        return f"synthetic OCT data, cached at {path}"
    return "synthetic OCT data, generated when the run starts (then cached)"


AVAILABILITY_CHECKS["synthetic"] = _synthetic_available


@DATASETS.register(
    size=OneOf((28, 64, 128, 224)),
    scale=Interval(0, 1, low_open=True),
    test_scale=Interval(0, 1, low_open=True),
    difficulty=Interval(0, None, low_open=True),
    label_noise=Interval(0, 1, high_open=True),
)
def synthetic(
    *, size: int = 28, scale: float = 1.0, test_scale: float = 1.0, seed: int = 0,
    difficulty: float = 1.0, label_noise: float = 0.0, cache: bool = True,
) -> OCTData:
    """Procedural OCT B-scans with OCTMNIST's splits and imbalance (not real data).

    Args:
        size: image side, one of 28, 64, 128, 224.
        scale: fraction of OCTMNIST's train and val sizes (1.0 = 97,477 / 10,832 images).
        test_scale: fraction of the balanced test split (1.0 = 250 per class). It stays full
            by default: 1,000 images are cheap, and fewer make test metrics too noisy.
        seed: generator seed (the data's, independent of the training seeds).
        difficulty: > 1 makes findings subtler, < 1 more obvious.
        label_noise: fraction of train/val labels flipped to another class.
        cache: keep the generated set as an npz file for instant reloads.
    """
    params = dict(size=size, scale=scale, test_scale=test_scale, seed=seed,
                  difficulty=difficulty, label_noise=label_noise)
    path = cached_file(**params)
    if cache and path.is_file():
        arrays = read_npz(path)
    else:
        start = time.perf_counter()
        arrays = generate_arrays(**params)
        n = sum(len(arrays[f"{s}_labels"]) for s in SPLITS)
        log.info("generated %d synthetic OCT images (%d px) in %.1f s", n, size,
                 time.perf_counter() - start)
        if cache:
            arrays["octbench_synthetic"] = np.array(True)
            try:
                remove_stale_temp_files(path.parent)  # what a killed generator left
                atomic_write(path, lambda handle: np.savez(handle, **arrays))
            except OSError as error:  # a read-only or full cache only costs the next reload
                log.warning("cannot cache synthetic data in %s (%s); set OCTBENCH_CACHE to a "
                            "writable folder to reuse it", path.parent, error.strerror or error)
    arrays.pop("octbench_synthetic", None)
    return from_arrays(
        arrays, name="synthetic", origin=f"synthetic data {params}", synthetic=True,
        class_names=OCT_CLASSES, source={**params, "generator_version": GENERATOR_VERSION},
        fingerprint=synthetic_fingerprint(**params),
    )
