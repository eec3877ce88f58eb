"""MedMNIST-C image corruptions (Di Salvo, Doerrich, Ledig 2024), taken from ``medmnistc``.

OCTMNIST's six corruptions and their five severities are ``medmnistc``'s own classes and
parameters (``CORRUPTIONS_DS["octmnist"]``), applied the way its ``DatasetManager`` builds the
published test sets: gray scan -> RGB -> ``corruption.apply(img, severity)`` -> gray (``L``).
Randomness (speckle noise, the motion-blur angle) comes from numpy's global generator, as in
``medmnistc``; here it is seeded per (corruption, severity, seed) and restored afterwards, so a
corrupted set does not depend on what was generated before it and training's random state is
untouched.

One deviation: ``medmnistc``'s ``MotionBlur`` calls ``np.fromstring``, which numpy 2 removed,
and mistakes a gray scan of another size than 224 px for a colour one. :class:`MotionBlur`
below is the same computation with ``np.frombuffer`` and a gray check that works at any size;
at 224 px its output is pixel-identical to the package's (tested).

``medmnistc`` needs ImageMagick (through Wand) and OpenCV: ``pip install "octbench[robustness]"``
plus the MagickWand library (``apt-get install libmagickwand-6.q16-6``); it is imported only
when a corruption is applied.

Must not import: octbench beyond L0 and data.preprocess (no torch: corruptions are host-side).
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np
from PIL import Image

from octbench.data.preprocess import preprocess_array
from octbench.errors import OctbenchError

#: OCTMNIST's corruptions in MedMNIST-C, in the package's order.
CORRUPTIONS = ("pixelate", "jpeg_compression", "speckle_noise", "defocus_blur", "motion_blur",
               "contrast_down")
SEVERITIES = (1, 2, 3, 4, 5)
#: MedMNIST-C corrupts the 224-px images; smaller runs resize the corrupted 224-px scan.
MEDMNIST_C_SIZE = 224

INSTALL_HINT = ('corrupted evaluation needs the robustness extra: pip install '
                '"octbench[robustness]" and the ImageMagick library (Debian/Ubuntu: apt-get '
                'install libmagickwand-6.q16-6)')


def require_medmnistc():
    """Import ``medmnistc``'s OCTMNIST corruptions, or fail with the install hint.

    Raises:
        OctbenchError: ``medmnistc``, Wand/ImageMagick or OpenCV is missing.
    """
    try:
        from medmnistc.corruptions import filter as medmnistc_filter
        from medmnistc.corruptions.registry import CORRUPTIONS_DS
    except ImportError as error:  # Wand raises ImportError when ImageMagick is missing too
        raise OctbenchError(f"{INSTALL_HINT} ({error}).") from None
    return CORRUPTIONS_DS, medmnistc_filter


@functools.cache
def corruptors() -> dict:
    """``{name: corruption object}`` for OCTMNIST, with :class:`MotionBlur` fixed for numpy 2."""
    registry, medmnistc_filter = require_medmnistc()
    table = dict(registry["octmnist"])

    class MotionBlur(medmnistc_filter.MotionBlur):
        """``medmnistc``'s MotionBlur with ``np.frombuffer`` and a gray check at any size."""

        def apply(self, img, severity=-1, augmentation=False):
            if augmentation:
                low, high = self.severity_params[0], self.severity_params[-1]
                radius = np.random.uniform(low=low[0], high=high[0])
                sigma = np.random.uniform(low=low[1], high=high[1])
            else:
                radius, sigma = self.severity_params[severity]
            with medmnistc_filter.BytesIO() as output:
                img.save(output, format="PNG")
                image = medmnistc_filter.MotionImage(blob=output.getvalue())
            image.motion_blur(radius=radius, sigma=sigma, angle=np.random.uniform(-45, 45))
            decoded = medmnistc_filter.cv2.imdecode(np.frombuffer(image.make_blob(), np.uint8),
                                                    medmnistc_filter.cv2.IMREAD_UNCHANGED)
            if decoded.ndim == 3:
                return np.clip(decoded[..., [2, 1, 0]], 0, 255).astype(np.uint8)  # BGR -> RGB
            return np.clip(np.stack([decoded] * 3, axis=-1), 0, 255).astype(np.uint8)

    table["motion_blur"] = MotionBlur(table["motion_blur"].severity_params)
    return table


