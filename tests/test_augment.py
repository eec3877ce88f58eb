"""Augmentations, generated from the registry: adding one adds its tests."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import experiment

from octbench.augment import AUGMENTATIONS, build_augmenter
from octbench.config import parse_config
from octbench.errors import ConfigError
from octbench.experiment import run_experiment
from octbench.results import ResultsStore

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


def _host_threads() -> list:
    import threading

    return [t for t in threading.enumerate() if t.name == "octbench-host-augment"]


def _noisy(images: np.ndarray, seed: int) -> np.ndarray:
    """A host transform that draws from its seed only (as medmnist_c does)."""
    noise = np.random.default_rng(seed).integers(-40, 40, images.shape)
    return np.clip(images.astype(int) + noise, 0, 255).astype(np.uint8)


def _epoch(augmenter, *, criterion=None, seed=0):
    """One epoch of a tiny CNN on 6 batches of 16 scans; returns (loss, weights)."""
    from octbench.engine import train_one_epoch
    from octbench.models import build_model

    torch.manual_seed(seed)
    model = build_model("reference_cnn", width=0.25)
    images = torch.randint(0, 256, (96, 28, 28), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(1))
    labels = torch.arange(96) % 4
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    stats = train_one_epoch(model, images, labels, torch.randperm(96, generator=torch.Generator(
        ).manual_seed(2)), criterion=criterion or torch.nn.CrossEntropyLoss(),
        optimizer=optimizer, batch_size=16, augment=augmenter)
    return stats["loss"], [p.detach().clone() for p in model.parameters()]


def _pipeline(host, prefetch):
    from octbench.augment import Augmenter, HostTransform

    return Augmenter([HostTransform(host), AUGMENTATIONS.get("hflip")()], seed=4,
                     device=torch.device("cpu"), prefetch=prefetch)


@pytest.mark.parametrize("name", with_extras(["medmnist_c", "host_noise"]))
def test_host_augmentation_in_a_thread_is_bit_identical_to_in_turn(name):
    def build(prefetch):
        if name == "host_noise":
            return _pipeline(_noisy, prefetch)
        return build_augmenter([name, "hflip"], seed=4, device=torch.device("cpu"),
                               prefetch=prefetch)

    in_turn, threaded = build(0), build(2)
    loss, weights = _epoch(in_turn)
    threaded_loss, threaded_weights = _epoch(threaded)
    assert threaded_loss == loss
    for ours, theirs in zip(threaded_weights, weights, strict=True):
        assert torch.equal(ours, theirs)
    assert threaded.batches == in_turn.batches == 6
    assert threaded.state_dict()["host"].equal(in_turn.state_dict()["host"])
    assert not _host_threads()
    # the stream equals calling the augmenter batch by batch, and augmenting really happened
    images = torch.randint(0, 256, (32, 28, 28), dtype=torch.uint8)
    labels, batches = torch.arange(32) % 4, list(torch.arange(32).split(8))
    called = build(0)
    expected = [called(images[i].unsqueeze(1).float().mul_(1 / 255), labels[i])[0]
                for i in batches]
    with build(2).stream(images, labels, batches) as augmented:
        got = [x for x, _, _ in augmented]
    assert all(torch.equal(a, b) for a, b in zip(got, expected, strict=True))
    assert not torch.equal(got[0], images[batches[0]].unsqueeze(1).float() / 255)


def test_host_augmentation_error_is_raised_in_training_and_the_thread_ends():
    calls = []

    def failing(images, seed):
        calls.append(seed)
        if len(calls) == 3:
            raise ValueError("ImageMagick said no")
        return images

    with pytest.raises(ValueError, match="ImageMagick said no"):
        _epoch(_pipeline(failing, 2))
    assert not _host_threads()


def test_interrupted_training_stops_the_host_thread_without_running_ahead():
    import time

    prepared = []

    def slow(images, seed):
        prepared.append(seed)
        time.sleep(0.01)
        return images

    class Interrupting(torch.nn.CrossEntropyLoss):
        steps = 0

        def forward(self, logits, y):
            Interrupting.steps += 1
            if Interrupting.steps == 2:
                raise KeyboardInterrupt
            return super().forward(logits, y)

    with pytest.raises(KeyboardInterrupt):
        _epoch(_pipeline(slow, 1), criterion=Interrupting())
    assert not _host_threads()
    assert 2 <= len(prepared) <= 4  # the bounded queue: never the whole epoch ahead of time
