"""What ``octbench list`` prints: registry entries, their one-line summaries, parameter counts.

Building the listing imports torch and every model (seconds on a small CPU), so it is cached as
JSON under ``$OCTBENCH_CACHE`` (default ``~/.cache/octbench``), keyed by the octbench source files;
a changed or added module rebuilds it. With plugins (``$OCTBENCH_PLUGINS``) the listing is built
live, because a plugin's entries can change without octbench's files changing.

Must not import: the CLI, runner, report or tuning.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

KINDS = ("models", "strategies", "datasets")
CATALOG_VERSION = 2  # bump when the cached layout changes


def catalog(*, use_cache: bool = True) -> dict[str, list[dict]]:
    """Every registered model, strategy and dataset: ``{kind: [{name, summary, ...}]}``.

    Models carry ``parameters``: trainable parameters at 28 px, 1 channel, 4 classes.

    Example:
        >>> [entry["name"] for entry in catalog()["strategies"]][:2]  # doctest: +SKIP
        ['balanced_softmax', 'class_balanced']
    """
    if not use_cache or os.environ.get("OCTBENCH_PLUGINS", "").strip():
        return build_catalog()
    path = _cache_path()
    try:
        cached = json.loads(path.read_text())
        if set(cached) == set(KINDS):
            return cached
    except (OSError, ValueError):
        pass  # missing or damaged: rebuild
    listing = build_catalog()
    try:
        from octbench.fileio import atomic_write_text

        atomic_write_text(path, json.dumps(listing, indent=1))
    except OSError as error:  # a read-only home is no reason to fail a listing
        log.debug("could not cache the listing at %s: %s", path, error)
    return listing


def build_catalog() -> dict[str, list[dict]]:
    """The listing, from the registries themselves (imports torch and builds each model)."""
    from octbench.data import DATASETS
    from octbench.models import MODELS
    from octbench.strategies import STRATEGIES

    models = [{"name": name, "summary": _summary(MODELS.get(name)), **_parameters(name)}
              for name in MODELS.names()]
    return {
        "models": models,
        "strategies": [{"name": n, "summary": _summary(STRATEGIES.get(n))}
                       for n in STRATEGIES.names()],
        "datasets": [{"name": n, "summary": _summary(DATASETS.get(n))} for n in DATASETS.names()],
    }


def model_parameters(name: str, **params) -> int:
    """Trainable parameters of a registered model at 28 px, 1 channel, 4 classes.

    The model is built on PyTorch's ``meta`` device (shapes only, no memory, no initialisation),
    falling back to a real build for a model that cannot be built there.
    """
    import torch

    from octbench.models import build_model, count_parameters

    try:
        with torch.device("meta"):
            return count_parameters(build_model(name, **params))
    except Exception:  # noqa: BLE001 - some layers initialise with real data
        return count_parameters(build_model(name, **params))


def _parameters(name: str) -> dict:
    try:
        return {"parameters": model_parameters(name), "error": None}
    except Exception as error:  # noqa: BLE001 - a plugin's broken factory: one line, not the list
        return {"parameters": None, "error": f"{type(error).__name__}: {error}"}


def _summary(fn) -> str:
    lines = (fn.__doc__ or "").strip().splitlines()
    return lines[0] if lines else ""


def _cache_path() -> Path:
    root = Path(os.environ.get("OCTBENCH_CACHE", "~/.cache/octbench")).expanduser()
    return root / f"catalog-{_source_key()}.json"


def _source_key() -> str:
    """A hash of the octbench package's files (name, size, mtime) and the catalog version."""
    package = Path(__file__).resolve().parent
    digest = hashlib.sha256(f"catalog {CATALOG_VERSION}".encode())
    for path in sorted(package.rglob("*.py")):
        stat = path.stat()
        digest.update(f"{path.relative_to(package)} {stat.st_size} {stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]
