"""Published OCTMNIST results as data (``published.yaml``), and whether a run's protocol matches.

A published number is only comparable with a run trained the same way: same image size, same
input handling (MedMNIST+ zero-pads every size to 224 px and feeds 3 channels; octbench feeds the
images as they are, 1 channel), pretrained or not, end-to-end or linear probe, optimiser,
epochs and augmentation. :func:`protocol_differences` names every way a run differs from a row;
the report shows a row beside the run only when there is none.

Must not import: the other report modules except collect, tuning, or the engine.
"""

from __future__ import annotations

import functools
import re
from importlib import resources

import yaml

from octbench.results import RunRecord

#: What a row (or its source's protocol) must share with a run to stand beside it.
PROTOCOL_KEYS = ("size", "input_size", "channels", "pretrained", "mode", "optimizer", "epochs",
                 "augmentation")


@functools.cache
def published() -> dict:
    """``{"sources": {id: {citation, protocol, ...}}, "rows": [...]}`` from ``published.yaml``.

    Example:
        >>> rows = published()["rows"]
        >>> next(r for r in rows if r["method"] == "ResNet-18 (28)")["accuracy"]
        0.743
    """
    text = resources.files("octbench.report").joinpath("published.yaml").read_text("utf-8")
    return yaml.safe_load(text)


def row_protocol(row: dict) -> dict:
    """A row's protocol: its own keys, completed by its source's (optimiser, epochs, ...).

    A row states a key itself where its source's recipe does not apply (the AutoML rows);
    ``null`` there means the value is not known.
    """
    source = published()["sources"][row["source"]]["protocol"]
    protocol = {key: row[key] if key in row else source.get(key) for key in PROTOCOL_KEYS}
    epochs = re.match(r"\d+", str(protocol["epochs"] or ""))
    protocol["epochs"] = int(epochs.group()) if epochs else None
    return protocol


def run_protocol(record: RunRecord) -> dict:
    """The same keys for a run of octbench, read from its record."""
    config = record.config or {}
    train = config.get("train") or {}
    size = record.dataset.get("size") or (config.get("data") or {}).get("size")
    weights = (record.model_init or {}).get("weights", "random")
    augment = train.get("augment") or []
    return {"size": size, "input_size": size,  # octbench never pads nor resizes the input
            "channels": 1, "pretrained": weights != "random",
            "mode": train.get("mode", "end_to_end"), "optimizer": train.get("optimizer", "adam"),
            "epochs": train.get("epochs"),
            "augmentation": "none" if not augment else ", ".join(
                a if isinstance(a, str) else str(a.get("name")) for a in augment)}


def protocol_differences(row: dict, record: RunRecord) -> list[str]:
    """Every protocol key on which a run differs from a published row, worded for a reader,
    e.g. ``["epochs 100 vs 15"]``; an unknown published value counts as a difference."""
    theirs, ours = row_protocol(row), run_protocol(record)
    return [f"{key.replace('_', ' ')} {'unknown' if theirs[key] is None else theirs[key]} vs "
            f"{ours[key]}" for key in PROTOCOL_KEYS if theirs[key] != ours[key]]
