"""A newcomer's hour without surprises: ``--set`` on run / tune / report, ``tune --n-trials``,
config errors before torch is imported, missing devices and empty reports as usage errors,
messages that name the fix, and listings that show what a YAML can say."""

from __future__ import annotations

import json
import re

import pytest
import yaml
from conftest import (
    assert_usage_error,
    cli_in_process,
    experiment,
    imports_torch,
    tree_digest,
    write_yaml,
)

from octbench import cli
from octbench.cli.predict import scan_files
from octbench.config import load_config, parse_config
from octbench.grid import expand_grid


def _todo(out: str) -> list[str]:
    """The run ids a dry run lists as still to do."""
    return [line.split()[2] for line in out.splitlines() if line.startswith("  to do ")]


# ---------------------------------------------------------------------------------------------
# --set and --n-trials


def test_set_on_run_is_validated_and_part_of_the_run_ids(tmp_path, oct_npz, capsys):
    config = experiment(tmp_path, oct_npz, strategies=["none"])
    path = write_yaml(tmp_path / "exp.yaml", config)
    argv = ["run", str(path), "--dry-run", "--set", "train.epochs=1", "--set", "seeds=[3, 4]",
            "--set", "model.width=0.5"]
    assert cli.main(argv) == 0
    listed = _todo(capsys.readouterr().out)
    # the same runs as the values written in the YAML, and none of the file's own runs
    written = parse_config({**config, "seeds": [3, 4], "train": {**config["train"], "epochs": 1},
                            "models": [{"name": "reference_cnn", "width": 0.5}]})
    assert listed == [spec.run_id for spec in expand_grid(written)]
    assert not set(listed) & {spec.run_id for spec in expand_grid(parse_config(config))}

    before = tree_digest(tmp_path)
    for setting, message in [
        ("train.epochs=0", "train.epochs must be >= 1 and <= 10000. Got 0 instead."),
        ("train.learning_rate=0.1", "unknown key 'train.learning_rate'. Did you mean 'lr'?"),
        ("train.lr.x=1", "--set train.lr is a value, not a section"),
        ("scale", "'scale' must look like KEY=VALUE in one word, e.g. --set scale=0.1"),
        ("train.lr=[1", "is not valid YAML"),
    ]:
        assert_usage_error(cli_in_process(["run", str(path), "--set", setting], capsys), message)
    assert tree_digest(tmp_path) == before


def test_set_on_a_bare_component_name_and_yaml_values():
    config = load_config("experiments/quickstart.yaml",
                         {"data.scale": 0.01, "strategies": ["none", "focal"], "devices": ["cpu"],
                          "train.epochs": 2})
    assert config.data.params["scale"] == 0.01 and config.train.epochs == 2
    assert [s.name for s in config.strategies] == ["none", "focal"]
    # data written as a bare name becomes {name: ...} under a dotted path
    raw = {"name": "x", "data": "synthetic", "models": ["reference_cnn"]}
    from octbench.config import apply_overrides

    assert apply_overrides(raw, {"data.scale": 0.5})["data"] == {"name": "synthetic",
                                                                 "scale": 0.5}
    assert raw["data"] == "synthetic"  # the original is not changed


def test_run_report_and_next_command_with_set(tmp_path, oct_npz, capsys, restore_torch):
    """A real tiny run made with --set; the report finds it only with the same --set values."""
    path = write_yaml(tmp_path / "exp.yaml", experiment(tmp_path, oct_npz))
    sets = ["--set", "train.epochs=1", "--set", "strategies=[none]"]
    assert cli.main(["run", str(path), *sets]) == 0
    out = capsys.readouterr().out
    assert "1 trained" in out
    assert f"Next: python -m octbench report {path} --set train.epochs=1 --set " \
           "'strategies=[\"none\"]'" in out
    (record,) = [json.loads(p.read_text())
                 for p in (tmp_path / "results" / "tiny").glob("*/record.json")]
    assert record["epochs_trained"] == 1 and record["config"]["train"]["epochs"] == 1

    # Without the --set values the grid is the file's: none of its runs exist yet.
    assert cli.main(["report", str(path), "--out", str(tmp_path / "reports")]) == 2
    err = capsys.readouterr().err
    assert "no run records of 'tiny'" in err and "nothing to report" in err
    assert not (tmp_path / "reports").exists()
    # -q: no table, and the report's path is the only "wrote" line (and the last line)
    argv = ["-q", "report", str(path), *sets, "--out", str(tmp_path / "reports"),
            "--resamples", "100"]
    assert cli.main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line for line in lines if line.startswith("wrote ")] == lines[-1:] == [
        f"wrote {tmp_path / 'reports' / 'tiny' / 'report.md'}"]
    assert not any(line.startswith(("model ", "reference_cnn")) for line in lines)
    assert (tmp_path / "reports" / "tiny" / "report.md").is_file()


