"""Augmentations, generated from the registry: adding one adds its tests."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import experiment

from octbench.augment import AUGMENTATIONS, build_augmenter
from octbench.config import parse_config
from octbench.errors import ConfigError
from octbench.results import ResultsStore
from octbench.runner import run_experiment

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
MIXING = {"mixup", "cutmix"}


def _robustness_extra_missing() -> str | None:
    try:
        import cv2  # noqa: F401
        import medmnistc  # noqa: F401
        import wand.image  # noqa: F401
    except ImportError as error:
        return f"robustness extra not installed ({error})"
    return None


#: Augmentations that need an extra skip (with the reason) where it is missing.
NEEDS_EXTRA = {"medmnist_c": _robustness_extra_missing}


def with_extras(names) -> list:
    return [pytest.param(n, marks=[pytest.mark.extras, pytest.mark.skipif(
        NEEDS_EXTRA[n]() is not None, reason=str(NEEDS_EXTRA[n]()))]) if n in NEEDS_EXTRA else n
            for n in names]


NAMES = with_extras(AUGMENTATIONS.names())


def batch(device="cpu", n=16, size=28):
    x = torch.rand(n, 1, size, size, generator=torch.Generator().manual_seed(5)).to(device)
    return x, (torch.arange(n) % 4).to(device)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", NAMES)
def test_shape_dtype_device_and_range(name, device):
    x, y = batch(device)
    out, partner, lam = build_augmenter([name], seed=0, device=torch.device(device))(x, y)
    assert out.shape == x.shape and out.dtype == x.dtype and out.device == x.device
    assert 0 <= out.min() and out.max() <= 1
    assert not torch.equal(out, x)  # it did something
    if name in MIXING:
        assert partner.shape == y.shape and partner.device == y.device and 0 < lam < 1
    else:
        assert partner is None and lam == 1.0


@pytest.mark.parametrize("name", NAMES)
def test_deterministic_by_seed(name):
    x, y = batch()

    def run(seed):
        augmenter = build_augmenter([name], seed=seed, device=torch.device("cpu"))
        return [augmenter(x, y)[0] for _ in range(3)]  # successive batches differ too

    first, again, other = run(0), run(0), run(1)
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(first, other, strict=True))
    assert not torch.equal(first[0], first[1])


@pytest.mark.parametrize("name", with_extras(sorted(set(AUGMENTATIONS.names()) - MIXING)))
def test_parameters_are_drawn_per_image(name):
    """One image repeated 16 times comes out in several versions: random per image, not per
    batch, as torchvision's v2 transforms would be."""
    image = torch.rand(1, 1, 28, 28, generator=torch.Generator().manual_seed(2))
    x = image.repeat(16, 1, 1, 1)
    out, _, _ = build_augmenter([name], seed=0, device=torch.device("cpu"))(x, torch.zeros(16))
    assert len({tuple(o.flatten().tolist()) for o in out}) > 1


@pytest.mark.parametrize("name", NAMES)
def test_state_restores_the_stream(name):
    x, y = batch()
    augmenter = build_augmenter([name], seed=3, device=torch.device("cpu"))
    augmenter(x, y)
    state = augmenter.state_dict()
    expected = augmenter(x, y)[0]
    fresh = build_augmenter([name], seed=3, device=torch.device("cpu"))
    fresh.load_state_dict(state)
    assert torch.equal(fresh(x, y)[0], expected)


def test_hflip_flips_exactly_the_chosen_images():
    x, y = batch()
    out, _, _ = build_augmenter(["hflip"], seed=0, device=torch.device("cpu"))(x, y)
    flipped = [torch.equal(o, i.flip(-1)) for o, i in zip(out, x, strict=True)]
    kept = [torch.equal(o, i) for o, i in zip(out, x, strict=True)]
    assert all(f != k for f, k in zip(flipped, kept, strict=True)) and 0 < sum(flipped) < 16


