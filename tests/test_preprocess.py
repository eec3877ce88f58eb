"""Raw B-scan -> model input, as MedMNIST built OCTMNIST, on the real scans in tests/data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from octbench.data.preprocess import RESAMPLE, load_scan, preprocess_array
from octbench.errors import DataError

DATA = Path(__file__).parent / "data"
SCANS = sorted(DATA.glob("*.jpeg"))
WIDE = DATA / "DRUSEN-95633-1.jpeg"  # 768 x 496: the crop removes a third of the width


def gray(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("L"))


def test_the_real_scans_are_present():
    assert len(SCANS) == 6, "tests/data must hold the six OCT2017 samples (see its README.md)"


@pytest.mark.parametrize("path", SCANS, ids=lambda p: p.stem)
@pytest.mark.parametrize("size", [28, 64])
def test_every_real_scan_becomes_a_square_uint8_image(path, size):
    image = load_scan(path, size=size)
    assert image.shape == (size, size) and image.dtype == np.uint8
    assert image.std() > 10  # a retina, not a blank


def test_center_crop_and_resize_match_a_manual_pil_pipeline():
    with Image.open(WIDE) as scan:
        width, height = scan.size
        left = (width - height) // 2
        square = scan.convert("L").crop((left, 0, left + height, height))
        expected = np.asarray(square.resize((28, 28), RESAMPLE))
    assert (width, height) == (768, 496)
    np.testing.assert_array_equal(load_scan(WIDE), expected)
    # The crop matters: squashing the whole width gives a different image.
    squashed = np.asarray(Image.fromarray(gray(WIDE)).resize((28, 28), RESAMPLE))
    assert np.abs(squashed.astype(int) - expected).mean() > 3


def test_tall_images_are_cropped_vertically():
    tall = np.zeros((300, 100), dtype=np.uint8)
    tall[100:200] = 200  # the central square
    np.testing.assert_array_equal(preprocess_array(tall, size=10), np.full((10, 10), 200))


@pytest.mark.parametrize(
    "name, convert, exact",
    [
        ("rgb.png", lambda g: np.stack([g] * 3, axis=-1), True),
        ("rgba.png", lambda g: np.dstack([g, g, g, np.full_like(g, 255)]), True),
        ("gray16.png", lambda g: g.astype(np.uint16) * 257, True),
        ("gray16.tif", lambda g: g.astype(np.uint16) * 257, True),
        ("palette.png", lambda g: Image.fromarray(g).convert("P"), True),
        ("rgb.jpeg", lambda g: np.stack([g] * 3, axis=-1), False),
    ],
)
def test_other_encodings_give_the_grayscale_result(tmp_path, name, convert, exact):
    g = gray(WIDE)
    converted = convert(g)
    image = converted if isinstance(converted, Image.Image) else Image.fromarray(converted)
    image.save(tmp_path / name)
    result = load_scan(tmp_path / name).astype(int)
    expected = load_scan(WIDE).astype(int)
    if exact:
        np.testing.assert_array_equal(result, expected)
    else:  # lossy JPEG re-encoding
        assert np.abs(result - expected).mean() < 2


def test_16_bit_dynamic_range_is_kept_not_clipped():
    ramp = np.linspace(0, 65535, 256).astype(np.uint16)[None].repeat(256, axis=0)
    out = preprocess_array(ramp, size=256)
    assert out.min() == 0 and out.max() == 255
    assert len(np.unique(out)) > 200


def test_arrays_of_other_dtypes_and_layouts():
    g = gray(WIDE)
    expected = preprocess_array(g)
    np.testing.assert_array_equal(preprocess_array(g / 255.0), expected)
    np.testing.assert_array_equal(preprocess_array(g[..., None]), expected)
    np.testing.assert_array_equal(preprocess_array(np.dstack([g, g])), expected)
    big_endian_16 = g.astype(">u2") * 257  # as TIFFs from some devices decode
    np.testing.assert_array_equal(preprocess_array(big_endian_16), expected)


@pytest.mark.parametrize(
    "array, match",
    [
        (np.zeros((10, 10), dtype=np.int32), "dtype int32"),
        (np.full((10, 10), 2.0), r"expected \[0, 1\]"),
        (np.zeros((10, 10, 5), dtype=np.uint8), "shape"),
        (np.zeros((0, 10), dtype=np.uint8), "shape"),
        (np.zeros(10, dtype=np.uint8), "shape"),
    ],
)
def test_unusable_arrays_raise_data_error(array, match):
    with pytest.raises(DataError, match=match):
        preprocess_array(array)


def encoded(fmt: str, folder: Path) -> bytes:
    Image.fromarray(gray(WIDE)).save(folder / f"whole.{fmt}")
    return (folder / f"whole.{fmt}").read_bytes()


@pytest.mark.parametrize(
    "name, content, problem",
    [
        ("missing.png", None, "no such file"),
        ("empty.png", b"", "empty"),
        ("notes.png", b"not an image", "not an image"),
        ("cut.jpeg", "jpeg", "truncated"),
        ("cut.png", "png", "truncated"),
    ],
)
def test_bad_files_raise_data_error_naming_the_file(tmp_path, monkeypatch, name, content, problem):
    if content in ("jpeg", "png"):
        whole = encoded(content, tmp_path)
        content = whole[: len(whole) // 2]
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    # Another library may have told PIL to pad truncated files silently: we still refuse them.
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    with pytest.raises(DataError, match=problem) as error:
        load_scan(path)
    assert str(path) in str(error.value)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # and its setting is left as it was


def test_a_directory_is_not_a_scan(tmp_path):
    with pytest.raises(DataError, match="directory"):
        load_scan(tmp_path)
