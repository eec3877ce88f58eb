"""Odd inputs: non-finite and huge numbers, duplicates spelled two ways, odd YAML, odd files.

Each row ends like the bad-input table: exit code 2, one message naming the problem and the fix,
no traceback, existing results untouched.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from conftest import (
    assert_usage_error,
    cli_env,
    cli_in_process,
    experiment,
    run_cli,
    tree_digest,
    write_yaml,
)
from PIL import Image

from octbench import cli
from octbench.config import MAX_THREADS, parse_config, parse_scalar, read_yaml

SCAN = Path(__file__).parent / "data" / "NORMAL-12494-1.jpeg"


@dataclass
class Odd:
    id: str
    argv: Callable[[Path, Path], list[str]]  # (tmp folder, valid npz) -> arguments
    expect: tuple[str, ...]


def _yaml(tmp: Path, data: Path, text: str | None = None, **changes) -> str:
    path = tmp / "odd.yaml"
    if text is not None:
        path.write_text(text)
        return str(path)
    config = experiment(tmp, data, strategies=["none", "focal"])
    config.update(changes)
    return str(write_yaml(path, config))


def _train(**changes):
    return lambda tmp, data: ["run", _yaml(tmp, data, train={"epochs": 1, **changes})]


TEXT = "name: odd\ndata: {{name: npz, path: {data}}}\nmodels: [reference_cnn]\n"


def _text(body: str):
    return lambda tmp, data: ["run", _yaml(tmp, data, TEXT.format(data=data) + body)]


def _object_npz(tmp: Path, data: Path) -> str:
    with np.load(data) as npz:
        arrays = {k: npz[k] for k in npz.files}
    arrays["train_labels"] = arrays["train_labels"].astype(object)
    path = tmp / "objects.npz"
    np.savez(path, **arrays)
    return str(path)


ROWS = [
    Odd("lr-inf", _text("train: {lr: .inf}\n"), ("train.lr must be a finite number. Got inf",)),
    Odd("lr-nan", _text("train: {lr: .nan}\n"), ("train.lr must be a finite number. Got nan",)),
    Odd("gamma-nan", _text("strategies: [{name: focal, gamma: .nan}]\n"),
        ("'gamma' parameter of strategy 'focal'", "must be a finite number. Got nan")),
    Odd("alpha-inf", _text("strategies: [{name: focal, alpha: [1, .inf, 1, 1]}]\n"),
        ("'alpha' parameter of strategy 'focal'", "must be a finite number")),
    Odd("threads-huge", _train(threads=100_000),
        (f"train.threads must be >= 1 and <= {MAX_THREADS}. Got 100000",)),
    Odd("epochs-huge", _train(epochs=10**21), ("train.epochs must be >= 1 and <= 10000",)),
    Odd("seed-beyond-numpy", lambda t, d: ["run", _yaml(t, d, seeds=[2**32])],
        ("seeds[0] must be >= 0 and <= 4294967295. Got 4294967296",)),
    Odd("same-strategy-two-spellings",
        lambda t, d: ["run", _yaml(t, d, strategies=["focal", {"name": "focal", "gamma": 2.0}])],
        ("'strategies' lists \"focal\" and {\"gamma\": 2.0, \"name\": \"focal\"}, which mean "
         "the same", "each entry must be unique")),
    Odd("same-model-two-spellings",
        lambda t, d: ["run", _yaml(t, d, models=["reference_cnn",
                                                 {"name": "reference_cnn", "width": 1}])],
        ("'models' lists \"reference_cnn\" and", "which mean the same")),
    Odd("same-device-two-spellings", lambda t, d: ["run", _yaml(t, d, devices=["cuda",
                                                                              "cuda:0"])],
        ("'devices' lists \"cuda\" and \"cuda:0\", which mean the same",)),
    Odd("list-as-key", _text("? [a, b]\n: 1\n"),
        ("a key must be a plain name or number, not a list or mapping", "line 4")),
    Odd("long-name", lambda t, d: ["run", _yaml(t, d, name="n" * 300)],
        ("at most 100 characters", "(300 characters)")),
    Odd("set-bad-yaml", lambda t, d: ["data", "info", "--set", "scale=[0.1"],
        ("argument --set: 'scale=[0.1': value '[0.1' is not valid YAML", "quote it")),
    Odd("resamples-huge", lambda t, d: ["report", str(t / "results" / "tiny"),
                                        "--resamples", "1000000000"],
        ("--resamples: must be an integer from 100 to 100,000, got 1000000000",)),
    Odd("per-class-huge", lambda t, d: ["data", "show", str(d), "--per-class", "100000",
                                        "--out", str(t / "s.png")],
        ("--per-class: must be an integer from 1 to 64",)),
    Odd("workers-huge", lambda t, d: ["tune", "x.yaml", "--workers", "100000"],
        ("--workers: must be an integer from 1 to",)),
    Odd("show-out-folder", lambda t, d: ["data", "show", str(d), "--out", str(t)],
        ("is a folder; give a file name such as",)),
    Odd("npz-object-arrays", lambda t, d: ["data", "info", _object_npz(t, d)],
        ("holds object arrays (Python objects), which octbench never loads",
         "Save plain numeric arrays")),
]


@pytest.fixture
def odd_ws(tmp_path, oct_npz, monkeypatch):
    monkeypatch.delenv("OCTBENCH_PLUGINS", raising=False)
    run = tmp_path / "results" / "tiny" / "reference_cnn__none__seed0__cpu__00000000"
    run.mkdir(parents=True)
    (run / "record.json").write_text('{"status": "complete"}\n')
    return tmp_path, oct_npz


@pytest.mark.parametrize("row", ROWS, ids=[row.id for row in ROWS])
def test_odd_input(row: Odd, odd_ws, capsys):
    tmp, data = odd_ws
    argv = row.argv(tmp, data)
    before = tree_digest(tmp / "results")
    assert_usage_error(cli_in_process(argv, capsys), *row.expect)
    assert tree_digest(tmp / "results") == before


def test_yaml_merge_keys_work(tmp_path, oct_npz):
    path = tmp_path / "merge.yaml"
    path.write_text(TEXT.format(data=oct_npz) + (
        "strategies: [&focal {name: focal, gamma: 1.0}, {<<: *focal, gamma: 3.0}]\n"
        "train: &train {epochs: 1, batch_size: 32}\n"))
    raw = read_yaml(path)
    assert raw["strategies"] == [{"name": "focal", "gamma": 1.0},
                                 {"name": "focal", "gamma": 3.0}]
    config = parse_config(raw)
    assert [s.label for s in config.strategies] == ["focal(gamma=1.0)", "focal(gamma=3.0)"]
    # written keys still may not repeat
    path.write_text("name: a\nname: b\n")
    with pytest.raises(Exception, match="duplicate key 'name'"):
        read_yaml(path)


def test_set_values_read_like_yaml_files():
    assert parse_scalar("1e-9") == 1e-9 and parse_scalar("0.1") == 0.1
    assert parse_scalar("true") is True and parse_scalar("[1, 2]") == [1, 2]
    assert parse_scalar("synthetic") == "synthetic"


def test_auto_and_its_device_are_the_same_grid_entry(monkeypatch):
    import torch

    import octbench.devices

    monkeypatch.setattr(octbench.devices, "resolve_device", lambda spec: torch.device("cpu"))
    raw = {"name": "x", "data": {"name": "synthetic"}, "models": ["reference_cnn"],
           "devices": ["cpu", "auto"]}
    with pytest.raises(Exception, match="'devices' lists \"cpu\" and \"auto\", which mean the "
                                        "same \\(\"cpu\"\\)"):
        parse_config(raw)


def test_a_scan_too_large_is_refused_and_the_others_are_predicted(tmp_path, monkeypatch, capsys):
    import torch

    import octbench.data.preprocess as preprocess
    from octbench.models import build_model

    checkpoint = tmp_path / "best.pt"
    torch.save({"model": build_model("reference_cnn", width=0.25).state_dict(),
                "model_config": {"name": "reference_cnn", "width": 0.25},
                "class_names": ["CNV", "DME", "DRUSEN", "NORMAL"], "img_size": 28,
                "logit_offset": None, "epoch": 1}, checkpoint)
    small = tmp_path / "small.png"
    Image.fromarray(np.full((60, 50), 128, np.uint8)).save(small)
    with Image.open(SCAN) as image:
        width, height = image.size
    monkeypatch.setattr(preprocess, "MAX_SCAN_PIXELS", 60 * 50)
    code = cli.main(["predict", "--run", str(checkpoint), "--json", str(SCAN), str(small)])
    out, err = capsys.readouterr()
    assert code == 2 and "Traceback" not in err
    rows = {Path(r["file"]).name: r for r in json.loads(out)}
    assert f"too large ({width} x {height} px)" in rows[SCAN.name]["error"]
    assert "Downscale or crop it" in rows[SCAN.name]["error"]
    assert rows["small.png"]["error"] is None and rows["small.png"]["top_class"]


def test_pil_decompression_bomb_is_a_clear_error(tmp_path, monkeypatch):
    """PIL's own guard (hit while opening, before octbench's check) is reported the same way."""
    from octbench.data import preprocess
    from octbench.errors import DataError

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10)  # PIL refuses above twice this
    with pytest.raises(DataError, match="too large; octbench decodes at most"):
        preprocess.load_scan(SCAN)


def test_list_survives_plugins_without_docstrings_or_with_broken_factories(tmp_path):
    env = cli_env(tmp_path, "octbench_odd_plugins")
    models = run_cli(["list", "models"], env)
    assert models.returncode == 0, models.stderr
    assert "undocumented_net" in models.stdout and "reference_cnn" in models.stdout
    assert re.search(r"^broken_net +cannot build \(RuntimeError: broken_net cannot be built",
                     models.stdout, re.M)
    strategies = run_cli(["list", "strategies"], env)
    assert strategies.returncode == 0 and "undocumented_strategy" in strategies.stdout


def test_unwritable_synthetic_cache_still_gives_the_data(tmp_path, monkeypatch, caplog):
    """A cache path through a regular file cannot be created, even by root."""
    from octbench.data import load_dataset

    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("OCTBENCH_CACHE", str(blocker / "cache"))
    data = load_dataset("synthetic", scale=0.002, test_scale=0.02)
    assert data.synthetic and len(data.train.labels) > 0
    assert "cannot cache synthetic data" in caplog.text and "OCTBENCH_CACHE" in caplog.text


def test_unwritable_output_is_one_clear_message(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    argv = ["data", "synth", "--out", str(blocker / "x.npz"), "--set", "scale=0.002",
            "--set", "test_scale=0.02"]
    assert_usage_error(cli_in_process(argv, capsys),
                       f"cannot write to --out folder {blocker}: {blocker} is a file, not a folder")
    assert blocker.read_text() == "not a folder"


def test_long_run_ids_are_shortened_to_fit_a_file_name(tmp_path, oct_npz):
    from octbench.config import config_hash
    from octbench.grid import expand_grid

    ids = []
    for first in (0.1, 0.2):
        alpha = [first, *[round(0.1 + i / 1000, 4) for i in range(79)]]
        raw = experiment(tmp_path, oct_npz, strategies=[{"name": "focal", "alpha": alpha}])
        (spec,) = expand_grid(parse_config(raw))
        assert len(spec.strategy.label) > 255
        assert len(spec.run_id) <= 255 and spec.run_id.endswith(config_hash(spec.config()))
        ids.append(spec.run_id)
    assert ids[0] != ids[1]


@pytest.mark.parametrize("change, expect", [
    ({"timeout": float("inf")}, "'timeout' must be a number of seconds > 0. Got inf"),
    ({"n_trials": 10**9}, "'n_trials' must be an int from 1 to 100,000"),
    ({"seeds_per_trial": 10**6}, "'seeds_per_trial' must be an int from 1 to 100"),
    ({"search": {"train.lr": {"type": "float", "low": float("nan"), "high": 1.0}}},
     "search.train.lr.low is required and must be a finite number. Got nan"),
    ({"search": {"train.lr": {"type": "categorical", "choices": [0.1, float("inf")]}}},
     "choices[1] must be finite. Got inf"),
])
def test_tuning_numbers_are_finite_and_bounded(tmp_path, oct_npz, change, expect):
    from octbench.errors import ConfigError
    from octbench.tuning.tune_config import parse_tune_config

    raw = {"study": "s", "base": experiment(tmp_path, oct_npz, strategies=["none"]),
           "search": {"train.lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True}},
           "n_trials": 2, **change}
    with pytest.raises(ConfigError) as error:
        parse_tune_config(raw)
    assert expect in str(error.value)


def test_parameters_only_the_data_can_judge_fail_before_training(tmp_path, oct_npz, capsys):
    """focal's alpha needs one weight per class: refused with exit 2, not 1 FAILED run per seed."""
    config = experiment(tmp_path, oct_npz, seeds=[0, 1],
                        strategies=["none", {"name": "focal", "alpha": [1.0, 2.0]}])
    path = write_yaml(tmp_path / "alpha.yaml", config)
    assert_usage_error(cli_in_process(["-q", "run", str(path)], capsys),
                       "strategy focal(alpha=[1.0, 2.0]): The 'alpha' parameter",
                       "must be a list of 4 floats")
    assert not list((tmp_path / "results").rglob("record.json"))  # nothing trained


def test_report_into_an_unwritable_place_is_named_before_any_work(tmp_path, capsys):
    from report_helpers import write_run

    from octbench.results import ResultsStore

    write_run(ResultsStore(tmp_path / "results" / "demo"))
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    argv = ["report", str(tmp_path / "results" / "demo"), "--out", str(blocker)]
    assert_usage_error(cli_in_process(argv, capsys),
                       f"cannot write to report folder {blocker / 'demo'}: {blocker} is a file")
    assert blocker.read_text() == "not a folder"
