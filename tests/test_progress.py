"""Progress in a log file (not a terminal): a start line per run, a line per epoch, heartbeats."""

from __future__ import annotations

import io
import json
import logging
import re

import pytest
from conftest import cli_env, experiment, run_cli, write_yaml

from octbench.progress import GridProgress, counting


def test_log_file_output_of_a_grid_has_start_and_epoch_lines(tmp_path, oct_npz):
    config = write_yaml(tmp_path / "exp.yaml", experiment(
        tmp_path, oct_npz, strategies=["none", "weighted_ce"],
        train={"epochs": 2, "batch_size": 64}))
    done = run_cli(["run", str(config)], cli_env(tmp_path), quiet=False)  # stderr is a pipe
    assert done.returncode == 0, done.stderr
    err = done.stderr.splitlines()
    starts = [line for line in err if " start " in line]
    assert [s.split(" start ")[0] for s in starts] == ["[1/2]", "[2/2]"]
    assert "__none__seed0__cpu__" in starts[0] and starts[0].endswith("on cpu (2 epochs)")
    assert "__weighted_ce__" in starts[1] and "grid ETA ~" in starts[1]
    epochs = [line for line in err if line.startswith("  epoch ")]
    assert [line.split(":")[0].strip() for line in epochs] == ["epoch 1/2", "epoch 2/2"] * 2
    pattern = r"  epoch \d/2: [\d,]+ img/s, loss \d+\.\d{4}, val macro_f1 \d\.\d{4}, \d+ s \("
    assert all(re.match(pattern, line) for line in epochs), epochs
    assert "run ETA" in epochs[0] and "grid ETA" in epochs[-1]
    assert "\r" not in done.stderr  # no bar redraws in a log file
    assert "tiny: 2 trained" in done.stdout


def test_grid_eta_counts_the_epochs_left():
    out = io.StringIO()
    grid = GridProgress([3, 3], stream=out, tty=False)
    run = grid.start_run(1, "a", "cpu")
    with run.epoch(0, 3, 10) as bar:
        bar.update(10)
    run.epoch_done(0, 3, images=10, train_seconds=1.0, loss=1.0, metric="macro_f1", value=0.5)
    assert sum(grid.epochs_left) == 5
    assert grid.eta_seconds() == grid.epoch_seconds[0] * 5
    run.epoch_done(1, 3, images=10, train_seconds=1.0, loss=1.0, metric="macro_f1", value=0.5,
                   stopping=True)
    assert grid.epochs_left == [0, 3]  # early stopping drops the run's remaining epochs
    assert out.getvalue().splitlines()[-1].endswith("(early stop)")


def test_long_loops_print_heartbeats_in_a_log_file(capsys):
    logger = logging.getLogger("octbench")
    saved = logger.handlers[:], logger.level
    logger.handlers[:] = [logging.StreamHandler()]  # this test's stderr, as the CLI sets it up
    logger.setLevel(logging.INFO)
    try:
        with counting(100, "generating", interval=0.0) as progress:
            for _ in range(4):
                progress.update(25)
        logger.setLevel(logging.WARNING)  # -q
        with counting(100, "quiet", interval=0.0) as progress:
            progress.update(50)
    finally:
        logger.handlers[:], level = saved
        logger.setLevel(level)
    lines = capsys.readouterr().err.splitlines()
    assert lines[:3] == [line for line in lines if line.startswith("generating: ")]
    assert lines[0].startswith("generating: 25/100 images (25%)") and "ETA" in lines[0]
    assert len(lines) == 3  # none at the end, none when quiet


@pytest.mark.parametrize("stack", [None, 2], ids=["one-by-one", "stacked"])
def test_observers_hear_each_run_start_each_epoch_and_its_end(stack, tmp_path, oct_npz,
                                                              restore_torch):
    """The grid's observers (e.g. live MLflow logging) get every run's spec, each history entry
    as its epoch ends, and the record, in that order, whichever way the runs train."""
    from octbench.config import parse_config
    from octbench.executors import LocalExecutor
    from octbench.experiment import run_experiment

    config = parse_config(experiment(tmp_path, oct_npz, strategies=["none", "weighted_ce"],
                                     train={"epochs": 2, "batch_size": 64, "threads": 1}))
    heard = []

    class Listener:
        def run_started(self, spec):
            heard.append(("start", spec.run_id))

        def epoch_ended(self, run_id, entry):
            heard.append(("epoch", run_id, entry["epoch"], entry["train_loss"]))

        def run_ended(self, run_id, outcome):
            heard.append(("end", run_id, outcome.status))

    summary = run_experiment(config, quiet=True, say=lambda _: None, observers=[Listener()],
                             executor=LocalExecutor(stack=stack))
    assert len(summary.completed) == 2
    for run_id in summary.completed:
        record = json.loads((tmp_path / "results" / "tiny" / run_id / "record.json").read_text())
        mine = [event for event in heard if event[1] == run_id]
        assert mine == [("start", run_id),
                        *[("epoch", run_id, h["epoch"], h["train_loss"])
                          for h in record["history"]],
                        ("end", run_id, "complete")]
