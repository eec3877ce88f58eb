"""The per-class section: recall and F1 per class recomputed with scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
from report_helpers import CLASSES, QUALITY, Built, stored
from sklearn.metrics import precision_recall_fscore_support

from octbench import report


def test_per_class_recall_and_f1_match_sklearn(built: Built) -> None:
    table = report.per_class_table(built.data).set_index("strategy")
    for strategy in QUALITY:
        per_seed = [precision_recall_fscore_support(y, s.argmax(1), labels=range(4),
                                                    zero_division=0)
                    for y, s in stored(built.folder, strategy)]
        for i, name in enumerate(CLASSES):
            recall = [p[1][i] for p in per_seed]
            f1 = [p[2][i] for p in per_seed]
            assert table.loc[strategy, f"recall_{name}_mean"] == pytest.approx(np.mean(recall))
            assert table.loc[strategy, f"f1_{name}_mean"] == pytest.approx(np.mean(f1))
    assert "DRUSEN (train 230)" in built.text and "the rarest training class" in built.text
