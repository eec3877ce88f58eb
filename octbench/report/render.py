"""``report.md`` assembled: the sections of :mod:`octbench.report.sections` in the report's
order, with the warnings at the top.

Must not import: build or export (build imports this module), tuning, or the engine.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from octbench.report.collect import ReportData
from octbench.report.markdown import md_escape
from octbench.report.sections.comparison import comparison_section
from octbench.report.sections.dataset import dataset_section
from octbench.report.sections.device import device_section
from octbench.report.sections.figures import figure_section
from octbench.report.sections.header import header_section
from octbench.report.sections.per_class import per_class_section
from octbench.report.sections.problems import problem_section
from octbench.report.sections.published import published_section
from octbench.report.sections.reading import reading_section
from octbench.report.sections.results import results_section
from octbench.report.sections.study import study_header, study_section


def render_markdown(data: ReportData, *, table: pd.DataFrame, comparisons: pd.DataFrame,
                    per_class: pd.DataFrame, devices: pd.DataFrame,
                    figures: Sequence[tuple[Path, str]], n_resamples: int,
                    study_figures: Sequence[Path] = (), study: dict | None = None,
                    robustness: Sequence[str] = (),
                    sections: dict[str, list[str]] | None = None) -> str:
    """The whole report as markdown (figures are linked relative to the report).

    ``study`` (from ``octbench.tuning.study_summary``) adds the tuning study's section; a
    results folder that holds only a study gets a report about the study alone.
    ``robustness`` is the robustness section's markdown (``report.sections.robustness``).
    ``sections`` holds other rendered sections of :mod:`octbench.report.sections` by name
    (``ranking``, ``calibration``, ``recipe``), placed after the comparisons, after the
    per-class section and before the reading notes.
    """
    sections = sections or {}
    study_only = not data.records and study is not None
    synthetic = data.synthetic or bool(study and study.get("synthetic"))
    out = [f"# octbench report: {md_escape(data.name)}", ""]
    if synthetic:
        out += ["> [!WARNING]",
                "> **SYNTHETIC DATA.** Every number in this report comes from octbench's "
                "procedurally generated OCT scans, **not from OCTMNIST or any real patient "
                "data**. It shows that the pipeline works and how the methods behave on a "
                "controlled problem; it says nothing about performance on real retinal OCT.", ""]
    out += study_header(data, study) if study_only else header_section(data)
    warnings = list(data.warnings)
    if not data.records and study_figures:
        name = (study or {}).get("study") or data.name
        generated = (study or {}).get("generated") or f"experiments/generated/{name}-best.yaml"
        warnings.insert(0, f"no run records in {data.folder}: it holds a tuning study (below); "
                        "test results come from running the best experiment it wrote: "
                        f"python -m octbench run {generated}")
    elif not data.records:
        warnings.insert(0, f"no run records in {data.folder}; run the experiment first "
                        "(python -m octbench run EXPERIMENT.yaml)")
    elif not data.runs:
        warnings.insert(0, "no run is complete, so there are no results to show; see "
                        "'Failed, skipped and missing runs' below")
    if warnings:
        out += ["", "**Warnings**", ""] + [f"- ⚠ {md_escape(w)}" for w in warnings]
    if not study_only:
        out += ["", *dataset_section(data)]
    if data.runs:
        out += ["", *results_section(data, table, n_resamples)]
        out += ["", *published_section(data, table)]
        out += ["", *comparison_section(data, comparisons, n_resamples)]
        if sections.get("ranking"):
            out += ["", *sections["ranking"]]
        out += ["", *per_class_section(data, per_class)]
        if sections.get("calibration"):
            out += ["", *sections["calibration"]]
        out += ["", *device_section(data, devices)]
        if robustness:
            out += ["", *robustness]
    if study is not None:
        out += ["", *study_section(study)]
    out += ["", *figure_section(data, figures, study_figures, study)]
    if not study_only:
        out += ["", *problem_section(data)]
    if not study_only and sections.get("recipe"):
        out += ["", *sections["recipe"]]
    if not study_only:  # the method notes explain test tables, which a study has none of
        out += ["", *reading_section(data, n_resamples)]
    return "\n".join(out).rstrip() + "\n"
