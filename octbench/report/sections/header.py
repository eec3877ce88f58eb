"""The report's header: what was run, on which data, where, when and with which code."""

from __future__ import annotations

import datetime as dt

from octbench.report.collect import UNKNOWN_FINGERPRINT, ReportData
from octbench.report.markdown import data_description, md_code, md_escape, md_table
from octbench.report.tables import hardware_name
from octbench.results import COMPLETE, FAILED, INTERRUPTED, SKIPPED


def _when(stamp: str) -> str:
    return stamp[:19].replace("T", " ")


def header_section(data: ReportData) -> list[str]:
    """The header table: dataset, fingerprints, runs by status, dates, commits, hardware."""
    counts = {s: sum(r.status == s for r in data.records) for s in
              (COMPLETE, FAILED, SKIPPED, INTERRUPTED)}
    runs = (f"{counts[COMPLETE]} complete, {counts[FAILED]} failed, {counts[SKIPPED]} skipped"
            + (f", {counts[INTERRUPTED]} interrupted" if counts[INTERRUPTED] else ""))
    if data.expected is not None:
        missing = data.expected - len({r.run_id for r in data.records})
        runs += f" — {data.expected} in the experiment's grid" + (
            f", {missing} not run yet" if missing > 0 else "")
    dataset = data_description(data)
    times = sorted(r.created_utc for r in data.records if r.created_utc)
    commits = sorted({r.git_commit or "unknown" for r in data.records})
    versions = sorted({r.versions.get("octbench") or "?" for r in data.records if r.versions})
    hardware = {}
    for r in data.records:
        if r.hardware:
            h = r.hardware
            text = f"{md_code(r.device)} {r.precision}: {md_escape(hardware_name(r))}"
            extra = [f"torch {h['torch']}" if h.get("torch") else "",
                     f"CUDA {h['cuda']}" if h.get("cuda") else "",
                     md_escape(h.get("platform", ""))]
            text += "".join(f"; {e}" for e in extra if e)
            hardware[text] = hardware.get(text, 0) + 1
    fingerprints = sorted({r.dataset.get("fingerprint") or UNKNOWN_FINGERPRINT
                           for r in data.records})
    rows = [
        ["Dataset", dataset],
        ["Data fingerprint", ", ".join(md_code(f) for f in fingerprints) or "n/a"],
        ["Results folder", md_code(data.folder)],
        ["Runs", runs],
        ["Runs made", f"{_when(times[0])} to {_when(times[-1])} UTC" if times else "n/a"],
        ["Git commit of the runs", ", ".join(md_code(c) for c in commits) or "n/a"],
        ["octbench version", ", ".join(versions) or "n/a"],
        ["Hardware", "<br>".join(f"{text} ({n} runs)" for text, n in hardware.items())
         or "n/a (no run reached a device)"],
        ["Report written", f"{dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC"],
    ]
    if data.baseline is not None and data.runs:
        rows.insert(4, ["Baseline strategy", md_code(data.baseline_label)])
    return [md_table(["Experiment", f"**{md_escape(data.name)}**"], rows, align=["l", "l"])]
