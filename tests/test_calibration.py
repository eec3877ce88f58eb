"""Temperature scaling: fitted on validation only, lowers validation NLL, keeps every argmax;
stored in the record and checkpoint, used by predict, reported before/after."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import scipy.special
import torch
from conftest import cli_env, make_npz, run_cli
from sklearn.metrics import log_loss

from octbench import report
from octbench.calibration import apply_temperature, calibration_summary, fit_temperature
from octbench.config import parse_config
from octbench.experiment import run_experiment
from octbench.grid import expand_grid
from octbench.metrics import expected_calibration_error
from octbench.predict import load_predictor
from octbench.results import ResultsStore, load_checkpoint


def _overconfident(seed: int, n: int = 600, sharpness: float = 3.0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 4, n)
    logits = rng.normal(size=(n, 4))
    logits[np.arange(n), labels] += 1.2
    return scipy.special.softmax(sharpness * logits, axis=1), labels


def test_temperature_lowers_nll_keeps_argmax_and_is_the_minimum() -> None:
    scores, labels = _overconfident(0)
    t = fit_temperature(scores, labels)
    scaled = apply_temperature(scores, t)
    assert t > 1.5  # over-confident scores are softened
    assert (scaled.argmax(1) == scores.argmax(1)).all()
    before = log_loss(labels, scores, labels=range(4))
    after = log_loss(labels, scaled, labels=range(4))
    assert after < before - 0.05
    # independent check: a grid of temperatures scored with scikit-learn finds no lower NLL
    grid = np.exp(np.linspace(np.log(0.2), np.log(10), 400))
    best = min(log_loss(labels, apply_temperature(scores, g), labels=range(4)) for g in grid)
    assert after <= best + 1e-6
    summary = calibration_summary(scores, labels, t)
    assert summary["nll_before"] == pytest.approx(before) and summary["nll_after"] == (
        pytest.approx(after))
    assert summary["ece_after"] < summary["ece_before"]
    assert summary["ece_after"] == pytest.approx(
        expected_calibration_error(scaled.max(1), scaled.argmax(1) == labels))
    under, labels2 = _overconfident(1, sharpness=0.3)  # under-confident: sharpened, T < 1
    assert fit_temperature(under, labels2) < 1


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, object]:
    root = tmp_path_factory.mktemp("calib")
    path = make_npz(root / "d.npz")
    config = parse_config({
        "name": "calib", "data": {"name": "npz", "path": str(path), "synthetic": True},
        "models": [{"name": "reference_cnn", "width": 0.25}], "strategies": ["none"],
        "seeds": [0, 1], "train": {"epochs": 2, "batch_size": 64, "threads": 1},
        "results_dir": str(root / "results")})
    run_experiment(config, quiet=True, say=lambda _: None)
    return root, config


def test_run_fits_on_validation_and_stores_the_temperature(trained) -> None:
    root, config = trained
    store = ResultsStore(root / "results" / "calib")
    for spec in expand_grid(config):
        record = store.read(spec.run_id)
        arrays = store.predictions(spec.run_id)
        val_scores, val_labels = arrays["val_scores"], arrays["val_labels"]
        calibration = record.calibration
        assert calibration["fitted_on"] == "val"
        # recomputed from the stored validation predictions alone: the test split plays no part
        assert calibration["temperature"] == pytest.approx(
            fit_temperature(val_scores, val_labels), rel=1e-4)
        assert calibration["val_nll_before"] == pytest.approx(
            log_loss(val_labels, val_scores / val_scores.sum(1, keepdims=True), labels=range(4)),
            rel=1e-4)
        assert calibration["val_nll_after"] <= calibration["val_nll_before"] + 1e-9
        state = load_checkpoint(store.run_dir(spec.run_id) / "best.pt")
        assert state["temperature"] == calibration["temperature"]


def test_predict_uses_the_fitted_temperature_and_says_so(trained, tmp_path: Path) -> None:
    root, config = trained
    spec = expand_grid(config)[0]
    predictor = load_predictor(spec.run_id, root / "results")
    assert predictor.calibrated and predictor.temperature != 1.0
    images = np.random.default_rng(0).integers(0, 255, (5, 28, 28), dtype=np.uint8)
    plain = dataclasses.replace(predictor, temperature=1.0)
    scaled, raw = predictor.probabilities(images), plain.probabilities(images)
    assert (scaled.argmax(1) == raw.argmax(1)).all()
    expected = torch.softmax(torch.log(torch.as_tensor(raw)) / predictor.temperature, 1)
    assert scaled == pytest.approx(expected.numpy(), abs=1e-5)
    scan = Path(__file__).parent / "data" / "CNV-451136-1.jpeg"
    out = run_cli(["predict", "--run", spec.run_id, str(scan),
                   "--results-dir", str(root / "results")], cli_env(tmp_path), quiet=False)
    assert out.returncode == 0, out.stderr
    assert f"temperature-scaled with T = {predictor.temperature:.3f}" in out.stdout


def test_report_shows_calibration_before_after_and_reliability(trained, tmp_path: Path) -> None:
    root, config = trained
    folder = root / "results" / "calib"
    paths = report.build_report(folder, tmp_path / "reports", n_resamples=100)
    text = paths[0].read_text()
    section = text[text.index("## Calibration: temperature scaling"):]
    store = ResultsStore(folder)
    summaries = []
    for spec in expand_grid(config):
        arrays = store.predictions(spec.run_id)
        t = store.read(spec.run_id).calibration["temperature"]
        summaries.append(calibration_summary(arrays["test_scores"], arrays["test_labels"], t))
    ece = [np.mean([s[k] for s in summaries]) for k in ("ece_before", "ece_after")]
    assert f"{ece[0]:.3f} → {ece[1]:.3f}" in section
    assert "2 of 2" in section and "validation split only" in section
    assert "![reliability](figures/reliability.png)" in text
    assert (tmp_path / "reports" / "calib" / "figures" / "reliability.svg").is_file()
