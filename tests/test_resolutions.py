"""Every dataset at MedMNIST+'s resolutions (28, 64, 128, 224 px), stored as uint8."""

from __future__ import annotations

import pytest
import torch

from octbench.config import parse_config
from octbench.data import load_dataset
from octbench.data.octmnist import SIZES, octmnist_file
from octbench.experiment import run_experiment
from octbench.models import build_model, count_parameters
from octbench.results import COMPLETE, ResultsStore


def test_octmnist_has_one_file_per_size(tmp_path):
    files = {size: octmnist_file(size, str(tmp_path)) for size in SIZES}
    assert SIZES == (28, 64, 128, 224)
    assert files[28][0].name == "octmnist.npz" and files[224][0].name == "octmnist_224.npz"
    assert len({url for _, url, _ in files.values()}) == 4  # MedMNIST+ files, each its own MD5
    assert len({md5 for _, _, md5 in files.values()}) == 4


@pytest.mark.parametrize("size", [64, 224])
def test_synthetic_data_is_rendered_at_the_size(size, tmp_path, monkeypatch):
    monkeypatch.setenv("OCTBENCH_CACHE", str(tmp_path))
    data = load_dataset("synthetic", size=size, scale=0.002, test_scale=0.01)
    assert data.size == size and data.train.images.shape[1:] == (size, size)
    assert data.train.images.dtype == torch.uint8  # 50 kB per 224-px image, not 200 kB


def test_a_224_px_run_trains_and_records_its_size(tmp_path, restore_torch):
    config = parse_config({
        "name": "px224", "data": {"name": "synthetic", "size": 224, "scale": 0.002,
                                  "test_scale": 0.02},
        "models": [{"name": "reference_cnn", "width": 0.25}], "strategies": ["none"],
        "seeds": [0], "train": {"epochs": 1, "batch_size": 32, "threads": 1},
        "results_dir": str(tmp_path / "results"),
    })
    assert run_experiment(config, quiet=True, say=lambda _: None).ok
    (record,) = ResultsStore(tmp_path / "results" / "px224").records()
    assert record.status == COMPLETE and record.dataset["size"] == 224
    assert record.parameters == count_parameters(  # the FC layer grew with the image
        build_model("reference_cnn", width=0.25, img_size=224))
