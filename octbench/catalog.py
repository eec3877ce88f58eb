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

from octbench.fileio import atomic_write_text
from octbench.plugins import plugin_names
from octbench.registry import Parameter

log = logging.getLogger(__name__)

KINDS = ("models", "strategies", "datasets", "augmentations", "timm")
CATALOG_VERSION = 4  # bump when the cached layout changes
#: Factory arguments that come from the data, not from the YAML (never listed).
FROM_DATA = ("num_classes", "in_chans", "img_size", "class_counts")


def catalog(*, use_cache: bool = True) -> dict[str, list[dict]]:
    """Every registered model, strategy, dataset and augmentation, and timm's model names:
    ``{kind: [{name, summary, settings, ...}]}`` (``timm``: a list of names, empty without timm).

    Models carry ``parameters``: trainable parameters at 28 px, 1 channel, 4 classes; every
    entry carries ``settings``: its YAML parameters with their defaults, as text, and
    ``schema``: their types and ranges (:meth:`octbench.registry.Parameter.to_json`), so that a
    config's parameters are checked before torch is imported (:func:`parameter_schemas`).

    Example:
        >>> [entry["name"] for entry in catalog()["strategies"]][:2]  # doctest: +SKIP
        ['balanced_softmax', 'class_balanced']
    """
    if not use_cache or plugin_names().strip():
        return build_catalog()
    cached = cached_catalog()
    if cached is not None:
        return cached
    listing = build_catalog()  # missing, damaged or stale: rebuild
    path = _cache_path()
    try:
        atomic_write_text(path, json.dumps(listing, indent=1))
    except OSError as error:  # a read-only home is no reason to fail a listing
        log.debug("could not cache the listing at %s: %s", path, error)
    return listing


def cached_catalog() -> dict[str, list] | None:
    """The cached listing if it is there and current, else None; never builds it (no torch)."""
    if plugin_names().strip():
        return None
    try:
        cached = json.loads(_cache_path().read_text())
    except (OSError, ValueError):
        return None
    return cached if isinstance(cached, dict) and set(cached) == set(KINDS) else None


def parameter_schemas(listing: dict) -> dict[str, dict[str, dict[str, Parameter]]]:
    """``{kind: {name: {parameter: Parameter}}}`` for models, strategies and datasets, from a
    listing (:func:`cached_catalog`); an entry whose schema cannot be read is left out (and
    checked when the config is parsed)."""
    schemas: dict[str, dict] = {}
    for kind, plural in (("model", "models"), ("strategy", "strategies"),
                         ("dataset", "datasets")):
        schemas[kind] = {}
        for entry in listing.get(plural, []):
            try:
                schemas[kind][entry["name"]] = {key: Parameter.from_json(value)
                                                for key, value in entry["schema"].items()}
            except (KeyError, TypeError, ValueError, AttributeError):
                continue
    return schemas


def build_catalog() -> dict[str, list]:
    """The listing, from the registries themselves (imports torch and builds each model)."""
    from octbench.augment import AUGMENTATIONS
    from octbench.data import DATASETS
    from octbench.models import MODELS
    from octbench.strategies import STRATEGIES

    def entries(registry, **extra):
        return [{"name": name, "summary": _summary(registry.get(name)),
                 "settings": _settings(registry, name),
                 "schema": {key: parameter.to_json()
                            for key, parameter in registry.schema(name, FROM_DATA).items()},
                 **{key: make(name) for key, make in extra.items()}}
                for name in registry.names()]

    listing = {"models": [{**entry, **_parameters(entry["name"])} for entry in entries(MODELS)]}
    listing.update(strategies=entries(STRATEGIES), datasets=entries(DATASETS),
                   augmentations=entries(AUGMENTATIONS), timm=_timm_names())
    return listing


def _settings(registry, name: str) -> str:
    """``gamma=2.0, alpha=None``: the YAML parameters of an entry with their defaults."""
    parameters = [p for key, p in registry.parameters(name).items() if key not in FROM_DATA]
    return ", ".join(p.name if p.default is p.empty else f"{p.name}={_shown(p.default)}"
                     for p in parameters)


def _shown(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else repr(value)


def _timm_names() -> list[str]:
    try:
        import timm
    except ImportError:  # timm is a dependency, but a listing should not need it
        return []
    return timm.list_models()


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
    """The first docstring line, without reStructuredText's double backticks."""
    paragraph = (fn.__doc__ or "").strip().split("\n\n")[0]
    return " ".join(paragraph.split()).replace("``", "")


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
