"""Nothing lost, nothing silent: interrupts, kill -9, failures, full disks, concurrency, schema.

Most tests drive real ``python -m octbench`` subprocesses and real signals. Fault points inside
file writes come from the ``octbench_faults`` test plugin (tests/plugins/), loaded through the
documented ``OCTBENCH_PLUGINS`` variable; every other kill lands wherever training happens to be.
The reference for every interrupted grid is the same grid run once without interruption: after
each rerun, each completed run must equal it exactly (metrics, curves, predictions, weights).
"""

from __future__ import annotations

import errno
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import (
    cli_env,
    experiment,
    leftovers,
    run_cli,
    run_outcome,
    start_cli,
    tree_digest,
    write_yaml,
)

from octbench import cli
from octbench.config import parse_config
from octbench.errors import OctbenchError
from octbench.experiment import run_experiment
from octbench.grid import expand_grid
from octbench.results import COMPLETE, INTERRUPTED, ResultsStore, RunLocked, RunRecord

ARTIFACTS = {"record.json", "predictions.npz", "best.pt"}
WAIT = 300  # seconds; generous because the build machine is shared


# ---------------------------------------------------------------------------------------------
# helpers


def outcome(root: Path) -> dict[str, dict]:
    return run_outcome(root, ("parameters", "schema_version"))



def assert_complete_runs_match(root: Path, reference: dict[str, dict]) -> dict[str, dict]:
    """Every COMPLETE run below ``root`` equals the uninterrupted reference, run for run."""
    found = outcome(root)
    for run_id, entry in found.items():
        if entry["status"] == COMPLETE:
            assert entry == reference[run_id], f"{run_id} differs from the uninterrupted run"
    return found