def test_mixup_blends_images_and_labels_with_the_same_weight():
    x, y = batch()
    augmenter = build_augmenter([{"name": "mixup", "alpha": 0.4}], seed=0,
                                device=torch.device("cpu"))
    out, partner, lam = augmenter(x, y)
    index = [int(torch.nonzero((x == x[i]).all(dim=(1, 2, 3)))[0]) for i in range(16)]
    assert index == list(range(16))
    # out = lam * x + (1 - lam) * x[order]; recover order from the partner labels' images
    residual = (out - lam * x) / (1 - lam)
    for i in range(16):
        source = [j for j in range(16) if torch.allclose(residual[i], x[j], atol=1e-5)]
        assert source and y[source[0]] == partner[i]


def test_augment_is_validated_like_models(tmp_path, oct_npz):
    def config(augment):
        return experiment(tmp_path, oct_npz, train={"augment": augment})

    assert parse_config(config(["hflip", {"name": "affine", "degrees": 5}])).train.augment
    cases = {
        "hflp": "train.augment[0]: unknown augmentation 'hflp'. Did you mean 'hflip'?",
        "affine-degrees": "unknown parameter 'degree' of augmentation 'affine' at "
                          "train.augment[0]. Did you mean 'degrees'?",
        "range": "(train.augment[0].p) must be >= 0 and <= 1. Got 2 instead.",
        "both": "lists both mixup and cutmix",
    }
    raw = {"hflp": ["hflp"], "affine-degrees": [{"name": "affine", "degree": 5}],
           "range": [{"name": "hflip", "p": 2}], "both": ["mixup", "cutmix"]}
    for case, message in cases.items():
        with pytest.raises(ConfigError) as error:
            parse_config(config(raw[case]))
        assert message in str(error.value), (case, str(error.value))


def test_no_augment_keeps_run_ids(tmp_path, oct_npz):
    plain = parse_config(experiment(tmp_path, oct_npz))
    assert "augment" not in plain.train.to_dict()
    augmented = parse_config(experiment(tmp_path, oct_npz, train={"augment": ["hflip"]}))
    assert augmented.train.to_dict()["augment"] == ["hflip"]
    assert parse_config(augmented.to_dict()) == augmented


def test_augmented_run_resumes_exactly(tmp_path, oct_npz, restore_torch, monkeypatch):
    """Interrupted after its first epoch and resumed, an augmented run ends with the same
    predictions as an uninterrupted one: the augmentation's generators are restored."""
    import octbench.runner

    augment = ["hflip", {"name": "affine", "degrees": 8}, "gaussian_noise", "mixup"]

    def config(name, augment):
        return parse_config(experiment(
            tmp_path, oct_npz, name=name, strategies=["weighted_ce"],
            train={"epochs": 2, "batch_size": 64, "threads": 1, "deterministic": True,
                   "augment": augment}))

    def scores(name):
        (record,) = ResultsStore(tmp_path / "results" / name).records()
        return np.load(tmp_path / "results" / name / record.run_id / "predictions.npz")[
            "test_scores"]

    assert run_experiment(config("whole", augment), quiet=True, say=lambda _: None).ok
    assert run_experiment(config("plain", []), quiet=True, say=lambda _: None).ok
    real_save = ResultsStore.save_state

    def save_then_stop(self, run_id, name, state):
        real_save(self, run_id, name, state)
        raise KeyboardInterrupt  # right after the first epoch's checkpoint

    monkeypatch.setattr(octbench.runner.ResultsStore, "save_state", save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        run_experiment(config("resumed", augment), quiet=True, say=lambda _: None)
    monkeypatch.undo()
    assert run_experiment(config("resumed", augment), quiet=True, say=lambda _: None).ok
    assert np.array_equal(scores("resumed"), scores("whole"))
    assert not np.allclose(scores("plain"), scores("whole"))  # the augmentation was applied


def test_consecutive_warps_are_resampled_once_and_compose_exactly():
    x, y = batch()
    augmenter = build_augmenter([{"name": "hflip", "p": 1.0},
                                 {"name": "affine", "degrees": 0, "translate": 0, "scale": 0}],
                                seed=0, device=torch.device("cpu"))
    assert len(augmenter.steps) == 1  # one grid_sample for both
    out, _, _ = augmenter(x, y)
    assert torch.allclose(out, x.flip(-1), atol=1e-5)
