"""Export a results folder to MLflow: ``python -m octbench export mlflow RESULTS_DIR``.

Each complete run becomes one MLflow run in the MLflow experiment named like the octbench
experiment: its resolved config as params (every default filled in, e.g. ``model.dropout``),
every epoch's curves as metric steps (epochs 1-based, each at the time its epoch ended), the
selected checkpoint's final metrics (``best/val_macro_f1``: a key of its own, so that MLflow's
runs table shows the chosen epoch's value and not the curve's last point; ``test_macro_f1``),
tags (model, strategy, seed, device, synthetic, ...), and the run folder's files as artifacts
(``record.json``, ``predictions.npz``, ``best.pt``, robustness predictions, a Ray run's log, ...;
not the resume checkpoint, a lock or a half-written file).

``run --mlflow URI`` logs live instead, through :class:`LiveLogger`, an observer of the grid's
progress: params when a run starts, each epoch's metrics when it ends, the final metrics and
artifacts when the run ends. A tracking server that stops answering never stops the training.

A tracking server that does not answer fails within about half a minute (connect and request
timeouts, few retries) with one message; a password in the URI is never printed.

Exporting again does not duplicate: a run already exported (found by its ``octbench.run_id`` tag)
is skipped; a half-finished earlier export of it is replaced. The default store is a local
``mlruns/`` folder (an SQLite database plus artifact folders), which ``mlflow ui
--backend-store-uri sqlite:///mlruns/mlflow.db`` shows.

The command itself is :mod:`octbench.cli.export`. This module imports the registries (and so
torch) to fill in a record's defaults; the CLI imports it only when a command needs it.

One module over 450 lines because it is one idea: a run as an MLflow run. Export and live
logging share every piece of the mapping (params, curves, final metrics, tags, artifacts, the
tracking server's failures).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from octbench.config import component_defaults
from octbench.data import DATASETS
from octbench.errors import OctbenchError
from octbench.fileio import TEMP_SUFFIX, confined
from octbench.models import DATA_PARAMS, MODELS
from octbench.progress import counting
from octbench.results import COMPLETE, FAILED, ResultsStore, RunRecord, read_record
from octbench.strategies import STRATEGIES

log = logging.getLogger(__name__)

RUN_ID_TAG = "octbench.run_id"
#: Files of a run folder that are not artifacts: the resume checkpoint (gone once the run is
#: complete, large), the lock, corrupted evaluation's partial results.
NOT_ARTIFACTS = (ResultsStore.RESUME, ResultsStore.LOCK)
NOT_ARTIFACT_SUFFIXES = (".partial.json", ".partial.npz", TEMP_SUFFIX)
#: The selected checkpoint's metrics whose key the per-epoch curves use too get this prefix.
BEST_PREFIX = "best/"
#: MLflow's HTTP settings while exporting: a dead server fails in ~30 s, not minutes.
HTTP_SETTINGS = {"MLFLOW_HTTP_REQUEST_TIMEOUT": "10", "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
                 "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                 "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0"}


@dataclass
class ExportSummary:
    """What an export did, run by run (octbench run ids)."""

    exported: list[str] = field(default_factory=list)
    already: list[str] = field(default_factory=list)
    not_complete: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)


def default_tracking_uri(folder: str | Path = "mlruns") -> str:
    """An SQLite store inside ``folder`` (MLflow 3 no longer accepts plain folders by default)."""
    return f"sqlite:///{Path(folder).resolve() / 'mlflow.db'}"


def export_mlflow(results_dir: str | Path, *, tracking_uri: str | None = None,
                  experiment: str | None = None) -> ExportSummary:
    """Log every complete run under ``results_dir`` as an MLflow run, once.

    Args:
        results_dir: one experiment's results folder (``results/quickstart``) or a folder of
            several (``results``).
        tracking_uri: MLflow tracking URI; default a local ``mlruns/`` folder.
        experiment: MLflow experiment name; default each run's octbench experiment.

    Example:
        >>> export_mlflow("results/quickstart", tracking_uri="sqlite:///mlruns/mlflow.db")
        ... # doctest: +SKIP
    """
    folders = _run_folders(Path(results_dir))
    uri = tracking_uri or default_tracking_uri()
    summary = ExportSummary()
    experiments: dict[str, str] = {}
    with _http_limits(), _unreachable_as_error(uri):
        client = _client(tracking_uri)
        local_root = _artifact_root(uri)
        with counting(len(folders), "exporting to MLflow", unit="runs") as progress:
            for folder in folders:
                _export_one(client, folder, summary, experiments, experiment, local_root)
                progress.update(1)
    return summary


def check_tracking(tracking_uri: str) -> None:
    """Ask the tracking store one question, so that an unreachable one fails before training.

    Raises:
        OctbenchError: MLflow is missing, or the store does not answer (within ~30 s).
    """
    with _http_limits(), _unreachable_as_error(tracking_uri):
        _client(tracking_uri).search_experiments(max_results=1)


class LiveLogger:
    """Logs each run of a grid to MLflow while it trains: an observer of the grid's progress
    (:class:`octbench.progress.RunObserver`), used as a context manager around the grid.

    Params and tags go in when a run starts, each epoch's metrics when the epoch ends (at its
    own time), the selected checkpoint's metrics and the run folder's files when the run ends.
    A tracking server that stops answering is reported once; training goes on, nothing more is
    sent, and :attr:`not_logged` names the complete runs that `export mlflow` can log later.

    Example:
        >>> with LiveLogger("http://127.0.0.1:5000", "results/quickstart") as mlflow_log:
        ...     run_experiment(config, observers=[mlflow_log])  # doctest: +SKIP
    """

    def __init__(self, tracking_uri: str, results_dir: str | Path):
        self.uri = tracking_uri
        self.store = ResultsStore(results_dir)
        self.logged: list[str] = []  # complete runs logged live, in order
        self.not_logged: list[str] = []  # complete runs that are not in MLflow
        self.failure: str | None = None  # why the tracking server was given up
        self._live: dict[str, str] = {}  # octbench run id -> MLflow run id
        self._epochs: dict[str, set[int]] = {}  # epochs logged, per octbench run id
        self._experiments: dict[str, str] = {}
        self._limits = _http_limits()
        self._client = None

    def __enter__(self) -> LiveLogger:
        self._limits.__enter__()
        self._client = _client(self.uri)
        return self

    def __exit__(self, *exc) -> None:
        self._limits.__exit__(*exc)

    def run_started(self, spec) -> None:
        def start():
            name = spec.experiment
            if name not in self._experiments:
                self._experiments[name] = _experiment_id(self._client, name,
                                                         _artifact_root(self.uri))
            experiment_id = self._experiments[name]
            for stale in self._client.search_runs(  # an earlier attempt at this run
                    [experiment_id],
                    filter_string=f"tags.`{RUN_ID_TAG}` = '{_quoted(spec.run_id)}'"):
                self._client.delete_run(stale.info.run_id)
            tags = _tags({"run_id": spec.run_id, "experiment": name, "model": spec.model.label,
                          "strategy": spec.strategy.label, "seed": spec.seed,
                          "device": spec.device, "precision": spec.train.precision})
            run = self._client.create_run(experiment_id, tags=tags, run_name=spec.run_id)
            self._live[spec.run_id] = run.info.run_id
            self._epochs[spec.run_id] = set()
            _log_batches(self._client, run.info.run_id, params=_params(spec.config()))

        self._call(spec.run_id, start)

    def epoch_ended(self, run_id: str, entry: dict) -> None:
        if run_id not in self._live:
            return

        def log_epoch():
            _log_batches(self._client, self._live[run_id],
                         metrics=_epoch_metrics(entry, _millis(entry.get("time_utc"))))
            self._epochs[run_id].add(int(entry.get("epoch", 0)))

        self._call(run_id, log_epoch)

    def run_ended(self, run_id: str, outcome) -> None:
        complete = isinstance(outcome, RunRecord) and outcome.status == COMPLETE
        if run_id not in self._live:
            if complete and self.failure is not None:
                self.not_logged.append(run_id)
            return
        mlflow_run_id = self._live.pop(run_id)
        if not isinstance(outcome, RunRecord):  # trained elsewhere (locked, or complete)
            self._call(run_id, lambda: self._client.delete_run(mlflow_run_id))
            return

        def finish():
            if complete:
                record = dataclasses.asdict(outcome)
                history = record.get("history") or []
                end = _millis(record.get("created_utc"))
                earlier = [m for entry, when in zip(history, _epoch_times(history, end),
                                                    strict=True)
                           if int(entry.get("epoch", 0)) not in self._epochs[run_id]
                           for m in _epoch_metrics(entry, when)]  # e.g. before a resume
                from mlflow.entities import RunTag

                _log_batches(self._client, mlflow_run_id,
                             tags=[RunTag(k, v) for k, v in _tags(record).items()],
                             metrics=earlier + _final_metrics(record))
                _log_artifacts(self._client, mlflow_run_id, self.store.run_dir(run_id))
            status = "FINISHED" if complete else "FAILED" if outcome.status == FAILED else \
                "KILLED"
            self._client.set_terminated(mlflow_run_id, status=status)
            if complete:
                self.logged.append(run_id)

        self._call(run_id, finish, complete=complete)

    def _call(self, run_id: str, action, *, complete: bool = False) -> None:
        """Do ``action`` unless the server was given up; a failure gives it up (said once)."""
        if self.failure is None:
            try:
                action()
                return
            except Exception as error:  # noqa: BLE001 - whatever MLflow raises, training goes on
                reason = str(error).splitlines()[0] if str(error) else type(error).__name__
                self.failure = redacted(reason[:300])
                log.warning("MLflow tracking server %s stopped answering (%s); training goes "
                            "on without logging, and the runs not logged are listed at the end.",
                            redacted(self.uri), self.failure)
        self._live.pop(run_id, None)
        if complete:
            self.not_logged.append(run_id)


def redacted(uri: str) -> str:
    """The URI with any password replaced by ``***`` (``http://user:***@host``; a lone
    ``http://TOKEN@host`` may be a token, so it goes whole), for messages.

    Example:
        >>> redacted("https://me:s3cret@mlflow.example.org/")
        'https://me:***@mlflow.example.org/'
    """
    return re.sub(r"://([^/@:]*)(:[^/@]*)?@",
                  lambda m: f"://{m[1]}:***@" if m[2] else "://***@", uri)


@contextlib.contextmanager
def _http_limits():
    """MLflow's HTTP timeout and retries, bounded while exporting (a value the user set in the
    environment wins), then restored."""
    saved = {key: os.environ.get(key) for key in HTTP_SETTINGS}
    for key, value in HTTP_SETTINGS.items():
        os.environ.setdefault(key, value)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextlib.contextmanager
def _unreachable_as_error(uri: str):
    """A tracking server that refuses, times out or answers with an error: one OctbenchError."""
    from mlflow.exceptions import MlflowException
    from requests.exceptions import RequestException

    try:
        yield
    except (MlflowException, RequestException) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        reason = redacted(reason if len(reason) <= 300 else reason[:300] + "...")
        raise OctbenchError(
            f"cannot export to the MLflow tracking server {redacted(uri)}: {reason}. Check that "
            "the server runs and the URI is right (e.g. `mlflow server --port 5000` and "
            "--tracking-uri http://127.0.0.1:5000), or omit --tracking-uri to write a local "
            "mlruns/ store. Runs exported so far stay; rerun to export the rest.") from None


def _artifact_root(tracking_uri: str) -> Path | None:
    """Artifacts of a local SQLite store go beside its database file, not into the current
    folder (MLflow's default, ``./mlruns``); a server decides for itself (None)."""
    if not tracking_uri.startswith("sqlite:///"):
        return None
    return Path(tracking_uri.removeprefix("sqlite:///")).resolve().parent / "artifacts"


def _client(tracking_uri: str | None):
    try:
        from mlflow.tracking import MlflowClient
    except ImportError:
        raise OctbenchError(
            "MLflow is not installed; install it with `pip install 'octbench[mlflow]'` "
            "(or `pip install mlflow`)."
        ) from None
    logging.getLogger("mlflow").setLevel(logging.WARNING)  # its database-setup INFO lines
    if tracking_uri is None:
        Path("mlruns").mkdir(exist_ok=True)
        tracking_uri = default_tracking_uri()
    try:
        return MlflowClient(tracking_uri=tracking_uri)
    except Exception as error:  # noqa: BLE001 - MLflow raises many kinds for a bad URI
        raise OctbenchError(
            f"cannot open the MLflow tracking store {redacted(tracking_uri)} "
            f"({redacted(str(error))}); give a reachable --tracking-uri such as "
            "sqlite:///mlruns/mlflow.db or http://HOST:5000."
        ) from None


def _run_folders(results_dir: Path) -> list[Path]:
    if not results_dir.is_dir():
        raise OctbenchError(f"{results_dir} is not a results folder; give one experiment's "
                            "results (e.g. results/quickstart) or the results folder itself.")
    found = sorted(p.parent for p in results_dir.glob("*/record.json"))
    found += sorted(p.parent for p in results_dir.glob("*/*/record.json"))
    # A run folder (or experiment folder) linked in from elsewhere would upload files that
    # are not this results folder's: refused, naming the link, before anything is sent.
    for folder in found:
        confined(results_dir, *folder.relative_to(results_dir).parts, "record.json")
    if not found:
        raise OctbenchError(f"{results_dir} holds no run records (*/record.json); run an "
                            "experiment first, e.g. `python -m octbench run "
                            "experiments/quickstart.yaml`.")
    return found


def _export_one(client, folder: Path, summary: ExportSummary, experiments: dict,
                experiment_name: str | None, local_root: Path | None) -> None:
    try:  # the one schema check every reader of records uses
        record = dataclasses.asdict(read_record(folder / "record.json"))
        run_id = record["run_id"]
    except (OSError, ValueError) as error:
        log.warning("skipped %s: unreadable record (%s)", folder, error)
        summary.unreadable.append(str(folder))
        return
    if record.get("status") != "complete":
        summary.not_complete.append(run_id)
        return
    name = experiment_name or str(record.get("experiment") or folder.parent.name)
    if name not in experiments:
        experiments[name] = _experiment_id(client, name, local_root)
    experiment_id = experiments[name]
    existing = client.search_runs([experiment_id],
                                  filter_string=f"tags.`{RUN_ID_TAG}` = '{_quoted(run_id)}'")
    if any(run.info.status == "FINISHED" for run in existing):
        summary.already.append(run_id)
        return
    for stale in existing:  # an export that was interrupted halfway
        client.delete_run(stale.info.run_id)
    start = _millis(record.get("created_utc"))
    run = client.create_run(experiment_id, start_time=start, tags=_tags(record),
                            run_name=run_id)
    try:
        _log_values(client, run.info.run_id, record)
        _log_artifacts(client, run.info.run_id, folder)
    except BaseException:
        client.set_terminated(run.info.run_id, status="FAILED")
        raise
    client.set_terminated(run.info.run_id, status="FINISHED")
    summary.exported.append(run_id)


def _log_artifacts(client, mlflow_run_id: str, folder: Path) -> None:
    """Every file the run folder holds, but those of :data:`NOT_ARTIFACTS`."""
    for path in sorted(folder.iterdir()):
        if (path.is_symlink() or not path.is_file()  # never follow a link out of the folder
                or path.name.startswith(".") or path.name in NOT_ARTIFACTS
                or path.name.endswith(NOT_ARTIFACT_SUFFIXES)):
            continue
        client.log_artifact(mlflow_run_id, str(path))


def _experiment_id(client, name: str, local_root: Path | None) -> str:
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    location = None if local_root is None else (local_root / _slug(name)).as_uri()
    return client.create_experiment(name, artifact_location=location)


def _tags(record: dict) -> dict[str, str]:
    dataset = record.get("dataset") or {}
    tags = {
        RUN_ID_TAG: record["run_id"],
        "octbench.experiment": record.get("experiment"),
        "model": record.get("model"),
        "strategy": record.get("strategy"),
        "seed": record.get("seed"),
        "device": record.get("device"),
        "precision": record.get("precision"),
        "dataset": dataset.get("name"),
        "synthetic": "true" if dataset.get("synthetic") else "false",
        "kind": record.get("kind", "run"),
        "mlflow.source.git.commit": record.get("git_commit"),
    }
    return {key: str(value) for key, value in tags.items() if value is not None}


def _log_values(client, mlflow_run_id: str, record: dict) -> None:
    history = record.get("history") or []
    end = _millis(record.get("created_utc"))
    metrics = [metric for entry, when in zip(history, _epoch_times(history, end), strict=True)
               for metric in _epoch_metrics(entry, when)]
    _log_batches(client, mlflow_run_id, params=_params(record.get("config") or {}),
                 metrics=metrics + _final_metrics(record))


def _params(config: dict) -> list:
    from mlflow.entities import Param

    return [Param(key, str(value)[:6000])
            for key, value in _flatten(resolved_config({"config": config}))]


def _epoch_metrics(entry: dict, when: int) -> list:
    """One history entry's numbers as metrics at step ``epoch`` (1-based), time ``when``."""
    from mlflow.entities import Metric

    step = int(entry.get("epoch", 0))
    return [Metric(key, float(value), when, step) for key, value in entry.items()
            if key != "epoch" and _number(value)]


def _final_metrics(record: dict) -> list:
    """The selected checkpoint's metrics, timing and size, at the record's time."""
    from mlflow.entities import Metric

    curve_keys = {key for entry in record.get("history") or [] for key in entry}
    end = _millis(record.get("created_utc"))
    metrics = []
    final_step = int(record.get("best_epoch") or 0)
    for split, values in (record.get("metrics") or {}).items():
        for key, value in _flatten(values):
            if _number(value):
                name = f"{split}_{key}".replace(".", "_")
                name = BEST_PREFIX + name if name in curve_keys else name
                metrics.append(Metric(name, float(value), end, final_step))
    extras = {**(record.get("timing") or {}), "best_epoch": record.get("best_epoch"),
              "parameters": record.get("parameters")}
    return metrics + [Metric(key, float(value), end, final_step)
                      for key, value in extras.items() if _number(value)]


def _log_batches(client, mlflow_run_id: str, *, params=(), metrics=(), tags=()) -> None:
    # MLflow limits one batch to 1000 metrics, 100 params and 100 tags.
    params, metrics, tags = list(params), list(metrics), list(tags)
    for i in range(0, len(params), 100):
        client.log_batch(mlflow_run_id, params=params[i:i + 100])
    for i in range(0, len(tags), 100):
        client.log_batch(mlflow_run_id, tags=tags[i:i + 100])
    for i in range(0, len(metrics), 1000):
        client.log_batch(mlflow_run_id, metrics=metrics[i:i + 1000])


def _epoch_times(history: list[dict], end: int) -> list[int]:
    """When each epoch ended (ms): recorded in ``time_utc``, else counted back from the record's
    time by the epochs' train and validation seconds (records made before ``time_utc``)."""
    times, later = [], 0.0
    for entry in reversed(history):
        recorded = entry.get("time_utc")
        times.append(_millis(recorded) if recorded else end - int(later * 1000))
        later += sum(float(entry.get(key) or 0) for key in ("train_seconds", "val_seconds")
                     if _number(entry.get(key)))
    return times[::-1]


def resolved_config(record: dict) -> dict:
    """The record's config with every default of its model, strategy and data filled in
    (``model.dropout``, ``data.size``, ...), as :mod:`octbench.config` resolves them."""
    config = dict(record.get("config") or {})
    for key, registry, skip in (("model", MODELS, DATA_PARAMS), ("data", DATASETS, ()),
                                ("strategy", STRATEGIES, ("class_counts",))):
        entry = config.get(key)
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            continue
        # a name unknown here (a plugin's, timm's) is kept as recorded
        config[key] = {**component_defaults(registry, entry["name"], skip), **entry}
    return config


def _flatten(value, prefix: str = ""):
    if isinstance(value, dict):
        for key, inner in value.items():
            yield from _flatten(inner, f"{prefix}{key}.")
    else:
        yield prefix.rstrip("."), value


def _number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value == value


def _millis(utc: str | None) -> int:
    try:
        return int(dt.datetime.fromisoformat(str(utc)).timestamp() * 1000)
    except ValueError:
        return int(dt.datetime.now(dt.timezone.utc).timestamp() * 1000)


def _quoted(text: str) -> str:
    return text.replace("\\", "\\\\").replace("'", "\\'")


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in text) or "experiment"
