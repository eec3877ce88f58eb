"""Your own data: class names and count from the data, data fingerprints in run ids, provenance
in checkpoints, image folders, and `octbench evaluate`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_npz, tree_digest, write_yaml
from sklearn.metrics import f1_score, roc_auc_score

from octbench.cli import main
from octbench.config import parse_config
from octbench.data import data_fingerprint, load_dataset
from octbench.data.preprocess import load_scan
from octbench.errors import DataError
from octbench.experiment import run_experiment
from octbench.grid import expand_grid
from octbench.results import ResultsStore, RunRecord

SCANS = sorted((Path(__file__).parent / "data").glob("*.jpeg"))
THREE = ("healthy", "fluid", "drusen")
THREE_COUNTS = {"train": (120, 60, 30), "val": (20, 10, 10), "test": (20, 20, 20)}


def three_class_npz(path: Path, class_names=THREE, **changes) -> Path:
    return make_npz(path, counts={**THREE_COUNTS, **changes}, class_names=class_names)


def tiny_config(tmp_path: Path, data: dict, name: str = "own") -> dict:
    return {"name": name, "data": data, "models": [{"name": "reference_cnn", "width": 0.25}],
            "strategies": ["none"], "seeds": [0],
            "train": {"epochs": 2, "batch_size": 64, "threads": 1},
            "results_dir": str(tmp_path / "results")}


def image_folder(root: Path, layout: dict[str, dict[str, list[int]]]) -> Path:
    """``{split: {class: [indices into SCANS]}}`` -> a folder tree of copies of real scans."""
    for split, classes in layout.items():
        for name, indices in classes.items():
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in indices:
                shutil.copy(SCANS[i], folder / f"{i}-{SCANS[i].name}")
    return root


#: Three classes, two training scans each, no val/ (split off train with val_fraction 0.5).
FOLDER = {"train": {"CNV": [0, 1], "DRUSEN": [3, 4], "NORMAL": [5, 2]},
          "test": {"CNV": [1], "DRUSEN": [4], "NORMAL": [5]}}


# --- class names and count -------------------------------------------------------------------

def test_class_names_come_from_the_file_the_config_or_the_labels(tmp_path):
    named = load_dataset("npz", path=str(three_class_npz(tmp_path / "a.npz")))
    assert named.class_names == THREE and named.num_classes == 3
    renamed = load_dataset("npz", path=str(tmp_path / "a.npz"), class_names=["x", "y", "z"])
    assert renamed.class_names == ("x", "y", "z")
    plain = load_dataset("npz", path=str(three_class_npz(tmp_path / "b.npz", class_names=None)))
    assert plain.class_names == ("0", "1", "2")
    assert load_dataset("synthetic", scale=0.005).class_names == (
        "CNV", "DME", "DRUSEN", "NORMAL")


def test_three_class_npz_trains_three_outputs_and_metrics_match_sklearn(tmp_path):
    path = three_class_npz(tmp_path / "three.npz")
    config = parse_config(tiny_config(tmp_path, {"name": "npz", "path": str(path)}))
    summary = run_experiment(config, quiet=True, say=lambda _: None)
    assert summary.ok and len(summary.completed) == 1
    store = ResultsStore(tmp_path / "results" / "own")
    (record,) = store.records()
    assert record.dataset["class_names"] == list(THREE)
    saved = store.predictions(record.run_id)
    assert saved["test_scores"].shape == (60, 3)  # no phantom fourth class
    labels, scores = saved["test_labels"].reshape(-1), saved["test_scores"]
    test = record.metrics["test"]
    assert test["macro_f1"] == pytest.approx(
        f1_score(labels, scores.argmax(1), average="macro", zero_division=0))
    assert test["macro_auc"] == pytest.approx(
        roc_auc_score(labels, scores / scores.sum(1, keepdims=True), multi_class="ovr"))
    assert set(test["per_class"]) == set(THREE)  # in label order: record.dataset["class_names"]
    state = torch.load(store.run_dir(record.run_id) / "best.pt", weights_only=True)
    assert state["class_names"] == list(THREE)
    assert list(state["model"].values())[-1].shape == (3,)  # the output layer's bias


def test_a_class_missing_from_test_is_a_warning_and_a_gap_an_error(tmp_path, caplog):
    path = three_class_npz(tmp_path / "t.npz", test=(10, 10, 0))
    with caplog.at_level("WARNING"):
        assert load_dataset("npz", path=str(path)).num_classes == 3
    assert "the test split has no images of drusen" in caplog.text
    gap = three_class_npz(tmp_path / "g.npz", class_names=None, train=(120, 0, 30))
    with pytest.raises(DataError, match=r"class\(es\) 1 \(1\) have no training images"):
        load_dataset("npz", path=str(gap))



def test_unusable_data_fail_before_the_results_folder_exists(tmp_path, capsys):
    """Names that do not fit the labels are found when the data load, before anything is
    written: exit 2, one message, no results folder."""
    path = three_class_npz(tmp_path / "t.npz", class_names=("a", "b", "c", "d"))
    yaml_path = write_yaml(tmp_path / "bad.yaml", tiny_config(tmp_path, {"name": "npz",
                                                                         "path": str(path)}))
    assert main(["run", str(yaml_path)]) == 2
    assert "4 class names (a, b, c, d) but the labels only go up to 2" in capsys.readouterr().err
    assert not (tmp_path / "results").exists()

# --- data fingerprints -----------------------------------------------------------------------

def test_changing_the_file_gives_new_run_ids_and_retrains(tmp_path):
    path = three_class_npz(tmp_path / "data.npz")
    raw = tiny_config(tmp_path, {"name": "npz", "path": str(path)})
    before = expand_grid(parse_config(raw))[0]
    assert run_experiment(parse_config(raw), quiet=True, say=lambda _: None).completed
    with np.load(path) as npz:  # halve the test split, same path
        arrays = {k: npz[k] for k in npz.files}
    arrays["test_images"], arrays["test_labels"] = arrays["test_images"][::2], \
        arrays["test_labels"][::2]
    np.savez(path, **arrays)
    after = expand_grid(parse_config(raw))[0]
    assert after.run_id != before.run_id
    assert after.config()["data"]["fingerprint"] == data_fingerprint("npz", path=str(path))
    summary = run_experiment(parse_config(raw), quiet=True, say=lambda _: None)
    assert summary.completed == [after.run_id] and not summary.already_complete
    record = ResultsStore(tmp_path / "results" / "own").read(after.run_id)
    assert record.dataset["fingerprint"] == after.data_fingerprint
    assert record.schema_version == 2


def test_fingerprints_of_synthetic_and_octmnist_need_no_loading(monkeypatch):
    from octbench.data import synthetic

    first = data_fingerprint("synthetic", scale=0.5)
    assert first == data_fingerprint("synthetic", scale=0.5, cache=False)
    assert first != data_fingerprint("synthetic", scale=0.5, seed=1)
    monkeypatch.setattr(synthetic, "GENERATOR_VERSION", synthetic.GENERATOR_VERSION + 1)
    assert data_fingerprint("synthetic", scale=0.5) != first  # a renderer change: new runs
    from medmnist import INFO

    assert data_fingerprint("octmnist", size=64) == f"md5:{INFO['octmnist']['MD5_64']}"


def test_version_one_records_stay_readable():
    record = RunRecord.from_dict({"run_id": "r", "experiment": "e", "status": "complete",
                                  "model": "m", "strategy": "s", "seed": 0, "device": "cpu",
                                  "dataset": {"name": "npz"}, "schema_version": 1})
    assert record.schema_version == 1 and "fingerprint" not in record.dataset


# --- provenance ------------------------------------------------------------------------------

def test_checkpoint_carries_provenance_readable_without_pickle(trained_run):
    state = torch.load(trained_run.folder / "best.pt", weights_only=True)
    provenance = state["provenance"]
    assert provenance["synthetic"] is True and provenance["dataset"] == "synthetic"
    assert provenance["class_names"] == ["CNV", "DME", "DRUSEN", "NORMAL"]
    assert provenance["img_size"] == 28
    assert provenance["normalisation"] == {"scale": 1 / 255, "mean": 0.5, "std": 0.5}
    record = json.loads((trained_run.folder / "record.json").read_text())
    assert provenance["fingerprint"] == record["dataset"]["fingerprint"]
    assert provenance["fingerprint"].startswith("synthetic-v")


def test_predict_says_synthetic_in_text_and_json(trained_run, capsys):
    assert main(["predict", "--run", str(trained_run.folder), str(SCANS[0])]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert "model trained on SYNTHETIC data - not a diagnosis" in first
    assert main(["predict", "--run", str(trained_run.folder), "--json", str(SCANS[0])]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)[0]["synthetic"] is True and "SYNTHETIC" in err


# --- image folders ---------------------------------------------------------------------------

def test_image_folder_preprocesses_like_predict_and_caches(tmp_path, monkeypatch):
    root = image_folder(tmp_path / "scans", FOLDER)
    data = load_dataset("folder", path=str(root), val_fraction=0.5)
    assert data.class_names == ("CNV", "DRUSEN", "NORMAL")
    assert [len(data.split(s)) for s in ("train", "val", "test")] == [3, 3, 3]
    assert "stratified 50% of train/, seed 0" in data.source["val"]
    test_files = sorted((root / "test").rglob("*.jpeg"))  # CNV, DRUSEN, NORMAL in label order
    expected = np.stack([load_scan(f, size=28) for f in test_files])
    assert np.array_equal(data.test.images.numpy(), expected)
    assert data.test.labels.tolist() == [0, 1, 2]
    assert len(list((tmp_path / "cache" / "folder").glob("*.npz"))) == 1

    import octbench.data.folder as folder_module

    def no_decoding(*args, **kwargs):
        raise AssertionError("a cached folder must not be decoded again")

    monkeypatch.setattr(folder_module, "load_scan", no_decoding)
    again = load_dataset("folder", path=str(root), val_fraction=0.5)
    assert np.array_equal(again.test.images.numpy(), expected)
    assert again.fingerprint == data.fingerprint
    shutil.copy(SCANS[2], root / "test" / "CNV" / "extra.jpeg")  # new content, new key
    assert data_fingerprint("folder", path=str(root)) != data.fingerprint
    with pytest.raises(AssertionError, match="must not be decoded"):
        load_dataset("folder", path=str(root), val_fraction=0.5)


def test_unreadable_scans_are_listed_together_or_skipped(tmp_path):
    root = image_folder(tmp_path / "scans", {**FOLDER, "val": {"CNV": [0], "DRUSEN": [3],
                                                                "NORMAL": [5]}})
    (root / "train" / "CNV" / "notes.png").write_text("not an image")
    (root / "test" / "NORMAL" / "empty.jpg").write_bytes(b"")
    with pytest.raises(DataError) as error:
        load_dataset("folder", path=str(root))
    message = str(error.value)
    assert "2 scan(s) cannot be read" in message and "notes.png" in message
    assert "empty.jpg" in message and "skip_bad: true" in message
    data = load_dataset("folder", path=str(root), skip_bad=True)
    assert data.source["skipped_bad_files"] == 2 and data.source["val"] == "the folder's val/"
    assert len(data.train) == 6


def test_image_folder_runs_reports_predicts_and_evaluates(tmp_path, capsys):
    root = image_folder(tmp_path / "scans", FOLDER)
    config = tiny_config(tmp_path, {"name": "folder", "path": str(root), "val_fraction": 0.5})
    yaml_path = write_yaml(tmp_path / "folder.yaml", config)
    assert main(["run", str(yaml_path)]) == 0
    run = next((tmp_path / "results" / "own").glob("*/best.pt")).parent
    assert main(["predict", "--run", str(run), str(SCANS[0])]) == 0
    out = capsys.readouterr().out
    assert "model trained on folder data" in out and "CNV" in out and "DME" not in out
    assert main(["evaluate", "--run", str(run), str(yaml_path), "--out",
                 str(tmp_path / "eval.json")]) == 0
    result = json.loads((tmp_path / "eval.json").read_text())
    record = json.loads((run / "record.json").read_text())
    assert result["metrics"]["test"] == record["metrics"]["test"]


# --- evaluate --------------------------------------------------------------------------------

def test_evaluate_scores_other_data_and_equals_sklearn(tmp_path, capsys):
    path = three_class_npz(tmp_path / "three.npz")
    config = parse_config(tiny_config(tmp_path, {"name": "npz", "path": str(path)}))
    run_experiment(config, quiet=True, say=lambda _: None)
    run = tmp_path / "results" / "own" / expand_grid(config)[0].run_id
    other = three_class_npz(tmp_path / "other.npz", test=(7, 9, 11))
    out = tmp_path / "out" / "eval.json"
    assert main(["evaluate", "--run", str(run), str(other), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "fluid" in printed and "macro-F1" in printed
    result = json.loads(out.read_text())
    test = result["metrics"]["test"]
    assert sum(v["support"] for v in test["per_class"].values()) == 27
    predictor_scores = _scores(run, other)
    labels = np.load(other)["test_labels"].reshape(-1)
    assert test["macro_f1"] == pytest.approx(
        f1_score(labels, predictor_scores.argmax(1), average="macro", zero_division=0))
    assert result["dataset"]["fingerprint"] == data_fingerprint("npz", path=str(other))
    assert result["model"]["class_names"] == list(THREE)
    assert main(["evaluate", "--run", str(run), str(other), "--split", "val"]) == 0


def _scores(run: Path, npz: Path) -> np.ndarray:
    from octbench.predict import load_predictor

    predictor = load_predictor(str(run))
    with np.load(npz) as arrays:
        return predictor.probabilities(arrays["test_images"])


def test_evaluate_refuses_other_class_counts_and_sizes(tmp_path, capsys):
    path = three_class_npz(tmp_path / "three.npz")
    config = parse_config(tiny_config(tmp_path, {"name": "npz", "path": str(path)}))
    run_experiment(config, quiet=True, say=lambda _: None)
    run = tmp_path / "results" / "own" / expand_grid(config)[0].run_id
    capsys.readouterr()
    four = make_npz(tmp_path / "four.npz")
    big = make_npz(tmp_path / "big.npz", size=32, counts=THREE_COUNTS, class_names=THREE)
    before = tree_digest(tmp_path / "results")
    assert main(["evaluate", "--run", str(run), str(four), "--out",
                 str(tmp_path / "x.json")]) == 2
    err = capsys.readouterr().err
    assert "the model has 3 classes (healthy, fluid, drusen) but the data have 4" in err
    assert main(["evaluate", "--run", str(run), str(big)]) == 2
    assert "takes 28 px images but the data are 32 px" in capsys.readouterr().err
    assert not (tmp_path / "x.json").exists() and tree_digest(tmp_path / "results") == before


def test_evaluate_matches_classes_by_name_and_refuses_other_names(tmp_path, capsys):
    path = three_class_npz(tmp_path / "three.npz")
    config = parse_config(tiny_config(tmp_path, {"name": "npz", "path": str(path)}))
    run_experiment(config, quiet=True, say=lambda _: None)
    run = str(tmp_path / "results" / "own" / expand_grid(config)[0].run_id)
    with np.load(path) as npz:
        arrays = {k: npz[k] for k in npz.files}
    # The same scans, their classes listed alphabetically (as an image folder lists them).
    order = sorted(THREE)
    relabel = np.array([order.index(name) for name in THREE])
    shuffled = {**arrays, "class_names": np.array(order)}
    for split in ("train", "val", "test"):
        shuffled[f"{split}_labels"] = relabel[arrays[f"{split}_labels"]]
    np.savez(tmp_path / "sorted.npz", **shuffled)
    for name in ("three.npz", "sorted.npz"):
        assert main(["evaluate", "--run", run, str(tmp_path / name), "--out",
                     str(tmp_path / f"{name}.json")]) == 0
    same, resorted = (json.loads((tmp_path / f"{n}.json").read_text())["metrics"]["test"]
                      for n in ("three.npz", "sorted.npz"))
    assert same["per_class"] == resorted["per_class"] and same["confusion"] == \
        resorted["confusion"] and same["macro_f1"] == resorted["macro_f1"]
    np.savez(tmp_path / "other.npz", **{**arrays, "class_names": np.array(["a", "b", "c"])})
    capsys.readouterr()
    assert main(["evaluate", "--run", run, str(tmp_path / "other.npz")]) == 2
    assert "the data's classes (a, b, c) are not the model's (healthy, fluid, drusen)" in \
        capsys.readouterr().err


# --- reports ---------------------------------------------------------------------------------

def test_report_of_a_three_class_npz_uses_its_names_everywhere(tmp_path, monkeypatch):
    import pandas as pd

    from octbench import figures
    from octbench.report import build_report

    path = three_class_npz(tmp_path / "three.npz")
    raw = {**tiny_config(tmp_path, {"name": "npz", "path": str(path)}),
           "strategies": ["none", "weighted_ce"]}
    config = parse_config(raw)
    run_experiment(config, quiet=True, say=lambda _: None)
    drawn = []
    save = figures.save_figure
    monkeypatch.setattr(figures, "save_figure",
                        lambda fig, out: drawn.append((Path(out).name, fig)) or save(fig, out))
    yaml_path = write_yaml(tmp_path / "three.yaml", raw)
    written = build_report(yaml_path, tmp_path / "reports", formats=("md", "csv"),
                           n_resamples=100)
    text = written[0].read_text()
    old_names = ("CNV", "DME", "DRUSEN", "NORMAL")
    for section in ("## Dataset", "## Per-class recall and F1"):
        part = text.split(section, 1)[1].split("\n## ", 1)[0]
        assert all(name in part for name in THREE), section
        assert not any(name in part for name in old_names), section
    assert "OCTMNIST" not in text  # neither "as in OCTMNIST" nor published numbers
    assert data_fingerprint("npz", path=str(path)) in text

    (fig,) = [f for name, f in drawn if name == "confusion.png"]
    for ax in fig.axes:
        if ax.get_visible():
            assert [t.get_text() for t in ax.get_xticklabels()] == list(THREE)
            assert [t.get_text() for t in ax.get_yticklabels()] == list(THREE)

    runs = pd.read_csv(tmp_path / "reports" / "own" / "runs.csv")
    per_class = sorted(c for c in runs.columns if c.startswith("test_") and
                       c.split("_", 1)[1].split("_")[0] in ("precision", "recall", "f1"))
    assert per_class == sorted(f"test_{stat}_{name}" for stat in ("precision", "recall", "f1")
                               for name in THREE)
    store = ResultsStore(tmp_path / "results" / "own")
    for row in runs.itertuples():
        saved = store.predictions(row.run_id)
        labels, predicted = saved["test_labels"].reshape(-1), saved["test_scores"].argmax(1)
        assert row.test_macro_f1 == pytest.approx(
            f1_score(labels, predicted, average="macro", zero_division=0))
        assert row.data_fingerprint == data_fingerprint("npz", path=str(path))


def test_report_refuses_runs_of_different_data_unless_allowed(tmp_path, capsys):
    path = three_class_npz(tmp_path / "data.npz")
    raw = tiny_config(tmp_path, {"name": "npz", "path": str(path)})
    run_experiment(parse_config(raw), quiet=True, say=lambda _: None)
    old = data_fingerprint("npz", path=str(path))
    three_class_npz(path, test=(10, 10, 10))  # new content at the same path
    run_experiment(parse_config(raw), quiet=True, say=lambda _: None)
    new = data_fingerprint("npz", path=str(path))
    folder = tmp_path / "results" / "own"
    out = tmp_path / "reports"
    assert main(["report", str(folder), "--out", str(out), "--resamples", "100"]) == 2
    err = capsys.readouterr().err
    assert f"come from 2 different data: {min(old, new)[:23]}" in err
    assert max(old, new)[:23] in err and "--allow-mixed-data" in err
    assert not out.exists()
    # The YAML reports only the runs of the data it names now.
    yaml_path = write_yaml(tmp_path / "own.yaml", raw)
    assert main(["report", str(yaml_path), "--out", str(out), "--resamples", "100"]) == 0
    assert "1 complete" in (out / "own" / "report.md").read_text()
    assert main(["report", str(folder), "--out", str(tmp_path / "mixed"), "--resamples", "100",
                 "--allow-mixed-data"]) == 0
    assert "come from 2 different data" in (tmp_path / "mixed" / "own" / "report.md").read_text()
