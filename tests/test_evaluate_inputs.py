"""`evaluate` and `predict` feed a checkpoint's model exactly as its run's evaluation did
(normalisation, channels, memory format, precision, batch), so the numbers are the record's."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
from conftest import experiment, make_npz

from octbench.calibration import apply_temperature
from octbench.cli import main
from octbench.config import parse_config
from octbench.data import load_dataset
from octbench.experiment import run_experiment
from octbench.models import CosineLinear, build_model, classifier_head
from octbench.predict import evaluate_checkpoint, load_predictor
from octbench.results import COMPLETE, ResultsStore

SMALL = {"train": (24, 16, 12, 28), "val": (8, 6, 5, 9), "test": (8, 8, 8, 8)}


@pytest.fixture(scope="module")
def small_npz(tmp_path_factory):
    return make_npz(tmp_path_factory.mktemp("data") / "small.npz", counts=SMALL)


@pytest.fixture(scope="module")
def timm_weights(tmp_path_factory):
    """A 1000-class, 1-channel resnet10t state dict saved with safetensors (as timm's own)."""
    from safetensors.torch import save_file

    torch.manual_seed(7)
    model = build_model("timm:resnet10t", num_classes=1000, in_chans=1)
    path = tmp_path_factory.mktemp("weights") / "resnet10t.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


CASES = {
    "reference_cnn": ({"name": "reference_cnn", "width": 0.25}, {}),
    "reference_cnn_contiguous": ({"name": "reference_cnn", "width": 0.25},
                                 {"channels_last": False}),
    "reference_cnn_bf16": ({"name": "reference_cnn", "width": 0.25}, {"precision": "bf16"}),
    "medmnist_resnet18": ({"name": "resnet18_28"}, {"channels_last": False}),
    "timm_scratch": ({"name": "timm:resnet10t"}, {}),
    "timm_pretrained": ({"name": "timm:resnet10t", "pretrained": "WEIGHTS"}, {}),
    "timm_pretrained_bf16_contiguous": ({"name": "timm:resnet10t", "pretrained": "WEIGHTS"},
                                        {"precision": "bf16", "channels_last": False}),
    # LDAM's cosine classifier head must be rebuilt from the checkpoint, too
    "reference_cnn_ldam": ({"name": "reference_cnn", "width": 0.25}, {}, "ldam_drw"),
    "timm_scratch_ldam": ({"name": "timm:resnet10t"}, {}, "ldam_drw"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_evaluate_is_bit_equal_to_the_record(case, tmp_path, small_npz, timm_weights,
                                            restore_torch, capsys):
    model, train, strategy = (*CASES[case], "none")[:3]
    if model.get("pretrained") == "WEIGHTS":
        model = {**model, "pretrained": str(timm_weights)}
    config = parse_config(experiment(
        tmp_path, small_npz, name="bits", models=[model], strategies=[strategy],
        train={"epochs": 1, "batch_size": 32, "threads": 1, "eval_batch_size": 24, **train}))
    assert run_experiment(config, quiet=True, say=lambda _: None).ok
    (record,) = ResultsStore(tmp_path / "results" / "bits").records()
    assert record.status == COMPLETE
    run = tmp_path / "results" / "bits" / record.run_id

    predictor = load_predictor(str(run))
    assert isinstance(classifier_head(predictor.model), CosineLinear) == (strategy == "ldam_drw")
    saved = np.load(run / "predictions.npz")
    data = load_dataset("npz", path=str(small_npz), synthetic=True)
    images = data.test.images
    scores = predictor.predict(images, torch.zeros(len(images), dtype=torch.int64)).scores
    assert np.array_equal(scores.astype(np.float32), saved["test_scores"])
    # predict's probabilities add the validation-fitted temperature on top of exactly these
    assert np.array_equal(predictor.probabilities(images.numpy()),
                          apply_temperature(scores, record.calibration["temperature"]))
    if model.get("pretrained"):  # the weights' own normalisation, not the data's 0.5 / 0.5
        assert predictor.normalize != (0.5, 0.5)
    assert predictor.normalize == (record.model_init["normalization"]["mean"],
                                   record.model_init["normalization"]["std"])

    out = tmp_path / "eval.json"
    assert main(["evaluate", "--run", str(run), str(small_npz), "--out", str(out)]) == 0
    capsys.readouterr()
    evaluated = json.loads(out.read_text())["metrics"]["test"]
    recorded = json.loads((run / "record.json").read_text())["metrics"]["test"]
    assert evaluated == recorded  # every metric, to the last bit
    assert evaluate_checkpoint(predictor, data)["metrics"]["test"]["nll"] == \
        record.metrics["test"]["nll"]


def test_a_class_absent_from_the_split_is_na_everywhere(tmp_path, restore_torch, capsys):
    from sklearn.metrics import balanced_accuracy_score, f1_score

    counts = {**SMALL, "test": (8, 0, 8, 8)}  # no DME in test
    path = make_npz(tmp_path / "absent.npz", counts=counts)
    config = parse_config(experiment(
        tmp_path, path, name="absent", models=[{"name": "reference_cnn", "width": 0.25}],
        strategies=["none"], train={"epochs": 2, "batch_size": 32, "threads": 1}))
    assert run_experiment(config, quiet=True, say=lambda _: None).ok
    (record,) = ResultsStore(tmp_path / "results" / "absent").records()
    test = record.metrics["test"]
    saved = np.load(tmp_path / "results" / "absent" / record.run_id / "predictions.npz")
    labels, preds = saved["test_labels"], saved["test_scores"].argmax(1)
    assert test["macro_f1"] == pytest.approx(
        f1_score(labels, preds, labels=[0, 2, 3], average="macro", zero_division=0), abs=1e-12)
    assert test["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(labels, preds))
    assert test["per_class"]["DME"]["recall"] is None and test["absent_classes"] == ["DME"]
    stored = json.loads((tmp_path / "results" / "absent" / record.run_id / "record.json")
                        .read_text())["metrics"]["test"]
    assert stored["per_class"]["DME"]["f1"] is None

    assert main(["evaluate", "--run", str(tmp_path / "results" / "absent" / record.run_id),
                 str(path)]) == 0
    printed = capsys.readouterr().out
    assert re.search(r"DME\s+n/a\s+n/a\s+n/a\s+0", printed) or re.search(
        r"DME\s+0\.000\s+n/a\s+n/a\s+0", printed), printed
    assert "DME absent from the test split" in printed

    out = tmp_path / "report"
    assert main(["report", str(tmp_path / "results" / "absent"), "--out", str(out),
                 "--resamples", "100"]) == 0
    text = (out / "absent" / "report.md").read_text()
    assert "n/a: DME has no test images" in text
