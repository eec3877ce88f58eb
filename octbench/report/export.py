"""Machine-readable exports: ``runs.csv`` (one tidy row per run) and medmnist Evaluator files.

Must not import: markdown, build or summary, tuning, or the engine.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pandas as pd

from octbench.fileio import atomic_write, atomic_write_text, confined
from octbench.metrics import METRICS
from octbench.report.collect import ReportData, null_to_nan


def runs_frame(data: ReportData) -> pd.DataFrame:
    """One tidy row per run (every status): provenance, test and val metrics, per-class, timing.

    Test metrics are the recomputed ones; the ``synthetic`` column marks generated data.
    """
    complete = {run.record.run_id: run for run in data.runs}
    rows = []
    for record in data.records:
        row = {"experiment": record.experiment, "dataset": record.dataset.get("name"),
               "synthetic": record.synthetic, "image_size": record.dataset.get("size"),
               "data_fingerprint": record.dataset.get("fingerprint"),
               "run_id": record.run_id, "status": record.status, "model": record.model,
               "strategy": record.strategy, "seed": record.seed, "device": record.device,
               "precision": record.precision, "hardware": record.hardware.get("name"),
               "best_epoch": record.best_epoch, "epochs_trained": record.epochs_trained,
               "parameters": record.parameters, "git_commit": record.git_commit,
               "created_utc": record.created_utc, "error": record.error}
        run = complete.get(record.run_id)
        test = run.test if run else {}
        for split, metrics in (("test", test), ("val", record.metrics.get("val") or {})):
            for metric in METRICS:
                row[f"{split}_{metric}"] = null_to_nan(metrics.get(metric, math.nan))
        for name, values in (test.get("per_class") or {}).items():
            for stat in ("precision", "recall", "f1"):
                row[f"test_{stat}_{name}"] = null_to_nan(values.get(stat))
        for name in ("train_seconds", "seconds_per_epoch", "train_images_per_s",
                     "eval_images_per_s"):
            row[name] = null_to_nan(record.timing.get(name, math.nan))
        rows.append(row)
    return pd.DataFrame(rows)


def export_medmnist(data: ReportData, folder: Path, warnings: list[str]) -> list[Path]:
    """Write each complete run's test scores as a medmnist Evaluator result file.

    Files are named as ``Evaluator.get_standard_evaluation_filename`` names them,
    ``octmnist{_SIZE}_test_[AUC]0.943_[ACC]0.743@{run}.csv`` (size flag empty at 28 px), and hold
    ``pandas.DataFrame(scores).to_csv(path, header=None)``: the item index, then K scores.
    ``python -m medmnist evaluate FILE`` re-scores a file against the labels it finds in
    ``~/.medmnist/octmnist{_SIZE}.npz``. For data other than real OCTMNIST the test labels are
    written beside the files in ``.medmnist/`` (run it with ``HOME`` set to this folder), and
    run names start with ``synthetic-`` when the data are synthetic.
    """
    size = data.dataset.get("size") or 28
    if not isinstance(size, int) or isinstance(size, bool) or not 1 <= size <= 4096:
        # a record field, so data: it only becomes part of a file name as a plain number
        warnings.append(f"the records' dataset size {size!r} is not a number of pixels; the "
                        "medmnist Evaluator files are not written")
        return []
    size_flag = "" if size == 28 else f"_{size}"
    real = data.real_octmnist_size is not None
    written, tokens = [], set()
    labels = None
    for run in data.runs:
        if run.scores is None:
            continue
        r = run.record
        token = re.sub(r"[^A-Za-z0-9_-]+", "-", f"{r.model}-{r.strategy}-seed{r.seed}-"
                       f"{r.device}-{r.precision}").strip("-")
        token = ("synthetic-" if r.synthetic else "") + token
        if token in tokens:  # two configs of one cell (e.g. an edited YAML): keep both
            token += "-" + re.sub(r"[^A-Za-z0-9]", "", r.run_id.rsplit("__", 1)[-1])[:8]
        tokens.add(token)
        auc, acc = run.test["macro_auc"], run.test["accuracy"]
        name = f"octmnist{size_flag}_test_[AUC]{auc:.3f}_[ACC]{acc:.3f}@{token}.csv"
        path = confined(folder, name)
        atomic_write(path, lambda handle, s=run.scores: handle.write(
            pd.DataFrame(s).to_csv(header=None).encode()))
        written.append(path)
        if labels is None:
            labels = run.labels
        elif len(labels) != len(run.labels) or (labels != run.labels).any():
            warnings.append("runs disagree on the test labels; the label file is not written")
            labels = np.array([])
    also = []  # the label file and the README, listed after the runs' files
    if written and not real and labels is not None and len(labels):
        also.append(confined(folder / ".medmnist", f"octmnist{size_flag}.npz"))
        atomic_write(also[-1], lambda handle: np.savez(
            handle, test_labels=labels.astype(np.uint8)[:, None]))
    if written:
        command = ("python -m medmnist evaluate 'FILE'" if real
                   else "cd to this folder, then `HOME=$PWD python -m medmnist evaluate 'FILE'")
        note = ["# Test predictions in the medmnist Evaluator format", "",
                f"Experiment `{data.name}`, {data.dataset_label}.", "",
                "Each file holds one run's test scores: the item index, then one probability "
                "per class, no header. Its name carries the AUC and accuracy octbench computed.",
                "", f"Re-score a file: {'`' if real else ''}{command}` (quote the name: its "
                "`[AUC]` and `[ACC]` are shell wildcards)."]
        if not real:
            note += ["", "These are **not OCTMNIST predictions**"
                     + (" (synthetic data)" if data.synthetic else "")
                     + ": `.medmnist/` holds this dataset's test labels under the file name "
                     "medmnist expects, and `HOME` points medmnist at it. Scoring these files "
                     "against the real OCTMNIST labels would give meaningless numbers."]
        also.append(folder / "README.md")
        atomic_write_text(also[-1], "\n".join(note) + "\n")
    return written + also
