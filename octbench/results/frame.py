"""Every run record below a folder as one tidy pandas DataFrame (pandas imported on use)."""

from __future__ import annotations

import logging
from pathlib import Path

from octbench.results.record import read_record
from octbench.results.store import ResultsStore

log = logging.getLogger(__name__)


def load_results(path: str | Path) -> pandas.DataFrame:  # noqa: F821
    """Load every run record below ``path`` as a tidy DataFrame (one row per run).

    Columns: the run's identity (``model``, ``strategy``, ``seed``, ``device``, ...), its
    resolved configuration flattened to ``config.<dotted.path>`` (``config.train.lr``) and its
    swept values to ``sweep.<path>``, every scalar metric as ``<split>_<metric>``
    (``test_macro_f1``), per-class metrics as ``<split>_<metric>_<class>`` (``test_recall_CNV``)
    and the timing fields (``train_seconds``, ...). Unreadable records are skipped with a
    warning on the ``octbench`` logger.

    Example:
        >>> df = load_results("results/quickstart")
        >>> df.groupby(["model", "strategy"])["test_macro_f1"].mean()  # doctest: +SKIP
    """
    import pandas as pd

    rows = []
    for record_path in sorted(Path(path).rglob(ResultsStore.RECORD)):
        try:
            record = read_record(record_path)
        except (ValueError, TypeError, OSError) as error:
            log.warning("skipped %s: %s", record_path, error)
            continue
        row = {k: getattr(record, k) for k in (
            "experiment", "run_id", "kind", "status", "model", "strategy", "seed", "device",
            "precision", "best_epoch", "epochs_trained", "parameters", "created_utc", "error")}
        row["dataset"] = record.dataset.get("name")
        row["synthetic"] = record.synthetic
        row["hardware"] = record.hardware.get("name")
        row.update(_flatten(record.config, "config."))
        row.update({f"sweep.{key}": value for key, value in record.sweep.items()})
        for split, metrics in record.metrics.items():
            for name, value in metrics.items():
                if isinstance(value, (int, float)):
                    row[f"{split}_{name}"] = value
            per_class = metrics.get("per_class")
            for label, values in (per_class.items() if isinstance(per_class, dict) else ()):
                for name, value in (values.items() if isinstance(values, dict) else ()):
                    if isinstance(value, (int, float)):
                        row[f"{split}_{name}_{label}"] = value
        for name, value in record.timing.items():
            row[name] = value
        rows.append(row)
    return pd.DataFrame(rows)


def _flatten(data: dict, prefix: str) -> dict:
    """``{"train": {"lr": 0.1}}`` as ``{"<prefix>train.lr": 0.1}``; lists stay values."""
    flat = {}
    for key, value in data.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat
