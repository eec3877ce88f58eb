"""``## Figures``: the report's figures with their captions, and the tuning study's."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from octbench.report.collect import ReportData
from octbench.report.markdown import md_escape, synthetic_tag


def figure_section(data: ReportData, figures: Sequence[tuple[Path, str]],
                    study_figures: Sequence[Path], study: dict | None = None) -> list[str]:
    """The figures with their captions, then the tuning study's figures."""
    synthetic = data.synthetic or bool(study and study.get("synthetic"))
    out = ["## Figures" + synthetic_tag(synthetic), ""]
    if not figures and not study_figures:
        return out + ["No figures: there are no complete runs to plot."]
    for path, caption in figures:
        title = path.stem.replace("_", " ")
        out += [f"![{title}](figures/{path.name})", "", f"*{caption}*", ""]
    if study_figures:
        out += ["### Hyper-parameter tuning", "",
                "The Optuna study behind this experiment: every trial was scored on the "
                "validation split only (the test split was never seen while tuning).", ""]
        for path in study_figures:
            out += [f"![{path.stem.replace('_', ' ')}](figures/{path.name})", ""]
            caption = _study_caption(path, study)
            if caption:
                out += [f"*{caption}*", ""]
        if study is not None and not any(p.stem.endswith("-importance") for p in study_figures):
            complete = sum(t["state"] == "complete" for t in study["trials"])
            out += [f"No parameter-importance figure: {complete} complete trial(s), fewer than "
                    f"the {study['min_importance_trials']} an fANOVA estimate needs to mean "
                    "anything.", ""]
    return out


def _study_caption(path: Path, study: dict | None) -> str:
    metric = md_escape((study or {}).get("metric", "objective"))
    if path.stem.endswith("-history"):
        return (f"Validation {metric} of every trial in the order they ran: complete trials "
                "(dots), pruned trials at the last value they reported (crosses), and the best "
                "value so far (line).")
    if path.stem.endswith("-curves"):
        return (f"Validation {metric} per epoch (1-based) of every trial, as the pruner saw it: "
                "complete trials solid, pruned trials dashed, the best trial highlighted.")
    if path.stem.endswith("-importance"):
        complete = sum(t["state"] == "complete" for t in (study or {}).get("trials", []))
        return ("Parameter importance by fANOVA (Optuna's default), fitted on "
                f"{complete or 'the'} complete trials: a rough guide to which settings mattered "
                "on this validation split, not a measured effect; it changes as trials are "
                "added.")
    return ""
