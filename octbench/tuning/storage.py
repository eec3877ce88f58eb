"""Where a study lives: Optuna storages, the study file, and recovery from dead workers.

Owns opening a storage (SQLite file, journal file, any RDB URL with heartbeats), choosing and
recording it in ``results/<study>/study.json``, refusing to resume a study made for another
search, and failing (then retrying) trials whose worker process died.

Must not import: the objective or the workers (they import this module), the runner, the
engine or the report.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import socket
import time
import warnings
from pathlib import Path

import optuna
from optuna.storages._heartbeat import BaseHeartbeat
from optuna.trial import TrialState

from octbench.errors import OctbenchError
from octbench.fileio import atomic_write_text, confined, pid_alive
from octbench.tuning.tune_config import TuneConfig, make_pruner, make_sampler

log = logging.getLogger(__name__)

#: Heartbeats (RDB and journal storages): a trial whose worker stopped beating for GRACE seconds
#: is failed and retried, whichever host the worker ran on.
HEARTBEAT_INTERVAL_S, HEARTBEAT_GRACE_S = 10, 60
#: A killed trial is retried with the same parameters at most this many times.
MAX_RETRY = 2
#: A RUNNING trial that no worker has claimed for this long was left by a dead worker.
UNCLAIMED_GRACE_S = 60
OWNER_ATTR = "octbench_worker"
#: A failed trial's reason, and the mark of a trial asked for after the budget was reached
#: (it never ran); the study summary reads them back.
ERROR_ATTR, SURPLUS_ATTR = "octbench_error", "octbench_surplus"
STUDY_ATTR = "octbench"
STUDY_FILE = "study.json"


def _process_start(pid: int) -> str:
    """The process's start time in clock ticks (Linux), to tell a reused pid apart."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return "-"
    fields = stat.rpartition(")")[2].split()
    return fields[19] if len(fields) > 19 and fields[0] != "Z" else "-"


def trial_owner(number: int) -> str:
    return f"{socket.gethostname()}|{os.getpid()}|{_process_start(os.getpid())}|{number}"


def _alive(pid: int, start: str) -> bool:
    if not pid_alive(pid):
        return False
    if Path("/proc").is_dir():
        now = _process_start(pid)
        return now != "-" and (start == "-" or now == start)  # "-" also for a zombie
    return True


def _is_dead(trial: optuna.trial.FrozenTrial) -> bool:
    parts = str(trial.user_attrs.get(OWNER_ATTR, "")).split("|")
    if len(parts) == 4 and parts[3] == str(trial.number) and parts[1].isdigit():
        host, pid, start, _ = parts
        # Another machine's trial: only its heartbeat can tell.
        return host == socket.gethostname() and not _alive(int(pid), start)
    # Not claimed yet: just asked for (claimed within milliseconds) or abandoned long ago.
    started = trial.datetime_start
    return started is not None and (dt.datetime.now() - started).total_seconds() > \
        UNCLAIMED_GRACE_S


def retry_callback():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.storages.RetryHeartbeatStaleTrialCallback(
            max_retry=MAX_RETRY, inherit_intermediate_values=True)


