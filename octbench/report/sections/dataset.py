"""``## Dataset``: class counts per split, the imbalance, duplicates, and what it means for
the metrics."""

from __future__ import annotations

import math

import numpy as np

from octbench.report.collect import ReportData
from octbench.report.markdown import md_code, md_escape, md_table, synthetic_octmnist


def _duplicates_sentence(found: dict | None) -> str:
    """The exact-duplicate check of the data (pixel hashes), as the run records hold it."""
    if not isinstance(found, dict):
        return " Exact duplicates: not checked (records made before the check)."
    within = sum((found.get("within") or {}).values())
    across = found.get("across") or {}
    leaked = across.get("train-test", 0) + across.get("val-test", 0)
    text = (f" Exact duplicate images (pixel hash): {within:,} repeats within splits, "
            f"{across.get('train-val', 0):,} val and {leaked:,} test images identical to an "
            f"earlier split")
    if found.get("dropped"):
        text += f"; {found['dropped']:,} dropped before training (data.on_duplicates: drop)"
    elif within or sum(across.values()):
        text += " — **kept: scores on repeated images are inflated**"
    return text + "."


def dataset_section(data: ReportData) -> list[str]:
    """Class counts per split, the data's source and duplicates, and what the imbalance means."""
    out = ["## Dataset", ""]
    counts = data.dataset.get("class_counts") or {}
    names = data.class_names
    if not counts:
        return out + ["The run records hold no class counts (n/a)."]
    rows = []
    for split in ("train", "val", "test"):
        c = counts.get(split)
        if not c:
            continue
        ratio = max(c) / min(c) if min(c) > 0 else math.inf
        rows.append([split, *[f"{n:,}" for n in c], f"{sum(c):,}", f"{ratio:.1f} : 1"])
    out.append(md_table(["Split", *map(md_escape, names), "Total", "Largest : smallest"], rows))
    source = data.dataset.get("source") or {}
    what = ("OCTMNIST (MedMNIST v2), official splits" if data.real_octmnist_size else
            md_code(data.dataset.get("name", "?")))
    if data.synthetic:
        what = ("octbench's **synthetic** OCT scans (procedural B-scans with OCTMNIST's classes "
                "and imbalance; not real data)")
    out += ["", f"Data: {what}, {data.dataset.get('size', '?')} px."]
    if source:
        params = ", ".join(f"{k}={v}" for k, v in source.items())
        out[-1] += f" Source: {md_escape(params)}."
    out[-1] += _duplicates_sentence(data.dataset.get("duplicates"))
    test, train = counts.get("test"), counts.get("train")
    if test and train:
        balanced = len(set(test)) == 1
        small = names[int(np.argmin(train))]
        large = names[int(np.argmax(train))]
        ratio = max(train) / max(min(train), 1)
        shape = "imbalanced" if ratio >= 1.5 else "nearly balanced"
        text = (f"The training split is {shape} ({md_escape(large)} : {md_escape(small)} = "
                f"{ratio:.1f} : 1), ")
        if balanced:
            # Only octbench's synthetic data copy OCTMNIST's design; other data do not.
            like = ", as in OCTMNIST" if synthetic_octmnist(data) else ""
            text += (
                f"while the test split is balanced ({test[0]:,} per class){like}. On a balanced "
                "test split plain accuracy already weights every class equally (it equals "
                "balanced accuracy), but a model trained on imbalanced data can still buy its "
                "accuracy on the frequent classes with poor recall on the rare ones; macro-F1, "
                "per-class recall and F1 show that trade-off, so they are reported next to "
                "accuracy.")
        else:
            text += ("and the test split is imbalanced too, so plain accuracy favours the "
                     "frequent classes: read balanced accuracy and macro-F1 next to it.")
        out += ["", text]
    return out
