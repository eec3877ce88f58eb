"""Patient groups: read from own npz data and Kermany file names, kept with the test predictions,
and honoured by the report's cluster bootstrap (report.bootstrap.stratify: groups)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import assert_usage_error, make_npz

from octbench.config import ConfigError, parse_config
from octbench.data import from_arrays
from octbench.data.folder import patient_id
from octbench.errors import DataError
from octbench.experiment import run_experiment
from octbench.grid import expand_grid
from octbench.results import ResultsStore


def _arrays(path: Path) -> dict:
    with np.load(path) as npz:
        return {k: npz[k] for k in npz.files}


def test_npz_groups_become_group_numbers_and_bad_ones_are_refused(tmp_path: Path) -> None:
    arrays = _arrays(make_npz(tmp_path / "d.npz"))
    n = len(arrays["test_labels"])
    patients = np.array([f"p{i // 4}" for i in range(n)])
    data = from_arrays({**arrays, "test_groups": patients}, name="npz", origin="d.npz",
                       synthetic=True)
    assert data.test.groups.tolist() == np.unique(patients, return_inverse=True)[1].tolist()
    assert data.train.groups is None
    with pytest.raises(DataError, match=r"test_groups has shape \(3,\).*per image"):
        from_arrays({**arrays, "test_groups": patients[:3]}, name="npz", origin="d.npz",
                    synthetic=True)
    with pytest.raises(DataError, match="test_groups .* dtype float64"):
        from_arrays({**arrays, "test_groups": np.zeros(n)}, name="npz", origin="d.npz",
                    synthetic=True)


def test_kermany_file_names_give_patients() -> None:
    assert patient_id(Path("test/CNV/CNV-451136-1.jpeg")) == "451136"
    assert patient_id(Path("DRUSEN-95633-12.png")) == "95633"
    assert patient_id(Path("scan_001.png")) is None
    assert patient_id(Path("0-CNV-451136-1.jpeg")) is None


def test_run_keeps_test_groups_beside_its_predictions(tmp_path: Path) -> None:
    arrays = _arrays(make_npz(tmp_path / "d.npz"))
    groups = np.arange(len(arrays["test_labels"])) // 2
    path = tmp_path / "grouped.npz"
    np.savez(path, **arrays, test_groups=groups)
    raw = {"name": "grouped", "data": {"name": "npz", "path": str(path), "synthetic": True},
           "models": [{"name": "reference_cnn", "width": 0.25}], "strategies": ["none"],
           "seeds": [0], "train": {"epochs": 1, "batch_size": 64, "threads": 1},
           "report": {"bootstrap": {"stratify": "groups"}},
           "results_dir": str(tmp_path / "results")}
    config = parse_config(raw)
    assert config.report.bootstrap.stratify == "groups"
    run_experiment(config, quiet=True, say=lambda _: None)
    spec = expand_grid(config)[0]
    stored = ResultsStore(tmp_path / "results" / "grouped").predictions(spec.run_id)
    assert stored["test_groups"].tolist() == groups.tolist()


def test_bootstrap_stratify_is_validated() -> None:
    raw = {"name": "x", "data": {"name": "synthetic"}, "models": ["reference_cnn"],
           "strategies": ["none"], "report": {"bootstrap": {"stratify": "patient", "n": 3}}}
    with pytest.raises(ConfigError) as error:
        parse_config(raw)
    text = str(error.value)
    assert "report.bootstrap.stratify must be" in text
    assert "unknown key 'report.bootstrap.n'" in text
    default = parse_config({**raw, "report": {}})
    assert default.report.bootstrap.stratify == "class"


def test_report_cli_takes_stratify_and_refuses_others(tmp_path: Path) -> None:
    from conftest import cli_env, run_cli
    from report_helpers import write_run

    folder = tmp_path / "results" / "demo"
    for seed in range(2):
        write_run(ResultsStore(folder), strategy="none", seed=seed)
    env = cli_env(tmp_path, MPLBACKEND="Agg")
    ok = run_cli(["report", str(folder), "--out", str(tmp_path / "r"), "--resamples", "100",
                  "--stratify", "none"], env)
    assert ok.returncode == 0, ok.stderr
    assert "items resampled freely" in (tmp_path / "r" / "demo" / "report.md").read_text()
    bad = run_cli(["report", str(folder), "--stratify", "patients"], env)
    assert_usage_error(bad, "invalid choice")
