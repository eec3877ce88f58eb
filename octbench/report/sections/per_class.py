"""``## Per-class recall and F1``: what imbalance strategies do to the rare classes."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from octbench.report.collect import ReportData
from octbench.report.markdown import (
    best_value,
    data_description,
    fmt,
    key_columns,
    md_code,
    md_escape,
    md_table,
    synthetic_tag,
)


def per_class_section(data: ReportData, per_class: pd.DataFrame) -> list[str]:
    """Recall and F1 per class, and one sentence on the rarest training class."""
    out = ["## Per-class recall and F1" + synthetic_tag(data.synthetic), ""]
    counts = (data.dataset.get("class_counts") or {}).get("train")
    names = data.class_names
    headers, cells = key_columns(data, per_class)
    for stat, title in (("recall", "Recall (sensitivity)"), ("f1", "F1")):
        best = {n: best_value(per_class[f"{stat}_{n}_mean"].tolist(), "macro_f1") for n in names}
        rows = []
        for _, row in per_class.iterrows():
            values = []
            for n in names:
                mean, std = row[f"{stat}_{n}_mean"], row[f"{stat}_{n}_std"]
                text = fmt(mean)
                if not math.isnan(mean) and round(mean, 3) == round(best[n], 3):
                    text = f"**{text}**"
                values.append(text + (f" ± {fmt(std)}" if not math.isnan(std) else ""))
            rows.append([*cells(row), *values])
        class_headers = [md_escape(n) + (f" (train {counts[i]:,})" if counts else "")
                         for i, n in enumerate(names)]
        out += [f"**{title}** per class, mean ± std over seeds:", "",
                md_table([*headers, *class_headers], rows,
                         align=["l"] * len(headers) + ["r"] * len(names)), ""]
    out.append(f"*Test split of {data_description(data)}.* The header gives each class's "
               "number of training images: imbalance strategies should lift recall of the rare "
               "classes, usually at some cost on the frequent ones. Best per column in **bold**.")
    absent = [n for n in names if per_class[f"recall_{n}_mean"].isna().all()]
    if absent:
        out.append(f"n/a: {', '.join(md_escape(n) for n in absent)} "
                   f"{'has' if len(absent) == 1 else 'have'} no test images, so "
                   f"{'its' if len(absent) == 1 else 'their'} recall and F1 are undefined; "
                   "macro-F1, balanced accuracy and macro AUC average over the classes present "
                   "(scikit-learn's `labels=`).")
    story = _minority_story(data, per_class)
    if story:
        out += ["", story]
    return out


def _minority_story(data: ReportData, per_class: pd.DataFrame) -> str:
    """One sentence on the rarest training class: baseline recall vs the best strategy."""
    counts = (data.dataset.get("class_counts") or {}).get("train")
    if not counts or per_class.empty or data.baseline is None:
        return ""
    rare = data.class_names[int(np.argmin(counts))]
    column = f"recall_{rare}_mean"
    sentences = []
    for (model, setup), rows in per_class.groupby(["model", "setup"], sort=False):
        baseline = data.baseline_in(setup)
        base = rows[rows.strategy == baseline]
        others = rows[(rows.strategy != baseline) & rows[column].notna()]
        if base.empty or others.empty or math.isnan(base[column].iloc[0]):
            continue
        top = others.loc[others[column].idxmax()]
        where = f"{md_escape(model)} ({md_escape(setup)})" if per_class.setup.nunique() > 1 else (
            md_escape(model))
        sentences.append(
            f"{where}: recall of {md_escape(rare)}, the rarest training class, is "
            f"{fmt(base[column].iloc[0])} with {md_code(baseline)} and "
            f"{fmt(top[column])} with {md_code(top.strategy)} (the highest).")
    return " ".join(sentences)