def wait_for(predicate, process: subprocess.Popen, timeout: float = WAIT) -> None:
    """Poll ``predicate`` every 10 ms until it holds; fail if the process ends first."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if process.poll() is not None:
            out, err = process.communicate()
            pytest.fail(f"the run ended (exit {process.returncode}) before the signal point\n"
                        f"{out}\n{err}")
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail("timed out waiting for the signal point")
        time.sleep(0.01)


def fresh_checkpoint(root: Path, since: float):
    """A predicate: some run saved an epoch checkpoint after ``since`` (training is under way)."""
    def check() -> bool:
        for path in Path(root).glob("*/resume.pt"):
            try:
                if path.stat().st_mtime >= since:
                    return True
            except FileNotFoundError:
                pass
        return False
    return check


def finish(process: subprocess.Popen) -> tuple[int, str, str]:
    out, err = process.communicate(timeout=WAIT)
    return process.returncode, out, err


@pytest.fixture(scope="module")
def grid(tmp_path_factory, oct_npz):
    """The quickstart-sized grid (1 tiny CNN x 4 strategies, 3 epochs), run once uninterrupted."""
    home = tmp_path_factory.mktemp("uninterrupted")
    config = experiment(home, oct_npz)
    path = write_yaml(home / "tiny.yaml", config)
    done = run_cli(["run", str(path)], cli_env(home), timeout=WAIT)
    assert done.returncode == 0, done.stderr
    reference = outcome(home / "results" / "tiny")
    assert len(reference) == 4 and all(e["status"] == COMPLETE for e in reference.values())
    assert leftovers(home / "results") == []
    run_ids = [spec.run_id for spec in expand_grid(parse_config(config))]
    assert sorted(run_ids) == sorted(reference)
    return {"config": config, "reference": reference, "run_ids": run_ids}


# ---------------------------------------------------------------------------------------------
# interrupts and kill -9 (the acceptance test)

#: One campaign over one results folder: each step is a real process, stopped by a signal at a
#: different point; the next step reruns the same command. (kind, point, expected exit code)
CAMPAIGN = [
    ("signal", "INT", 130),                             # Ctrl-C during an epoch
    ("fault", "mid-write:resume.pt:2:KILL", -9),        # kill -9 half-way through a checkpoint
    ("fault", "before-replace:record.json:1:KILL", -9),  # complete temp record, not renamed
    ("fault", "after-replace:record.json:1:INT", 130),  # Ctrl-C just after the COMPLETE record
    ("fault", "after-replace:record.json:1:KILL", -9),  # kill -9 before lock and resume cleanup
    ("signal", "TERM", 130),                            # SIGTERM during an epoch
    ("fault", "mid-write:predictions.npz:1:KILL", -9),  # kill -9 half-way through predictions
    ("fault", "mid-write:record.json:1:TERM", 130),     # SIGTERM inside a record write
    (None, None, 0),                                    # the rerun that completes the grid
]


def run_campaign(tmp_path: Path, grid: dict, steps: list) -> None:
    results = tmp_path / "results" / "tiny"
    config = write_yaml(tmp_path / "tiny.yaml", {**grid["config"],
                                                 "results_dir": str(tmp_path / "results")})
    resumed = 0
    for number, (kind, point, expected) in enumerate(steps, 1):
        where = f"step {number} ({kind} {point})"
        if kind == "fault":
            env = cli_env(tmp_path, "octbench_faults", OCTBENCH_FAULT=point)
        else:
            env = cli_env(tmp_path)
        before = {run_id for run_id, e in outcome(results).items() if e["status"] == COMPLETE}
        started = time.time()
        process = start_cli(["run", str(config)], env, quiet=False)
        if kind == "signal":
            wait_for(fresh_checkpoint(results, started), process)
            process.send_signal(getattr(signal, f"SIG{point}"))
        code, out, err = finish(process)
        assert code == expected, f"{where}: exit {code}\n{out}\n{err}"
        assert "Traceback" not in err, f"{where}:\n{err}"
        resumed += err.count("resuming")
        found = assert_complete_runs_match(results, grid["reference"])
        statuses = [e["status"] for e in found.values()]
        if expected == 130:  # interrupted cleanly: nothing half-written, the run says so
            assert "interrupted" in err and "rerun to resume" in err, where
            assert not [p for p in leftovers(results) if not p.endswith("resume.pt")], where
            assert statuses.count(INTERRUPTED) <= 1, where
        if point and point.startswith("after-replace:record.json"):  # a run was just completed
            after = {run_id for run_id, e in found.items() if e["status"] == COMPLETE}
            assert len(after) == len(before) + 1, f"{where}: the COMPLETE record was replaced"
        if point and point.endswith("KILL") and not point.startswith("after"):
            assert any(p.endswith(".tmp") for p in leftovers(results)), f"{where}: no fault hit"
    assert resumed >= 2, "no rerun resumed from an epoch checkpoint"
    assert outcome(results) == grid["reference"]
    assert leftovers(results) == []
    for run_id in grid["run_ids"]:
        assert {p.name for p in (results / run_id).iterdir()} == ARTIFACTS


def test_interrupted_grid_equals_uninterrupted_run_for_run(tmp_path, grid):
    """SIGINT, SIGTERM and SIGKILL at eight points; every rerun resumes, the end is identical."""
    run_campaign(tmp_path, grid, CAMPAIGN)


@pytest.mark.slow
@pytest.mark.parametrize("delay", [0.0, 0.2, 0.5, 0.9, 1.4, 2.0, 2.7, 3.5])
def test_kill_9_at_any_moment(tmp_path, grid, delay):
    """kill -9 at a moment set only by the clock, then a rerun: the grid is complete and equal."""
    results = tmp_path / "results" / "tiny"
    config = write_yaml(tmp_path / "tiny.yaml", {**grid["config"],
                                                 "results_dir": str(tmp_path / "results")})
    for _ in range(3):
        started = time.time()
        process = start_cli(["run", str(config)], cli_env(tmp_path))
        training = fresh_checkpoint(results, started)
        while not training() and process.poll() is None:
            time.sleep(0.01)
        time.sleep(delay)
        process.kill()
        code, out, err = finish(process)
        assert code in (0, -9), err  # 0: it finished the grid before the kill
        assert_complete_runs_match(results, grid["reference"])
    done = run_cli(["run", str(config)], cli_env(tmp_path))
    assert done.returncode == 0, done.stderr
    assert outcome(results) == grid["reference"]
    assert leftovers(results) == []


# ---------------------------------------------------------------------------------------------
# determinism


def test_same_config_and_seed_give_identical_results(tmp_path, grid, restore_torch):
    """CPU, deterministic mode: another process (this one) reproduces every number exactly."""
    config = parse_config({**grid["config"], "results_dir": str(tmp_path / "results")})
    summary = run_experiment(config, quiet=True, say=lambda _: None)
    assert len(summary.completed) == 4
    assert outcome(tmp_path / "results" / "tiny") == grid["reference"]


# ---------------------------------------------------------------------------------------------
# concurrency


def test_two_processes_on_one_experiment_train_each_run_once(tmp_path, grid):
    config = write_yaml(tmp_path / "tiny.yaml", {**grid["config"],
                                                 "results_dir": str(tmp_path / "results")})
    processes = [start_cli(["run", str(config)], cli_env(tmp_path)) for _ in range(2)]
    trained = 0
    for process in processes:
        code, out, err = finish(process)
        assert code == 0, f"{out}\n{err}"
        trained += int(re.search(r"(\d+) trained", out).group(1))
    assert trained == 4, "a run was trained twice, or not at all"
    results = tmp_path / "results" / "tiny"
    assert outcome(results) == grid["reference"]
    assert leftovers(results) == []


def test_run_lock_is_exclusive_and_dies_with_its_owner(tmp_path):
    store = ResultsStore(tmp_path / "exp")
    with store.claim("run-a"):
        lock = store.run_dir("run-a") / ResultsStore.LOCK
        assert lock.read_text() == f"{socket.gethostname()} {os.getpid()}"
        with pytest.raises(RunLocked, match="being trained by another process"):
            with store.claim("run-a"):
                pass
    assert not lock.exists()

    # A live process holding the lock keeps it; once it is killed (-9), the run is free.
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, os, sys, time; fd = os.open(sys.argv[1], "
         "os.O_RDWR | os.O_CREAT); fcntl.flock(fd, fcntl.LOCK_EX); os.write(fd, b'elsewhere 1');"
         " print('locked', flush=True); time.sleep(600)", str(lock)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunLocked, match="elsewhere 1"):
            with store.claim("run-a"):
                pass
    finally:
        holder.kill()
        holder.wait()
    with store.claim("run-a"):
        assert lock.read_text().endswith(str(os.getpid()))
    assert not lock.exists()


def test_prepare_cleans_what_dead_processes_left_but_not_live_writers(tmp_path):
    store = ResultsStore(tmp_path / "exp")
    run = store.run_dir("run-a")
    run.mkdir(parents=True)
    dead = _dead_pid()
    (run / f".record.json.{dead}.octbench.tmp").write_text("{half")
    live = run / f".resume.pt.{os.getpid()}.octbench.tmp"  # another process writing right now
    live.write_bytes(b"partial")
    (run / ".lock").write_text(f"{socket.gethostname()} {dead}")
    store.prepare()
    assert sorted(p.name for p in run.iterdir()) == [live.name]
    with store.claim("run-a"):  # the run's owner removes every temp file of its run
        assert list(run.iterdir()) == [run / ".lock"]


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


# ---------------------------------------------------------------------------------------------
# failure isolation


def test_failing_runs_are_recorded_and_the_grid_goes_on(tmp_path, oct_npz):
    """NaN loss, out of memory and an exception in a model: FAILED records, exit 1, summary;
    a rerun without the faults resumes them from their checkpoints and replaces the records."""
    config = experiment(
        tmp_path, oct_npz,
        models=[{"name": "faulty_cnn", "fault": "nan", "after": 12},
                {"name": "faulty_cnn", "fault": "oom", "after": 0},
                {"name": "faulty_cnn", "fault": "raise", "after": 12},
                {"name": "reference_cnn", "width": 0.25}],
        strategies=["none"], train={"epochs": 2, "batch_size": 64, "threads": 1},
    )
    path = write_yaml(tmp_path / "faulty.yaml", config)
    env = cli_env(tmp_path, "octbench_faulty_models")
    first = run_cli(["run", str(path)], env, quiet=False)
    assert first.returncode == 1, first.stderr
    assert "Traceback" not in first.stderr
    assert "1 trained, 0 already complete, 0 skipped, 3 failed" in first.stdout
    failed_lines = [line for line in first.stderr.splitlines() if "failed: " in line]
    assert len(failed_lines) == 3
    store = ResultsStore(tmp_path / "results" / "tiny")
    errors = {r.model: r.error for r in store.records() if r.status == "failed"}
    assert "NonFiniteLoss" in errors["faulty_cnn(after=12,fault=nan)"]
    assert "OutOfMemoryError" in errors["faulty_cnn(after=0,fault=oom)"]
    assert "injected fault" in errors["faulty_cnn(after=12,fault=raise)"]
    for error in errors.values():
        assert error.splitlines()[0] in first.stderr
    # Each failed run keeps its whole traceback beside the record (the record: its last line).
    for record in store.records():
        trace = store.run_dir(record.run_id) / ResultsStore.TRACEBACK
        if record.status != "failed":
            assert not trace.exists()
            continue
        text = trace.read_text()
        assert text.startswith("Traceback (most recent call last)")
        assert record.error.splitlines()[-1] in text and "in train_one_epoch" in text
    # The runs that failed in epoch 2 keep their epoch-1 checkpoint for the rerun.
    assert leftovers(store.root) == sorted(
        f"{r.run_id}/resume.pt" for r in store.records() if "after=12" in r.model)

    second = run_cli(["run", str(path)], {**env, "OCTBENCH_TEST_FAULTS": "off"}, quiet=False)
    assert second.returncode == 0, second.stderr
    assert "3 trained, 1 already complete" in second.stdout
    assert second.stderr.count("resuming") == 2  # the two runs that had finished epoch 1
    assert {r.status for r in store.records()} == {COMPLETE}
    assert leftovers(store.root) == []
    assert not list(store.root.glob(f"*/{ResultsStore.TRACEBACK}"))  # gone once complete


# ---------------------------------------------------------------------------------------------
# disk: unwritable or full results folders


def test_unwritable_results_folder_fails_before_training(tmp_path, oct_npz, capsys):
    """A results folder below a regular file cannot be created, even by root (ENOTDIR).

    (chmod does not stop root, so a read-only folder would not test anything when the tests
    run as root; a path through a file fails for every user.)
    """
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file")
    config = experiment(tmp_path, tmp_path / "no-such-data.npz",
                        results_dir=str(blocker / "results"))
    path = write_yaml(tmp_path / "tiny.yaml", config)
    code = cli.main(["-q", "run", str(path)])
    err = capsys.readouterr().err
    assert code == 2
    assert "is not writable (Not a directory)" in err and "choose another `results_dir`" in err
    assert "Nothing was trained" in err and "no-such-data" not in err  # checked before the data


class FullDisk:
    """``open`` for octbench's writers that fails with ENOSPC after ``room`` files.

    The failing file receives half of what is written to it before the error, as a real full
    disk would leave it.
    """

    def __init__(self, room: int):
        self.room = room

    def __call__(self, path, mode="r", *args, **kwargs):
        handle = open(path, mode, *args, **kwargs)
        if "w" not in mode:
            return handle
        if self.room > 0:
            self.room -= 1
            return handle
        write = handle.write

        def fail(data):
            write(data[: len(data) // 2])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        handle.write = fail
        return handle


@pytest.mark.parametrize("room", [0, 2, 4])
def test_full_disk_stops_the_grid_and_keeps_every_record(tmp_path, oct_npz, monkeypatch, capsys,
                                                         restore_torch, room):
    """The disk fills before training (room 0), in a checkpoint (2) or in predictions (4):
    exit 2 with one message, earlier runs byte-identical, nothing half-written; then the
    rerun on a disk with space completes the grid."""
    import octbench.fileio
    import octbench.results.store

    base = experiment(tmp_path, oct_npz, strategies=["none"],
                      train={"epochs": 3, "batch_size": 128, "threads": 1})
    path = write_yaml(tmp_path / "tiny.yaml", base)
    assert cli.main(["-q", "run", str(path)]) == 0
    results = tmp_path / "results"
    before = tree_digest(results)

    write_yaml(path, {**base, "seeds": [0, 1]})  # one more run to train
    full = FullDisk(room)
    monkeypatch.setattr(octbench.fileio, "open", full, raising=False)
    monkeypatch.setattr(octbench.results.store, "open", full, raising=False)
    capsys.readouterr()
    assert cli.main(["-q", "run", str(path)]) == 2
    err = capsys.readouterr().err
    assert "No space left on device" in err and "free disk space" in err, err
    assert err.count("error:") == 1 and "Traceback" not in err
    after = tree_digest(results)
    assert {k: v for k, v in after.items() if k in before} == before
    new = set(after) - set(before)  # at most the new run's epoch checkpoints
    assert all(p.endswith("/resume.pt") for p in new), new

    monkeypatch.undo()
    assert cli.main(["-q", "run", str(path)]) == 0
    assert {r.status for r in ResultsStore(results / "tiny").records()} == {COMPLETE}
    assert len(ResultsStore(results / "tiny").records()) == 2
    assert leftovers(results) == []


# ---------------------------------------------------------------------------------------------
# schema versions: the report never crashes on a record it cannot read


def _record(run_id: str, **changes) -> dict:
    record = RunRecord(
        run_id=run_id, experiment="exp", status=COMPLETE, model="reference_cnn",
        strategy="none", seed=0, device="cpu",
        dataset={"name": "npz", "size": 28, "synthetic": True},
        metrics={"test": {"accuracy": 0.5, "balanced_accuracy": 0.5, "macro_f1": 0.4,
                          "macro_auc": 0.6}},
    )
    data = json.loads(record.to_json())
    data.update(changes)
    return {k: v for k, v in data.items() if v is not _DROP}


_DROP = object()


def test_report_reads_old_records_and_warns_about_unreadable_ones(tmp_path, capsys):
    root = tmp_path / "exp"
    records = {
        "current": _record("current"),
        "older": _record("older", schema_version=_DROP, seed=1),  # before schema_version
        "newer": _record("newer", schema_version=999, seed=2),
        "odd-version": _record("odd-version", schema_version="two"),
        "missing": _record("missing", model=_DROP, strategy=_DROP),
        "wrong-type": _record("wrong-type", metrics=[0.5]),
    }
    for name, data in records.items():
        (root / name).mkdir(parents=True)
        (root / name / "record.json").write_text(json.dumps(data))
    (root / "not-json").mkdir()
    (root / "not-json" / "record.json").write_text('{"run_id": "not-js')
    (root / "a-list").mkdir()
    (root / "a-list" / "record.json").write_text("[1, 2]")

    assert cli.main(["-q", "report", str(root), "--out", str(tmp_path / "reports")]) == 0
    out = capsys.readouterr().out
    warnings = [line for line in out.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 6, out
    for name, reason in [("newer", "schema_version 999 is newer than this octbench reads"),
                         ("odd-version", "schema_version 'two'"),
                         ("missing", "missing fields model, strategy"),
                         ("wrong-type", "field 'metrics' must be a JSON object"),
                         ("not-json", "Unterminated string"),
                         ("a-list", "must be a JSON object, not list")]:
        assert any(f"{name}/record.json" in w and reason in w for w in warnings), (name, out)
    assert "(2 complete)" in out  # the current and the older record
    assert RunRecord.from_dict(records["older"]).schema_version == 0

    # A COMPLETE record of a newer octbench is never retrained or overwritten here.
    store = ResultsStore(root)
    for name in ("predictions.npz", "best.pt"):
        (root / "newer" / name).write_bytes(b"")
    assert store.is_complete("newer")
    assert not store.is_complete("wrong-type")  # its artifacts are missing


# ---------------------------------------------------------------------------------------------
# plugins


def test_plugins_are_imported_and_a_missing_one_is_a_clear_error(monkeypatch, capsys):
    from octbench.plugins import load_plugins

    assert load_plugins(" json , ") == ["json"]
    monkeypatch.setenv("OCTBENCH_PLUGINS", "json,no_such_octbench_plugin")
    assert cli.main(["list", "strategies"]) == 2
    err = capsys.readouterr().err
    assert "cannot import plugin module 'no_such_octbench_plugin'" in err
    assert "add its folder to PYTHONPATH" in err and "Traceback" not in err
    with pytest.raises(OctbenchError):
        load_plugins("no_such_octbench_plugin")


def test_interrupt_record_never_replaces_a_complete_one(tmp_path, oct_npz, restore_torch,
                                                        monkeypatch):
    """In-process twin of the campaign's after-replace INT step, for a quick diagnosis."""
    import octbench.runner

    config = parse_config(experiment(tmp_path, oct_npz, strategies=["none"],
                                     train={"epochs": 1, "batch_size": 128, "threads": 1}))
    store = ResultsStore(tmp_path / "results" / "tiny")
    real_remove = ResultsStore.remove

    def remove(self, run_id, name):  # the last step after the COMPLETE record is written
        if name == ResultsStore.RESUME and self.is_complete(run_id):
            raise KeyboardInterrupt
        return real_remove(self, run_id, name)

    monkeypatch.setattr(octbench.runner.ResultsStore, "remove", remove)
    with pytest.raises(KeyboardInterrupt):
        run_experiment(config, quiet=True, say=lambda _: None)
    (record,) = store.records()
    assert record.status == COMPLETE
    monkeypatch.undo()
    summary = run_experiment(config, quiet=True, say=lambda _: None)
    assert summary.already_complete == [record.run_id]
    assert leftovers(store.root) == []

