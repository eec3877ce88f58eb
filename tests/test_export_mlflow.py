"""MLflow export: every complete run round-trips through a local store, once."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from conftest import assert_usage_error, experiment, tree_digest, write_yaml

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
        # the selected checkpoint's value has its own key; the curve keeps one point per epoch
        assert metrics["best/val_accuracy"] == pytest.approx(record.metrics["val"]["accuracy"])
        assert "val_accuracy" not in record.metrics["val"] or len(client.get_metric_history(
            run.info.run_id, "val_accuracy")) == len(record.history)
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


# ---------------------------------------------------------------------------------------------
# Against a real `mlflow server` over HTTP (one per module)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def _mlflow_server(root: Path):
    """``mlflow server`` on a free local port with its own store in ``root``; yields its URL and
    process, and stops it at the end."""
    port = _free_port()
    log = (root / "server.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1", "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
         "--artifacts-destination", str(root / "artifacts")],
        cwd=root, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120  # a loaded 2-core machine needs a while
    try:
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"mlflow server did not start: {(root / 'server.log').read_text()}")
            time.sleep(0.5)
        yield url, process
    finally:
        _stop(process)
        log.close()


def _stop(process: subprocess.Popen) -> None:
    """Stop the server and the workers it started (its own process group)."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """One ``mlflow server`` for the module."""
    with _mlflow_server(tmp_path_factory.mktemp("mlflow-server")) as (url, _):
        yield url


def test_export_over_http_keeps_curve_and_selected_value_apart(results, server, capsys):
    """MLflow's runs table and order_by use the selected checkpoint's value; the curve has one
    point per epoch, each at its own time; params hold the resolved defaults."""
    from mlflow.tracking import MlflowClient

    records = {r.run_id: r for r in ResultsStore(results).records() if r.status == "complete"}
    assert cli.main(["export", "mlflow", str(results), "--tracking-uri", server,
                     "--experiment", "over-http"]) == 0
    assert "exported 2 run(s)" in capsys.readouterr().out
    client = MlflowClient(server)
    experiment = client.get_experiment_by_name("over-http")
    ordered = client.search_runs([experiment.experiment_id],
                                 order_by=["metrics.`best/val_macro_f1` DESC"])
    best_values = [records[r.data.tags["octbench.run_id"]].metrics["val"]["macro_f1"]
                   for r in ordered]
    assert best_values == sorted(best_values, reverse=True) and len(ordered) == 2
    for run in ordered:
        record = records[run.data.tags["octbench.run_id"]]
        selected = record.metrics["val"]["macro_f1"]
        assert run.data.metrics["best/val_macro_f1"] == pytest.approx(selected)
        curve = client.get_metric_history(run.info.run_id, "val_macro_f1")
        assert sorted((m.step, m.value) for m in curve) == [
            (h["epoch"], pytest.approx(h["val_macro_f1"])) for h in record.history]
        assert curve[0].timestamp != curve[-1].timestamp  # each epoch at its own time
        times = [m.timestamp for m in sorted(curve, key=lambda m: m.step)]
        assert times == sorted(times)
        params = run.data.params
        # defaults nobody wrote in the YAML (reference_cnn's dropout, npz's class_names)
        assert params["model.dropout"] == "0.5" and params["model.width"] == "0.25"
        assert params["data.class_names"] == "None" and params["train.epochs"] == "2"
        assert params["strategy.name"] == record.strategy.split("(")[0]


def test_export_to_a_dead_server_fails_fast_without_the_password(results, tmp_path):
    """Nothing listens on port 1: one line, exit 2, the password never shown, in seconds."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    start = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "octbench", "export", "mlflow", str(results),
                           "--tracking-uri", "http://alice:s3cr3t@127.0.0.1:1"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    seconds = time.monotonic() - start
    assert_usage_error(done, "http://alice:***@127.0.0.1:1")
    assert "s3cr3t" not in done.stdout + done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert seconds < 60  # mostly imports on a loaded machine; it was ~280 s of retries


