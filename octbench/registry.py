"""Name -> factory registries for datasets, models and strategies.

A new entry is one decorated, keyword-only function whose name is the registry key (as timm's
``@register_model``). The function's signature *is* its parameter schema: the config validator
checks unknown keys against it, types against its annotations, and ranges against the optional
constraints given to :meth:`Registry.register`.

Must not import: octbench beyond errors (every registry is built on it).
"""

from __future__ import annotations

import difflib
import inspect
import math
import types
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from octbench.errors import OctbenchError

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class Interval:
    """A numeric range constraint, e.g. ``Interval(0, None)`` for ">= 0"."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def __contains__(self, value: float) -> bool:
        if not is_finite(value):  # NaN compares False with everything: it would pass any range
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        if self.high is not None and (value >= self.high if self.high_open else value > self.high):
            return False
        return True

    def __str__(self) -> str:
        parts = []
        if self.low is not None:
            parts.append(f"{'>' if self.low_open else '>='} {_number(self.low)}")
        if self.high is not None:
            parts.append(f"{'<' if self.high_open else '<='} {_number(self.high)}")
        return " and ".join(parts) or "any number"


def _number(value: float) -> str:
    return str(value) if isinstance(value, int) else f"{value:g}"


@dataclass(frozen=True)
class OneOf:
    """A constraint that the value is one of a fixed set of choices."""

    choices: tuple[Any, ...]

    def __contains__(self, value: Any) -> bool:
        return value in self.choices

    def __str__(self) -> str:
        return "one of " + ", ".join(repr(c) for c in self.choices)


Constraint = Interval | OneOf


@dataclass(frozen=True)
class Parameter:
    """What a config may give one parameter of an entry: its type (a typing annotation), whether
    it must be given, and its range. As JSON (:meth:`to_json`) it travels without the entry's
    code, so a config's parameters can be checked before torch is imported."""

    annotation: Any
    required: bool = False
    constraint: Constraint | None = None

    def to_json(self) -> dict:
        constraint = self.constraint
        return {"type": _type_to_json(self.annotation), "required": self.required,
                "constraint": None if constraint is None else
                {"one_of": list(constraint.choices)} if isinstance(constraint, OneOf) else
                {"interval": [constraint.low, constraint.high, constraint.low_open,
                              constraint.high_open]}}

    @classmethod
    def from_json(cls, data: dict) -> Parameter:
        """Raises ValueError, KeyError or TypeError for data not made by :meth:`to_json`."""
        found = data["constraint"]
        constraint = (None if found is None else OneOf(tuple(found["one_of"])) if "one_of" in found
                      else Interval(*found["interval"]))
        return cls(_type_from_json(data["type"]), bool(data["required"]), constraint)


#: Types a parameter's annotation is made of, by their JSON names.
_TYPES = {"int": int, "float": float, "bool": bool, "str": str, "none": type(None)}


def _type_to_json(annotation) -> Any:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        return {"union": [_type_to_json(a) for a in args]}
    if origin is typing.Literal and all(isinstance(a, int | float | str | bool) for a in args):
        return {"literal": list(args)}
    if origin is list and args:
        return {"list": _type_to_json(args[0])}
    names = {t: name for name, t in _TYPES.items()}
    return names.get(annotation, "any")  # anything else is checked when the entry is built


def _type_from_json(data) -> Any:
    if isinstance(data, dict) and "union" in data:
        return typing.Union[tuple(_type_from_json(a) for a in data["union"])]  # noqa: UP007
    if isinstance(data, dict) and "literal" in data:
        return typing.Literal[tuple(data["literal"])]
    if isinstance(data, dict) and "list" in data:
        return list[_type_from_json(data["list"])]
    return Any if data == "any" else _TYPES[data]


