"""Sweeps: `sweep:` multiplies the grid by every combination of the swept values."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from conftest import ROOT, experiment, write_yaml

import octbench.dotted
from octbench import cli
from octbench.config import load_config, parse_config
from octbench.errors import ConfigError
from octbench.experiment import run_experiment
from octbench.grid import expand_grid
from octbench.results import ResultsStore
from octbench.tuning.space import trial_experiment


def swept(tmp_path, oct_npz, sweep, **overrides) -> dict:
    config = experiment(tmp_path, oct_npz, **{"strategies": ["none", "weighted_ce"], **overrides})
    config["train"] = {"epochs": 1, "batch_size": 64, "threads": 1}
    return {**config, "sweep": sweep}


def test_sweep_multiplies_the_grid_and_labels_every_run(tmp_path, oct_npz):
    config = parse_config(swept(tmp_path, oct_npz, {"train.lr": [1.0e-3, 3.0e-4],
                                                    "model.dropout": [0.1, 0.5]}))
    specs = expand_grid(config)
    assert len(specs) == 2 * 2 * 2  # lr x dropout x strategies
    assert [s.sweep for s in specs[::2]] == [
        {"train.lr": 1e-3, "model.dropout": 0.1}, {"train.lr": 1e-3, "model.dropout": 0.5},
        {"train.lr": 3e-4, "model.dropout": 0.1}, {"train.lr": 3e-4, "model.dropout": 0.5}]
    assert all(s.train.lr == s.sweep["train.lr"] for s in specs)
    assert all(s.model.params["dropout"] == s.sweep["model.dropout"] for s in specs)
    assert "__lr=0.0003_dropout=0.5__" in specs[-1].run_id
    assert len({s.run_id for s in specs}) == len(specs)
    assert parse_config(config.to_dict()) == config


def test_a_model_parameter_is_swept_on_every_model(tmp_path, oct_npz):
    raw = swept(tmp_path, oct_npz, {"model.dropout": [0.2]},
                models=["reference_cnn", {"name": "reference_cnn_2conv", "dropout": 0.3}])
    specs = expand_grid(parse_config(raw))
    assert {s.model.label for s in specs} == {"reference_cnn(dropout=0.2)",
                                              "reference_cnn_2conv(dropout=0.2)"}


def test_swept_runs_record_their_values(tmp_path, oct_npz, restore_torch):
    config = parse_config(swept(tmp_path, oct_npz, {"train.lr": [2.0e-3, 5.0e-4]},
                                strategies=["none"]))
    assert run_experiment(config, quiet=True, say=lambda _: None).ok
    records = sorted(ResultsStore(tmp_path / "results" / "tiny").records(),
                     key=lambda r: r.sweep["train.lr"])
    assert [r.sweep for r in records] == [{"train.lr": 5e-4}, {"train.lr": 2e-3}]
    assert [r.config["train"]["lr"] for r in records] == [5e-4, 2e-3]
    again = run_experiment(config, quiet=True, say=lambda _: None)
    assert len(again.already_complete) == 2  # the ids are stable


def test_dry_run_shows_the_expanded_grid(tmp_path, oct_npz, capsys):
    path = write_yaml(tmp_path / "s.yaml", swept(tmp_path, oct_npz, {"train.lr": [1e-3, 3e-4]}))
    assert cli.main(["run", "--dry-run", str(path)]) == 0
    out = capsys.readouterr().out
    assert "4 runs" in out
    assert "sweep: train.lr [0.001, 0.0003] = 2 combinations of 2 runs" in out
    assert out.count("__lr=0.001__") == 2 and out.count("__lr=0.0003__") == 2


@pytest.mark.parametrize(("sweep", "expected"), [
    ({"train.lrr": [1e-3]}, "sweep['train.lrr']: unknown path 'train.lrr'. Did you mean "
                            "'train.lr'?"),
    ({"data.pth": ["x.npz"]}, "Did you mean 'data.path'?"),
    ({"train.lr": []}, "sweep['train.lr'] must be a non-empty list of values. Got [] instead."),
    ({"train.lr": [1e-3, -1.0]}, "sweep['train.lr'][1] = -1.0: train.lr must be > 0. "
                                 "Got -1.0 instead."),
    ({"train.optimizer": ["adam", "adma"]}, "sweep['train.optimizer'][1] = 'adma': "
                                            "train.optimizer must be one of"),
    ({"model.dropuot": [0.1]}, "unknown parameter 'dropuot' of model 'reference_cnn'"),
    ({"model.pretrained": [True]}, "sweep['model.pretrained'][0] = True: models[0].pretrained:"),
    ({"seeds": [[0], [1]]}, "seeds cannot be swept: seeds are already an axis of the grid"),
    ({"train.lr": [1e-3, 1e-3]}, "lists a value twice"),
    ({"train.lr.x": [1]}, "unknown path 'train.lr.x'"),
    ([1, 2], "'sweep' must map dotted config paths to lists of values"),
])
def test_bad_sweeps_name_the_yaml_path(tmp_path, oct_npz, sweep, expected):
    with pytest.raises(ConfigError) as error:
        parse_config(swept(tmp_path, oct_npz, sweep))
    assert expected in str(error.value)


def test_search_and_sweep_share_one_path_resolution(tmp_path, oct_npz, monkeypatch):
    """Tuning's `search:`, `sweep:` and `--set` values are applied by octbench.dotted alone,
    with the same rule for which strategies take a parameter."""
    calls, rules = [], set()
    real = octbench.dotted.with_values

    def spy(raw, values, **options):
        calls.append(dict(values))
        rules.add(options.get("accepts"))
        return real(raw, values, **options)

    monkeypatch.setattr(octbench.dotted, "with_values", spy)
    parse_config(swept(tmp_path, oct_npz, {"train.lr": [1e-3]})).variants()
    assert {"train.lr": 1e-3} in calls
    calls.clear()
    base = experiment(tmp_path, oct_npz, strategies=["none"])
    raw = trial_experiment(base, {"train.lr": 0.01, "model.width": 0.5})
    assert calls == [{"train.lr": 0.01, "model.width": 0.5}]
    assert raw["models"] == [{"name": "reference_cnn", "width": 0.5}]
    calls.clear()
    path = write_yaml(tmp_path / "set.yaml", experiment(tmp_path, oct_npz))
    assert load_config(path, {"strategy.gamma": 3.0}).strategies[3].params["gamma"] == 3.0
    assert calls == [{"strategy.gamma": 3.0}]
    assert len(rules) == 1 and None not in rules


def test_recipes_expand_to_the_medmnist_plus_grid():
    plus = load_config(ROOT / "experiments" / "medmnist_plus.yaml")
    assert dict(plus.sweep) == {"data.size": (28, 64, 128, 224), "model.pretrained": (False, True)}
    assert [s.label for s in plus.strategies] == ["none", "weighted_ce", "logit_adjust"]
    assert len(expand_grid(plus)) == 2 * 4 * 2 * 3 * 3
    twin = load_config(ROOT / "experiments" / "medmnist_plus_synthetic.yaml")
    assert twin.data.name == "synthetic"
    assert [s.label for s in twin.strategies] == [s.label for s in plus.strategies]
    assert all(name.startswith("timm:") for name in (m.name for m in twin.models))


@pytest.mark.slow
def test_synthetic_twin_runs_offline_with_per_size_tables(tmp_path, restore_torch):
    """The twin recipe as shipped (a results folder of its own), then its report."""
    raw = yaml.safe_load((ROOT / "experiments" / "medmnist_plus_synthetic.yaml").read_text())
    raw["results_dir"] = str(tmp_path / "results")
    path = write_yaml(tmp_path / "twin.yaml", raw)
    assert cli.main(["-q", "run", str(path)]) == 0
    assert cli.main(["-q", "report", str(path), "--out", str(tmp_path / "reports"),
                     "--resamples", "200"]) == 0
    text = (tmp_path / "reports" / raw["name"] / "report.md").read_text()
    for size in (28, 64):
        for strategy in ("none (baseline)", "weighted_ce", "logit_adjust"):
            assert f"| {strategy} | cpu fp32 · data.size={size} |" in text
    assert "SYNTHETIC DATA" in text and "MedMNIST v2" not in text
    assert Path(tmp_path / "results" / raw["name"]).is_dir()
