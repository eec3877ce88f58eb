"""``-q`` and ``-v`` on every command, as the README and ``--help`` promise: ``-q`` prints only
errors and the final result line(s); the default adds progress and hints; ``-v`` adds detail."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from conftest import cli_in_process, experiment, write_yaml
from PIL import Image

from octbench import cli


@pytest.fixture(scope="module")
def trained(tmp_path_factory, oct_npz) -> dict:
    """One complete 1-epoch run, its YAML, a tuning YAML with one finished trial and a scan."""
    import torch

    threads = torch.get_num_threads()
    root = tmp_path_factory.mktemp("verbosity")
    config = write_yaml(root / "exp.yaml", experiment(
        root, oct_npz, strategies=["none"], train={"epochs": 1, "batch_size": 64,
                                                   "threads": 1}))
    tune = write_yaml(root / "tune.yaml", {
        "study": "small", "base": config.name, "n_trials": 1, "pruner": "none",
        "search": {"train.lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True}}})
    scan = root / "scan.png"
    Image.fromarray(np.load(oct_npz)["test_images"][0]).save(scan)
    try:
        assert cli.main(["-q", "run", str(config)]) == 0
        assert cli.main(["-q", "tune", str(tune)]) == 0
    finally:
        torch.set_num_threads(threads)
    (record,) = (root / "results" / "tiny").glob("*/record.json")
    return {"root": root, "config": config, "tune": tune, "scan": scan,
            "run_id": json.loads(record.read_text())["run_id"]}


def _commands(t: dict) -> dict[str, list[str]]:
    root = t["root"]
    return {
        "run": ["run", str(t["config"])],
        "run --dry-run": ["run", str(t["config"]), "--dry-run"],
        "tune": ["tune", str(t["tune"])],
        "report": ["report", str(t["config"]), "--out", str(root / "reports"),
                   "--resamples", "100"],
        "predict": ["predict", "--run", t["run_id"], str(t["scan"]),
                    "--results-dir", str(root / "results")],
        "evaluate": ["evaluate", "--run", t["run_id"], str(t["config"]),
                     "--results-dir", str(root / "results")],
        "data info": ["data", "info", str(t["config"])],
        "data show": ["data", "show", str(t["config"]), "--out", str(root / "show.png")],
        "data synth": ["data", "synth", "--out", str(root / "synth.npz"), "--set",
                       "scale=0.001", "--set", "test_scale=0.01"],
        "list": ["list", "strategies"],
        "export mlflow": ["export", "mlflow", str(root / "results" / "tiny")],
    }


COMMANDS = list(_commands({"root": Path(), "config": "", "tune": "", "scan": "",
                           "run_id": ""}))


#: Commands whose whole (default) output is their result: -q changes nothing.
ALL_RESULT = ("data info", "data show", "data synth")


@pytest.mark.parametrize("command", COMMANDS)
def test_quiet_prints_the_result_and_verbose_adds_detail(command, trained, capsys,
                                                         monkeypatch, restore_torch):
    if command == "export mlflow":
        pytest.importorskip("mlflow", reason="the [mlflow] extra is not installed")
    monkeypatch.chdir(trained["root"])  # tune's generated YAML, export's mlruns/ go here
    argv = _commands(trained)[command]
    outputs = {}
    for level, flags in (("quiet", ["-q"]), ("normal", []), ("verbose", ["-v"])):
        done = cli_in_process([*flags, *argv], capsys)
        assert done["code"] == 0, (level, done)
        outputs[level] = done["out"].splitlines()
    quiet, normal, verbose = outputs["quiet"], outputs["normal"], outputs["verbose"]
    assert quiet, "-q still prints the result"
    if command in ALL_RESULT:
        def timeless(lines):  # data synth says how long it took
            return [re.sub(r"in [0-9.]+ s$", "in ? s", line) for line in lines]

        assert timeless(quiet) == timeless(normal), outputs
    elif command == "export mlflow":  # the first export differs from the later ones
        assert len(quiet) == 1 and len(normal) == 2, outputs  # + "See them with: mlflow ui"
    else:
        assert len(quiet) < len(normal), outputs
        # each quiet line is a default line, or begins one (list -q: the names alone)
        assert all(any(line.startswith(q) for line in normal) for q in quiet), outputs
    assert len(verbose) > len(normal), outputs
    assert not any(line.startswith(("Next:", "See them with")) for line in quiet)


def test_quiet_run_is_one_line_and_verbose_names_each_run_folder(trained, capsys):
    config = str(trained["config"])
    quiet = cli_in_process(["-q", "run", config], capsys)
    assert quiet["out"].splitlines() == [
        f"tiny: 0 trained, 1 already complete, 0 skipped, 0 failed, 0 busy elsewhere. "
        f"Results in {trained['root'] / 'results' / 'tiny'}."]
    verbose = cli_in_process(["run", config, "-v"], capsys)["out"]
    assert f"  already complete: {trained['root'] / 'results' / 'tiny' / trained['run_id']}" \
        in verbose.splitlines()
    assert f"Next: python -m octbench report {config}" in verbose.splitlines()


def test_quiet_list_names_only_and_verbose_shows_types_and_ranges(capsys):
    quiet = cli_in_process(["-q", "list", "strategies"], capsys)["out"].splitlines()
    assert "focal" in quiet and all(" " not in line for line in quiet)
    verbose = cli_in_process(["list", "strategies", "-v"], capsys)["out"]
    assert "  gamma: a float, >= 0" in verbose
