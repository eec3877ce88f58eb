"""The device section: runs copied from several machines side by side, speed and CPU parity."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from report_helpers import build, make_grid, write_run

from octbench import report
from octbench.results import ResultsStore


def test_device_table_merges_machines_and_checks_parity(tmp_path: Path, no_figures: None
                                                        ) -> None:
    folder = make_grid(tmp_path / "results" / "demo", strategies=("none", "oversample"))
    # Runs copied in from a GPU machine: same seeds, fp16, ten times faster.
    gpu = {"type": "cuda", "name": "NVIDIA H100 80GB HBM3", "memory_gib": 79.1, "cuda": "12.4"}
    for strategy in ("none", "oversample"):
        for seed in range(3):
            write_run(ResultsStore(folder), strategy=strategy, seed=seed, device="cuda",
                      precision="fp16", hardware=gpu, speed=15000.0)
    data = report.collect(folder)
    devices = report.device_table(data).set_index("device")
    assert devices.loc["cuda", "speedup"] == pytest.approx(10.0)
    assert devices.loc["cuda", "paired"] == 6
    cpu, cuda = ({(r.record.strategy, r.record.seed): r for r in data.runs
                  if r.record.device == d} for d in ("cpu", "cuda"))
    diffs = [cuda[k].test["macro_f1"] - cpu[k].test["macro_f1"] for k in cpu]
    agree = [np.mean(cuda[k].scores.argmax(1) == cpu[k].scores.argmax(1)) for k in cpu]
    assert devices.loc["cuda", "delta_macro_f1"] == pytest.approx(np.mean(diffs))
    assert devices.loc["cuda", "agreement"] == pytest.approx(np.mean(agree))
    assert bool(devices.loc["cpu", "is_reference"])
    text = build(folder, tmp_path)
    assert "NVIDIA H100 80GB HBM3" in text and "Test CPU" in text
    assert "10.0×" in text
    assert "| cpu fp32 |" in text and "| cuda fp16 |" in text  # one row per setup, never pooled