def is_finite(value: Any) -> bool:
    """False for NaN and +-inf anywhere in ``value`` (a number, or lists and mappings of them).

    The one rule that keeps non-finite numbers out of every config: NaN compares False with
    any bound and inf passes every lower bound, so range checks alone let them through.
    """
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(is_finite(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return all(is_finite(v) for v in value)
    return True


#: What people write for a name that spelling alone would not lead to (no letters in common).
SYNONYMS = {"learning_rate": "lr", "learningrate": "lr", "gpu": "cuda", "gpus": "cuda",
            "num_epochs": "epochs", "n_epochs": "epochs", "batch": "batch_size",
            "bs": "batch_size", "wd": "weight_decay", "loss": "strategies"}


def did_you_mean(name: str, choices: list[str]) -> str:
    """Return ' Did you mean 'x'?' for the closest choice, or '' when none is close.

    Example:
        >>> did_you_mean("learning_rate", ["epochs", "lr"])
        " Did you mean 'lr'?"
    """
    synonym = SYNONYMS.get(name.lower())
    if synonym in choices:
        return f" Did you mean '{synonym}'?"
    close = difflib.get_close_matches(name, choices, n=1, cutoff=0.6)
    return f" Did you mean '{close[0]}'?" if close else ""


def unknown_name_message(kind: str, name: str, names: list[str]) -> str:
    """"unknown model 'x'. Did you mean 'y'? Choices: ..." for a name missing from ``names``."""
    return f"unknown {kind} '{name}'.{did_you_mean(name, names)} Choices: {', '.join(names)}."


TIMM_PREFIX = "timm:"


def unknown_model_message(name: str, registered: list[str], timm_names: list[str]) -> str | None:
    """The problem with a model name, or None when it exists: a registered name, or
    ``timm:<name>`` with a name timm knows. A bare timm name is pointed to its ``timm:`` form.

    Example:
        >>> "'timm:resnet18'" in unknown_model_message("resnet18", ["resnet18_28"], ["resnet18"])
        True
    """
    if name.startswith(TIMM_PREFIX):
        inner = name[len(TIMM_PREFIX):]
        if inner in timm_names:
            return None
        return (f"unknown timm model '{inner}'.{did_you_mean(inner, timm_names)} "
                "`octbench list models --timm NAME` searches timm's model names.")
    if name in registered:
        return None
    close = difflib.get_close_matches(name, registered, n=1, cutoff=0.6)
    suggestions = [f"'{close[0]}'"] if close else []
    if name in timm_names:
        suggestions.append(f"'timm:{name}' (timm's {name})")
    hint = f" Did you mean {', or '.join(suggestions)}?" if suggestions else ""
    return (f"unknown model '{name}'.{hint} Choices: {', '.join(registered)}, or timm:<name> "
            "(`octbench list models --timm NAME` searches).")
#: Seeds anywhere (the grid's ``seeds``, a dataset's ``seed``): numpy's 32-bit range.
SEED_RANGE = Interval(0, 2**32 - 1)


class Registry:
    """A named collection of factories.

    Example:
        >>> MODELS = Registry("model")
        >>> @MODELS.register(width=Interval(0, None, low_open=True))
        ... def tiny(*, num_classes: int = 4, width: float = 1.0): ...
        >>> MODELS.names()
        ['tiny']
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Callable[..., Any]] = {}
        self._constraints: dict[str, dict[str, Constraint]] = {}

    def register(self, fn: F | None = None, *, name: str | None = None, **constraints: Constraint):
        """Register ``fn`` under ``name`` (default: its ``__name__``); duplicates are refused."""

        def decorator(f: F) -> F:
            key = name or f.__name__
            if key in self._entries:
                raise ValueError(f"{self.kind} '{key}' is already registered")
            self._entries[key] = f
            # A parameter named `seed` follows the grid's rule for seeds unless told otherwise
            # (numpy's seeds are 32-bit and never negative).
            defaults = {"seed": SEED_RANGE} if "seed" in inspect.signature(f).parameters else {}
            self._constraints[key] = {**defaults, **constraints}
            return f

        return decorator(fn) if fn is not None else decorator

    def get(self, name: str) -> Callable[..., Any]:
        """Return the factory called ``name``, or fail listing the choices and the closest one."""
        try:
            return self._entries[name]
        except KeyError:
            raise OctbenchError(self.unknown_message(name)) from None

    def unknown_message(self, name: str) -> str:
        return unknown_name_message(self.kind, name, self.names())

    def names(self) -> list[str]:
        return sorted(self._entries)

    def constraints(self, name: str) -> dict[str, Constraint]:
        return self._constraints[name]

    def parameters(self, name: str) -> dict[str, inspect.Parameter]:
        """The keyword parameters a user may set for ``name`` (with defaults and annotations)."""
        signature = inspect.signature(self.get(name), eval_str=True)
        return {
            p.name: p
            for p in signature.parameters.values()
            if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
        }

    def schema(self, name: str, skip=()) -> dict[str, Parameter]:
        """The parameters a config may give ``name`` (but those in ``skip``, which come from
        the data), with their types, whether required, and ranges."""
        constraints = self.constraints(name)
        return {key: Parameter(Any if p.annotation is p.empty else p.annotation,
                               p.default is p.empty, constraints.get(key))
                for key, p in self.parameters(name).items() if key not in skip}

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)
