"""Reports: what the stored runs say, without over-claiming.

:func:`build_report` turns an experiment's run records into ``reports/<experiment>/report.md``
with figures (:mod:`octbench.figures`), or (``formats=("csv",)``) into a tidy CSV of all runs
plus the test predictions in the medmnist Evaluator format. Every table number is recomputed
from the stored test predictions, so tables, intervals, tests and exports agree:

* mean ± std over seeds, and a 95% bootstrap interval over the test items, pooled over seeds;
* the difference of each strategy to the baseline strategy, with a paired bootstrap test over
  the test items, Holm-adjusted over the comparisons of each metric;
* per-class recall and F1, device throughput and CPU parity;
* rankings of every configuration of a setup across seeds (Friedman, Nemenyi CD diagram,
  effect sizes), calibration before/after temperature scaling, and how each group was trained.

Published OCTMNIST results come from ``published.yaml`` (data, with sources and protocols) and
stand beside runs only when trained the same way. The bootstrap resamples within classes by
default (``report.bootstrap.stratify``: ``class``, ``groups`` or ``none``).

A report never raises on thin data (no runs, failed runs, one seed, NaN metrics): what cannot
be computed reads "n/a", and a warning in the report says why.

Modules: :mod:`~octbench.report.collect` (records -> :class:`ReportData`),
:mod:`~octbench.report.tables` (main, comparison, per-class and device tables as DataFrames),
:mod:`octbench.report.sections` (one module per section of ``report.md``, with the markdown
helpers of :mod:`~octbench.report.markdown`), :mod:`~octbench.report.render` (the sections in
order), :mod:`~octbench.report.export` (``runs.csv``, medmnist files),
:mod:`~octbench.report.build` (:func:`build_report`, figures) and
:mod:`~octbench.report.summary` (the terminal summary); :mod:`~octbench.report.published`,
:mod:`~octbench.report.ranking` and :mod:`~octbench.report.calibration` compute what the
sections render. The report must not import tuning or
optuna at module level: it finds a study by its files.
"""

from octbench.report.build import build_report, find_study
from octbench.report.collect import ReportData, Run, collect, load_records, resolve_source
from octbench.report.export import export_medmnist, runs_frame
from octbench.report.markdown import md_escape
from octbench.report.render import render_markdown
from octbench.report.summary import print_summary, summary_table
from octbench.report.tables import (
    CI_METRICS,
    COMPARE_METRICS,
    TABLE_METRICS,
    compare_to_baseline,
    device_table,
    main_table,
    per_class_table,
)

# Public names, grouped by the module they come from.
__all__ = ["ReportData", "Run", "collect", "load_records", "resolve_source"]
__all__ += ["CI_METRICS", "COMPARE_METRICS", "TABLE_METRICS", "compare_to_baseline"]
__all__ += ["device_table", "main_table", "per_class_table"]
__all__ += ["md_escape", "render_markdown", "export_medmnist", "runs_frame"]
__all__ += ["build_report", "find_study", "print_summary", "summary_table"]
