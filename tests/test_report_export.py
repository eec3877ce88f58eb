"""Exports: runs.csv (one tidy row per run) and the medmnist Evaluator files, re-scored by
medmnist itself."""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from report_helpers import SKLEARN, Built, stored


def test_csv_export_is_one_tidy_row_per_run(built: Built) -> None:
    frame = pd.read_csv(built.out / "runs.csv")
    assert len(frame) == 11 and frame.run_id.is_unique
    assert frame.synthetic.all()
    assert set(frame.status) == {"complete", "failed", "skipped"}
    row = frame[(frame.strategy == "none") & (frame.seed == 1)].iloc[0]
    y, s = stored(built.folder, "none")[1]
    assert row.test_macro_f1 == pytest.approx(SKLEARN["macro_f1"](y, s))
    assert row.test_recall_DRUSEN == pytest.approx(np.mean(s.argmax(1)[y == 2] == 2))
    assert math.isnan(frame[frame.status == "skipped"].iloc[0].test_accuracy)


def test_medmnist_evaluator_rescores_export(built: Built) -> None:
    folder = built.out / "medmnist"
    files = sorted(folder.glob("octmnist_test_*.csv"))
    assert len(files) == 9
    table = built.table.set_index("strategy")
    target = next(f for f in files if "@synthetic-cnn-oversample-seed1-cpu-fp32" in f.name)
    # The real entry point, pointed at the exported labels: medmnist reads ~/.medmnist.
    env = {**os.environ, "HOME": str(folder)}
    done = subprocess.run([sys.executable, "-m", "medmnist", "evaluate", str(target)],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    auc, acc = map(float, re.search(r"AUC=([\d.]+), ACC=([\d.]+)", done.stdout).groups())
    assert acc == pytest.approx(table.loc["oversample", "accuracy_values"][1], abs=1e-12)
    assert auc == pytest.approx(table.loc["oversample", "macro_auc_values"][1], abs=1e-9)
    # Every file, in process, read the way Evaluator.parse_and_evaluate reads it.
    from medmnist import Evaluator

    evaluator = Evaluator("octmnist", "test", root=str(folder / ".medmnist"))
    for path in files:
        scores = pd.read_csv(path, index_col=0, header=None).sort_index().values
        metrics = evaluator.evaluate(scores)
        name_auc, name_acc = map(float, re.search(r"\[AUC\]([\d.]+)_\[ACC\]([\d.]+)@",
                                                  path.name).groups())
        assert f"{metrics.AUC:.3f}" == f"{name_auc:.3f}"
        assert f"{metrics.ACC:.3f}" == f"{name_acc:.3f}"
    assert "not OCTMNIST" in (folder / "README.md").read_text()
