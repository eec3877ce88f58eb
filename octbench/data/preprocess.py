"""Turn a raw retinal OCT B-scan into a model input the way MedMNIST built OCTMNIST.

MedMNIST v2 (Yang et al. 2023, and ``on_medmnist_plus.md`` in its repository) describes the
OCTMNIST recipe: the gray-scale source scans of (384-1,536) x (277-512) px are center-cropped
with a square window the length of the short edge, then resized to 28 x 28 (64/128/224 for
MedMNIST+). The steps here are the same: grayscale -> 8 bit -> center crop -> resize.

Must not import: octbench beyond errors (no torch either).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

from octbench.errors import DataError

#: The resampling filter. MedMNIST's paper and ``on_medmnist_plus.md`` name none, and its
#: repository holds no generation script; its README lists Pillow 8.0.1 as the tested version,
#: whose ``Image.resize`` default is BICUBIC (the default since Pillow 7.0; an antialiasing
#: convolution since Pillow 2.7, so 496 -> 28 px averages the whole footprint of each output
#: pixel instead of aliasing speckle). Best evidence, not a documented fact.
RESAMPLE = Image.Resampling.BICUBIC

#: The most pixels decoded from one scan file: PIL's own warning threshold (about 89 MP, a
#: quarter gigabyte as RGB), far above any OCT B-scan.
MAX_SCAN_PIXELS = Image.MAX_IMAGE_PIXELS or 89_478_485

# PIL modes whose pixels numpy reads directly; anything else (palette, CMYK, YCbCr, ...) is
# converted to RGB(A) first.
_DIRECT_MODES = {"1", "L", "LA", "RGB", "RGBA", "I;16", "I;16L", "I;16B", "I", "F"}


def load_scan(path: str | Path, *, size: int = 28) -> np.ndarray:
    """Read a B-scan file (PNG, JPEG, TIFF, ...) and preprocess it like OCTMNIST.

    Any size, 8 or 16 bit, grayscale, RGB(A) or palette images are accepted.

    Args:
        path: the image file.
        size: output side in pixels (28 for OCTMNIST; 64, 128, 224 for MedMNIST+).

    Returns:
        uint8 array of shape ``(size, size)``.

    Raises:
        DataError: the file is missing, empty, not an image, truncated or of an unusable mode.

    Example:
        >>> load_scan("tests/data/NORMAL-12494-1.jpeg").shape
        (28, 28)
    """
    gray = read_scan(path)
    try:
        return preprocess_array(gray, size=size)
    except DataError as error:
        raise DataError(f"cannot use OCT scan {path}: {error}") from None


def read_scan(path: str | Path) -> np.ndarray:
    """Decode a B-scan file at full size into 8-bit grayscale, as :func:`load_scan` sees it.

    Raises:
        DataError: as :func:`load_scan`.
    """
    path = Path(path)
    if not path.is_file():
        why = "it is a directory; pass one scan file" if path.is_dir() else "no such file"
        raise DataError(f"cannot read OCT scan {path}: {why}. Check the path.")
    if path.stat().st_size == 0:
        raise DataError(f"cannot read OCT scan {path}: the file is empty. Re-export the scan.")
    # PIL decodes lazily and, with LOAD_TRUNCATED_IMAGES set (a global other libraries flip),
    # pads a truncated file with gray; decode here, strictly, so a damaged scan fails loudly.
    previous = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        with Image.open(path) as image:
            _check_pixels(path, *image.size)
            image.load()
            array = _pil_to_array(image)
    except Image.DecompressionBombError:  # PIL's own limit (2x ours), hit while opening
        raise DataError(_too_large(path)) from None
    except UnidentifiedImageError:
        raise DataError(
            f"cannot read OCT scan {path}: not an image file PIL can decode. "
            "Export the scan as PNG, JPEG or TIFF."
        ) from None
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        raise DataError(
            f"cannot read OCT scan {path}: the image data is damaged or truncated ({error}). "
            "Re-export or re-download the scan."
        ) from None
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = previous
    try:
        return _to_gray_uint8(array)
    except DataError as error:
        raise DataError(f"cannot use OCT scan {path}: {error}") from None


def _check_pixels(path: Path, width: int, height: int) -> None:
    # Checked from the header, before decoding: a crafted file can claim gigapixels.
    if width * height > MAX_SCAN_PIXELS:
        raise DataError(_too_large(path, f"{width} x {height} px"))


def _too_large(path: Path, size: str = "") -> str:
    return (f"cannot read OCT scan {path}: too large{f' ({size})' if size else ''}; octbench "
            f"decodes at most {MAX_SCAN_PIXELS:,} pixels per scan (OCT B-scans are about "
            "512 x 1,536 px). Downscale or crop it first.")


def preprocess_array(image: np.ndarray, *, size: int = 28) -> np.ndarray:
    """Preprocess an already-decoded B-scan like OCTMNIST (shared by :func:`load_scan`).

    Args:
        image: ``(H, W)`` grayscale or ``(H, W, C)`` with C = 1 (gray), 2 (gray + alpha),
            3 (RGB) or 4 (RGBA); dtype uint8 (0-255), uint16 (0-65535), bool, or float in
            [0, 1]. Alpha is ignored, as PIL's ``convert("L")`` ignores it.
        size: output side in pixels.

    Returns:
        uint8 array of shape ``(size, size)``.

    Raises:
        DataError: the array's shape, dtype or value range is not an image's.

    Example:
        >>> scan = np.zeros((496, 512), dtype=np.uint8)
        >>> preprocess_array(scan, size=64).shape
        (64, 64)
    """
    if isinstance(size, bool) or not isinstance(size, int | np.integer) or size < 1:
        raise DataError(f"size must be a positive integer; got {size!r}.")
    gray = _to_gray_uint8(np.asarray(image))
    height, width = gray.shape
    side = min(height, width)
    left, top = (width - side) // 2, (height - side) // 2
    square = Image.fromarray(gray).crop((left, top, left + side, top + side))
    return np.asarray(square.resize((size, size), RESAMPLE))


def _pil_to_array(image: Image.Image) -> np.ndarray:
    if image.mode not in _DIRECT_MODES:
        transparent = image.mode in ("PA", "RGBa") or "transparency" in image.info
        image = image.convert("RGBA" if transparent else "RGB")
    array = np.asarray(image)
    if image.mode == "I":
        # 16-bit PNGs can open as 32-bit "I"; values beyond 16 bits are not a scan we know.
        if array.size and (array.min() < 0 or array.max() > 65535):
            raise DataError("32-bit integer pixels outside 0-65535; save the scan as 8 or 16 bit")
        array = array.astype(np.uint16)
    return array


def _to_gray_uint8(image: np.ndarray) -> np.ndarray:
    shape = image.shape
    if image.ndim == 3 and shape[2] in (1, 2):
        image = image[..., 0]  # gray (+ alpha)
    elif image.ndim == 3 and shape[2] in (3, 4):
        image = image[..., :3]  # RGB (+ alpha)
    if image.ndim not in (2, 3) or image.size == 0 or image.ndim == 3 and shape[2] > 4:
        raise DataError(
            f"an image array has shape {shape}; expected (H, W) grayscale or (H, W, C) with "
            "C = 1 (gray), 2 (gray + alpha), 3 (RGB) or 4 (RGBA)."
        )
    image = _to_uint8(image)
    if image.ndim == 3:
        # PIL's ITU-R 601-2 luma, as for the JPEG sources; a gray RGB scan maps to itself.
        image = np.asarray(Image.fromarray(np.ascontiguousarray(image), "RGB").convert("L"))
    return image


def _to_uint8(image: np.ndarray) -> np.ndarray:
    if image.dtype == np.uint8:
        return image
    if image.dtype == np.bool_:
        return image.astype(np.uint8) * 255
    if image.dtype.kind == "u" and image.dtype.itemsize == 2:  # uint16, either byte order
        # Divide by 257 (= 65535 / 255): a fixed map that sends 0 -> 0 and 65535 -> 255 and is
        # exact for 8-bit data stored as 16 bit (v * 257). Per-image min-max stretching would
        # brighten dim scans and darken bright ones, destroying the intensities that tell
        # fluid from tissue; clipping (or >> 8 without rounding) would bias or saturate them.
        return np.round(image / 257.0).astype(np.uint8)
    if np.issubdtype(image.dtype, np.floating):
        if not np.isfinite(image).all() or image.min() < 0 or image.max() > 1:
            raise DataError(
                f"a float image has values in [{np.nanmin(image):g}, {np.nanmax(image):g}]; "
                "expected [0, 1]. Scale it to [0, 1] or pass uint8 / uint16 pixels."
            )
        return np.round(image * 255.0).astype(np.uint8)
    raise DataError(
        f"an image array has dtype {image.dtype}; expected uint8, uint16, bool or float in "
        "[0, 1]. Cast it, e.g. `image.astype(np.uint16)` for 16-bit pixels."
    )