def test_report_on_a_folder_without_records_exits_2(tmp_path, capsys):
    empty = tmp_path / "results" / "nothing"
    empty.mkdir(parents=True)
    assert cli.main(["report", str(empty), "--out", str(tmp_path / "reports")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("octbench: error: no run records of 'nothing'")
    assert "python -m octbench run EXPERIMENT.yaml" in err
    assert not (tmp_path / "reports").exists()
    assert cli.main(["report", str(empty), "--set", "train.epochs=1"]) == 2
    assert "--set changes an experiment YAML" in capsys.readouterr().err


def test_tune_set_and_n_trials(tmp_path, oct_npz):
    from octbench.tuning import load_tune_config

    base = write_yaml(tmp_path / "base.yaml", experiment(tmp_path, oct_npz, strategies=["none"]))
    path = write_yaml(tmp_path / "tune.yaml", {
        "study": "small", "base": base.name, "n_trials": 12, "sampler": {"name": "tpe", "seed": 0},
        "search": {"train.lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True}}})
    config = load_tune_config(path, {"n_trials": 2, "train.epochs": 1, "data.synthetic": False,
                                     "sampler.seed": 7})
    assert config.n_trials == 2 and config.sampler["seed"] == 7
    assert config.base["train"]["epochs"] == 1
    # the base's data keep their name and path; only the set key changes
    assert config.base["data"] == {"name": "npz", "path": str(oct_npz), "synthetic": False}
    assert load_tune_config(path).base["train"]["epochs"] == 3  # the files are unchanged
    from octbench.errors import ConfigError

    with pytest.raises(ConfigError, match="train.epochs must be >= 1"):
        load_tune_config(path, {"train.epochs": 0})


def test_tune_cli_runs_n_trials_with_set_and_passes_them_to_workers(
        tmp_path, oct_npz, monkeypatch, capsys, restore_torch):
    import optuna

    from octbench.tuning import workers

    base = write_yaml(tmp_path / "base.yaml", experiment(tmp_path, oct_npz, strategies=["none"]))
    path = write_yaml(tmp_path / "tune.yaml", {
        "study": "small", "base": base.name, "n_trials": 12, "pruner": "none",
        "search": {"train.lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True}}})
    monkeypatch.chdir(tmp_path)  # the best experiment goes to experiments/generated/ here
    assert cli.main(["tune", str(path), "--n-trials", "1", "--set", "train.epochs=1"]) == 0
    assert re.search(r"^  epoch 1/1: .* img/s, loss ", capsys.readouterr().err, re.M)  # not silent
    study = optuna.load_study(study_name="small",
                              storage=f"sqlite:///{tmp_path / 'results' / 'small' / 'study.db'}")
    assert len(study.trials) == 1
    (record,) = [json.loads(p.read_text())
                 for p in (tmp_path / "results" / "small").rglob("record.json")]
    assert record["epochs_trained"] == 1
    best = yaml.safe_load((tmp_path / "experiments" / "generated" / "small-best.yaml")
                          .read_text())
    assert best["train"]["epochs"] == 1
    capsys.readouterr()

    # Worker processes load the YAML themselves: they get the same values.
    commands = []

    class Finished:
        def __init__(self, command, **kwargs):
            commands.append(command)

        def wait(self):
            return 0

    monkeypatch.setattr(workers.subprocess, "Popen", Finished)
    from octbench.tuning import load_tune_config

    config = load_tune_config(path, {"n_trials": 3, "train.epochs": 1, "model.width": 0.5})
    assert not workers._run_workers(config, "journal:x.log", 2, quiet=True, say=lambda _: None)
    for command in commands:
        sets = [command[i + 1] for i, word in enumerate(command) if word == "--set"]
        assert sets == ["n_trials=3", "train.epochs=1", "model.width=0.5"]
        again = cli.build_parser().parse_args(command[3:])
        assert load_tune_config(path, dict(again.set)) == config


# ---------------------------------------------------------------------------------------------
# Failing fast


def test_config_errors_are_reported_before_torch_is_imported(tmp_path):
    bad = write_yaml(tmp_path / "bad.yaml", {
        "name": "x", "data": {"name": "synthetic", "scale": 0.01},
        "models": ["reference_cnn"], "devices": ["gpu"], "train": {"learning_rate": 0.1}})
    code = (f"from octbench import cli\nassert cli.main(['run', {str(bad)!r}]) == 2")
    assert not imports_torch(code, tmp_path)
    # With the listing cached (any `list` or earlier use), names are checked before torch too.
    typo = write_yaml(tmp_path / "typo.yaml", {
        "name": "x", "data": {"name": "synthetic"}, "models": ["reference_cn"]})
    assert imports_torch("from octbench import catalog\ncatalog.catalog()", tmp_path)  # cached
    code = f"from octbench import cli\nassert cli.main(['run', {str(typo)!r}]) == 2"
    assert not imports_torch(code, tmp_path)
    # ... and so are the parameters of models, strategies and datasets.
    params = write_yaml(tmp_path / "params.yaml", {
        "name": "x", "data": {"name": "synthetic"}, "models": ["reference_cnn"],
        "strategies": [{"name": "focal", "gamma": -1}, {"name": "weighted_ce", "bogus": 1}]})
    code = f"from octbench import cli\nassert cli.main(['run', {str(params)!r}]) == 2"
    assert not imports_torch(code, tmp_path)


def test_fast_name_checks_say_what_the_full_check_says(tmp_path):
    from octbench import catalog
    from octbench.config import check_plain
    from octbench.errors import ConfigError

    listing = catalog.catalog()
    known = {"model": [e["name"] for e in listing["models"]], "timm": listing["timm"],
             "strategy": [e["name"] for e in listing["strategies"]],
             "dataset": [e["name"] for e in listing["datasets"]]}
    raw = {"name": "x", "data": {"name": "synthetc"},
           "models": ["resnet18", "timm:resnet18x", "timm:resnet18", "reference_cnn"],
           "strategies": ["focall", {"name": "focal", "gamma": 1.0}]}
    with pytest.raises(ConfigError) as fast:
        check_plain(raw, known=known)
    with pytest.raises(ConfigError) as full:
        parse_config(raw)
    assert sorted(fast.value.problems) == sorted(full.value.problems)
    problems = "\n".join(fast.value.problems)
    assert "'resnet18_28', or 'timm:resnet18' (timm's resnet18)" in problems
    assert "unknown timm model 'resnet18x'. Did you mean 'resnet18'?" in problems
    assert "unknown strategy 'focall'. Did you mean 'focal'?" in problems
    assert "unknown dataset 'synthetc'. Did you mean 'synthetic'?" in problems


@pytest.mark.parametrize("raw", [
    {"data": {"name": "npz", "synthetic": "yes"},
     "models": [{"name": "reference_cnn", "widht": 2.0}],
     "strategies": [{"name": "weighted_ce", "bogus": 1}, {"name": "focal", "gamma": "high"}]},
    {"data": {"name": "synthetic", "scale": 2.0, "seed": -1},
     "models": [{"name": "reference_cnn", "dropout": 1.5, "width": 0}],
     "strategies": [{"name": "focal", "gamma": -1}]},
], ids=["unknown-missing-and-wrong-type", "out-of-range"])
def test_fast_parameter_checks_say_what_the_full_check_says(raw, tmp_path, monkeypatch):
    """The cached catalog's schema finds the same parameter problems as the registries."""
    from octbench import catalog
    from octbench.config import check_plain
    from octbench.errors import ConfigError

    monkeypatch.setenv("OCTBENCH_CACHE", str(tmp_path / "cache"))
    listing = json.loads(json.dumps(catalog.catalog()))  # as read back from the cache
    raw = {"name": "x", **raw}
    with pytest.raises(ConfigError) as fast:
        check_plain(raw, schemas=catalog.parameter_schemas(listing))
    with pytest.raises(ConfigError) as full:
        parse_config(raw)
    assert sorted(fast.value.problems) == sorted(full.value.problems)
    assert len(fast.value.problems) >= 3


def test_every_registered_parameter_schema_survives_json():
    """The schema the catalog caches is the one the full check uses, for every entry."""
    from octbench.augment import AUGMENTATIONS
    from octbench.data import DATASETS
    from octbench.models import MODELS
    from octbench.registry import Parameter
    from octbench.strategies import STRATEGIES

    count = 0
    for registry in (MODELS, STRATEGIES, DATASETS, AUGMENTATIONS):
        for name in registry.names():
            for key, parameter in registry.schema(name).items():
                again = Parameter.from_json(json.loads(json.dumps(parameter.to_json())))
                assert again == parameter, (registry.kind, name, key)
                count += 1
    assert count > 50


def test_a_missing_device_exits_2_before_anything_is_made(tmp_path, oct_npz, capsys):
    import torch

    if torch.cuda.device_count() > 7:
        pytest.skip("this machine has a cuda:7")
    path = write_yaml(tmp_path / "exp.yaml", experiment(tmp_path, oct_npz, strategies=["none"],
                                                        devices=["cpu", "cuda:7"]))
    for extra in ([], ["--dry-run"]):
        assert cli.main(["run", str(path), *extra]) == cli.EXIT_USAGE
        err = capsys.readouterr().err
        assert "device 'cuda:7' is not available" in err and "Nothing was trained" in err
        assert "devices: [auto]" in err and "--set devices=[cpu]" in err
        assert not (tmp_path / "results").exists()
    # the fix it names works
    assert cli.main(["run", str(path), "--dry-run", "--set", "devices=[auto]"]) == 0


def test_dry_run_catches_offline_pretrained_weights(tmp_path):
    """Offline, without cached weights: the dry run fails as the run would, quietly."""
    from conftest import cli_env, run_cli

    path = write_yaml(tmp_path / "pre.yaml", {
        "name": "pre", "data": {"name": "synthetic", "scale": 0.01, "test_scale": 0.1},
        "models": [{"name": "timm:resnet10t", "pretrained": True}], "seeds": [0],
        "results_dir": str(tmp_path / "results")})
    env = cli_env(tmp_path, HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"))
    done = run_cli(["run", str(path), "--dry-run"], env, quiet=False)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "pretrained weights of timm model 'resnet10t' are not cached" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1  # our message, no retries of the hub
    assert "to do" not in done.stdout and not (tmp_path / "results").exists()


# ---------------------------------------------------------------------------------------------
# Messages


@pytest.mark.parametrize(("text", "expected"), [
    ("name: x\ntrain:\n\tepochs: 1\n", "line 3, column 1 ('epochs: 1'): the line is indented "
                                      "with a tab; YAML allows only spaces"),
    ("name: x\ntrain:\n  epochs: 1\n    lr: 0.1\n",
     "line 4, column 7 ('lr: 0.1'): check the indentation of this line"),
    ("name: x\ntrain:\n    epochs: 1\n  lr: 0.1\n",
     "line 4, column 3 ('lr: 0.1'): check the indentation of this line"),
])
def test_yaml_layout_errors_name_the_fix(tmp_path, capsys, text, expected):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    assert_usage_error(cli_in_process(["run", str(path)], capsys), expected)


def test_synonyms_get_a_did_you_mean(tmp_path, oct_npz):
    from octbench.errors import ConfigError

    config = experiment(tmp_path, oct_npz, devices=["gpu"], train={"learning_rate": 0.1})
    with pytest.raises(ConfigError) as error:
        parse_config(config)
    message = str(error.value)
    assert "Got 'gpu' instead. Did you mean 'cuda'?" in message
    assert "unknown key 'train.learning_rate'. Did you mean 'lr'?" in message


def test_nonfinite_loss_advice_depends_on_the_precision():
    from octbench.engine import nonfinite_loss_fix

    assert "fp32" not in nonfinite_loss_fix("fp32")
    assert "use precision fp32 (instead of bf16)" in nonfinite_loss_fix("bf16")


def test_predict_takes_folders_of_scans_but_not_links(tmp_path):
    from octbench.errors import OctbenchError

    scans = tmp_path / "scans"
    (scans / "CNV").mkdir(parents=True)
    for name in ("CNV/a.jpeg", "b.PNG", "notes.txt"):
        (scans / name).write_bytes(b"x")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "c.png").write_bytes(b"x")
    (scans / "link").symlink_to(outside, target_is_directory=True)
    (scans / "d.png").symlink_to(outside / "c.png")
    assert scan_files([str(scans), "e.tif"]) == [
        str(scans / "CNV" / "a.jpeg"), str(scans / "b.PNG"), "e.tif"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(OctbenchError, match="empty holds no scan files"):
        scan_files([str(tmp_path / "empty")])


# ---------------------------------------------------------------------------------------------
# Listings and help


def test_listings_show_parameters_augmentations_and_timm_names(tmp_path, capsys):
    assert cli.main(["list", "strategies"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^focal +Focal loss .*\n +parameters: gamma=2, alpha=None$", out, re.M)
    assert "``" not in out  # reStructuredText markup stays in the docstrings
    assert cli.main(["list", "augmentations"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^hflip +Horizontal flip .*\n +parameters: p=0.5$", out, re.M)
    assert cli.main(["list", "models", "--timm", "resnet18"]) == 0
    found = capsys.readouterr().out.split()
    import timm

    assert found == [f"timm:{n}" for n in timm.list_models() if "resnet18" in n]
    assert cli.main(["list", "models", "--timm", "no-such-net"]) == cli.EXIT_USAGE
    assert "no timm model name matches 'no-such-net'" in capsys.readouterr().err


@pytest.mark.parametrize(("command", "words"), [
    ("tune", "validation split only"), ("predict", "folders of them"),
    ("run", "--set KEY=VALUE"), ("report", "--set KEY=VALUE")])
def test_every_command_help_says_what_it_does(capsys, command, words):
    with pytest.raises(SystemExit):
        cli.main([command, "--help"])
    assert words in " ".join(capsys.readouterr().out.split())
