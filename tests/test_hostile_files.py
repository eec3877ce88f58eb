"""Files from strangers: reading a checkpoint or a results folder never runs code from it."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch

from octbench import cli
from octbench.config import parse_config
from octbench.data import load_dataset
from octbench.results import ResultsStore
from octbench.runner import execute_run, expand_grid, run_experiment
from tests.conftest import experiment

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
    code = cli.main(["predict", "--run", str(evil), str(SCAN)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert not marker.exists(), "the checkpoint's payload ran"
    assert "only pickle can load (io.open)" in err and "refuses it" in err
    assert "retrain it" in err and "python -m octbench run" in err
    assert "Traceback" not in err


def test_a_damaged_checkpoint_is_a_clear_error(tmp_path, capsys):
    bad = tmp_path / "best.pt"
    bad.write_bytes(b"PK\x03\x04 not really a zip")
    assert cli.main(["predict", "--run", str(bad), str(SCAN)]) == 2
    err = capsys.readouterr().err
    assert "is not a usable octbench checkpoint" in err and "Traceback" not in err


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