def medmnistc_version() -> str:
    try:
        return importlib.metadata.version("medmnistc")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def check_names(names: Sequence[str], severities: Sequence[int]) -> list[str]:
    """Problems with corruption names and severities (empty when all are known)."""
    problems = [f"unknown corruption '{n}'; choose from {', '.join(CORRUPTIONS)}"
                for n in names if n not in CORRUPTIONS]
    problems += [f"severity {s!r} is not one of {', '.join(map(str, SEVERITIES))}"
                 for s in severities if s not in SEVERITIES]
    return problems


@contextmanager
def numpy_seed(seed: int) -> Iterator[None]:
    """Seed numpy's global generator (``medmnistc`` draws from it) and restore it afterwards."""
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


def cell_seed(name: str, severity: int, seed: int) -> int:
    """A seed per (corruption, severity, seed), independent of which other cells exist."""
    digest = hashlib.sha256(f"{name}:{severity}:{seed}".encode()).digest()
    return int.from_bytes(digest[:4], "big")


def corrupt_image(image: np.ndarray, name: str, severity: int) -> np.ndarray:
    """One gray uint8 scan (H, W) corrupted as ``medmnistc``'s DatasetManager does it.

    Draws from numpy's global generator (seed it, e.g. with :func:`numpy_seed`).
    """
    rgb = Image.fromarray(np.asarray(image, dtype=np.uint8)).convert("RGB")
    out = corruptors()[name].apply(rgb, severity - 1)
    return np.array(Image.fromarray(out).convert("L"))


def corrupt_images(images: np.ndarray, name: str, severity: int, *, seed: int,
                   size: int | None = None, progress=None) -> np.ndarray:
    """Corrupt gray uint8 scans (N, H, W) at ``severity`` (1-5); resize each corrupted scan to
    ``size`` px the way OCTMNIST's clean images were made (:func:`preprocess_array`) when
    ``size`` differs from H.

    Example:
        >>> corrupt_images(np.zeros((2, 224, 224), np.uint8), "pixelate", 3, seed=0,
        ...                size=28).shape  # doctest: +SKIP
        (2, 28, 28)
    """
    problems = check_names([name], [severity])
    if problems:
        raise OctbenchError("; ".join(problems) + ".")
    size = size or images.shape[1]
    out = np.empty((len(images), size, size), dtype=np.uint8)
    with numpy_seed(cell_seed(name, severity, seed)):
        for index, image in enumerate(images):
            corrupted = corrupt_image(image, name, severity)
            out[index] = corrupted if size == corrupted.shape[0] else preprocess_array(
                corrupted, size=size)
            if progress is not None:
                progress.update(1)
    return out


def random_corruptions(images: np.ndarray, *, seed: int) -> np.ndarray:
    """Training augmentation of MedMNIST-C (its ``AugMedMNISTC``): each gray uint8 scan gets one
    corruption drawn uniformly among the six and *identity*, with a severity drawn uniformly
    between the mildest and the strongest level, at the scan's own size."""
    table = corruptors()
    choices = (*CORRUPTIONS, "identity")
    out = np.array(images, dtype=np.uint8, copy=True)
    with numpy_seed(seed):
        for index, image in enumerate(images):
            name = choices[np.random.randint(len(choices))]
            if name == "identity":
                continue
            rgb = Image.fromarray(image).convert("RGB")
            corrupted = table[name].apply(rgb, augmentation=True)
            out[index] = np.array(Image.fromarray(corrupted).convert("L"))
    return out
