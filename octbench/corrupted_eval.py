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

Must not import: config (the plan is :class:`octbench.grid.CorruptionPlan`, plain data), the
CLI, report or tuning.
"""

from __future__ import annotations

import io
import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from octbench.data import OCTData, load_dataset
from octbench.data.octmnist import octmnist_test_split
from octbench.data.preprocess import preprocess_array
from octbench.engine import evaluate
from octbench.errors import DataError
from octbench.grid import CorruptionPlan
from octbench.metrics import METRICS, compute_metrics
from octbench.results import ResultsStore, robustness_member
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
from octbench.untrusted import load_npz, npz_headers

log = logging.getLogger(__name__)

#: Cells scored before an interruption (metrics and predictions), read back on a rerun.
PARTIAL = "robustness.partial.npz"
PREDICTIONS = ResultsStore.ROBUSTNESS_PREDICTIONS
#: One test scan at every corruption and severity, for the report's sample strip.
SAMPLES = ResultsStore.ROBUSTNESS_SAMPLES
#: What a stored section must share with a new evaluation for their cells to sit together.
SAME_SETTING = ("version", "protocol", "size", "seed", "medmnistc")


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


@dataclass
class Scored:
    """Cells scored: ``{corruption: {severity (str): metrics}}`` and their predictions
    ``{(corruption, severity): (predicted classes uint8 (N,), scores float16 (N, K))}``."""

    cells: dict
    predictions: dict

    def add(self, name: str, severity: int, metrics: dict, preds: np.ndarray,
            scores: np.ndarray) -> None:
        self.cells.setdefault(name, {})[str(severity)] = metrics
        self.predictions[(name, severity)] = (preds.astype(np.uint8),
                                              scores.astype(np.float16))

    def arrays(self, labels: np.ndarray) -> dict[str, np.ndarray]:
        """The npz members of these cells' predictions (with the test labels)."""
        arrays = {"labels": labels.astype(np.uint8)}
        for (name, severity), (preds, scores) in self.predictions.items():
            arrays[f"{robustness_member(name, severity)}_preds"] = preds
            arrays[f"{robustness_member(name, severity)}_scores"] = scores
        return arrays


def _npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return buffer.getvalue()


def _read_partial(store: ResultsStore | None, run_id: str | None, key: str, items: int,
                  classes: int) -> Scored:
    """Cells scored before an interruption; anything unusable is ignored (and rescored). The
    file lies in a run folder, so it is read like any stranger's npz (headers first)."""
    scored = Scored({}, {})
    blob = store.load_bytes(run_id, PARTIAL) if store is not None else None
    if blob is None:
        return scored
    try:
        headers = npz_headers(io.BytesIO(blob))
        members = [m[:-len("_metrics")] for m in headers if m.endswith("_metrics")]
        found = {m: (name, int(severity)) for m in members
                 for name, _, severity in [m.rpartition("_s")]
                 if name in CORRUPTIONS and severity in map(str, SEVERITIES)}
        expected = {"key": ()} | {f"{m}_{what}": shape for m in found for what, shape in
                                  (("metrics", (len(METRICS),)), ("preds", (items,)),
                                   ("scores", (items, classes)))}
        kinds = {name: "U" if name == "key" else "f" if name.endswith(("_metrics", "_scores"))
                 else "iu" for name in expected}
        arrays = load_npz(io.BytesIO(blob), expected, kinds)
        if str(arrays["key"]) != key:
            return scored
        for member, (name, severity) in found.items():
            metrics = dict(zip(METRICS, map(float, arrays[f"{member}_metrics"]), strict=True))
            scored.add(name, severity, metrics, arrays[f"{member}_preds"],
                       arrays[f"{member}_scores"])
    except (OSError, ValueError) as error:
        log.warning("ignoring %s of run %s (%s); scoring every corrupted set again", PARTIAL,
                    run_id, error)
        return Scored({}, {})
    return scored


