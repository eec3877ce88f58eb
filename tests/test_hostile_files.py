"""Files from strangers: reading a checkpoint or a results folder never runs code from it."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch
from conftest import assert_usage_error, cli_in_process, experiment, tree_digest

from octbench.config import parse_config
from octbench.data import load_dataset
from octbench.errors import OctbenchError
from octbench.experiment import run_experiment
from octbench.grid import expand_grid
from octbench.results import ResultsStore
from octbench.runner import execute_run

SCAN = Path(__file__).parent / "data" / "NORMAL-12494-1.jpeg"


class _Payload:
    """Unpickling this calls ``open(marker, "w")``: proof that code from the file ran."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


def write_evil_checkpoint(path: Path, marker: Path, **state) -> Path:
    """A torch checkpoint that looks like octbench's but carries a code-running payload."""
    buffer = io.BytesIO()
    torch.save({**state, "payload": _Payload(marker)}, buffer)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buffer.getvalue())
    # The payload is really there (read from the pickle opcodes, without running it).
    assert "io.open" in torch.serialization.get_unsafe_globals_in_checkpoint(path)
    return path


def test_predict_refuses_a_checkpoint_that_needs_pickle(tmp_path, capsys):
    marker = tmp_path / "payload-ran"
    evil = write_evil_checkpoint(tmp_path / "evil.pt", marker, model={}, img_size=28,
                                 class_names=["CNV", "DME", "DRUSEN", "NORMAL"])
    assert_usage_error(cli_in_process(["predict", "--run", str(evil), str(SCAN)], capsys),
                       "only pickle can load (io.open)", "refuses it", "retrain it",
                       "python -m octbench run")
    assert not marker.exists(), "the checkpoint's payload ran"


def test_a_damaged_checkpoint_is_a_clear_error(tmp_path, capsys):
    bad = tmp_path / "best.pt"
    bad.write_bytes(b"PK\x03\x04 not really a zip")
    assert_usage_error(cli_in_process(["predict", "--run", str(bad), str(SCAN)], capsys),
                       "is not a usable octbench checkpoint")


def test_an_evil_resume_state_in_a_copied_results_folder_never_runs(
        tmp_path, oct_npz, restore_torch, caplog):
    config = parse_config(experiment(tmp_path, oct_npz, strategies=["none"],
                                     train={"epochs": 1, "threads": 1}))
    (spec,) = expand_grid(config)
    store = ResultsStore(Path(config.results_dir) / config.name)
    marker = tmp_path / "payload-ran"
    write_evil_checkpoint(store.run_dir(spec.run_id) / ResultsStore.RESUME, marker,
                          state={"epoch": 0})
    summary = run_experiment(config, quiet=True, say=lambda _: None)
    assert not marker.exists(), "the resume state's payload ran"
    assert [r.status for r in store.records()] == ["complete"], summary
    assert "only pickle can load" in caplog.text and "starts from scratch" in caplog.text
    assert not (store.run_dir(spec.run_id) / ResultsStore.RESUME).exists()


def test_saved_states_load_weights_only(tmp_path, oct_npz, restore_torch):
    """What octbench writes (best.pt, and resume.pt of an interrupted run) needs no pickle."""
    config = parse_config(experiment(tmp_path, oct_npz, strategies=["oversample"],
                                     train={"epochs": 2, "threads": 1, "schedule": "cosine"}))
    (spec,) = expand_grid(config)
    store = ResultsStore(Path(config.results_dir) / config.name)
    def stop_in_second_epoch(epoch, metrics):  # called before that epoch's checkpoint
        if epoch == 1:
            raise KeyboardInterrupt

    data = load_dataset(config.data.name, **config.data.params)
    with pytest.raises(KeyboardInterrupt):
        execute_run(spec, data, store, on_epoch=stop_in_second_epoch)
    resume = store.run_dir(spec.run_id) / ResultsStore.RESUME
    state = torch.load(resume, map_location="cpu", weights_only=True)
    assert state["state"]["epoch"] == 1 and state["rng"]["numpy"]["key"].shape == (624,)
    record = execute_run(spec, data, store)
    assert record.status == "complete" and record.epochs_trained == 2
    best = torch.load(store.run_dir(spec.run_id) / ResultsStore.BEST, map_location="cpu",
                      weights_only=True)
    assert best["img_size"] == 28 and best["epoch"] in (1, 2)
    assert not resume.exists()


# ---------------------------------------------------------------------------------------------
# confinement: nothing written or deleted outside the results folder


def test_record_fields_never_become_path_parts():
    from octbench.results import RunRecord

    fields = dict(experiment="x", status="complete", model="m", strategy="s", seed=0,
                  device="cpu")
    assert RunRecord.from_dict({"run_id": "ok-run", **fields}).run_id == "ok-run"
    for run_id in ("../../victim", "..", "a/b", "", 7):
        with pytest.raises(ValueError, match="'run_id' must be a plain folder name"):
            RunRecord.from_dict({"run_id": run_id, **fields})


def test_a_link_planted_in_a_results_folder_is_never_followed(tmp_path):
    from octbench.fileio import UnsafePath

    outside = tmp_path / "victim"
    outside.mkdir()
    (outside / "resume.pt").write_text("precious")
    (outside / ".lock").write_text("host 999999999")
    (outside / ".resume.pt.999999999.octbench.tmp").write_text("precious too")
    store = ResultsStore(tmp_path / "results" / "exp")
    store.root.mkdir(parents=True)
    (store.root / "run-x").symlink_to(outside, target_is_directory=True)
    before = {p.name: p.read_text() for p in outside.iterdir()}
    store.prepare()
    for action in (lambda: store.remove("run-x", "resume.pt"),
                   lambda: store.save_state("run-x", "best.pt", {}),
                   lambda: store.load_state("run-x", "resume.pt")):
        with pytest.raises(UnsafePath, match="outside .*Remove the link"):
            action()
    with pytest.raises(UnsafePath), store.claim("run-x"):
        pass
    with pytest.raises(UnsafePath, match="refusing the name '..'"):
        store.run_dir("..")
    assert {p.name: p.read_text() for p in outside.iterdir()} == before


