"""OCTMNIST from MedMNIST v2 (Yang et al. 2023), read straight from medmnist's npz file.

medmnist checks the MD5 only when it downloads; a file that is already present is checked here
too, so a corrupt or substituted file never produces numbers that look like OCTMNIST results.

Must not import: octbench beyond ``octbench.data``, errors and the registry.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from octbench.data._registry import AVAILABILITY_CHECKS, DATASETS, fingerprinter
from octbench.data.dataset import OCT_CLASSES, OCTData, from_arrays
from octbench.data.npz import read_npz
from octbench.errors import DataError
from octbench.registry import OneOf

SIZES = (28, 64, 128, 224)


def octmnist_file(size: int, root: str | None) -> tuple[Path, str, str]:
    """Return (expected path, download URL, MD5) of OCTMNIST at ``size`` px."""
    from medmnist import INFO
    from medmnist.info import DEFAULT_ROOT

    info = INFO["octmnist"]
    flag = "" if size == 28 else f"_{size}"
    path = Path(root or DEFAULT_ROOT).expanduser() / f"octmnist{flag}.npz"
    return path, info[f"url{flag}"], info[f"MD5{flag}"]


def _download(path: Path, url: str, md5: str) -> None:
    from torchvision.datasets.utils import download_url

    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        download_url(url, root=str(path.parent), filename=path.name, md5=md5)
    except Exception as error:  # any network failure means "offline" to the user
        raise DataError(_missing_message(path, url, md5, f"download failed ({error})")) from None


def _missing_message(path: Path, url: str, md5: str, why: str) -> str:
    return (
        f"OCTMNIST is not available: {why}. Download {url} (MD5 {md5}) and put it at {path}, "
        "or set `data: {name: octmnist, download: true}` on a machine with internet. Offline, "
        "use `data: {name: synthetic}` (built-in synthetic OCT data) or "
        "`data: {name: npz, path: FILE.npz}` (any MedMNIST-format file)."
    )


@fingerprinter("octmnist")
def octmnist_fingerprint(*, size: int = 28, **_) -> str:
    """OCTMNIST's published MD5 at ``size`` px: the loader refuses any file that does not match."""
    return f"md5:{octmnist_file(size, None)[2]}"
def _octmnist_available(*, size: int = 28, root: str | None = None, download: bool = False,
                        **_) -> str:
    path, url, md5 = octmnist_file(size, root)
    if path.is_file():
        return f"OCTMNIST at {path}"
    if download:
        return f"OCTMNIST, downloaded from {url} to {path} when the run starts"
    raise DataError(_missing_message(path, url, md5, f"{path} does not exist"))


AVAILABILITY_CHECKS["octmnist"] = _octmnist_available


@DATASETS.register(size=OneOf(SIZES))
def octmnist(*, size: int = 28, root: str | None = None, download: bool = False) -> OCTData:
    """OCTMNIST (MedMNIST v2): retinal OCT, 4 classes, official train/val/test splits.

    Args:
        size: image side, one of 28, 64, 128, 224.
        root: folder holding ``octmnist[_SIZE].npz``; default medmnist's (``~/.medmnist``).
        download: fetch the file from Zenodo when it is missing.
    """
    from torchvision.datasets.utils import check_integrity

    path, url, md5 = octmnist_file(size, root)
    if not path.is_file():
        if not download:
            raise DataError(_missing_message(path, url, md5, f"{path} does not exist"))
        _download(path, url, md5)
    if not check_integrity(str(path), md5):
        raise DataError(
            f"{path} fails its MD5 check (expected {md5}): the file is corrupt or not the "
            f"official OCTMNIST. Delete it and download {url} again."
        )
    return from_arrays(
        read_npz(path),
        name="octmnist",
        origin=str(path),
        synthetic=False,
        class_names=OCT_CLASSES,
        source={"path": str(path), "md5": md5, "url": url},
        fingerprint=f"md5:{md5}",
    )


def octmnist_test_split(*, size: int = 224, root: str | None = None
                        ) -> tuple[np.ndarray, np.ndarray, str]:
    """Only OCTMNIST's test split at ``size`` px: ``(images (N, S, S) uint8, labels (N,),
    fingerprint)``, without loading the training images (97,477 of them are 4.9 GB at 224 px).

    Raises:
        DataError: the file is missing or fails its MD5 check.
    """
    from torchvision.datasets.utils import check_integrity

    path, url, md5 = octmnist_file(size, root)
    if not path.is_file():
        raise DataError(_missing_message(path, url, md5, f"{path} does not exist"))
    if not check_integrity(str(path), md5):
        raise DataError(f"{path} fails its MD5 check (expected {md5}): the file is corrupt or "
                        f"not the official OCTMNIST. Delete it and download {url} again.")
    with np.load(path, allow_pickle=False) as npz:
        images, labels = npz["test_images"], npz["test_labels"]
    return images, labels.reshape(-1).astype(np.int64), f"md5:{md5}"
