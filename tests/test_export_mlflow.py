"""MLflow export: every complete run round-trips through a local store, once."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import experiment, write_yaml

from octbench import cli
from octbench.results import ResultsStore

mlflow = pytest.importorskip("mlflow", reason="the [mlflow] extra is not installed")
pytestmark = pytest.mark.extras  # .ci/run's second phase selects these


@pytest.fixture(scope="module")
def results(tmp_path_factory, oct_npz) -> Path:
    """Two complete runs of a 2-epoch grid, plus one record that is not complete."""
    import torch

    threads = torch.get_num_threads()
    root = tmp_path_factory.mktemp("mlflow")
    config = write_yaml(root / "exp.yaml", experiment(
        root, oct_npz, strategies=["none", "weighted_ce"], train={"epochs": 2, "batch_size": 64}))
    try:
        assert cli.main(["-q", "run", str(config)]) == 0
    finally:
        torch.set_num_threads(threads)
    results = root / "results" / "tiny"
    failed = results / "failed-run"
    failed.mkdir()
    (failed / "record.json").write_text(json.dumps({
        "run_id": "failed-run", "experiment": "tiny", "status": "failed", "model": "m",
        "strategy": "none", "seed": 0, "device": "cpu", "error": "boom"}))
    return results


def test_export_round_trip_and_idempotence(results, tmp_path, capsys):
    from mlflow.tracking import MlflowClient

    store = ResultsStore(results)
    records = {r.run_id: r for r in store.records() if r.status == "complete"}
    uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    (tmp_path / "mlruns").mkdir()
    argv = ["export", "mlflow", str(results), "--tracking-uri", uri]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "exported 2 run(s)" in out and "1 not complete (not exported)" in out

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("tiny")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 2
    for run in runs:
        record = records[run.data.tags["octbench.run_id"]]
        tags, params, metrics = run.data.tags, run.data.params, run.data.metrics
        assert run.info.status == "FINISHED" and run.info.run_name == record.run_id
        assert (tags["model"], tags["strategy"], tags["seed"], tags["device"]) == (
            record.model, record.strategy, str(record.seed), record.device)
        assert tags["synthetic"] == "true" and tags["octbench.experiment"] == "tiny"
        assert params["strategy.name"] == record.config["strategy"]["name"]
        assert params["train.epochs"] == "2" and params["model.width"] == "0.25"
        assert metrics["test_macro_f1"] == pytest.approx(record.metrics["test"]["macro_f1"])
        assert metrics["val_accuracy"] == pytest.approx(record.metrics["val"]["accuracy"])
        losses = client.get_metric_history(run.info.run_id, "train_loss")
        assert sorted((m.step, m.value) for m in losses) == [
            (h["epoch"], pytest.approx(h["train_loss"])) for h in record.history]
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert artifacts == {"record.json", "predictions.npz", "best.pt"}
        assert run.info.artifact_uri.startswith((tmp_path / "mlruns").as_uri())  # beside the db

    assert cli.main(argv) == 0  # again: nothing new
    assert "exported 0 run(s), 2 already exported" in capsys.readouterr().out
    assert len(client.search_runs([experiment.experiment_id])) == 2


def test_export_of_a_missing_folder_is_a_usage_error(tmp_path, capsys):
    code = cli.main(["export", "mlflow", str(tmp_path / "nope"), "--tracking-uri",
                     f"sqlite:///{tmp_path / 'm.db'}"])
    assert code == cli.EXIT_USAGE
    assert "is not a results folder" in capsys.readouterr().err
    assert not (tmp_path / "m.db").exists()
