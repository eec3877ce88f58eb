"""CUDA paths: the training step replayed as a CUDA graph against eager steps, and a CUDA run.

Deselected by default (CI has no GPU); on a machine with one: ``pytest -m cuda``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from octbench.data import load_dataset
from octbench.engine import evaluate, make_optimizer, seed_everything, train_one_epoch
from octbench.metrics import compute_metrics
from octbench.models import build_model
from octbench.strategies import build_strategy

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (pytest -m cuda)"),
]
CUDA = torch.device("cuda")


def _train(data, strategy: str, precision: str, graphs: bool, epochs: int = 3):
    seed_everything(0)
    model = build_model("reference_cnn").to(CUDA).to(memory_format=torch.channels_last)
    spec = build_strategy(strategy, data.train.class_counts(4))
    criterion = spec.criterion.to(CUDA)
    optimizer = make_optimizer(model.parameters(), "adam", lr=1e-3, fused=True, capturable=True)
    images, labels = data.train.images.to(CUDA), data.train.labels.to(CUDA)
    order_rng = torch.Generator().manual_seed(0)
    losses = []
    for epoch in range(epochs):
        if spec.on_epoch_start is not None:
            spec.on_epoch_start(epoch, epochs)  # ldam_drw switches re-weighting on mid-run
        order = torch.randperm(len(labels), generator=order_rng)
        stats = train_one_epoch(model, images, labels, order, criterion=criterion,
                                optimizer=optimizer, batch_size=128, precision=precision,
                                channels_last=True, cuda_graph=graphs)
        losses.append(stats["loss"])
    val, _ = evaluate(model, data.val.images.to(CUDA), data.val.labels.to(CUDA),
                      precision=precision, channels_last=True, logit_offset=spec.logit_offset)
    return np.array(losses), compute_metrics(val.labels, val.scores, data.class_names)


@pytest.fixture(scope="module")
def data():
    return load_dataset("synthetic", scale=0.02)


@pytest.mark.parametrize("strategy", ["none", "ldam_drw", "weighted_ce"])
def test_cuda_graph_training_matches_eager(data, strategy):
    eager_losses, eager = _train(data, strategy, "bf16", graphs=False)
    graph_losses, graphed = _train(data, strategy, "bf16", graphs=True)
    # Same kernels, same order, same dropout stream: the curves agree to rounding.
    np.testing.assert_allclose(graph_losses, eager_losses, rtol=1e-3)
    assert graphed["macro_f1"] == pytest.approx(eager["macro_f1"], abs=0.02)


def test_cuda_run_end_to_end(tmp_path):
    from octbench.config import parse_config
    from octbench.experiment import run_experiment
    from octbench.results import ResultsStore

    config = parse_config({
        "name": "cuda", "data": {"name": "synthetic", "scale": 0.02},
        "models": ["reference_cnn"], "strategies": ["none", "ldam_drw"], "seeds": [0],
        "devices": ["cuda"], "results_dir": str(tmp_path),
        "train": {"epochs": 2, "precision": "bf16", "schedule": "cosine"},
    })
    run_experiment(config, quiet=True, say=lambda _: None)
    records = ResultsStore(tmp_path / "cuda").records()
    assert sorted(r.status for r in records) == ["complete", "complete"]
    assert all(r.hardware["type"] == "cuda" for r in records)