def _write_partial(store: ResultsStore, run_id: str, key: str, scored: Scored) -> None:
    arrays = {"key": np.array(key)}
    for name, by_severity in scored.cells.items():
        for severity, metrics in by_severity.items():
            member = robustness_member(name, int(severity))
            preds, scores = scored.predictions[(name, int(severity))]
            arrays.update({f"{member}_metrics": np.array([metrics[m] for m in METRICS],
                                                         dtype=np.float64),
                           f"{member}_preds": preds, f"{member}_scores": scores})
    store.save_bytes(run_id, PARTIAL, _npz_bytes(arrays))


def _kept(previous: dict | None, setting: dict, plan: CorruptionPlan, store, run_id,
          items: int, classes: int) -> Scored:
    """The cells of a stored section that this evaluation does not score again, with their
    stored predictions; none when the section was made in another setting (it is replaced)."""
    if not previous or not previous.get("cells"):
        return Scored({}, {})
    differs = [k for k in SAME_SETTING if previous.get(k) != setting[k]]
    if differs:
        log.warning("the stored corrupted evaluation of run %s has another %s (%s); the new one "
                    "replaces it", run_id, ", ".join(differs),
                    ", ".join(f"{previous.get(k)!r} -> {setting[k]!r}" for k in differs))
        return Scored({}, {})
    asked = set(plan.cells())
    try:
        cells = {name: {s: {m: float(v) if v is not None else math.nan
                            for m, v in metrics.items() if m in METRICS}
                        for s, metrics in by_severity.items() if (name, int(s)) not in asked}
                 for name, by_severity in previous["cells"].items() if name in CORRUPTIONS}
    except (AttributeError, TypeError, ValueError) as error:  # a record from elsewhere
        log.warning("the stored corrupted evaluation of run %s cannot be read (%s); the new one "
                    "replaces it", run_id, error)
        return Scored({}, {})
    cells = {name: by_severity for name, by_severity in cells.items() if by_severity}
    kept = Scored(cells, {})
    wanted = [(name, int(s)) for name, by_severity in cells.items() for s in by_severity]
    if not wanted or store is None:
        return kept
    try:
        stored = store.robustness_predictions(run_id, wanted, items=items, classes=classes,
                                              scores=True)
        kept.predictions = {cell: stored[cell] for cell in wanted}
    except (OSError, ValueError) as error:
        log.warning("the stored predictions of run %s's corrupted sets cannot be read (%s); "
                    "its report shows mean ± std without intervals", run_id, error)
    return kept


def _merged_order(cells: dict) -> dict:
    """Cells with each corruption's severities ascending (corruptions as they come)."""
    return {name: {str(s): by_severity[str(s)] for s in sorted(map(int, by_severity))}
            for name, by_severity in cells.items()}


