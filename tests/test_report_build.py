"""The whole report: it renders, says n/a and warns on thin data, never raises; the CLI
writes it and prints the terminal summary."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from report_helpers import N_TEST, RESAMPLES, make_grid, well_formed, write_run

from octbench import report
from octbench.cli import main
from octbench.results import FAILED, SKIPPED, ResultsStore


def _no_results(store: ResultsStore) -> None:
    store.root.mkdir(parents=True)


def _only_failed(store: ResultsStore) -> None:
    for seed in range(2):
        write_run(store, seed=seed, status=FAILED, error="ValueError: loss is NaN")
    write_run(store, seed=2, status=SKIPPED, hardware={}, error="no CUDA GPU is visible")


def _one_seed(store: ResultsStore) -> None:
    write_run(store, strategy="none", seed=0)
    write_run(store, strategy="oversample", seed=0)


def _nan_metrics(store: ResultsStore) -> None:
    # A run whose predictions are gone and whose AUC was undefined (stored as JSON null).
    record = write_run(store, strategy="none", seed=0, predictions=False)
    raw = json.loads(record.to_json())
    raw["metrics"]["test"]["macro_auc"] = None
    (store.run_dir(record.run_id) / "record.json").write_text(json.dumps(raw))
    write_run(store, strategy="oversample", seed=0)
    bad = write_run(store, strategy="weighted_ce", seed=0)
    store.save_predictions(bad.run_id, test_scores=np.full((N_TEST, 4), np.nan),
                           test_labels=np.zeros(N_TEST, dtype=np.uint8))


def _odd_names(store: ResultsStore) -> None:
    for seed in range(3):
        write_run(store, model="cnn|v2*", strategy="none", seed=seed, run_id=f"a{seed}")
        write_run(store, model="cnn|v2*", strategy="focal|*x*_", seed=seed, run_id=f"b{seed}")


def _different_items(store: ResultsStore) -> None:
    # Seed 1 was tested on another ordering of the items: its seeds cannot be pooled.
    for seed in range(2):
        record = write_run(store, seed=seed)
    arrays = store.predictions(record.run_id)
    order = np.random.default_rng(0).permutation(N_TEST)
    store.save_predictions(record.run_id, test_scores=arrays["test_scores"][order],
                           test_labels=arrays["test_labels"][order])


@pytest.mark.parametrize("make", [_no_results, _only_failed, _one_seed, _nan_metrics,
                                  _odd_names, _different_items],
                         ids=lambda f: f.__name__.strip("_"))
def test_edge_cases_render(tmp_path: Path, make) -> None:
    folder = tmp_path / "results" / "demo"
    make(ResultsStore(folder))
    paths = report.build_report(folder, tmp_path / "reports", formats=("md", "csv"),
                                n_resamples=RESAMPLES)
    text = well_formed(paths[0].read_text())
    assert text.startswith("# octbench report: demo")
    assert "## How to read this report" in text
    if make is not _odd_names:
        assert "⚠" in text
    if make in (_no_results, _only_failed):
        assert "no run record" in text or "no run is complete" in text
    if make is _nan_metrics:
        assert "n/a" in text
    if make is _one_seed:
        assert "only 1 seed(s)" in text
        assert "| untestable with one seed | better on the test items; across seeds untestable " \
            "with one seed |" in text
    if make is _nan_metrics:
        assert "no readable test predictions" in text and "cannot be scored" in text
    if make is _different_items:
        assert "cannot be pooled" in text
    if make is _odd_names:
        assert r"cnn\|v2\*" in text and r"focal\|\*x\*\_" in text  # and tables stay whole


def test_cli_prints_summary_and_writes_report(tmp_path: Path,
                                              capsys: pytest.CaptureFixture) -> None:
    folder = make_grid(tmp_path / "results" / "demo", strategies=("none", "weighted_ce"),
                       seeds=(0, 1))
    out = tmp_path / "out"
    code = main(["report", str(folder), "--out", str(out), "--resamples", "100", "--format",
                 "all", "--baseline", "weighted_ce"])
    printed = capsys.readouterr().out
    assert code == 0
    assert "SYNTHETIC DATA" in printed and "macro_f1" in printed
    assert f"wrote {out / 'demo' / 'report.md'}" in printed
    evaluator_files = [line for line in printed.splitlines()
                       if line.startswith(f"wrote {out / 'demo' / 'medmnist' / 'octmnist_test_'}")]
    assert len(evaluator_files) == 4  # one medmnist Evaluator file per run
    files = sorted(p for p in (out / "demo").rglob("*") if p.is_file())
    assert any(p.suffix == ".svg" for p in files)
    assert [f"wrote {p}" for p in files] == sorted(
        line for line in printed.splitlines() if line.startswith("wrote "))  # every file
    assert "Differences to the baseline `weighted_ce`" in (out / "demo" / "report.md").read_text()
    assert main(["report", str(tmp_path / "missing")]) == 2
    with pytest.raises(SystemExit) as refused:  # argparse refuses the range itself
        main(["report", str(folder), "--resamples", "5", "--out", str(out)])
    assert refused.value.code == 2


def test_terminal_summary_columns_stay_aligned_with_long_names(tmp_path, capsys):
    from octbench.report import print_summary

    store = ResultsStore(tmp_path / "demo")
    long_name = "timm:efficientnet_b0(pretrained=True,drop_rate=0.2)"
    for model in ("cnn", long_name):
        write_run(store, model=model, strategy="none")
    print_summary(tmp_path / "demo")
    lines = [line for line in capsys.readouterr().out.splitlines()
             if line.startswith(("model ", "cnn ", long_name))]
    assert len(lines) == 3
    # every column starts (names) or ends (numbers) where its header does, whatever the length
    # of the model name
    header, *rows = lines
    for title in ("strategy", "setup"):
        start = header.index(title)
        assert all(row[start - 1] == " " and row[start] != " " for row in rows), title
    edge = re.search(r"\baccuracy\b", header).end()
    assert all(row[edge - 1] != " " and row[edge] == " " for row in rows)
