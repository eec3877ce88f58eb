"""CLI conventions: --version, -q/-v anywhere, octbench's own logger, fast help and listing,
a dry run that checks data and results folder and creates nothing, the hint to `report`."""

from __future__ import annotations

import logging
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import (
    ROOT,
    assert_usage_error,
    cli_env,
    cli_in_process,
    experiment,
    imports_torch,
    tree_digest,
    write_yaml,
)

import octbench
from octbench import cli


def test_version(capsys):
    with pytest.raises(SystemExit) as done:
        cli.main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.strip() == f"octbench {octbench.__version__}"


def test_help_is_for_users(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    out = capsys.readouterr().out
    assert "argparse" not in out  # no developer note
    assert "examples:" in out and "--version" in out and "--quiet" in out and "--verbose" in out


def test_quiet_before_or_after_the_subcommand_prints_only_the_final_lines(
        tmp_path, oct_npz, capsys, restore_torch):
    config = write_yaml(tmp_path / "exp.yaml", experiment(
        tmp_path, oct_npz, strategies=["none"], train={"epochs": 1, "batch_size": 64}))
    for argv, done in ((["run", str(config), "-q"], "1 trained, 0 already complete"),
                       (["-q", "run", str(config)], "0 trained, 1 already complete")):
        assert cli.main(argv) == 0
        captured = capsys.readouterr()
        assert captured.err == ""
        lines = captured.out.splitlines()
        assert len(lines) == 1, lines  # the result; no progress, no "Next:" hint
        assert lines[0].startswith(f"tiny: {done}")


def test_verbose_after_the_subcommand_enables_debug(capsys):
    assert cli.main(["list", "datasets", "-v"]) == 0
    assert logging.getLogger("octbench").getEffectiveLevel() == logging.DEBUG
    assert cli.main(["-q", "list", "datasets"]) == 0
    assert logging.getLogger("octbench").getEffectiveLevel() == logging.WARNING


def test_only_octbench_logs_reach_the_terminal(capsys):
    assert cli.main(["list", "datasets"]) == 0
    capsys.readouterr()
    logging.getLogger("matplotlib.font_manager").info("generated new fontManager")
    logging.getLogger("octbench.runner").info("resuming a run")
    err = capsys.readouterr().err
    assert "fontManager" not in err
    assert "octbench: resuming a run" in err


def test_help_and_warm_listing_do_not_import_torch(tmp_path):
    # torch is most of the start-up time (seconds on a small CPU): --help and list avoid it.
    assert not imports_torch("from octbench import cli\ntry:\n    cli.main(['--help'])\n"
                              "except SystemExit:\n    pass", tmp_path)
    from octbench.catalog import catalog

    catalog()  # the first listing builds the cache
    assert not imports_torch("from octbench import cli\ncli.main(['list', 'models'])",
                              tmp_path)


def test_listing_parameter_counts_match_real_models(tmp_path, monkeypatch, capsys):
    from octbench import catalog
    from octbench.models import MODELS, build_model, count_parameters

    listed = {entry["name"]: entry["parameters"] for entry in catalog.catalog()["models"]}
    assert set(listed) == set(MODELS.names())
    for name in ("reference_cnn", "reference_cnn_2conv"):
        assert listed[name] == count_parameters(build_model(name))
    assert listed["reference_cnn"] == 389_316

    def rebuilt():
        raise AssertionError("the cached listing should have been used")

    monkeypatch.setattr(catalog, "build_catalog", rebuilt)
    assert cli.main(["list", "models"]) == 0
    assert re.search(r"^reference_cnn +389,316 parameters", capsys.readouterr().out, re.M)


def test_dry_run_offline_on_baseline_exits_2_and_creates_nothing(tmp_path, monkeypatch, capsys):
    import medmnist.info

    monkeypatch.setattr(medmnist.info, "DEFAULT_ROOT", str(tmp_path / "no-medmnist"))
    monkeypatch.chdir(tmp_path)
    before = tree_digest(tmp_path)
    baseline = str(ROOT / "experiments" / "baseline.yaml")
    for argv in (["run", baseline, "--dry-run"], ["run", baseline]):
        err = assert_usage_error(cli_in_process(argv, capsys))
        assert err.startswith("octbench: error: OCTMNIST is not available")
        assert sorted(p.name for p in tmp_path.iterdir()) == [], "nothing may be created"
    assert tree_digest(tmp_path) == before


def test_dry_run_shows_complete_runs_and_estimates_from_past_records(
        tmp_path, oct_npz, capsys, restore_torch):
    config = experiment(tmp_path, oct_npz, strategies=["none", "weighted_ce"],
                        train={"epochs": 1, "batch_size": 64})
    first = write_yaml(tmp_path / "exp.yaml", {**config, "strategies": ["none"]})
    assert cli.main(["-q", "run", str(first)]) == 0
    whole = write_yaml(tmp_path / "whole.yaml", config)
    capsys.readouterr()
    before = tree_digest(tmp_path / "results")
    assert cli.main(["run", str(whole), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert tree_digest(tmp_path / "results") == before
    assert "  done  reference_cnn-width=0.25__none__seed0" in out
    todo = [line for line in out.splitlines() if line.startswith("  to do ")]
    assert len(todo) == 1 and "weighted_ce" in todo[0]
    assert "~" in todo[0]  # same model, data and device as the finished run: an estimate
    assert "1 of 2 runs complete; estimated training time" in out


def test_dry_run_on_a_read_only_results_folder_exits_2(tmp_path, oct_npz, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    config = write_yaml(tmp_path / "exp.yaml", {**experiment(tmp_path, oct_npz),
                                                "results_dir": str(blocker / "results")})
    assert cli.main(["run", str(config), "--dry-run"]) == cli.EXIT_USAGE
    assert "is not writable" in capsys.readouterr().err
    assert yaml.safe_load(Path(config).read_text())  # untouched


def test_a_reader_that_goes_away_ends_the_command_quietly(tmp_path, oct_npz):
    """`octbench data info x.npz | head -1`: no traceback, no error line, SIGPIPE's exit code."""
    process = subprocess.Popen([sys.executable, "-m", "octbench", "data", "info", str(oct_npz)],
                               cwd=ROOT, env=cli_env(tmp_path), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    process.stdout.close()  # gone before the first line is written
    err = process.stderr.read()
    assert process.wait(timeout=300) == cli.EXIT_BROKEN_PIPE, err
    assert err == ""
