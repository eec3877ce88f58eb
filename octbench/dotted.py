"""Dotted config paths: set ``{"train.lr": 0.01}`` in an experiment's plain data.

Owns the path syntax (``section.key``, with ``models.0`` / ``strategies.0`` as aliases of
``model`` / ``strategy``), setting a value at a path (:func:`with_values`: ``model.<param>``
sets the parameter of every listed model), and :class:`PathError` for a path that goes below a
value. Tuning's ``search:`` and the experiment's ``sweep:`` apply their values with it, then
validate the result with :func:`octbench.config.parse_config`.

Must not import: the rest of octbench (config, tuning and runner import this module), nor any
third-party package.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from typing import Any

#: Path prefixes that name the one model / strategy of a single-cell experiment.
ALIASES = {"models.0": "model", "strategies.0": "strategy"}
#: ``model`` -> the experiment key holding the list of models.
COMPONENTS = {"model": "models", "strategy": "strategies"}


class PathError(ValueError):
    """A dotted path that goes below a value (``train.lr.x`` when ``train.lr`` is a number)."""


def canonical_path(path: str) -> str:
    """The canonical spelling of a dotted path: ``models.0.<param>`` becomes ``model.<param>``.

    Example:
        >>> canonical_path("models.0.width"), canonical_path("train.lr")
        ('model.width', 'train.lr')
    """
    for alias, name in ALIASES.items():
        if path == alias or path.startswith(alias + "."):
            return name + path[len(alias):]
    return path


def set_path(raw: dict, path: str, value: Any) -> None:
    """Set ``value`` at the dotted ``path`` of ``raw`` in place, creating missing sections.

    Raises:
        PathError: if a prefix of ``path`` holds a value rather than a section.

    Example:
        >>> raw = {"train": {"epochs": 2}}
        >>> set_path(raw, "train.lr", 0.01); raw
        {'train': {'epochs': 2, 'lr': 0.01}}
        >>> set_path(raw, "train.lr.x", 1)  # doctest: +IGNORE_EXCEPTION_DETAIL
        Traceback (most recent call last):
        ...
        PathError: train.lr is a value, not a section; no path goes below it.
    """
    parts = path.split(".")
    node = raw
    for i, part in enumerate(parts[:-1]):
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise PathError(f"{'.'.join(parts[:i + 1])} is a value, not a section; "
                            "no path goes below it.")
    node[parts[-1]] = value


def with_values(raw: Mapping, values: Mapping[str, Any], *,
                 accepts: Callable[[str, str, str], bool] | None = None) -> dict:
    """A deep copy of ``raw`` with each ``{dotted.path: value}`` of ``values`` set;
    ``model.<param>`` / ``strategy.<param>`` set that parameter on every listed model /
    strategy (a bare name becomes ``{name: ...}``) for which ``accepts(kind, name, param)``
    holds (all of them without ``accepts``).

    Raises:
        PathError: if a path goes below a value, or no listed model / strategy accepts it.

    Example:
        >>> with_values({"models": ["a", {"name": "b", "w": 2}]}, {"model.pretrained": True})
        {'models': [{'name': 'a', 'pretrained': True}, {'name': 'b', 'w': 2, 'pretrained': True}]}
        >>> with_values({"strategies": ["none", "focal"]}, {"strategy.gamma": 1.0},
        ...              accepts=lambda kind, name, param: name == "focal")
        {'strategies': ['none', {'name': 'focal', 'gamma': 1.0}]}
    """
    out = copy.deepcopy(dict(raw))
    for path, value in values.items():
        head, _, param = canonical_path(path).partition(".")
        if head in COMPONENTS and param:
            key = COMPONENTS[head]
            entries = out.get(key) or []
            entries = entries if isinstance(entries, list) else [entries]
            takes = [accepts is None or accepts(head, _name(e), param) for e in entries]
            if entries and not any(takes):
                names = ", ".join(str(_name(e)) for e in entries)
                raise PathError(f"{path} names a parameter that no {head} of the experiment "
                                f"takes ({key}: {names}).")
            out[key] = [{**(e if isinstance(e, dict) else {"name": e}), param: value} if take
                        else e for e, take in zip(entries, takes, strict=True)]
        else:
            set_path(out, path, value)
    return out


def _name(entry) -> Any:
    """The name of a model / strategy entry: ``focal`` or ``{name: focal, ...}``."""
    return entry.get("name") if isinstance(entry, dict) else entry


def values_label(values: Mapping[str, Any], *, short: bool = False) -> str:
    """Swept values for people: ``data.size=64, train.lr=0.001``; ``short`` for run ids:
    ``size=64_lr=0.001`` (the last part of each path).

    Example:
        >>> values_label({"data.size": 64, "train.lr": 0.001}, short=True)
        'size=64_lr=0.001'
    """
    if short:
        return "_".join(f"{path.rpartition('.')[2]}={value}" for path, value in values.items())
    return ", ".join(f"{path}={value}" for path, value in values.items())
