"""The committed ranking example (reports/ranking_synthetic/) is what octbench makes of the run
records committed beside it: regenerated, its report.md equals the committed one apart from the
time it was written, and it shows the method, ranking and calibration sections with content."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import ROOT, cli_in_process, tree_digest

EXAMPLE = Path("reports") / "ranking_synthetic"
RUNS = EXAMPLE / "runs" / "ranking_synthetic"


def _without_timestamp(text: str) -> str:
    return re.sub(r"\| Report written \| [^|]+ \|", "| Report written | <when> |", text)


@pytest.mark.slow
def test_the_committed_ranking_example_regenerates_from_its_runs(
        tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(ROOT)  # the report names its results folder as given
    before = tree_digest(ROOT / RUNS)
    done = cli_in_process(["-q", "report", str(RUNS), "--out", str(tmp_path)], capsys)
    assert done["code"] == 0, done["err"]
    assert tree_digest(ROOT / RUNS) == before  # the records are only read
    made = tmp_path / "ranking_synthetic"
    committed = (ROOT / EXAMPLE / "report.md").read_text("utf-8")
    assert _without_timestamp((made / "report.md").read_text("utf-8")) == \
        _without_timestamp(committed)
    figures = {p.name for p in (ROOT / EXAMPLE / "figures").iterdir()}
    assert figures == {p.name for p in (made / "figures").iterdir()}
    assert {"ranking_cd.png", "reliability.png"} <= figures


def test_the_committed_ranking_example_shows_ranking_calibration_and_method() -> None:
    text = (ROOT / EXAMPLE / "report.md").read_text("utf-8")
    assert "**SYNTHETIC DATA.**" in text  # labelled, never an OCTMNIST result
    ranking = text[text.index("## Rankings across seeds"):]
    ranking = ranking[:ranking.index("\n## ", 1)]
    assert "Too few seeds" not in ranking and "n/a: no setup" not in ranking
    assert "| Configuration | Mean rank |" in ranking
    assert re.search(r"3 seeds \(0, 1, 2\), 4 configurations\. Friedman χ² = ", ranking)
    assert "Nemenyi CD = " in ranking and "Cliff's δ" in ranking
    assert "## Calibration: temperature scaling" in text
    assert "## Method" in text
    records = list((ROOT / RUNS).glob("*/record.json"))
    assert len(records) == 12  # 2 models x 2 strategies x 3 seeds
