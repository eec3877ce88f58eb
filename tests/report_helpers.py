"""Fabricated runs and the shared report of the ``test_report_*`` modules (one per section).

Results are fabricated (records + predictions written through ResultsStore), so no test trains;
every number a test checks is recomputed here independently (scikit-learn / scipy).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score, roc_auc_score

from octbench import report
from octbench.metrics import compute_metrics
from octbench.results import COMPLETE, FAILED, SKIPPED, ResultsStore, RunRecord

CLASSES = ["CNV", "DME", "DRUSEN", "NORMAL"]
N_TEST = 120
RESAMPLES = 100  # the least build_report takes: tests stay fast
#: Strength of the true class's logit per strategy: "oversample" is clearly better than "none".
QUALITY = {"none": 1.0, "weighted_ce": 1.2, "oversample": 2.5}


def dataset(name: str = "synthetic", size: int = 28, synthetic: bool = True,
            test: int = N_TEST // 4) -> dict:
    return {"name": name, "synthetic": synthetic, "size": size, "class_names": CLASSES,
            "class_counts": {"train": [1000, 300, 230, 1380], "val": [110, 34, 26, 153],
                             "test": [test] * 4},
            "source": {"scale": 0.03}}


def write_run(store: ResultsStore, *, model="cnn", strategy="none", seed=0, device="cpu",
              precision="fp32", status=COMPLETE, data=None, quality=None, hardware=None,
              run_id=None, predictions=True, speed=1500.0, error=None, sweep=None,
              config=None) -> RunRecord:
    """Write one fabricated run: scores whose true-class logit is raised by ``quality``."""
    data = data or dataset()
    run_id = run_id or f"{model}__{strategy}__seed{seed}__{device}-{precision}"
    labels = np.repeat(np.arange(4), N_TEST // 4)
    rng = np.random.default_rng([seed, sum(map(ord, strategy)), len(device)])
    logits = rng.normal(size=(N_TEST, 4))
    logits[np.arange(N_TEST), labels] += QUALITY.get(strategy, 1.0) if quality is None else quality
    scores = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    fields = {}
    if status == COMPLETE:
        test = compute_metrics(labels, scores, CLASSES)
        fields = dict(
            metrics={"test": test, "val": {"macro_f1": 0.5 + 0.01 * seed}},
            best_epoch=2, epochs_trained=3,
            history=[{"epoch": e, "train_loss": 1.4 / e + 0.01 * seed,
                      "val_macro_f1": 0.3 + 0.1 * e + 0.01 * seed} for e in (1, 2, 3)],
            timing={"train_seconds": 30.0, "seconds_per_epoch": 10.0,
                    "train_images_per_s": speed, "eval_images_per_s": 4 * speed},
        )
        if predictions:
            store.save_predictions(run_id, test_scores=scores.astype(np.float32),
                                   test_labels=labels.astype(np.uint8)[:, None],
                                   val_scores=scores.astype(np.float32), val_labels=labels)
    record = RunRecord(
        run_id=run_id, experiment="demo", status=status, model=model, strategy=strategy,
        seed=seed, device=device, precision=precision, dataset=data, git_commit="abc1234",
        hardware=hardware if hardware is not None else {
            "type": "cpu", "name": "Test CPU", "threads": 2, "torch": "2.5.0"},
        versions={"octbench": "0.1.0"}, created_utc=f"2025-01-0{seed + 1}T10:00:00+00:00",
        error=error, sweep=sweep or {}, config=config or {}, **fields)
    store.write(record)
    return record


def make_grid(folder: Path, strategies=tuple(QUALITY), seeds=range(3)) -> Path:
    store = ResultsStore(folder)
    for strategy in strategies:
        for seed in seeds:
            write_run(store, strategy=strategy, seed=seed)
    return folder


@dataclass(frozen=True)
class Built:
    """One report of 3 strategies x 3 seeds (+ a failed and a skipped run), built once."""

    folder: Path
    out: Path
    text: str
    data: report.ReportData
    table: pd.DataFrame
    comparisons: pd.DataFrame


def build_example(root: Path) -> Built:
    """3 strategies x 3 seeds, a failed and a skipped run: report (md + csv) and its tables."""
    folder = make_grid(root / "results" / "demo")
    write_run(ResultsStore(folder), strategy="focal", seed=0, status=FAILED,
              error="RuntimeError: out of memory")
    write_run(ResultsStore(folder), strategy="focal", seed=1, status=SKIPPED, hardware={},
              error="device 'cuda' is not available: no CUDA GPU is visible")
    paths = report.build_report(folder, root / "reports", formats=("md", "csv"),
                                n_resamples=RESAMPLES)
    data = report.collect(folder)
    comparisons = report.compare_to_baseline(data, n_resamples=RESAMPLES)
    table = report.main_table(data, n_resamples=RESAMPLES, comparisons=comparisons)
    return Built(folder, root / "reports" / "demo", well_formed(paths[0].read_text()), data,
                 table, comparisons)


def build(folder: Path, tmp_path: Path, **kwargs) -> str:
    paths = report.build_report(folder, tmp_path / "reports", n_resamples=RESAMPLES, **kwargs)
    return well_formed(paths[0].read_text())


def well_formed(text: str) -> str:
    """Check that every markdown table keeps one column count (a stray | would shift cells)."""
    table: list[int] = []
    for line in text.splitlines() + [""]:
        if line.startswith("|"):
            table.append(len(re.findall(r"(?<!\\)\|", line)))
        elif table:
            assert len(set(table)) == 1, f"ragged table near: {line!r}"
            table = []
    return text


def stored(folder: Path, strategy: str) -> list[tuple[np.ndarray, np.ndarray]]:
    """(labels, scores) of each seed of a strategy, read straight from predictions.npz."""
    out = []
    for seed in range(3):
        with np.load(folder / f"cnn__{strategy}__seed{seed}__cpu-fp32" / "predictions.npz") as f:
            out.append((f["test_labels"].ravel().astype(int), f["test_scores"].astype(float)))
    return out


def ece_reference(labels: np.ndarray, scores: np.ndarray, bins: int = 15) -> float:
    """Guo et al. (2017) ECE, written with a plain loop over bins."""
    confidence, correct = scores.max(axis=1), scores.argmax(axis=1) == labels
    total = 0.0
    for m in range(bins):
        inside = (confidence > m / bins) & (confidence <= (m + 1) / bins)
        if m == 0:
            inside |= confidence == 0
        if inside.any():
            total += inside.sum() / len(labels) * abs(correct[inside].mean()
                                                      - confidence[inside].mean())
    return total


SKLEARN = {
    "accuracy": lambda y, s: accuracy_score(y, s.argmax(1)),
    "balanced_accuracy": lambda y, s: balanced_accuracy_score(y, s.argmax(1)),
    "macro_f1": lambda y, s: f1_score(y, s.argmax(1), average="macro", zero_division=0),
    "macro_auc": lambda y, s: roc_auc_score(y, s, multi_class="ovr", average="macro"),
    "ece": ece_reference,
}


def class_stratified_draws(labels: np.ndarray, seed: int = 0) -> list[np.ndarray]:
    """The report's default resamples, drawn here independently: per class (in label order),
    as many items with replacement as that class has, each item keeping its class's place."""
    rng = np.random.default_rng(seed)
    rows = np.empty((RESAMPLES, len(labels)), dtype=int)
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        rows[:, members] = members[rng.integers(0, len(members), (RESAMPLES, len(members)))]
    assert all((np.bincount(labels[r]) == np.bincount(labels)).all() for r in rows)
    return list(rows)
