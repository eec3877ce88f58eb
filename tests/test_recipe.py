"""The report's method section says how each group was trained, read from its records."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from report_helpers import write_run

from octbench import report
from octbench.results import ResultsStore

PROBE = {"train": {"mode": "linear_probe", "optimizer": "adamw", "lr": 1e-4,
                   "weight_decay": 0.05, "schedule": "cosine", "epochs": 10, "patience": 3,
                   "augment": [{"name": "mixup", "alpha": 0.2}, "hflip"]}}
FILE_INIT = {"weights": "/weights/resnet18.pth", "loaded_tensors": 119, "adapted_tensors": 1,
             "new_tensors": ["fc.bias", "fc.weight"], "file_sha256": "ab" * 32,
             "mode": "linear_probe"}


def test_method_section_tells_a_probe_with_mixup_from_end_to_end(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path / "results" / "demo")
    for seed, trained in enumerate((7, 10)):
        record = write_run(store, model="timm:resnet18", strategy="none", seed=seed,
                           config=PROBE)
        store.write(dataclasses.replace(record, epochs_trained=trained, model_init=FILE_INIT,
                                        precision="fp32"))
        write_run(store, model="reference_cnn", strategy="none", seed=seed,
                  config={"train": {"epochs": 3}})
    text = report.build_report(store.root, tmp_path / "reports", n_resamples=100)[0].read_text()
    section = text[text.index("## Method: how each group was trained"):]
    probe = next(line for line in section.splitlines() if line.startswith("| timm:resnet18"))
    cells = [c.strip() for c in probe.strip("|").split("|")]
    assert cells[1:6] == ["linear_probe", "mixup(alpha=0.2), hflip", "adamw lr 0.0001, wd 0.05",
                          "cosine, early stop after 3", "7–10 of 10"]
    assert "119 loaded, 1 adapted, 2 new tensors" in cells[6] and "abababababab" in cells[6]
    assert cells[7] == "fp32 · `cpu`"
    plain = next(line for line in section.splitlines() if line.startswith("| reference"))
    assert "| end_to_end | none | adam lr 0.001 | none | 3 of 3 | random (from scratch) |" \
        in plain
    assert "**Bootstrap resampling:** stratified by class" in section
