"""Pretrained timm weights (from a local file: offline), timm parameter checks, linear probing."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import cli_env, experiment, run_cli, tree_digest, write_yaml

from octbench.config import parse_config
from octbench.errors import ConfigError
from octbench.models import build_model
from octbench.models.timm_models import read_weights, tensors_digest
from octbench.results import COMPLETE, ResultsStore
from octbench.runner import run_experiment

TINY_TIMM = "timm:resnet10t"  # ImageNet-style normalisation in its pretrained config


@pytest.fixture(scope="module")
def saved_weights(tmp_path_factory) -> tuple:
    """A timm model's weights (1 channel, 1000-class head, as timm's own) saved as
    safetensors and as a torch state_dict file."""
    from safetensors.torch import save_file

    torch.manual_seed(123)
    model = build_model(TINY_TIMM, num_classes=1000, in_chans=1)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    folder = tmp_path_factory.mktemp("weights")
    save_file(state, str(folder / "resnet10t.safetensors"))
    torch.save(state, folder / "resnet10t.pth")
    return folder, state


@pytest.fixture(params=["safetensors", "pth"])
def weights_file(request, saved_weights) -> tuple:
    folder, state = saved_weights
    return folder / f"resnet10t.{request.param}", state


def tiny_run(tmp_path, oct_npz, model, name, **train) -> dict:
    return experiment(tmp_path, oct_npz, name=name, models=[model], strategies=["none"],
                      train={"epochs": 1, "batch_size": 64, "threads": 1, **train})


def test_pretrained_file_run_starts_from_those_weights(tmp_path, oct_npz, saved_weights,
                                                       restore_torch):
    folder, saved = saved_weights
    path = folder / "resnet10t.safetensors"
    pretrained = parse_config(tiny_run(tmp_path, oct_npz,
                                       {"name": TINY_TIMM, "pretrained": str(path)}, "pre"))
    scratch = parse_config(tiny_run(tmp_path, oct_npz, TINY_TIMM, "scratch"))
    assert run_experiment(pretrained, quiet=True, say=lambda _: None).ok
    assert run_experiment(scratch, quiet=True, say=lambda _: None).ok
    (pre,) = ResultsStore(tmp_path / "results" / "pre").records()
    (fresh,) = ResultsStore(tmp_path / "results" / "scratch").records()
    assert pre.status == fresh.status == COMPLETE and pre.seed == fresh.seed

    backbone = [k for k in saved if not k.startswith("fc.")]  # timm replaces the 1000-class head
    init = pre.model_init
    assert init["weights"] == str(path) and init["loaded_tensors"] == len(backbone)
    assert init["new_tensors"] == ["fc.bias", "fc.weight"]
    assert init["loaded_sha256"] == tensors_digest(saved, backbone)
    # ImageNet's RGB mean and std, averaged for one channel, instead of the data's 0.5 / 0.5
    assert init["normalization"] == pytest.approx({"mean": 0.449, "std": 0.226}, abs=1e-3)
    assert fresh.model_init["weights"] == "random"
    assert fresh.model_init["normalization"] == {"mean": 0.5, "std": 0.5}
    pre_scores = np.load(tmp_path / "results" / "pre" / pre.run_id / "predictions.npz")
    fresh_scores = np.load(tmp_path / "results" / "scratch" / fresh.run_id / "predictions.npz")
    assert not np.allclose(pre_scores["test_scores"], fresh_scores["test_scores"])
    assert pre.run_id != fresh.run_id


def test_build_model_loads_the_file_exactly(weights_file):
    path, saved = weights_file
    model = build_model(TINY_TIMM, num_classes=4, in_chans=1, pretrained=str(path))
    state = model.state_dict()
    for key, tensor in saved.items():
        if not key.startswith("fc."):
            assert torch.equal(state[key], tensor), key
    assert state["fc.weight"].shape == (4, saved["fc.weight"].shape[1])


def test_linear_probe_trains_only_the_head(tmp_path, oct_npz, saved_weights, restore_torch):
    folder, saved = saved_weights
    path = folder / "resnet10t.pth"
    config = parse_config(tiny_run(tmp_path, oct_npz, {"name": TINY_TIMM, "pretrained": str(path)},
                                   "probe", mode="linear_probe", epochs=2))
    assert run_experiment(config, quiet=True, say=lambda _: None).ok
    (record,) = ResultsStore(tmp_path / "results" / "probe").records()
    assert record.model_init["mode"] == "linear_probe"
    assert record.parameters == saved["fc.weight"].shape[1] * 4 + 4  # the head alone trains
    best = torch.load(tmp_path / "results" / "probe" / record.run_id / "best.pt",
                      weights_only=True)["model"]
    for key, tensor in saved.items():  # weights and BatchNorm statistics alike
        if not key.startswith("fc.") and not key.endswith("num_batches_tracked"):
            assert torch.equal(best[key], tensor), key
    assert record.config["train"]["mode"] == "linear_probe"


def test_end_to_end_is_the_default_and_keeps_run_ids(tmp_path, oct_npz):
    config = parse_config(tiny_run(tmp_path, oct_npz, "reference_cnn", "ids"))
    assert config.train.mode == "end_to_end"
    assert "mode" not in config.train.to_dict()  # runs recorded before the option keep their ids
    assert parse_config(config.to_dict()) == config


def test_reference_cnn_can_be_probed(tmp_path, oct_npz, restore_torch):
    config = parse_config(tiny_run(tmp_path, oct_npz, {"name": "reference_cnn", "width": 0.25},
                                   "cnnprobe", mode="linear_probe"))
    assert run_experiment(config, quiet=True, say=lambda _: None).ok
    (record,) = ResultsStore(tmp_path / "results" / "cnnprobe").records()
    assert record.parameters == 64 * 4 + 4  # the last Linear of the width-0.25 CNN


@pytest.mark.parametrize("model, expected", [
    ({"name": "timm:resnet18", "bogus_arg": 3},
     "unknown parameter 'bogus_arg' of timm model 'resnet18' at models[0]"),
    ({"name": "timm:resnet18", "drop_rat": 0.1}, "Did you mean 'drop_rate'?"),
    ({"name": "timm:resnet18", "num_classes": 3}, "models[0].num_classes"),
    ({"name": "reference_cnn", "pretrained": True},
     "models[0].pretrained: model 'reference_cnn' has no pretrained weights"),
    ({"name": "timm:resnet18", "pretrained": "missing.safetensors"}, "does not exist"),
    ({"name": "timm:resnet18", "pretrained": "weights.txt"}, "ending in .safetensors"),
    ({"name": "timm:resnet18", "pretrained": 3}, "must be true, false or a path"),
])
def test_bad_model_parameters_fail_before_training(model, expected, tmp_path, oct_npz):
    with pytest.raises(ConfigError) as error:
        parse_config(tiny_run(tmp_path, oct_npz, model, "bad"))
    assert expected in str(error.value)


def test_unreadable_weights_file_is_a_config_error(tmp_path, oct_npz):
    path = tmp_path / "broken.pth"
    path.write_bytes(b"not a checkpoint at all")
    with pytest.raises(ConfigError) as error:
        parse_config(tiny_run(tmp_path, oct_npz, {"name": TINY_TIMM, "pretrained": str(path)},
                              "bad"))
    assert "models[0].pretrained: cannot read" in str(error.value)


def test_a_pickled_weights_file_runs_no_code(tmp_path):
    class Payload:
        def __reduce__(self):
            return (print, ("code ran",))

    path = tmp_path / "evil.pth"
    torch.save({"w": Payload()}, path)
    with pytest.raises(Exception, match="cannot read"):
        read_weights(path)


def test_pretrained_true_offline_fails_before_training(tmp_path, oct_npz):
    config = tiny_run(tmp_path, oct_npz, {"name": TINY_TIMM, "pretrained": True}, "offline")
    path = write_yaml(tmp_path / "offline.yaml", config)
    (tmp_path / "results").mkdir()
    before = tree_digest(tmp_path / "results")
    env = cli_env(tmp_path, HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"),
                  TORCH_HOME=str(tmp_path / "torch"))
    done = run_cli(["run", str(path)], env)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    for text in ("models[0]", "timm model 'resnet10t'", "timm/resnet10t", str(tmp_path / "hf"),
                 "timm.create_model('resnet10t', pretrained=True)", "pretrained: path/to"):
        assert text in done.stderr, done.stderr
    assert tree_digest(tmp_path / "results") == before
