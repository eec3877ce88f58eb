"""Exact-duplicate images within and across splits (leakage): found for every dataset kind,
shown by `data info`, warned about by `run`, refused or dropped on request, recorded, reported."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from conftest import experiment, make_npz, write_yaml

from octbench.cli import main
from octbench.config import parse_config
from octbench.data import load_dataset
from octbench.data.duplicates import find_duplicates
from octbench.errors import ConfigError
from octbench.results import ResultsStore

SMALL = {"train": (24, 16, 12, 28), "val": (8, 6, 5, 9), "test": (8, 8, 8, 8)}


def leaky_npz(path):
    """A file with 2 repeats inside train, 1 val and 2 test images copied from train, and 1 test
    image copied from val."""
    clean = make_npz(path.with_name("clean.npz"), counts=SMALL)
    arrays = dict(np.load(clean))
    train, val, test = (arrays[f"{s}_images"] for s in ("train", "val", "test"))
    train[5], train[9] = train[0], train[1]
    val[3] = train[2]
    test[0], test[4] = train[3], train[4]
    test[7] = val[0]
    np.savez(path, **arrays)
    return path


def independent_counts(path) -> dict:
    """The same counts from the raw bytes, without octbench."""
    arrays = np.load(path)
    images = {s: [im.tobytes() for im in arrays[f"{s}_images"]] for s in ("train", "val", "test")}
    within = {s: len(v) - len(set(v)) for s, v in images.items()}
    unique = {s: set(v) for s, v in images.items()}
    across = {f"{a}-{b}": sum(1 for i, im in enumerate(images[b])
                              if im in unique[a] and im not in images[b][:i])
              for a, b in (("train", "val"), ("train", "test"), ("val", "test"))}
    return {"within": within, "across": across}


def test_leaked_and_repeated_images_are_found_exactly(tmp_path):
    path = leaky_npz(tmp_path / "leaky.npz")
    data = load_dataset("npz", path=str(path))
    found = find_duplicates(data)
    assert {k: found[k] for k in ("within", "across")} == independent_counts(path)
    assert found["within"]["train"] == 2 and found["across"]["train-test"] == 2
    assert found["across"]["val-test"] == 1 and found["across"]["train-val"] == 1
    # every repeat of an earlier image, in any split: 2 + 1 + 3
    assert found["total"] == 6 and data.duplicates["total"] == 6
    assert data.describe()["duplicates"]["across"] == found["across"]
    clean = load_dataset("npz", path=str(tmp_path / "clean.npz"))
    assert clean.duplicates["total"] == 0


def test_data_info_shows_the_duplicates(tmp_path, capsys):
    path = leaky_npz(tmp_path / "leaky.npz")
    assert main(["data", "info", str(path)]) == 0
    out = capsys.readouterr().out
    assert ("exact duplicates (pixel hash): 2 repeats within train; 1 val image identical to "
            "train images; 2 test images identical to train images; 1 test image identical to "
            "val images") in out


def _config(tmp_path, path, **data):
    return experiment(tmp_path, path, name="leak", strategies=["none"],
                      data={"name": "npz", "path": str(path), "synthetic": True, **data},
                      train={"epochs": 1, "batch_size": 32, "threads": 1})


def test_run_warns_records_and_reports_the_counts(tmp_path, capsys, restore_torch):
    path = leaky_npz(tmp_path / "leaky.npz")
    yaml_path = write_yaml(tmp_path / "leak.yaml", _config(tmp_path, path))
    assert main(["run", str(yaml_path)]) == 0
    err = capsys.readouterr().err
    assert err.count("has exact duplicate images") == 1
    warning = err[:err.index("start reference_cnn")]  # before training starts
    assert "2 repeats within train; 1 val image identical to train images; 2 test images " \
        "identical to train images" in warning
    (record,) = ResultsStore(tmp_path / "results" / "leak").records()
    assert record.dataset["duplicates"]["across"]["train-test"] == 2
    assert record.dataset["duplicates"]["on_duplicates"] == "warn"
    assert record.dataset["class_counts"]["test"] == list(SMALL["test"])  # nothing dropped
    out = tmp_path / "report"
    assert main(["report", str(tmp_path / "results" / "leak"), "--out", str(out),
                 "--resamples", "100"]) == 0
    capsys.readouterr()
    text = (out / "leak" / "report.md").read_text()
    assert ("Exact duplicate images (pixel hash): 2 repeats within splits, 1 val and 3 test "
            "images identical to an earlier split — **kept") in text


def test_on_duplicates_error_refuses_before_the_results_folder(tmp_path, capsys):
    path = leaky_npz(tmp_path / "leaky.npz")
    yaml_path = write_yaml(tmp_path / "leak.yaml",
                           _config(tmp_path, path, on_duplicates="error"))
    assert main(["run", str(yaml_path)]) == 2
    error = capsys.readouterr().err
    assert "exact duplicate images" in error and "2 repeats within train" in error
    assert "data.on_duplicates: drop" in error
    assert not (tmp_path / "results").exists()


def test_on_duplicates_drop_keeps_first_copies(tmp_path, capsys, restore_torch):
    path = leaky_npz(tmp_path / "leaky.npz")
    dropped = load_dataset("npz", path=str(path), on_duplicates="drop")
    assert find_duplicates(dropped)["total"] == 0
    arrays = np.load(path)
    assert len(dropped.train) == sum(SMALL["train"]) - 2
    assert len(dropped.test) == sum(SMALL["test"]) - 3
    # what stays is the first copy of each image, in order
    kept = [im.tobytes() for im in dropped.test.images.numpy()]
    earlier = {im.tobytes() for s in ("train", "val") for im in arrays[f"{s}_images"]}
    expected = [im.tobytes() for im in arrays["test_images"] if im.tobytes() not in earlier]
    assert kept == expected
    labels = Counter(dropped.test.labels.tolist())
    assert sum(labels.values()) == len(kept)

    config = _config(tmp_path, path, on_duplicates="drop")
    yaml_path = write_yaml(tmp_path / "drop.yaml", config)
    assert main(["run", str(yaml_path)]) == 0
    capsys.readouterr()
    (record,) = ResultsStore(tmp_path / "results" / "leak").records()
    assert record.dataset["duplicates"]["dropped"] == 6
    assert sum(record.dataset["class_counts"]["test"]) == sum(SMALL["test"]) - 3
    assert record.config["data"]["on_duplicates"] == "drop"


def test_the_default_policy_keeps_run_ids_and_a_bad_one_is_refused(tmp_path):
    path = make_npz(tmp_path / "clean.npz", counts=SMALL)
    plain = parse_config(_config(tmp_path, path))
    explicit = parse_config(_config(tmp_path, path, on_duplicates="warn"))
    assert plain == explicit
    with pytest.raises(ConfigError, match="data.on_duplicates must be one of warn, error, drop"):
        parse_config(_config(tmp_path, path, on_duplicates="ignore"))


def test_an_image_folder_copied_into_test_is_found(tmp_path):
    from test_own_data import FOLDER, image_folder

    root = image_folder(tmp_path / "scans", FOLDER)  # every test scan is also a train scan
    data = load_dataset("folder", path=str(root), val_fraction=0.5)
    found = data.duplicates
    test_in_train = found["across"]["train-test"] + found["across"]["val-test"]
    assert test_in_train == 3 and found["total"] >= 3


def test_synthetic_data_has_no_duplicates():
    assert load_dataset("synthetic", scale=0.005).duplicates["total"] == 0
