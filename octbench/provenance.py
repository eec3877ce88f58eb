"""What a run records about where it came from: library versions, the source commit, and the
data a checkpoint learned from.

Must not import: the CLI, report or tuning.
"""

from __future__ import annotations

import functools
import importlib.metadata
import platform
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from octbench.data import OCTData


def provenance(data: OCTData, normalize: tuple[float, float]) -> dict:
    """What a checkpoint must say about the data it learned from and how its pixels were fed to
    the model (plain types only, so that ``torch.load(weights_only=True)`` reads it)."""
    return {
        "dataset": data.name,
        "fingerprint": data.fingerprint,
        "synthetic": bool(data.synthetic),
        "class_names": list(data.class_names),
        "img_size": int(data.size),
        "normalisation": {"scale": 1 / 255, "mean": normalize[0], "std": normalize[1]},
        "source": {k: v for k, v in data.source.items() if isinstance(v, str | int | float)},
    }


@functools.cache
def versions() -> dict:
    """Versions of Python and the libraries that decide a run's numbers."""
    found = {"python": platform.python_version()}
    for package in ("octbench", "torch", "torchvision", "timm", "numpy", "scikit-learn"):
        try:
            found[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            found[package] = None
    return found


@functools.cache
def git_commit() -> str | None:
    """The octbench source commit (with ``-dirty`` for local changes), when it is a checkout."""
    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"],
                                capture_output=True, text=True, timeout=5)
        if commit.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--", "."],
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return commit.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None
