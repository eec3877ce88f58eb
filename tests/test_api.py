"""The notebook API (octbench.run, load_results, write_report, tune, evaluate) on tiny data."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from conftest import FIXTURE_CLASSES, experiment, write_yaml
from sklearn.metrics import f1_score, precision_score, recall_score

import octbench
from octbench.config import ConfigError
from octbench.errors import OctbenchError
from octbench.results import COMPLETE, ResultsStore


@pytest.fixture(scope="module")
def trained(tmp_path_factory, oct_npz):
    """Two runs (none, weighted_ce) of one epoch, trained through octbench.run."""
    root = tmp_path_factory.mktemp("api")
    raw = experiment(root, oct_npz, strategies=["none", "weighted_ce"])
    path = write_yaml(root / "tiny.yaml", raw)
    summary = octbench.run(path, overrides={"train.epochs": 1, "train.schedule": "none"},
                           quiet=True)
    return root, path, summary


def test_run_applies_overrides_and_resumes(trained, caplog):
    root, path, summary = trained
    assert summary.ok and len(summary.completed) == 2
    store = ResultsStore(root / "results" / "tiny")
    records = store.records()
    assert {r.config["train"]["epochs"] for r in records} == {1}
    assert {r.config["train"]["schedule"] for r in records} == {"none"}
    # Same overrides: nothing to train; without them another config (epochs 3): new run ids.
    with caplog.at_level(logging.INFO, logger="octbench"):
        again = octbench.run(path, overrides={"train.epochs": 1, "train.schedule": "none"},
                             quiet=True)
    assert sorted(again.already_complete) == sorted(summary.completed) and not again.completed
    assert any("already complete" in message for message in caplog.messages)
    planned = octbench.experiment_config(path)
    assert planned.train.epochs == 3  # the file itself is untouched


def test_run_takes_a_dict_and_a_config(trained):
    root, path, _ = trained
    raw = experiment(root, path.parent / "missing.npz", strategies=["none"])
    with pytest.raises(ConfigError) as error:  # validated like a YAML: every problem listed
        octbench.run({**raw, "train": {"epochs": 0}})
    assert "train.epochs must be >= 1" in str(error.value)
    config = octbench.experiment_config(path, overrides={"seeds": [3, 4]})
    assert octbench.experiment_config(config) is config and config.seeds == (3, 4)
    with pytest.raises(OctbenchError, match="executor must be 'local' or 'ray'"):
        octbench.run(config, executor="slurm")


def test_run_logs_instead_of_printing(tmp_path, oct_npz, capsys, caplog):
    raw = experiment(tmp_path, oct_npz, strategies=["none"], train={"epochs": 1})
    with caplog.at_level(logging.INFO, logger="octbench"):
        summary = octbench.run(raw, quiet=True)
    assert summary.ok and capsys.readouterr().out == ""
    assert any("test acc" in message for message in caplog.messages)


def test_load_results_has_config_per_class_and_timing_columns(trained):
    root, _, summary = trained
    frame = octbench.load_results(root / "results")
    assert len(frame) == 2 and set(frame.status) == {COMPLETE}
    assert set(frame.run_id) == set(summary.completed)
    assert set(frame["config.train.epochs"]) == {1}
    assert set(frame["config.strategy.name"]) == {"none", "weighted_ce"}
    assert (frame["train_seconds"] > 0).all() and (frame["train_images_per_s"] > 0).all()
    store = ResultsStore(root / "results" / "tiny")
    for row in frame.to_dict("records"):
        saved = store.predictions(row["run_id"])
        labels, predicted = saved["test_labels"], saved["test_scores"].argmax(1)
        classes = list(range(len(FIXTURE_CLASSES)))
        recall = recall_score(labels, predicted, labels=classes, average=None, zero_division=0)
        precision = precision_score(labels, predicted, labels=classes, average=None,
                                    zero_division=0)
        for i, name in enumerate(FIXTURE_CLASSES):
            assert row[f"test_recall_{name}"] == pytest.approx(recall[i])
            assert row[f"test_precision_{name}"] == pytest.approx(precision[i])
            assert row[f"test_support_{name}"] == np.sum(labels == i)
        assert row["test_macro_f1"] == pytest.approx(
            f1_score(labels, predicted, average="macro", zero_division=0))


def test_load_results_skips_a_record_with_a_bad_per_class_entry(trained, tmp_path, caplog):
    """Records are untrusted: one that fails the schema check is skipped, named with its field,
    and the others are still loaded."""
    root, _, summary = trained
    source = ResultsStore(root / "results" / "tiny")
    good, bad = (source.read(run_id) for run_id in summary.completed)
    broken = bad.__class__(**{**bad.__dict__, "metrics": {
        "test": {"accuracy": 0.5, "per_class": ["not", "a", "mapping"]},
        "val": {"per_class": {"CNV": "high"}}}})
    copy = ResultsStore(tmp_path / "copy")
    copy.write(good)
    copy.write(broken)
    frame = octbench.load_results(tmp_path / "copy")
    assert list(frame["run_id"]) == [good.run_id]
    assert "metrics.test.per_class" in caplog.text and broken.run_id in caplog.text


def test_write_report(trained, tmp_path):
    root, _, _ = trained
    written = octbench.write_report(root / "results" / "tiny", out=tmp_path / "reports",
                                    formats=["md", "csv"], resamples=200)
    report = tmp_path / "reports" / "tiny" / "report.md"
    assert report in written and (tmp_path / "reports" / "tiny" / "runs.csv") in written
    assert "weighted_ce" in report.read_text()


def test_evaluate_matches_the_run_record(trained, oct_npz):
    root, _, summary = trained
    store = ResultsStore(root / "results" / "tiny")
    run_id = summary.completed[0]
    scores = octbench.evaluate(run_id, oct_npz, results_dir=root / "results")
    recorded = store.read(run_id).metrics["test"]
    assert scores["split"] == "test"
    for key in ("accuracy", "macro_f1", "balanced_accuracy"):
        assert scores["metrics"]["test"][key] == pytest.approx(recorded[key])
    val = octbench.evaluate(store.run_dir(run_id), octbench.load_data(oct_npz), split="val")
    assert sum(val["dataset"]["class_counts"]) == 40 + 14 + 10 + 56
    with pytest.raises(OctbenchError, match="split must be"):
        octbench.evaluate(run_id, oct_npz, split="validation",
                          results_dir=root / "results")


def test_tune_from_a_dict(tmp_path, oct_npz, monkeypatch):
    monkeypatch.chdir(tmp_path)  # experiments/generated/ lands here
    raw = experiment(tmp_path, oct_npz, strategies=[{"name": "focal", "gamma": 2.0}],
                     train={"epochs": 1, "batch_size": 64, "threads": 1})
    raw.update({"study": "api-tune", "n_trials": 2, "pruner": "none",
                "search": {"train.lr": {"type": "float", "low": 1e-3, "high": 1e-2}}})
    result = octbench.tune(raw, quiet=True)
    assert result.counts["complete"] == 2 and set(result.best_params) == {"train.lr"}
    assert 1e-3 <= result.best_params["train.lr"] <= 1e-2
    assert result.generated.is_file()
    trials = octbench.load_results(tmp_path / "results" / "api-tune")
    assert len(trials) == 2 and set(trials.kind) == {"trial"}
    assert result.best_value == pytest.approx(trials["val_macro_f1"].max())
    with pytest.raises(OctbenchError, match="a tuning config is"):
        octbench.tune(42)


def test_public_names_resolve():
    for name in ("run", "load_results", "write_report", "tune", "evaluate", "load_data"):
        assert callable(getattr(octbench, name)) and name in octbench.__all__


def test_in_a_notebook_progress_draws_bars(monkeypatch):
    """A Jupyter kernel is no terminal, yet should get tqdm's (notebook) bars, not log lines."""
    import io
    import sys
    import types

    from octbench import progress

    log_file = io.StringIO()  # isatty() False, as ipykernel's stderr
    assert not progress.GridProgress([1], stream=log_file).tty
    kernel = types.SimpleNamespace(config={"IPKernelApp": {}})
    monkeypatch.setitem(sys.modules, "IPython", types.SimpleNamespace(get_ipython=lambda: kernel))
    assert progress.in_notebook() and progress.GridProgress([1], stream=log_file).tty
    terminal_ipython = types.SimpleNamespace(config={"TerminalIPythonApp": {}})
    monkeypatch.setitem(sys.modules, "IPython",
                        types.SimpleNamespace(get_ipython=lambda: terminal_ipython))
    assert not progress.in_notebook()