def test_export_to_a_server_that_never_answers_times_out(results, tmp_path):
    """A port that accepts connections and says nothing: the request timeout ends it."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
           "MLFLOW_HTTP_REQUEST_TIMEOUT": "2"}  # the user's setting wins over octbench's 10 s
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        uri = f"http://127.0.0.1:{silent.getsockname()[1]}"
        start = time.monotonic()
        done = subprocess.run([sys.executable, "-m", "octbench", "export", "mlflow",
                               str(results), "--tracking-uri", uri], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=120)
        seconds = time.monotonic() - start
    assert_usage_error(done, f"cannot export to the MLflow tracking server {uri}")
    assert seconds < 45  # 2 tries x 2 s plus start-up; never MLflow's default 7 retries x 120 s


def test_http_limits_are_bounded_and_restored(monkeypatch):
    from octbench import export_mlflow

    monkeypatch.delenv("MLFLOW_HTTP_REQUEST_TIMEOUT", raising=False)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # the user's own setting
    with export_mlflow._http_limits():
        assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "10"
        assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "0"
    assert "MLFLOW_HTTP_REQUEST_TIMEOUT" not in os.environ
    assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "0"
    # worst case with octbench's settings: (retries + 1) x timeout + backoff, about half a minute
    timeout, retries = (int(export_mlflow.HTTP_SETTINGS[k]) for k in (
        "MLFLOW_HTTP_REQUEST_TIMEOUT", "MLFLOW_HTTP_REQUEST_MAX_RETRIES"))
    assert (retries + 1) * timeout <= 30


@pytest.mark.parametrize(("uri", "shown"), [
    ("https://me:pw@host:5000/x", "https://me:***@host:5000/x"),
    ("http://host:5000", "http://host:5000"),
    ("postgresql://u:p%40ss@db/mlflow", "postgresql://u:***@db/mlflow"),
    ("http://t0ken@host/a@b", "http://***@host/a@b"),
])
def test_redacted_hides_passwords_only(uri, shown):
    from octbench.export_mlflow import redacted

    assert redacted(uri) == shown


def test_run_logs_to_mlflow_when_the_grid_ends(results, server, capsys):
    """`run --mlflow URI`: the tracking server is asked first; complete runs are logged once."""
    from mlflow.tracking import MlflowClient

    config = results.parents[1] / "exp.yaml"
    assert cli.main(["run", str(config), "--mlflow", server]) == 0  # all complete already
    assert "MLflow: 2 run(s) logged, 0 already there" in capsys.readouterr().out
    experiment = MlflowClient(server).get_experiment_by_name("tiny")
    assert len(MlflowClient(server).search_runs([experiment.experiment_id])) == 2
    assert cli.main(["run", str(config), "--mlflow", server]) == 0
    assert "MLflow: 0 run(s) logged, 2 already there" in capsys.readouterr().out


def _runs_of(client, experiment: str) -> list:
    found = client.get_experiment_by_name(experiment)
    return [] if found is None else client.search_runs([found.experiment_id])


def test_run_logs_each_epoch_live(results, server, monkeypatch, capsys):
    """`run --mlflow URI` logs as the run trains: while it trains, MLflow holds its params and
    one point per finished epoch (at the epoch's own time); at its end, the selected
    checkpoint's metrics and the run folder's files."""
    from mlflow.tracking import MlflowClient

    from octbench.export_mlflow import LiveLogger, _millis

    client = MlflowClient(server)
    config = write_yaml(results.parents[1] / "live.yaml", {
        **yaml.safe_load((results.parents[1] / "exp.yaml").read_text()), "name": "live",
        "strategies": ["none"], "train": {"epochs": 3, "batch_size": 64, "threads": 1}})
    seen = []
    original = LiveLogger.epoch_ended

    def watched(self, run_id, entry):
        original(self, run_id, entry)
        (run,) = _runs_of(client, "live")
        seen.append((entry["epoch"], run.info.status, run.data.params.get("model.dropout"),
                     len(client.get_metric_history(run.info.run_id, "train_loss"))))

    monkeypatch.setattr(LiveLogger, "epoch_ended", watched)
    assert cli.main(["-q", "run", str(config), "--mlflow", server]) == 0
    assert "MLflow: 1 run(s) logged, 0 already there" in capsys.readouterr().out
    assert seen == [(1, "RUNNING", "0.5", 1), (2, "RUNNING", "0.5", 2), (3, "RUNNING", "0.5", 3)]

    (record,) = ResultsStore(results.parent / "live").records()
    (run,) = _runs_of(client, "live")
    assert run.info.status == "FINISHED" and run.data.tags["synthetic"] == "true"
    curve = sorted(client.get_metric_history(run.info.run_id, "val_macro_f1"),
                   key=lambda m: m.step)
    assert [(m.step, m.value, m.timestamp) for m in curve] == [
        (h["epoch"], pytest.approx(h["val_macro_f1"]), _millis(h["time_utc"]))
        for h in record.history]
    assert run.data.metrics["best/val_macro_f1"] == pytest.approx(
        record.metrics["val"]["macro_f1"])
    assert run.data.metrics["test_accuracy"] == pytest.approx(record.metrics["test"]["accuracy"])
    assert {a.path for a in client.list_artifacts(run.info.run_id)} == {
        "record.json", "predictions.npz", "best.pt"}
    # logged live, so a later export finds it there
    assert cli.main(["export", "mlflow", str(results.parent / "live"), "--tracking-uri",
                     server]) == 0
    assert "exported 0 run(s), 1 already exported" in capsys.readouterr().out


@pytest.mark.slow  # a server of its own: ~20 s to start on a loaded machine
def test_a_tracking_server_that_dies_mid_run_does_not_stop_training(results, tmp_path,
                                                                    monkeypatch, capsys):
    """The server is killed after the first epoch: the grid trains to the end, exit 0, one
    warning, and the runs not logged are named with the command that logs them later."""
    from octbench.export_mlflow import LiveLogger

    config = write_yaml(results.parents[1] / "dies.yaml", {
        **yaml.safe_load((results.parents[1] / "exp.yaml").read_text()), "name": "dies"})
    original = LiveLogger.epoch_ended
    with _mlflow_server(tmp_path) as (url, process):
        def killing(self, run_id, entry):
            original(self, run_id, entry)
            if entry["epoch"] == 1:
                _stop(process)

        monkeypatch.setattr(LiveLogger, "epoch_ended", killing)
        code = cli.main(["run", str(config), "--mlflow", url])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    records = ResultsStore(results.parent / "dies").records()
    assert len(records) == 2 and all(r.status == "complete" for r in records)
    assert all(r.epochs_trained == 2 for r in records)
    assert captured.err.count("training goes on without logging") == 1
    (summary,) = [line for line in captured.err.splitlines() if "not logged" in line
                  and "Log them later" in line]
    assert "0 run(s) logged, 2 complete run(s) not logged" in summary
    assert all(r.run_id in summary for r in records)
    assert f"export mlflow {results.parent / 'dies'} --tracking-uri {url}" in summary
    assert "Traceback" not in captured.err


def test_every_file_of_a_run_folder_is_an_artifact_but_transient_ones(tmp_path):
    """Robustness predictions, a Ray run's log and the like go along; the resume checkpoint, the
    lock, partial results, temporary files and links do not."""
    from octbench.export_mlflow import _log_artifacts

    kept = ["record.json", "predictions.npz", "best.pt", "robustness_samples.npz", "run.log"]
    for name in [*kept, "resume.pt", ".lock", "robustness.partial.json",
                 ".record.json.42.octbench.tmp"]:
        (tmp_path / name).write_text("x")
    (tmp_path / "elsewhere.npz").symlink_to(tmp_path / "record.json")
    (tmp_path / "folder").mkdir()
    logged = []

    class Client:
        def log_artifact(self, run_id, path):
            logged.append(Path(path).name)

    _log_artifacts(Client(), "r", tmp_path)
    assert sorted(logged) == sorted(kept)


def test_run_with_a_dead_tracking_server_fails_before_training(results, tmp_path, capsys):
    config = results.parents[1] / "more.yaml"
    spec = yaml.safe_load((results.parents[1] / "exp.yaml").read_text())
    write_yaml(config, {**spec, "seeds": [5]})  # a run that is not trained yet
    before = tree_digest(results)
    assert cli.main(["run", str(config), "--mlflow",
                     "http://bob:pa55@127.0.0.1:1"]) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert "cannot export to the MLflow tracking server http://bob:***@127.0.0.1:1" in err
    assert "pa55" not in err
    assert tree_digest(results) == before  # nothing trained, nothing written


def test_resolved_config_fills_every_default_and_keeps_numbers_as_written():
    from octbench.export_mlflow import resolved_config

    config = resolved_config({"config": {
        "data": {"name": "synthetic", "scale": 0.1}, "model": {"name": "reference_cnn"},
        "strategy": {"name": "focal", "gamma": 1}, "train": {"epochs": 3}}})
    assert config["data"] == {"name": "synthetic", "scale": 0.1, "size": 28, "test_scale": 1.0,
                              "seed": 0, "difficulty": 1.0, "label_noise": 0.0, "cache": True}
    assert config["model"] == {"name": "reference_cnn", "width": 1.0, "dropout": 0.5}
    assert config["strategy"] == {"name": "focal", "gamma": 1, "alpha": None}
    assert config["train"] == {"epochs": 3}
    timm = {"name": "timm:resnet18", "drop_rate": 0.1}  # timm owns its defaults: as recorded
    assert resolved_config({"config": {"model": timm}})["model"] == timm
