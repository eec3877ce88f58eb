"""Pretrained timm weights (from a local file: offline), timm parameter checks, linear probing."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import (
    assert_usage_error,
    cli_env,
    experiment,
    run_cli,
    tree_digest,
    write_yaml,
)

from octbench.cli import main
from octbench.config import parse_config
from octbench.errors import ConfigError
from octbench.experiment import run_experiment
from octbench.models import build_model
from octbench.models.pretrained import read_weights
from octbench.models.timm_models import tensors_digest
from octbench.results import COMPLETE, ResultsStore

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


@pytest.mark.parametrize("model", [{"name": "reference_cnn", "width": 0.25}, TINY_TIMM])
def test_linear_probe_without_pretrained_weights_is_refused(model, tmp_path, oct_npz, capsys):
    path = write_yaml(tmp_path / "probe.yaml",
                      tiny_run(tmp_path, oct_npz, model, "cnnprobe", mode="linear_probe"))
    assert main(["run", str(path)]) == 2
    error = capsys.readouterr().err
    assert "models[0]" in error and "linear_probe" in error and "random features" in error
    assert not (tmp_path / "results").exists()


def test_linear_probe_swept_onto_a_scratch_model_is_refused(tmp_path, oct_npz):
    config = tiny_run(tmp_path, oct_npz, TINY_TIMM, "sweptprobe")
    config["sweep"] = {"train.mode": ["end_to_end", "linear_probe"]}
    with pytest.raises(ConfigError, match="random features"):
        parse_config(config)


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
    assert_usage_error(done)
    for text in ("models[0]", "timm model 'resnet10t'", "timm/resnet10t", str(tmp_path / "hf"),
                 "timm.create_model('resnet10t', pretrained=True)", "pretrained: path/to"):
        assert text in done.stderr, done.stderr
    assert tree_digest(tmp_path / "results") == before


# --- weights files that do not fit, wrapped files, provenance -------------------------------

def _run_with_file(tmp_path, oct_npz, state, name, suffix=".pth", **model):
    path = tmp_path / f"{name}{suffix}"
    if suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(state, str(path), metadata=model.pop("metadata", None))
    else:
        torch.save(state, path)
    config = tiny_run(tmp_path, oct_npz, {"name": TINY_TIMM, "pretrained": str(path), **model},
                      name)
    return path, write_yaml(tmp_path / f"{name}.yaml", config)


def _record(tmp_path, name):
    (record,) = ResultsStore(tmp_path / "results" / name).records()
    assert record.status == COMPLETE
    return record


def test_a_truncated_file_is_refused_naming_the_missing_keys(tmp_path, oct_npz, saved_weights,
                                                             capsys):
    _, saved = saved_weights
    truncated = {k: v for k, v in saved.items() if not k.startswith("layer4.")}
    _, yaml_path = _run_with_file(tmp_path, oct_npz, truncated, "truncated")
    assert main(["run", str(yaml_path)]) == 2
    error = capsys.readouterr().err
    assert "missing from the file" in error and "layer4.0.conv1.weight" in error
    missing = len([k for k in saved  # BatchNorm's step counters are not weights
                   if k.startswith("layer4.") and not k.endswith("num_batches_tracked")])
    assert f"{missing} missing from the file" in error
    assert "pretrained_strict: false" in error
    assert not (tmp_path / "results" / "truncated").exists()


def test_a_truncated_file_loads_partially_only_when_asked(tmp_path, oct_npz, saved_weights,
                                                          capsys, restore_torch):
    _, saved = saved_weights
    truncated = {k: v for k, v in saved.items() if not k.startswith("layer4.")}
    _, yaml_path = _run_with_file(tmp_path, oct_npz, truncated, "partial",
                                  pretrained_strict=False)
    assert main(["run", str(yaml_path)]) == 0
    capsys.readouterr()
    init = _record(tmp_path, "partial").model_init
    layer4 = sorted(k for k in saved if k.startswith("layer4."))
    weights = [k for k in layer4 if not k.endswith("num_batches_tracked")]
    assert init["partial"] is True and sorted(init["missing"]) == weights
    assert init["loaded_tensors"] == len(saved) - len(layer4) - 2  # and not the 1000-class head


def test_a_file_with_keys_of_another_model_is_refused(tmp_path, oct_npz, saved_weights, capsys):
    _, saved = saved_weights
    # a wrapper that prefixed only its backbone: nothing matches, and the keys are named
    wrapped = {f"backbone.{k}": v for k, v in saved.items()} | {"head.weight": torch.zeros(4, 2)}
    _, yaml_path = _run_with_file(tmp_path, oct_npz, wrapped, "wrapped")
    assert main(["run", str(yaml_path)]) == 2
    error = capsys.readouterr().err
    assert "unexpected (not in the model)" in error and "backbone.bn1.bias" in error
    assert f"{len(wrapped)} unexpected" in error and "missing from the file" in error


@pytest.mark.parametrize("prefix", ["module.", "backbone.", "model.module."])
def test_a_wrapped_file_loads_fully_with_truthful_counts(prefix, tmp_path, oct_npz,
                                                         saved_weights, capsys, restore_torch):
    _, saved = saved_weights
    wrapped = {"state_dict": {f"{prefix}{k}": v for k, v in saved.items()}}
    path, yaml_path = _run_with_file(tmp_path, oct_npz, wrapped, "wrapped")
    assert main(["run", str(yaml_path)]) == 0
    capsys.readouterr()
    init = _record(tmp_path, "wrapped").model_init
    backbone = [k for k in saved if not k.startswith("fc.")]
    assert init["loaded_tensors"] == len(backbone) and init["partial"] is False
    assert init["prefix_stripped"] == prefix and init["adapted_tensors"] == []
    assert init["new_tensors"] == ["fc.bias", "fc.weight"]
    assert init["loaded_sha256"] == tensors_digest(saved, backbone)
    import hashlib
    assert init["file_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()


def test_an_rgb_stem_is_adapted_named_and_hashed(tmp_path, oct_npz, restore_torch):
    torch.manual_seed(5)
    rgb = build_model(TINY_TIMM, num_classes=1000, in_chans=3).state_dict()
    model = build_model(TINY_TIMM, num_classes=4, in_chans=1)
    path = tmp_path / "rgb.pth"
    torch.save(rgb, path)
    from octbench.models.pretrained import load_weights_file

    plan = load_weights_file(model, path)
    assert plan.adapted == ["conv1.0.weight"]
    assert torch.allclose(model.state_dict()["conv1.0.weight"],
                          rgb["conv1.0.weight"].sum(dim=1, keepdim=True))
    from octbench.models import describe_weights

    init = describe_weights(TINY_TIMM, {"pretrained": str(path)}, model)
    assert init["adapted_tensors"] == ["conv1.0.weight"]
    assert "conv1.0.weight" not in init["new_tensors"]
    kept = [k for k in rgb if not k.startswith("fc.") and k != "conv1.0.weight"]
    assert init["loaded_tensors"] == len(kept)
    assert init["loaded_sha256"] == tensors_digest(model.state_dict(), kept + ["conv1.0.weight"])


def test_normalisation_comes_from_the_file_when_it_carries_one(tmp_path, oct_npz, saved_weights,
                                                               capsys, restore_torch):
    _, saved = saved_weights
    metadata = {"mean": "[0.2, 0.3, 0.4]", "std": "[0.1, 0.2, 0.3]"}
    _, yaml_path = _run_with_file(tmp_path, oct_npz, saved, "carried", ".safetensors",
                                  metadata=metadata)
    assert main(["run", str(yaml_path)]) == 0
    capsys.readouterr()
    init = _record(tmp_path, "carried").model_init
    assert init["normalization"] == pytest.approx({"mean": 0.3, "std": 0.2})
    assert init["normalization_source"] == "file"

    beside = tmp_path / "hf"
    beside.mkdir()
    torch.save(saved, beside / "pytorch_model.bin")
    (beside / "config.json").write_text('{"pretrained_cfg": {"mean": [0.25], "std": [0.125]}}')
    from octbench.models import input_normalization

    assert input_normalization(TINY_TIMM, {"pretrained": str(beside / "pytorch_model.bin")}) \
        == (0.25, 0.125)
    assert input_normalization(TINY_TIMM, {"pretrained": True}) == pytest.approx((0.449, 0.226),
                                                                                abs=1e-3)


@pytest.mark.parametrize("key, value", [("checkpoint_path", "w.pth"),
                                        ("pretrained_cfg_overlay", {"file": "w.pth"}),
                                        ("pretrained_cfg", {"file": "w.pth"})])
def test_timm_arguments_that_load_weights_are_refused(key, value, tmp_path, oct_npz,
                                                       trained_probe):
    with pytest.raises(ConfigError, match=f"'{key}' of timm model 'resnet10t' would load"):
        parse_config(tiny_run(tmp_path, oct_npz, {"name": TINY_TIMM, key: value}, "kw"))
    # ... and from a checkpoint's model settings, which a stranger may have edited
    from octbench.errors import OctbenchError
    from octbench.predict import load_predictor

    state = torch.load(trained_probe, weights_only=True)
    state["model_config"] = {**state["model_config"], key: value}
    edited = tmp_path / "edited" / "best.pt"
    edited.parent.mkdir()
    torch.save(state, edited)
    with pytest.raises(OctbenchError, match=f"'{key}' of timm model 'resnet10t' would load"):
        load_predictor(str(edited))


@pytest.fixture(scope="module")
def trained_probe(tmp_path_factory, oct_npz, saved_weights):
    folder, _ = saved_weights
    root = tmp_path_factory.mktemp("probe")
    config = parse_config(tiny_run(root, oct_npz, {"name": TINY_TIMM,
                                                   "pretrained": str(folder / "resnet10t.pth")},
                                   "probe", mode="linear_probe"))
    threads = torch.get_num_threads()
    assert run_experiment(config, quiet=True, say=lambda _: None).ok
    torch.set_num_threads(threads)
    (record,) = ResultsStore(root / "results" / "probe").records()
    return root / "results" / "probe" / record.run_id / "best.pt"


def test_a_cosine_head_replacing_the_files_head_is_not_a_misfit(saved_weights):
    from octbench.models import use_cosine_head
    from octbench.models.pretrained import plan_weights

    _, saved = saved_weights
    model = use_cosine_head(build_model(TINY_TIMM, num_classes=4, in_chans=1))  # LDAM's head
    plan = plan_weights(saved, model)
    assert plan.complete and plan.new == ["fc.weight"] and "fc.bias" not in plan.unexpected


@pytest.mark.parametrize("inputs, named", [
    ({"precision": "fp64"}, "precision='fp64'"),
    ({"channels_last": "yes"}, "channels_last='yes'"),
    ({"eval_batch_size": 0}, "eval_batch_size=0"),
    ({"normalization": [0.5, 0.0]}, "std > 0"),
    ({"in_chans": 3}, "in_chans=3"),
])
def test_a_checkpoint_with_unusable_input_settings_is_refused(inputs, named, trained_probe,
                                                              tmp_path):
    from octbench.errors import OctbenchError
    from octbench.predict import load_predictor

    state = torch.load(trained_probe, weights_only=True)
    assert state["inputs"]["normalization"] != [0.5, 0.5]  # the weights' own, recorded
    state["inputs"] = {**state["inputs"], **inputs}
    edited = tmp_path / "best.pt"
    torch.save(state, edited)
    with pytest.raises(OctbenchError, match="not a usable octbench checkpoint") as error:
        load_predictor(str(edited))
    assert named in str(error.value)
