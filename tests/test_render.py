"""The synthetic OCT renderer: determinism, layout, and findings that differ in the right way.

The class checks compare *paired* images: with one seed, image ``i`` gets the same anatomy and
noise whatever its label, so ``render(DME) - render(NORMAL)`` isolates the finding.
"""

from __future__ import annotations

import numpy as np
import pytest

from octbench.data import render
from octbench.data.render import OCT_CLASSES, render_scans
from octbench.errors import DataError

CNV, DME, DRUSEN, NORMAL = range(4)
N = 96  # pairs per class check (one block at 64 px)


def test_class_names_follow_octmnist():
    assert OCT_CLASSES == ("CNV", "DME", "DRUSEN", "NORMAL")


@pytest.mark.parametrize("size", [28, 64])
def test_shape_dtype_and_range(size):
    images = render_scans(np.arange(12) % 4, size=size, seed=0)
    assert images.shape == (12, size, size) and images.dtype == np.uint8
    assert np.median(images[:, :3]) < 60  # dark vitreous at the top
    assert np.percentile(images.max(axis=(1, 2)), 10) > 150  # a bright RPE in every scan


def test_labels_may_be_a_column_or_empty():
    labels = np.array([[0], [3]])
    np.testing.assert_array_equal(render_scans(labels), render_scans(labels[:, 0]))
    assert render_scans(np.array([], dtype=int), size=32).shape == (0, 32, 32)


def test_same_seed_same_bytes_other_seed_other_images():
    labels = np.arange(16) % 4
    first = render_scans(labels, seed=3)
    assert render_scans(labels, seed=3).tobytes() == first.tobytes()
    assert (render_scans(labels, seed=4) != first).mean() > 0.5


def test_an_image_depends_only_on_seed_index_and_its_own_label(monkeypatch):
    # Blocks of 3 images, so that the batch spans several blocks and ends in a partial one.
    monkeypatch.setattr(render, "BLOCK_PIXELS", 3 * 56 * round(56 * render.ASPECT))
    labels = np.arange(20) % 4
    full = render_scans(labels, seed=1)
    np.testing.assert_array_equal(render_scans(labels[:7], seed=1), full[:7])
    relabelled = np.where(np.arange(20) % 2 == 1, NORMAL, labels)
    np.testing.assert_array_equal(render_scans(relabelled, seed=1)[::2], full[::2])


@pytest.fixture(scope="module")
def pairs() -> dict[int, np.ndarray]:
    return {c: render_scans(np.full(N, c), size=64, seed=7).astype(np.float32) for c in range(4)}


def surfaces(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per column: the first row clearly above the vitreous (ILM) and the brightest row (RPE)."""
    vitreous = np.median(images[:, :4], axis=(1, 2))[:, None, None]
    return (images > vitreous + 25).argmax(axis=1), images.argmax(axis=1)


def test_findings_are_ordered_cnv_dme_drusen_by_conspicuity(pairs):
    change = {c: np.abs(pairs[c] - pairs[NORMAL]).mean() for c in (CNV, DME, DRUSEN)}
    assert change[CNV] > change[DME] > change[DRUSEN] > 0.3


def test_dme_thickens_the_retina_and_darkens_it_with_cysts(pairs):
    ilm_dme, rpe_dme = surfaces(pairs[DME])
    ilm_normal, _ = surfaces(pairs[NORMAL])
    assert (ilm_dme.mean(axis=1) < ilm_normal.mean(axis=1)).mean() > 0.8  # inner surface rises

    def dark_pixels_in_retina(images, ilm, rpe):
        rows = np.arange(images.shape[1])[None, :, None]
        band = (rows > ilm[:, None]) & (rows < rpe[:, None] - 1)
        vitreous = np.median(images[:, :4], axis=(1, 2))[:, None, None]
        return ((images < vitreous + 10) & band).sum(axis=(1, 2))

    dark_dme = dark_pixels_in_retina(pairs[DME], ilm_dme, rpe_dme)
    dark_normal = dark_pixels_in_retina(pairs[NORMAL], *surfaces(pairs[NORMAL]))
    assert dark_dme.mean() > 1.1 * dark_normal.mean()


def test_cnv_and_drusen_lift_the_rpe(pairs):
    _, rpe_normal = surfaces(pairs[NORMAL])
    rise = {c: rpe_normal - surfaces(pairs[c])[1] for c in (CNV, DRUSEN)}
    assert rise[CNV].mean() > 1.0  # a broad lesion, in rows of a 64 px image
    assert rise[DRUSEN].mean() > 0.03  # a few small domes...
    assert (rise[DRUSEN].max(axis=1) >= 2).mean() > 0.25  # ...that some scans show clearly


def test_difficulty_makes_findings_subtler():
    def change(difficulty):  # paired mean |finding - NORMAL| per class
        def render_all(c):
            return render_scans(np.full(40, c), seed=2, difficulty=difficulty).astype(np.float32)

        normal = render_all(NORMAL)
        return np.array([np.abs(render_all(c) - normal).mean() for c in (CNV, DME, DRUSEN)])

    assert (change(2.0) < change(0.5)).all()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(labels=np.array([0, 4])), "labels must be in 0..3"),
        (dict(labels=np.array([-1])), "labels must be in 0..3"),
        (dict(labels=np.array([0.5])), "integers"),
        (dict(labels=np.zeros((2, 2), dtype=int)), "shape"),
        (dict(labels=np.array([0]), size=4), "size must be an integer >= 8"),
        (dict(labels=np.array([0]), render_size=2), "render_size"),
        (dict(labels=np.array([0]), difficulty=0.0), "difficulty must be a number > 0"),
        (dict(labels=np.array([0]), seed=-1), "seed must be an integer >= 0"),
    ],
)
def test_bad_arguments_raise_data_error(kwargs, match):
    with pytest.raises(DataError, match=match):
        render_scans(**kwargs)