def fail_dead_trials(study: optuna.Study) -> list[int]:
    """Fail RUNNING trials whose worker is gone, queue their retries; return their numbers.

    The rule: a trial's worker records ``host|pid|start time|trial number`` when it starts the
    trial. A RUNNING trial whose worker is on this machine and no longer runs (killed,
    crashed, or a reused pid) is dead; so is one never claimed for UNCLAIMED_GRACE_S. Trials of
    other machines are left to the heartbeat (``fail_stale_trials``, checked here too).
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)  # heartbeat storages only; no-op otherwise
    failed = []
    retry = retry_callback()
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if not _is_dead(trial):
            continue
        try:
            study.tell(trial.number, state=TrialState.FAIL)
        except (ValueError, optuna.exceptions.UpdateFinishedTrialError):
            continue  # another worker failed it first
        retry(study, trial)
        failed.append(trial.number)
        log.info("trial %d was left RUNNING by a dead worker: failed it and queued a retry",
                 trial.number)
    return failed


#: Trial system attribute: the UTC time (seconds since the epoch) of its worker's last heartbeat.
HEARTBEAT_ATTR = "octbench_heartbeat"


class HeartbeatJournalStorage(optuna.storages.JournalStorage, BaseHeartbeat):
    """Optuna's journal storage with Optuna's heartbeat protocol (which only its RDB storage
    implements): a worker's heartbeat thread stamps its RUNNING trial every
    ``heartbeat_interval`` seconds, and a trial not stamped for ``grace_period`` seconds is
    stale, so ``fail_stale_trials`` fails and retries it, whichever host its worker was on.

    The stamps are the workers' clocks: hosts sharing a journal need synchronised clocks
    (NTP), to well within the grace period.
    """

    def __init__(self, backend, *, heartbeat_interval: int | None = None,
                 grace_period: int | None = None):
        super().__init__(backend)
        self.heartbeat_interval = heartbeat_interval or HEARTBEAT_INTERVAL_S
        self.grace_period = grace_period or HEARTBEAT_GRACE_S

    def record_heartbeat(self, trial_id: int) -> None:
        try:
            self.set_trial_system_attr(trial_id, HEARTBEAT_ATTR, time.time())
        except optuna.exceptions.UpdateFinishedTrialError:
            pass  # failed as stale by another worker meanwhile: its retry is queued

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        now = time.time()
        return [trial._trial_id for trial in self.get_all_trials(
                    study_id, deepcopy=False, states=(TrialState.RUNNING,))
                if now - trial.system_attrs.get(HEARTBEAT_ATTR, now) > self.grace_period]

    def get_heartbeat_interval(self) -> int | None:
        return self.heartbeat_interval

    def get_heartbeat_stale_trial_callback(self):
        return retry_callback()


def masked(spec: str) -> str:
    """The storage ``spec`` with any password hidden, for messages and the study file."""
    if spec.startswith("journal:"):
        return spec
    try:
        from sqlalchemy.engine import make_url

        return make_url(spec).render_as_string(hide_password=True)
    except Exception:  # not a URL at all; it is reported elsewhere
        return spec


def open_storage(spec: str) -> optuna.storages.BaseStorage:
    """Open an Optuna storage: an RDB URL (with heartbeats) or ``journal:PATH``.

    Example:
        >>> storage = open_storage("sqlite:///:memory:")
        >>> storage.get_heartbeat_interval()
        10
    """
    shown = masked(spec)
    try:
        if spec.startswith("journal:"):
            path = Path(spec[len("journal:"):])
            if not path.parent.is_dir():
                raise OSError(f"folder {path.parent} does not exist")
            backend = optuna.storages.journal.JournalFileBackend(str(path))
            return HeartbeatJournalStorage(backend)
        engine_kwargs = {}
        if spec.startswith(("postgresql", "mysql")):
            engine_kwargs = {"connect_args": {"connect_timeout": 10}, "pool_pre_ping": True}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.storages.RDBStorage(
                spec, engine_kwargs=engine_kwargs, heartbeat_interval=HEARTBEAT_INTERVAL_S,
                grace_period=HEARTBEAT_GRACE_S, heartbeat_stale_trial_callback=retry_callback())
    except ImportError as error:
        raise OctbenchError(
            f"cannot open the Optuna storage {shown}: its database driver is missing ({error}). "
            "For PostgreSQL: pip install 'octbench[postgres]'.") from None
    except Exception as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
        if spec.startswith("journal:"):  # a file, not a server: no URL or credentials to check
            raise OctbenchError(
                f"cannot open the Optuna journal file {spec[len('journal:'):]}: {reason}. "
                "Use journal:PATH with PATH a writable file in an existing folder.") from None
        raise OctbenchError(
            f"cannot open the Optuna storage {shown}: {reason}. Check the URL (e.g. "
            "postgresql://user:password@host:5432/db or sqlite:///path/study.db), that the "
            "server is running and reachable from here, and the credentials.") from None


def _recorded(root: Path) -> dict:
    try:
        return json.loads((root / STUDY_FILE).read_text())
    except (OSError, ValueError):
        return {}


def _local_spec(root: Path, kind: str) -> str:
    """The storage spec of the study's own file in ``root``.

    Raises:
        UnsafePath: the file is a link that leaves ``root`` (dangling or not): SQLite or the
            journal would create, alter or append to the file it points at.
    """
    name = "journal.log" if kind == "journal" else "study.db"
    confined(root, name)
    path = root.resolve() / name
    return f"journal:{path}" if kind == "journal" else f"sqlite:///{path}"


def resolve_storage(tune_config: TuneConfig, storage: str | None, workers: int) -> str:
    """The storage spec of this study: given, recorded in ``study.json``, or the default."""
    root = tune_config.root
    recorded = _recorded(root)
    if storage is None and recorded.get("storage_kind") in ("sqlite", "journal"):
        storage = _local_spec(root, recorded["storage_kind"])
    elif storage is None and recorded.get("storage_kind") == "url":
        raise OctbenchError(
            f"study '{tune_config.study}' lives in {recorded.get('storage')}; pass that URL "
            "again with --storage (passwords are not stored).")
    elif storage is None:
        storage = _local_spec(root, "journal" if workers > 1 else "sqlite")
    if workers > 1 and storage.startswith("sqlite"):
        raise OctbenchError(
            f"--workers {workers} cannot share the SQLite storage {masked(storage)}: SQLite is "
            "not safe for several processes. Use --workers 1, a new study name (it gets a "
            "journal file), or --storage postgresql://...")
    return storage


def _storage_kind(spec: str, root: Path) -> str:
    for kind in ("sqlite", "journal"):
        if spec == _local_spec(root, kind):
            return kind
    return "url"


def check_study(tune_config: TuneConfig, storage) -> bool:
    """Whether the study exists; fail if it was created for a different search or objective."""
    try:
        summaries = optuna.get_all_study_names(storage)
    except Exception as error:
        raise OctbenchError(f"cannot read studies from the storage: {error}") from None
    if tune_config.study not in summaries:
        return False
    study = optuna.load_study(study_name=tune_config.study, storage=storage)
    stored = study.user_attrs.get(STUDY_ATTR)
    mine = tune_config.identity()
    if stored is None:
        raise OctbenchError(
            f"a study named '{tune_config.study}' already exists in this storage but was not "
            "made by `octbench tune`; choose another `study:` name.")
    if stored != mine:
        differ = sorted(k for k in mine if stored.get(k) != mine.get(k))
        raise OctbenchError(
            f"study '{tune_config.study}' already exists with a different "
            f"{' and '.join(differ)} (stored: {json.dumps({k: stored.get(k) for k in differ})}); "
            "its trials would not be comparable. Choose another `study:` name, or restore the "
            "original settings to resume it.")
    return True


def local_storage_file(spec: str) -> Path | None:
    """The file of a journal or SQLite storage (None for servers and in-memory SQLite)."""
    if spec.startswith("journal:"):
        return Path(spec[len("journal:"):])
    if spec.startswith("sqlite:///") and ":memory:" not in spec:
        return Path(spec[len("sqlite:///"):])
    return None


def create_study(tune_config: TuneConfig, storage) -> optuna.Study:
    study = optuna.create_study(
        study_name=tune_config.study, storage=storage, direction=tune_config.direction,
        sampler=make_sampler(tune_config, 0), pruner=make_pruner(tune_config),
        load_if_exists=True)
    if STUDY_ATTR not in study.user_attrs:
        study.set_user_attr(STUDY_ATTR, tune_config.identity())
    return study


def write_study_file(tune_config: TuneConfig, spec: str, synthetic: bool, **extra) -> None:
    root = tune_config.root
    info = {**_recorded(root), "study": tune_config.study,
            "storage_kind": _storage_kind(spec, root), "storage": masked(spec),
            "source": tune_config.source, "metric": tune_config.metric,
            "direction": tune_config.direction, "n_trials": tune_config.n_trials,
            "seeds_per_trial": tune_config.seeds_per_trial, "synthetic": synthetic, **extra}
    atomic_write_text(root / STUDY_FILE, json.dumps(info, indent=2, default=str))


def load_study(study_dir: str | Path, *, storage: str | None = None) -> tuple[optuna.Study, dict]:
    """The study recorded in ``study_dir/study.json`` and that record.

    A study in a server needs ``storage`` (passwords are not stored in the record).
    """
    study_dir = Path(study_dir)
    info = _recorded(study_dir)
    if not info:
        raise OctbenchError(f"{study_dir} has no {STUDY_FILE}; pass results/<study> of a study "
                            "made by `octbench tune`.")
    kind = info.get("storage_kind")
    if storage is None and kind not in ("sqlite", "journal"):
        # study.json is a file from a results folder, so untrusted: the storage it names (any
        # server, any SQLite path) is never opened on its word; only the folder's own files are.
        raise OctbenchError(
            f"study '{info.get('study')}' in {study_dir} names the storage "
            f"{masked(str(info.get('storage')))}; octbench opens only a study's own study.db or "
            "journal.log in its folder by itself. Pass that storage explicitly (storage=URL).")
    if storage is None:
        local = study_dir / ("journal.log" if kind == "journal" else "study.db")
        if not local.is_file():  # opening it would create an empty storage
            raise OctbenchError(f"{study_dir} has no {local.name} for its study "
                                f"'{info.get('study')}'; copy it with study.json.")
    spec = storage or _local_spec(study_dir, kind)
    return optuna.load_study(study_name=info["study"], storage=open_storage(spec)), info
