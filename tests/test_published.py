"""The published OCTMNIST table: every row held against a copy of its source text, complete
protocols, and rows beside a run only when the protocol matches."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from report_helpers import RESAMPLES, build, dataset, write_run

from octbench import report
from octbench.report.published import (
    PROTOCOL_KEYS,
    protocol_differences,
    published,
    row_protocol,
)
from octbench.results import ResultsStore, RunRecord

SOURCES = yaml.safe_load((Path(__file__).parent / "data" / "published_sources.yaml").read_text())


def _flat(text: str) -> str:
    return " ".join(text.split())


def _numbers(text: str) -> set[float]:
    """Every decimal in a text, as a fraction: ``.743``, ``0.958`` and ``69.1`` (percent)."""
    found = set()
    for match in re.findall(r"\d*\.\d+", text):
        value = float(match)
        found.add(round(value / 100 if value > 1 else value, 4))
    return found


@pytest.mark.parametrize("row", published()["rows"], ids=lambda r: r["method"])
def test_every_row_is_copied_from_its_source_text(row: dict) -> None:
    copy = next(c for c in SOURCES[row["source"]] if c["id"] == row["read_from"])
    quoted = _flat(row["quoted_as"])
    assert quoted in _flat(copy["text"]), f"{quoted!r} is not in {row['read_from']}"
    numbers = _numbers(quoted)
    assert round(row["accuracy"], 4) in numbers
    assert row["auc"] is None or round(row["auc"], 4) in numbers
    assert 0 < row["accuracy"] < 1 and (row["auc"] is None or 0.5 < row["auc"] < 1)


def test_every_source_is_cited_with_a_complete_protocol_held_against_its_code() -> None:
    data = published()
    assert {r["source"] for r in data["rows"]} == set(data["sources"])
    for sid, source in data["sources"].items():
        assert "doi" in source["citation"].lower() or "arxiv" in source["citation"].lower()
        protocol = source["protocol"]
        for key in ("channels", "input", "pretrained", "optimizer", "lr", "epochs",
                    "augmentation"):
            assert key in protocol, f"{sid} protocol lacks {key}"
        code = _flat(SOURCES["protocols"][sid]["text"])
        assert f"{protocol['lr']}" in code or f"{protocol['lr']:g}" in code
        assert re.match(r"\d+", str(protocol["epochs"])).group() in code
        assert protocol["optimizer"] in code.lower()
    plus = data["sources"]["medmnist_plus"]["protocol"]
    assert "zero-padded to 224" in plus["input"] and plus["channels"].startswith("3")
    assert "Pad" in SOURCES["protocols"]["medmnist_plus"]["text"]
    assert "as_rgb=True" in SOURCES["protocols"]["medmnist_plus"]["text"]
    assert "Resize((224, 224))" in SOURCES["protocols"]["medmnist_v2"]["text"]


def test_every_octmnist_method_of_the_transcribed_table_is_stored() -> None:
    """Completeness: each method of MedMNIST v2's OCTMNIST table (as transcribed) is a row."""
    table = next(c for c in SOURCES["medmnist_v2"] if c["id"] == "textbook_priors")
    methods = yaml.safe_load(table["text"])["octmnist"]
    rows = [r for r in published()["rows"] if r["source"] == "medmnist_v2"]
    names = {"resnet18_224": "ResNet-18 (224", "resnet50_224": "ResNet-50 (224",
             "auto_sklearn": "auto-sklearn (", "autokeras": "AutoKeras (",
             "google_automl": "Google AutoML Vision ("}
    assert set(methods) == set(names)
    for key, value in methods.items():
        stored = [r for r in rows if r["method"].startswith(names[key])]
        assert len(stored) == 1, key
        assert (stored[0]["accuracy"], stored[0]["auc"]) == (value["acc"], value["auc"]), key


def test_automl_rows_carry_their_own_protocol_held_against_the_code() -> None:
    code = _flat(SOURCES["protocols"]["automl"]["text"])
    rows = {r["method"].split(" (")[0]: r for r in published()["rows"] if r["mode"] == "automl"}
    assert set(rows) == {"auto-sklearn", "AutoKeras", "Google AutoML Vision"}
    # auto-sklearn: flattened 28 x 28 pixels, 2 hours (default --time); no images, no epochs
    assert "x_train.reshape(x_train.shape[0], size, )" in code and "default=2" in code
    assert "784 flattened pixels, 2 h" in rows["auto-sklearn"]["method"]
    assert row_protocol(rows["auto-sklearn"])["epochs"] is None
    # AutoKeras: up to 20 trials (default --num_trials) of 20 epochs each, on the 28 px images
    assert "epochs=20" in code and "'--num_trials', default=20" in code
    assert row_protocol(rows["AutoKeras"])["epochs"] == 20
    assert row_protocol(rows["AutoKeras"])["input_size"] == 28
    # Google AutoML Vision: the exported model is fed 224 px RGB
    assert ".resize((224, 224)).convert('RGB')" in code
    google = row_protocol(rows["Google AutoML Vision"])
    assert (google["input_size"], google["channels"]) == (224, 3)
    # none of them inherits the source's Adam / 100 epochs recipe
    for row in rows.values():
        assert row_protocol(row)["optimizer"] is None
        assert "optimizer unknown vs adam" in protocol_differences(row, _record())