def test_cleanup_removes_only_octbench_marked_temp_files(tmp_path):
    from octbench.fileio import remove_stale_temp_files

    dead = 999_999_999  # above any Linux pid_max
    ours = tmp_path / f".record.json.{dead}.octbench.tmp"
    theirs = [tmp_path / ".notes.tmp", tmp_path / f".draft.txt.{dead}.tmp",
              tmp_path / f"visible.{dead}.octbench.tmp"]
    for path in [ours, *theirs]:
        path.write_text("x")
    assert remove_stale_temp_files(tmp_path) == [ours]
    assert all(path.exists() for path in theirs) and not ours.exists()
    assert remove_stale_temp_files(tmp_path, all_writers=True) == []


def test_report_writes_only_below_its_out_folder(tmp_path, monkeypatch, caplog):
    """`report results/demo/..` and a dataset size like `x/../../victim` in a record."""
    from report_helpers import dataset, write_run

    from octbench.report import build_report

    store = ResultsStore(tmp_path / "results" / "demo")
    for seed in (0, 1):
        write_run(store, seed=seed, data={**dataset(), "size": "x/../../../victim"})
    work = tmp_path / "work"
    (work / "figures").mkdir(parents=True)
    (work / "figures" / "mine.png").write_bytes(b"a user's figure")
    monkeypatch.chdir(work)
    before = tree_digest(tmp_path)
    written = build_report(tmp_path / "results" / "demo" / "..", "reports",
                           formats=("md", "csv"), n_resamples=100)
    after = tree_digest(tmp_path)
    changed = {path for path in set(before) | set(after) if before.get(path) != after.get(path)}
    assert changed and all(path.startswith("work/reports/results/") for path in changed), changed
    assert all(path.resolve().is_relative_to(work / "reports" / "results") for path in written)
    assert (work / "figures" / "mine.png").read_bytes() == b"a user's figure"
    # the records themselves: a dataset size that is not a number fails the record check,
    # so the record is skipped (named) and never becomes a path part
    written = build_report(tmp_path / "results" / "demo", "reports", formats=("csv",),
                           n_resamples=100)
    assert [p.name for p in written] == ["runs.csv"]
    assert "field 'dataset.size' must be an integer >= 1" in caplog.text
    assert not list(tmp_path.rglob("*victim*"))


def test_report_never_opens_a_storage_that_study_json_names(tmp_path, capsys):
    """A copied results folder whose study.json points at a SQLite file elsewhere."""
    import json

    from octbench.tuning.storage import load_study

    folder = tmp_path / "results" / "study"
    folder.mkdir(parents=True)
    elsewhere = tmp_path / "elsewhere" / "victim.db"
    elsewhere.parent.mkdir()
    (folder / "study.json").write_text(json.dumps({
        "study": "study", "storage_kind": "url", "storage": f"sqlite:///{elsewhere}"}))
    with pytest.raises(OctbenchError, match="octbench opens only a study's own study.db"):
        load_study(folder)
    (folder / "study.json").write_text(json.dumps({"study": "study", "storage_kind": "sqlite"}))
    with pytest.raises(OctbenchError, match="has no study.db for its study 'study'"):
        load_study(folder)
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["study.json"]


def test_a_lock_left_after_the_final_record_is_cleared_by_the_next_run(tmp_path, oct_npz,
                                                                        restore_torch):
    """kill -9 between writing the COMPLETE record and releasing the lock, on another host name
    (e.g. a new container): the rerun finds everything complete and still clears the lock."""
    config = parse_config(experiment(tmp_path, oct_npz, strategies=["none"],
                                     train={"epochs": 1, "threads": 1}))
    (spec,) = expand_grid(config)
    run_experiment(config, quiet=True, say=lambda _: None)
    store = ResultsStore(Path(config.results_dir) / config.name)
    lock = store.run_dir(spec.run_id) / ResultsStore.LOCK
    lock.write_text("another-host 4242")
    with store.claim(spec.run_id):  # a live owner's lock is kept
        store.clear_stale_lock(spec.run_id)
        assert lock.exists()
    lock.write_text("another-host 4242")
    summary = run_experiment(config, quiet=True, say=lambda _: None)
    assert summary.already_complete == [spec.run_id] and not lock.exists()


def test_a_study_name_from_a_storage_file_never_becomes_a_path(tmp_path):
    import json

    import optuna

    from octbench.fileio import UnsafePath
    from octbench.tuning import study_figures

    folder = tmp_path / "results" / "s"
    folder.mkdir(parents=True)
    name = "../../../escaped"
    study = optuna.create_study(study_name=name, storage=f"sqlite:///{folder / 'study.db'}")
    study.optimize(lambda trial: trial.suggest_float("x", 0, 1), n_trials=3)
    (folder / "study.json").write_text(json.dumps({"study": name, "storage_kind": "sqlite"}))
    with pytest.raises(UnsafePath, match="refusing the name"):
        study_figures(folder, tmp_path / "reports" / "s")
    assert not list(tmp_path.rglob("*escaped*"))
