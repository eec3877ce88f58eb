"""``## How to read this report``: runs, metrics, intervals, the resampling scheme and the tests
in words."""

from __future__ import annotations

from octbench.report.collect import ReportData
from octbench.report.markdown import ALPHA, MIN_SEEDS, bootstrap_scheme


def reading_section(data: ReportData, n_resamples: int) -> list[str]:
    """Notes on runs, metrics, intervals, resampling, tests and exports."""
    return [
        "## How to read this report", "",
        "- **Runs and seeds.** Each run trains one model with one class-imbalance strategy and "
        "one seed; checkpoints are selected on the validation split (never on test). Mean ± std "
        "over seeds show how much retraining alone moves a number.",
        "- **Metrics** (test split, recomputed from the stored predictions): accuracy; balanced "
        "accuracy (mean per-class recall); macro-F1 (unweighted mean of per-class F1); macro AUC "
        "(one-vs-rest ROC AUC averaged over classes); ECE (expected calibration error of the "
        "top-class probability, 15 equal-width bins; lower is better).",
        f"- **Confidence intervals**: 95% percentile bootstrap over the test items "
        f"({n_resamples:,} resamples), pooled over seeds. They describe the uncertainty due to "
        "the finite test set; the std describes the seeds.",
        f"- **Resampling scheme** (intervals and paired tests): {bootstrap_scheme(data)}",
        "- **Significance**: paired bootstrap test over the test items against the baseline "
        "strategy, Holm–Bonferroni-adjusted per metric over all comparisons; a paired t test "
        f"across seeds as a second opinion. α = {ALPHA}. With {n_resamples:,} resamples the "
        f"smallest possible bootstrap p is {2 / (n_resamples + 1):.4f} (before Holm). With "
        f"fewer than {MIN_SEEDS} seeds the across-seed tests are undefined or powerless.",
        "- **Exports**: `python -m octbench report SOURCE --format csv` writes `runs.csv` "
        "(one tidy row per run) and the test predictions in the medmnist Evaluator format "
        "(`medmnist/`), which `python -m medmnist evaluate FILE` re-scores.",
    ] + ([
        "- **Synthetic data**: every number above comes from generated images, never from "
        "OCTMNIST; published OCTMNIST results are deliberately not shown beside them.",
    ] if data.synthetic else [])