def _record(**train) -> RunRecord:
    return RunRecord(run_id="r", experiment="e", status="complete", model="resnet18_28",
                     strategy="none", seed=0, device="cpu",
                     dataset={"name": "octmnist", "size": train.pop("size", 28)},
                     model_init={"weights": train.pop("weights", "random")},
                     config={"train": {"optimizer": "adam", "epochs": 100, **train}})


def test_protocol_differences_name_every_mismatch() -> None:
    resnet18 = next(r for r in published()["rows"] if r["method"] == "ResNet-18 (28)")
    assert protocol_differences(resnet18, _record()) == []
    assert protocol_differences(resnet18, _record(epochs=15)) == ["epochs 100 vs 15"]
    assert protocol_differences(resnet18, _record(augment=["hflip"])) == [
        "augmentation none vs hflip"]
    plus = next(r for r in published()["rows"] if r["size"] == 128)
    found = protocol_differences(plus, _record(size=128, weights="timm", optimizer="adamw",
                                               mode="linear_probe"))
    # MedMNIST+ pads to 224 px and feeds 3 channels; its scheme is not stated for this row
    assert found == ["input size 224 vs 128", "channels 3 vs 1", "mode unknown vs linear_probe"]
    assert set(row_protocol(plus)) == set(PROTOCOL_KEYS)


@pytest.mark.usefixtures("no_figures")
def test_a_row_stands_beside_runs_only_when_trained_the_same_way(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path / "results" / "real")
    for seed in range(3):
        write_run(store, seed=seed, data=dataset("octmnist", 28, synthetic=False, test=250),
                  config={"train": {"optimizer": "adam", "epochs": 100}})
    text = build(store.root, tmp_path)
    section = text[text.index("**Published results on OCTMNIST"):]
    beside, apart = section.split("**Different protocol**")
    assert "| *ResNet-18 (28)* | 28 | 0.743 | 0.943 | medmnist v2 [1] |" in beside
    assert "| *ResNet-50 (28)* | 28 | 0.762 | 0.952 |" in beside
    assert "ResNet-50 (224, upsampled from 28 px)" in apart and "input size 224 vs 28" in apart
    assert "Google AutoML Vision" in apart and "VGG16" in apart
    assert "Doerrich" in section and "Yang J" in section
    assert "ResNet-18 (224, upsampled from 28 px)" in apart and "auto-sklearn" in apart
    assert "AutoKeras" in apart and "mode automl vs end_to_end" in apart
    # what is published but not stored is said, with its reason, from the data file
    gaps = published()["not_stored"]
    assert gaps and all(g["reason"].startswith("no text source available offline") for g in gaps)
    lines = [line for line in section.splitlines() if line.startswith("- Not stored")]
    assert len(lines) == len(gaps)
    assert all("no text source available offline" in line for line in lines)
    assert "per-backbone OCTMNIST table" in lines[0] and "medmnist plus [2]" in lines[0]


@pytest.mark.parametrize(("size", "test", "shown"), [(28, 250, True), (64, 250, True),
                                                     (28, 100, False)])
def test_published_rows_only_for_real_octmnist_and_apart_unless_same_protocol(
        tmp_path: Path, size: int, test: int, shown: bool, no_figures: None) -> None:
    # (the class counts are the records' metadata; the predictions stay small)
    store = ResultsStore(tmp_path / "results" / "real")
    for seed in range(3):
        write_run(store, seed=seed, data=dataset("octmnist", size, synthetic=False, test=test))
    text = build(store.root, tmp_path)
    assert ("ResNet-18 (28)" in text and "medmnist v2 [1]" in text) is shown
    if shown:  # written without the MedMNIST v2 recipe (100 epochs), so apart from ours
        apart = text[text.index("**Different protocol**"):]
        assert "| ResNet-18 (28) | 28 | 0.743 | 0.943 | medmnist v2 [1] |" in apart
        assert f"size 28 vs {size}" in apart if size != 28 else "size 28 vs" not in apart
    assert "SYNTHETIC" not in text


def test_a_sweep_over_sizes_compares_within_each_size_beside_its_published_results(
        tmp_path: Path, no_figures: None) -> None:
    store = ResultsStore(tmp_path / "results" / "sizes")
    for size in (28, 64, 128):
        for strategy in ("none", "weighted_ce"):
            for seed in range(3):
                write_run(store, strategy=strategy, seed=seed, sweep={"data.size": size},
                          data=dataset("octmnist", size, synthetic=False, test=250),
                          run_id=f"cnn__{strategy}__seed{seed}__size={size}")
    data = report.collect(store.root)
    comparisons = report.compare_to_baseline(data, n_resamples=RESAMPLES)
    assert sorted(comparisons.setup) == [f"cpu fp32 · data.size={s}" for s in (128, 28, 64)]
    assert (comparisons.seeds == 3).all()  # each pairs the 3 seeds of its own size
    text = build(store.root, tmp_path)
    published = text[text.index("**Published results on OCTMNIST"):]
    beside, apart = published.split("**Different protocol**")
    assert "| ours: cnn / none (cpu fp32 · data.size=64) | 64 |" in beside
    assert "ResNet-18 (28)" not in beside  # no run here was trained as MedMNIST v2 did
    assert "| VGG16, ImageNet-pretrained (128, padded to 224) | 128 | 0.905 | n/a |" in apart
