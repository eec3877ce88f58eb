"""The grid runner end to end on small synthetic data."""

import json

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score

from octbench.config import parse_config
from octbench.experiment import run_experiment
from octbench.grid import expand_grid
from octbench.results import COMPLETE, SKIPPED, ResultsStore, load_results


@pytest.fixture
def config(tmp_path):
    return parse_config({
        "name": "tiny",
        "data": {"name": "synthetic", "scale": 0.01, "test_scale": 0.2},
        "models": [{"name": "reference_cnn", "width": 0.25}],
        "strategies": ["none", "oversample"],
        "seeds": [0],
        "devices": ["cpu", "cuda:99"],
        "train": {"epochs": 2, "batch_size": 64},
        "results_dir": str(tmp_path / "results"),
    })


def test_grid_runs_records_and_skips(config, tmp_path):
    messages = []
    summary = run_experiment(config, quiet=True, say=messages.append)
    specs = expand_grid(config)
    assert len(specs) == 4
    assert len(summary.completed) == 2 and len(summary.skipped) == 2 and summary.ok

    store = ResultsStore(tmp_path / "results" / "tiny")
    records = {r.run_id: r for r in store.records()}
    assert set(records) == {s.run_id for s in specs}
    for spec in specs:
        record = records[spec.run_id]
        if spec.device == "cpu":
            assert record.status == COMPLETE
            assert record.dataset["synthetic"] is True
            assert record.epochs_trained == 2 and len(record.history) == 2
            assert record.best_epoch in (1, 2)
            assert record.timing["train_images_per_s"] > 0
            assert record.hardware["type"] == "cpu" and record.versions["torch"]
            assert (store.run_dir(spec.run_id) / "best.pt").is_file()
            assert not (store.run_dir(spec.run_id) / "resume.pt").exists()
            # Stored metrics are those of the stored predictions.
            saved = store.predictions(spec.run_id)
            predicted = saved["test_scores"].argmax(1)
            test = record.metrics["test"]
            assert test["accuracy"] == pytest.approx(accuracy_score(saved["test_labels"],
                                                                    predicted))
            assert test["macro_f1"] == pytest.approx(
                f1_score(saved["test_labels"], predicted, average="macro", zero_division=0))
            # The selected epoch is the one with the best validation macro-F1.
            best = max(record.history, key=lambda h: h["val_macro_f1"])
            assert record.best_epoch == best["epoch"]
        else:
            assert record.status == SKIPPED and "cuda:99" in record.error
    assert any("[synthetic data]" in m for m in messages)

    again = []
    second = run_experiment(config, quiet=True, say=again.append)
    assert len(second.already_complete) == 2 and not second.completed
    assert "already complete" in again[0]


def test_results_load_as_a_dataframe(config, tmp_path):
    run_experiment(config, quiet=True, say=lambda _: None)
    frame = load_results(tmp_path / "results")
    assert len(frame) == 4
    complete = frame[frame.status == COMPLETE]
    assert set(complete.strategy) == {"none", "oversample"}
    assert complete["test_macro_f1"].between(0, 1).all()
    assert complete["synthetic"].all()


def test_records_are_strict_json(config, tmp_path):
    run_experiment(config, quiet=True, say=lambda _: None)

    def refuse(constant):
        raise AssertionError(f"{constant} is not JSON")

    paths = sorted((tmp_path / "results" / "tiny").glob("*/record.json"))
    assert len(paths) == len(expand_grid(config)) == 4  # every run, complete or skipped
    for path in paths:
        json.loads(path.read_text(), parse_constant=refuse)


def test_changed_config_gets_new_run_ids(config):
    changed = config.replace(train=config.train.__class__(epochs=3, batch_size=64))
    old = {s.run_id for s in expand_grid(config)}
    new = {s.run_id for s in expand_grid(changed)}
    assert not old & new


def test_posthoc_logit_adjustment_changes_predictions_not_training(config, tmp_path):
    from octbench.config import Component

    grid = config.replace(devices=("cpu",), strategies=(
        Component("none"), Component("logit_adjust", {"mode": "posthoc", "tau": 1.0})))
    run_experiment(grid, quiet=True, say=lambda _: None)
    store = ResultsStore(tmp_path / "results" / "tiny")
    by_strategy = {r.strategy: r for r in store.records()}
    plain = store.predictions(by_strategy["none"].run_id)["test_scores"]
    adjusted = store.predictions(by_strategy["logit_adjust(mode=posthoc,tau=1.0)"].run_id)
    # Same seed and the same plain-CE training: only the offset differs.
    prior = np.array(by_strategy["none"].dataset["class_counts"]["train"], dtype=float)
    expected = np.log(plain) - np.log(prior / prior.sum())
    expected = np.exp(expected - expected.max(1, keepdims=True))
    expected /= expected.sum(1, keepdims=True)
    np.testing.assert_allclose(adjusted["test_scores"], expected, atol=1e-4)
