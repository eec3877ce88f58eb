"""``## Failed, skipped and missing runs``: every run that is not complete, and why."""

from __future__ import annotations

from octbench.report.collect import ReportData
from octbench.report.markdown import md_code, md_escape, md_table
from octbench.results import COMPLETE


def problem_section(data: ReportData) -> list[str]:
    """Failed, skipped and interrupted runs with their reasons, and runs with no record yet."""
    out = ["## Failed, skipped and missing runs", ""]
    problems = [r for r in data.records if r.status != COMPLETE]
    if not problems and not (data.expected and data.expected > len(data.records)):
        return out + ["None: every run of the grid is complete."]
    rows = [[md_escape(r.model), md_escape(r.strategy), str(r.seed), md_code(r.device),
             r.status, md_escape((r.error or "no message")[:300])] for r in problems]
    if rows:
        out.append(md_table(["Model", "Strategy", "Seed", "Device", "Status", "Reason"], rows,
                            align=["l", "l", "r", "l", "l", "l"]))
    if data.expected and data.expected > len({r.run_id for r in data.records}):
        out += ["", f"{data.expected - len({r.run_id for r in data.records})} run(s) of the "
                "grid have no record yet: `python -m octbench run` trains them (finished runs "
                "are skipped)."]
    return out
