"""Reports: what the stored runs say, without over-claiming."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from octbench.errors import OctbenchError
from octbench.results import COMPLETE, ResultsStore, RunRecord

SUMMARY_METRICS = ("accuracy", "balanced_accuracy", "macro_f1", "macro_auc")


def resolve_source(source: str | Path) -> tuple[str, Path, set[str] | None]:
    """Turn an experiment YAML or a results folder into (name, folder, run ids or None).

    From a YAML only the runs of its current grid are reported (a changed config gets new run
    ids); from a folder every record in it is.
    """
    source = Path(source)
    if source.suffix in (".yaml", ".yml"):
        from octbench.config import load_config
        from octbench.runner import expand_grid

        config = load_config(source)
        folder = Path(config.results_dir) / config.name
        return config.name, folder, {spec.run_id for spec in expand_grid(config)}
    if source.is_dir():
        return source.name, source, None
    raise OctbenchError(f"{source} is neither an experiment YAML nor a results folder; "
                        "pass e.g. experiments/quickstart.yaml or results/quickstart.")


def load_records(source: str | Path, warnings: list[str] | None = None
                 ) -> tuple[str, Path, list[RunRecord]]:
    """The records a report is made from (runs of tuning trials excluded)."""
    name, folder, run_ids = resolve_source(source)
    records = [r for r in ResultsStore(folder).records(warn=warnings) if r.kind == "run"
               and (run_ids is None or r.run_id in run_ids)]
    return name, folder, records


def summary_table(records: list[RunRecord]) -> pd.DataFrame:
    """Mean ± std over seeds of the test metrics, per (model, strategy, device)."""
    rows = [
        {"model": r.model, "strategy": r.strategy, "device": r.device, "seed": r.seed,
         **{m: r.metrics.get("test", {}).get(m, float("nan")) for m in SUMMARY_METRICS}}
        for r in records if r.status == COMPLETE
    ]
    if not rows:
        return pd.DataFrame()
    frame = pd.DataFrame(rows)
    grouped = frame.groupby(["model", "strategy", "device"], sort=False)
    table = grouped[list(SUMMARY_METRICS)].agg(["mean", "std"])
    table["seeds"] = grouped["seed"].nunique()
    return table


def print_summary(source: str | Path) -> None:
    """Print mean ± std per (model, strategy, device) to the terminal."""
    warnings: list[str] = []
    name, folder, records = load_records(source, warnings)
    for warning in warnings:
        print(f"warning: {warning}")
    if not records:
        print(f"{name}: no run records in {folder}; run the experiment first.")
        return
    datasets = sorted({_dataset_label(r) for r in records})
    counts = pd.Series([r.status for r in records]).value_counts().to_dict()
    print(f"{name}: test metrics on {', '.join(datasets)} "
          f"({', '.join(f'{n} {s}' for s, n in counts.items())})")
    table = summary_table(records)
    if table.empty:
        print("no complete runs yet.")
        return
    header = f"{'model':<22} {'strategy':<22} {'device':<7}" + "".join(
        f" {m:>18}" for m in SUMMARY_METRICS) + "  seeds"
    print(header)
    for (model, strategy, device), row in table.iterrows():
        cells = "".join(f" {_mean_std(row[(m, 'mean')], row[(m, 'std')]):>18}"
                        for m in SUMMARY_METRICS)
        print(f"{model:<22} {strategy:<22} {device:<7}{cells}  {int(row['seeds'].iloc[0])}")
    if any(r.synthetic for r in records):
        print("SYNTHETIC DATA: these numbers come from octbench's generated scans, not OCTMNIST.")
    if table["seeds"].min() < 3:
        print("note: fewer than 3 seeds per cell; differences are not reliable.")


def _mean_std(mean: float, std: float) -> str:
    if pd.isna(mean):
        return "n/a"
    return f"{mean:.3f}" if pd.isna(std) else f"{mean:.3f} ± {std:.3f}"


def _dataset_label(record: RunRecord) -> str:
    data = record.dataset
    label = f"{data.get('name', '?')} ({data.get('size', '?')} px)"
    return f"{label} [SYNTHETIC]" if record.synthetic else label