def evaluate_corruptions(
    model: nn.Module, data: OCTData, plan: CorruptionPlan, *, clean: dict,
    data_params: dict | None = None, normalize: tuple[float, float] = (0.5, 0.5),
    logit_offset: torch.Tensor | None = None, device: torch.device | None = None,
    batch_size: int = 256, precision: str = "fp32", channels_last: bool = False,
    store: ResultsStore | None = None, run_id: str | None = None,
    previous: dict | None = None,
    labels: torch.Tensor | None = None,
    class_names: Sequence[str] | None = None,
    on_cell: Callable[[str, int, dict], None] | None = None,
) -> dict:
    """Score ``model`` on every cell of ``plan``; return the record's ``robustness`` section.

    With ``store`` and ``run_id`` the run's folder (through the store, so a Ray worker's relay
    works too) keeps: a partial file where each scored cell is saved at once and read back on a
    rerun (the caller removes :data:`PARTIAL` once the record is written), every cell's
    predictions (:data:`PREDICTIONS`, for the report's bootstrap intervals) and one scan at every
    cell (:data:`SAMPLES`).

    Args:
        clean: the clean test metrics (for rBE and the drop from clean).
        previous: the run's stored ``robustness`` section: its cells that ``plan`` does not
            score again are kept (merged); made in another setting (seed, size, protocol), it
            is replaced.
        labels: the test labels as the model numbers them (default: the data's).
        on_cell: called after each newly scored cell (progress, tests).

    Example:
        >>> section = evaluate_corruptions(model, data, CorruptionPlan(CORRUPTIONS, SEVERITIES),
        ...     clean=metrics["test"], store=store, run_id=run_id)  # doctest: +SKIP
        >>> section["summary"]["mean"]["macro_f1"]  # doctest: +SKIP
    """
    require_medmnistc()
    device = device or torch.device("cpu")
    source = corruption_source(data, data_params)
    labels = (data.test.labels if labels is None else labels).to(device)
    class_names = tuple(class_names or data.class_names)
    items, classes = len(labels), len(class_names)
    setting = {"version": ROBUSTNESS_VERSION, "protocol": source.protocol, "size": data.size,
               "seed": plan.seed, "medmnistc": medmnistc_version()}
    key = json.dumps([ROBUSTNESS_VERSION, source.fingerprint, source.protocol, data.size,
                      plan.seed, medmnistc_version()])
    scored = _read_partial(store, run_id, key, items, classes)
    reused = sum(cell in scored.predictions for cell in plan.cells())
    generate_seconds = eval_seconds = 0.0
    for name, severity in plan.cells():
        if (name, severity) in scored.predictions:
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
        scored.add(name, severity, metrics, predictions.scores.argmax(axis=1),
                   predictions.scores)
        if store is not None:
            _write_partial(store, run_id, key, scored)
        if on_cell is not None:
            on_cell(name, severity, metrics)
    kept = _kept(previous, setting, plan, store, run_id, items, classes)
    kept_count = sum(len(v) for v in kept.cells.values())
    for name, severity in plan.cells():  # the sets scored now join (or replace) the kept ones
        kept.cells.setdefault(name, {})[str(severity)] = scored.cells[name][str(severity)]
        kept.predictions[(name, severity)] = scored.predictions[(name, severity)]
    scored = Scored(_merged_order(kept.cells), kept.predictions)
    if store is not None:
        if len(scored.predictions) == sum(len(v) for v in scored.cells.values()):
            store.save_bytes(run_id, PREDICTIONS,
                             _npz_bytes(scored.arrays(labels.cpu().numpy())))
        else:  # a kept cell's predictions were unreadable: no file rather than a stale one
            store.remove(run_id, PREDICTIONS)
        save_samples(store, run_id, source, scored.cells, size=data.size, seed=plan.seed)
    baseline = alexnet_baseline() if source.normalised else None
    return {
        **setting,
        "comparable": source.protocol == "medmnist_c",
        "normalised": baseline is not None,
        "source_size": int(source.images.shape[1]),
        "cells": scored.cells,
        "summary": summarize(scored.cells, clean, baseline=baseline),
        "timing": {"generate_seconds": generate_seconds, "eval_seconds": eval_seconds,
                   "cells_scored": len(plan.cells()) - reused, "cells_reused": reused,
                   "cells_kept": kept_count},
    }


def save_samples(store: ResultsStore, run_id: str, source: Source, cells: dict, *, size: int,
                 seed: int) -> None:
    """Save the first test scan, clean and at every corruption x severity of ``cells``, as the
    model saw it: ``clean`` (size, size), ``images`` (corruptions, severities, size, size)
    uint8, and the ``corruptions`` / ``severities`` they show. Each cell's seed starts with this
    scan, so it equals the first image of the scored set."""
    names = list(cells)
    severities = sorted({int(s) for by_severity in cells.values() for s in by_severity})
    first = source.images[:1]
    clean = first[0] if first.shape[1] == size else preprocess_array(first[0], size=size)
    images = np.stack([np.stack([corrupt_images(first, name, severity, seed=seed,
                                                size=size)[0]
                                 for severity in severities])
                       for name in names])
    arrays = {"clean": clean, "images": images, "corruptions": np.array(names),
              "severities": np.array(severities)}
    store.save_bytes(run_id, SAMPLES, _npz_bytes(arrays))
