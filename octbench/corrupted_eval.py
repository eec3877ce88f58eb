"""Score a trained model on every corruption x severity of the test split (MedMNIST-C).

Used by the runner at the end of a run (``evaluate: {corruptions: medmnist_c}``) and by
``octbench evaluate --corruptions`` for a finished run. Each corrupted set is scored with the
clean test's metrics; each scored cell is saved at once in a partial file of the run folder, so
a crash or Ctrl-C loses nothing already scored, and the rerun scores only the cells left.

Protocols, named in the record and the report:

- ``medmnist_c``: OCTMNIST at 224 px, the corruptions applied to the test scans as MedMNIST-C
  does: the only one comparable with MedMNIST-C's published numbers.
- ``adapted``: OCTMNIST at a smaller size: the 224-px test scans are corrupted, then resized to
  the run's size exactly as the clean data (:func:`octbench.data.preprocess.preprocess_array`).
- ``synthetic``: the synthetic twin, treated like ``adapted`` (its 224-px rendering is corrupted).
- ``generic``: own data (npz, folders, any class count): the corruptions with OCTMNIST's
  severities, applied at the data's own size.

BE / rBE (normalised by ``medmnistc``'s AlexNet) are given for real OCTMNIST only.

Must not import: config, the CLI, report or tuning.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from octbench.data import OCTData, load_dataset
from octbench.data.octmnist import octmnist_test_split
from octbench.data.preprocess import preprocess_array
from octbench.engine import evaluate
from octbench.errors import DataError
from octbench.fileio import atomic_write, atomic_write_text
from octbench.metrics import METRICS, compute_metrics
from octbench.robustness.cache import corrupted_set
from octbench.robustness.corruptions import (
    CORRUPTIONS,
    MEDMNIST_C_SIZE,
    SEVERITIES,
    corrupt_images,
    medmnistc_version,
    require_medmnistc,
)
from octbench.robustness.scores import ROBUSTNESS_VERSION, alexnet_baseline, summarize

log = logging.getLogger(__name__)

PARTIAL = "robustness.partial.json"
#: One test scan at every corruption and severity, for the report's sample strip.
SAMPLES = "robustness_samples.npz"


@dataclass(frozen=True)
class CorruptionPlan:
    """Which corrupted sets to score: corruptions x severities, generated with ``seed``."""

    corruptions: tuple[str, ...] = CORRUPTIONS
    severities: tuple[int, ...] = SEVERITIES
    seed: int = 0

    def cells(self) -> list[tuple[str, int]]:
        return [(name, severity) for name in self.corruptions for severity in self.severities]


@dataclass(frozen=True)
class Source:
    """The scans the corruptions are applied to, and how the result compares."""

    images: np.ndarray  # uint8 (N, S, S), S = 224 except for generic data
    fingerprint: str
    protocol: str

    @property
    def normalised(self) -> bool:
        return self.protocol in ("medmnist_c", "adapted")


def corruption_source(data: OCTData, params: dict | None = None) -> Source:
    """The test scans to corrupt for ``data`` (loaded with ``params``): the 224-px rendering of
    OCTMNIST or the synthetic twin (loaded once more at 224 px when the run is smaller), else
    the data's own test scans.

    Raises:
        DataError: the 224-px test split does not hold the same labels in the same order.
    """
    if data.name not in ("octmnist", "synthetic"):
        return Source(data.test.images.numpy(), data.fingerprint, "generic")
    protocol = "synthetic" if data.synthetic else (
        "medmnist_c" if data.size == MEDMNIST_C_SIZE else "adapted")
    if data.size == MEDMNIST_C_SIZE:
        return Source(data.test.images.numpy(), data.fingerprint, protocol)
    params = {**(params or {}), "size": MEDMNIST_C_SIZE}
    if data.name == "octmnist":  # the test split only: the 224-px training set is 4.9 GB
        images, labels, fingerprint = octmnist_test_split(size=MEDMNIST_C_SIZE,
                                                          root=params.get("root"))
        labels = torch.from_numpy(labels)
    else:
        large = load_dataset(data.name, **params)
        images, labels, fingerprint = large.test.images.numpy(), large.test.labels, \
            large.fingerprint
    if not torch.equal(labels, data.test.labels):
        raise DataError(f"the {MEDMNIST_C_SIZE}-px {data.name} test split does not hold the "
                        f"{data.size}-px one's labels in the same order; corrupted evaluation "
                        "needs the same scans at both sizes.")
    return Source(images, fingerprint, protocol)


def _scalars(metrics: dict) -> dict:
    return {k: metrics[k] for k in METRICS}


def _read_partial(path: Path | None, key: str) -> dict:
    """Cells scored before an interruption; anything unusable is ignored (and rescored)."""
    if path is None or not path.is_file():
        return {}
    try:
        saved = json.loads(path.read_text())
        cells = saved["cells"] if saved.get("key") == key else {}
        return {name: {sev: {m: float(v) if v is not None else math.nan for m, v in cell.items()
                             if m in METRICS}
                       for sev, cell in by_severity.items()
                       if name in CORRUPTIONS and sev.isdigit() and isinstance(cell, dict)}
                for name, by_severity in cells.items() if isinstance(by_severity, dict)}
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as error:
        log.warning("ignoring %s (%s); scoring every corrupted set again", path, error)
        return {}


def evaluate_corruptions(
    model: nn.Module, data: OCTData, plan: CorruptionPlan, *, clean: dict,
    data_params: dict | None = None, normalize: tuple[float, float] = (0.5, 0.5),
    logit_offset: torch.Tensor | None = None, device: torch.device | None = None,
    batch_size: int = 256, precision: str = "fp32", channels_last: bool = False,
    partial: Path | None = None, samples: Path | None = None,
    labels: torch.Tensor | None = None,
    class_names: Sequence[str] | None = None,
    on_cell: Callable[[str, int, dict], None] | None = None,
) -> dict:
    """Score ``model`` on every cell of ``plan``; return the record's ``robustness`` section.

    Args:
        clean: the clean test metrics (for rBE and the drop from clean).
        partial: a file where each scored cell is saved at once, and read back on a rerun.
        samples: where to write the first test scan at every cell (:func:`save_samples`).
        labels: the test labels as the model numbers them (default: the data's).
        on_cell: called after each newly scored cell (progress, tests).

    Example:
        >>> section = evaluate_corruptions(model, data, CorruptionPlan(), clean=metrics["test"],
        ...                                partial=run_dir / PARTIAL)  # doctest: +SKIP
        >>> section["summary"]["mean"]["macro_f1"]  # doctest: +SKIP
    """
    require_medmnistc()
    device = device or torch.device("cpu")
    source = corruption_source(data, data_params)
    labels = (data.test.labels if labels is None else labels).to(device)
    class_names = tuple(class_names or data.class_names)
    key = json.dumps([ROBUSTNESS_VERSION, source.fingerprint, source.protocol, data.size,
                      plan.seed, medmnistc_version()])
    cells = _read_partial(partial, key)
    reused = sum(len(v) for v in cells.values())
    generate_seconds = eval_seconds = 0.0
    for name, severity in plan.cells():
        if str(severity) in cells.get(name, {}):
            continue
        start = time.perf_counter()
        images, _ = corrupted_set(source.images, source.fingerprint, name, severity,
                                  seed=plan.seed, size=data.size)
        generate_seconds += time.perf_counter() - start
        predictions, seconds = evaluate(
            model, torch.from_numpy(images).to(device), labels, batch_size=batch_size,
            precision=precision, logit_offset=logit_offset, channels_last=channels_last,
            normalize=normalize)
        eval_seconds += seconds
        metrics = _scalars(compute_metrics(predictions.labels, predictions.scores, class_names))
        cells.setdefault(name, {})[str(severity)] = metrics
        if partial is not None:
            atomic_write_text(partial, json.dumps({"key": key, "cells": cells}))
        if on_cell is not None:
            on_cell(name, severity, metrics)
    cells = {name: {str(s): cells[name][str(s)] for s in plan.severities}
             for name in plan.corruptions}
    if samples is not None:
        save_samples(samples, source, plan, size=data.size)
    baseline = alexnet_baseline() if source.normalised else None
    return {
        "version": ROBUSTNESS_VERSION,
        "protocol": source.protocol,
        "comparable": source.protocol == "medmnist_c",
        "normalised": baseline is not None,
        "size": data.size,
        "source_size": int(source.images.shape[1]),
        "seed": plan.seed,
        "medmnistc": medmnistc_version(),
        "cells": cells,
        "summary": summarize(cells, clean, baseline=baseline),
        "timing": {"generate_seconds": generate_seconds, "eval_seconds": eval_seconds,
                   "cells_scored": len(plan.cells()) - reused, "cells_reused": reused},
    }


def save_samples(path: Path, source: Source, plan: CorruptionPlan, *, size: int) -> None:
    """Write the first test scan, clean and at every cell of ``plan``, as the model saw it:
    ``clean`` (size, size), ``images`` (corruptions, severities, size, size) uint8, and the
    ``corruptions`` / ``severities`` they show. Each cell's seed starts with this scan, so it
    equals the first image of the scored set."""
    first = source.images[:1]
    clean = first[0] if first.shape[1] == size else preprocess_array(first[0], size=size)
    images = np.stack([np.stack([corrupt_images(first, name, severity, seed=plan.seed,
                                                size=size)[0]
                                 for severity in plan.severities])
                       for name in plan.corruptions])
    arrays = {"clean": clean, "images": images, "corruptions": np.array(plan.corruptions),
              "severities": np.array(plan.severities)}
    atomic_write(path, lambda handle: np.savez_compressed(handle, **arrays))
