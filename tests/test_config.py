"""Configuration is data, validated once: every problem reported with its YAML path."""

from pathlib import Path

import pytest
from conftest import imports_torch

from octbench.config import load_config, parse_config
from octbench.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def minimal(**changes) -> dict:
    raw = {"name": "t", "data": {"name": "synthetic", "scale": 0.01},
           "models": ["reference_cnn"], "strategies": ["none"], "seeds": [0]}
    raw.update(changes)
    return raw


# Tuning recipes (tune*.yaml) have their own schema and tests (tests/test_tuning.py).
EXPERIMENTS = sorted(p for p in (ROOT / "experiments").glob("*.yaml")
                     if not p.name.startswith("tune"))


def test_the_shipped_experiments_are_found():
    assert len(EXPERIMENTS) >= 8, EXPERIMENTS  # an empty list would run no test below


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.name)
def test_shipped_experiments_validate(path):
    config = load_config(path)
    assert config.models and config.strategies and config.seeds


def test_round_trip_through_plain_data():
    config = load_config(ROOT / "experiments" / "imbalance.yaml")
    assert parse_config(config.to_dict()) == config


def test_defaults_are_the_seed_projects_settings():
    config = parse_config(minimal())
    assert (config.train.epochs, config.train.batch_size, config.train.lr) == (15, 128, 1e-3)
    assert config.train.optimizer == "adam" and config.train.select_on == "macro_f1"
    assert config.report.baseline == "none"


def test_scientific_notation_without_a_dot_is_a_float(tmp_path):
    path = tmp_path / "e.yaml"
    path.write_text("data: synthetic\nmodels: [reference_cnn]\ntrain: {lr: 1e-3}\n")
    assert load_config(path).train.lr == 1e-3


def test_ints_widen_to_float_but_bools_are_not_numbers():
    assert parse_config(minimal(train={"lr": 1})).train.lr == 1.0
    with pytest.raises(ConfigError, match=r"train.lr must be a float. Got True"):
        parse_config(minimal(train={"lr": True}))


def test_every_problem_in_one_message():
    raw = minimal(models=["reference_cn"], strategies=[{"name": "focal", "gamma": -1}],
                  train={"epochs": 0, "optimizer": "adamm"}, batch_size=3)
    with pytest.raises(ConfigError) as caught:
        parse_config(raw)
    problems = caught.value.problems
    assert len(problems) == 5
    message = str(caught.value)
    assert "Did you mean 'reference_cnn'?" in message
    assert "'gamma' parameter of strategy 'focal'" in message and "must be >= 0" in message
    assert "train.epochs must be >= 1 and <= 10000. Got 0 instead." in message
    assert "Did you mean 'adam'?" in message
    assert "It belongs under 'train:' (train.batch_size)" in message


def test_unknown_parameter_lists_the_valid_ones():
    with pytest.raises(ConfigError, match=r"unknown parameter 'gama'.*Did you mean 'gamma'"):
        parse_config(minimal(strategies=[{"name": "focal", "gama": 1.0}]))


def test_unknown_timm_model_suggests_a_name():
    with pytest.raises(ConfigError, match=r"unknown timm model 'resnet18x'. Did you mean"):
        parse_config(minimal(models=["timm:resnet18x"]))


def test_timm_models_validate_without_building():
    config = parse_config(minimal(models=["timm:resnet10t", "reference_cnn"]))
    assert [m.name for m in config.models] == ["timm:resnet10t", "reference_cnn"]


@pytest.mark.parametrize(("key", "value", "fragment"), [
    ("models", [], "'models' is empty"),
    ("seeds", [0, 0], "lists 0 twice"),
    ("devices", ["gpu"], "must be one of cpu, cuda, cuda:N, mps, auto"),
    ("name", "bad name/", "folder-safe"),
    ("report", {"baseline": "focal"}, "report.baseline 'focal' is not among the strategies"),
    ("data", {"name": "synthetic", "scale": 2.0}, "must be > 0 and <= 1"),
    ("data", {"name": "npz"}, "needs the parameter 'path'"),
    ("train", {"select_on": "f1"}, "train.select_on must be a validation metric"),
])
def test_invalid_values(key, value, fragment):
    with pytest.raises(ConfigError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        parse_config(minimal(**{key: value}))


def test_baseline_defaults_to_the_first_strategy_without_none():
    config = parse_config(minimal(strategies=["weighted_ce", "oversample"]))
    assert config.report.baseline == "weighted_ce"


def test_duplicate_yaml_keys_are_refused(tmp_path):
    path = tmp_path / "dup.yaml"
    path.write_text("data: synthetic\nmodels: [reference_cnn]\nmodels: [resnet18_28]\n")
    with pytest.raises(ConfigError, match=r"duplicate key 'models' \(first on line 2\)"):
        load_config(path)


def test_importing_the_config_package_imports_no_torch(tmp_path):
    # The CLI checks keys, names and values with it before torch is imported (seconds).
    code = ("import octbench.config\n"
            "from octbench.config import check_plain, parse_config, read_config, swept_values")
    assert not imports_torch(code, tmp_path)
    full = ("from octbench.config import parse_config\n"
            "parse_config({'name': 'x', 'data': 'synthetic', 'models': ['reference_cnn']})")
    assert imports_torch(full, tmp_path)  # the probe sees torch when the registries are read


def test_one_check_for_each_swept_or_searched_value():
    from octbench.config import parsed_values, set_values

    base = minimal()
    problems: list[str] = []
    passed = parsed_values(problems, base, "train.epochs", [2, 0, -1, 3], parse_config,
                           where="sweep['train.epochs']", indexed=True)
    assert [value for value, _ in passed] == [2, 3]
    assert [config.train.epochs for _, config in passed] == [2, 3]
    assert [p.split(":")[0] for p in problems] == ["sweep['train.epochs'][1] = 0",
                                                   "sweep['train.epochs'][2] = -1"]
    problems = []
    assert parsed_values(problems, base, "train.epochs", [0, -1], parse_config,
                         where="search.train.epochs", first_problem_only=True) == []
    assert len(problems) == 1 and problems[0].startswith("search.train.epochs = 0: ")
    problems = []  # a path below a value is one problem, whatever the values
    applied = []
    parsed_values(problems, minimal(train={"lr": 0.01}), "train.lr.x", [1, 2], parse_config,
                  where="w",
                  apply=lambda raw, values: applied.append(values) or set_values(raw, values))
    assert applied == [{"train.lr.x": 1}] and len(problems) == 1
    assert problems[0].startswith("w: train.lr is a value")
