"""The one declarative validator: a value against its annotation and constraint, a section
against its dataclass, a component against its registry entry's signature, a grid axis against
duplicates. Every problem is collected with its YAML path, sklearn-style: "train.epochs must be
an int >= 1. Got 0 instead."

Must not import: the registries (they are passed in), or anything that imports torch.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from typing import Any, Literal

from octbench.config.schema import Component
from octbench.registry import Parameter, Registry, did_you_mean, is_finite


def type_name(annotation) -> str:
    """How a message names a parameter's type: ``a float or null``."""
    origin = typing.get_origin(annotation)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(type_name(a) for a in typing.get_args(annotation))
    if origin is list:
        return f"a list of {type_name(typing.get_args(annotation)[0])}"
    if annotation is type(None):
        return "null"
    return {int: "an int", float: "a float", bool: "a bool", str: "a string"}.get(
        annotation, getattr(annotation, "__name__", str(annotation))
    )


def _coerce(value: Any, annotation) -> tuple[bool, Any]:
    """Return (ok, value) with ints widened to float where a float is wanted."""
    origin = typing.get_origin(annotation)
    if annotation is Any:
        return True, value
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(annotation):
            ok, coerced = _coerce(value, option)
            if ok:
                return True, coerced
        return False, value
    if origin is Literal:
        return value in typing.get_args(annotation), value
    if origin is list:
        if not isinstance(value, list):
            return False, value
        items = [_coerce(v, typing.get_args(annotation)[0]) for v in value]
        return all(ok for ok, _ in items), [v for _, v in items]
    if annotation is type(None):
        return value is None, value
    if annotation is bool:
        return isinstance(value, bool), value
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if annotation is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return ok, float(value) if ok else value
    if annotation is str:
        return isinstance(value, str), value
    return True, value


def check_value(problems, path, value, annotation, constraint, owner=""):
    if not is_finite(value):
        problems.append(f"{owner}{path} must be a finite number. Got {value!r} instead.")
        return value
    ok, coerced = _coerce(value, annotation)
    if not ok:
        literal = typing.get_origin(annotation) is Literal
        hint = did_you_mean(str(value), [str(a) for a in typing.get_args(annotation)]) if (
            literal and isinstance(value, str)) else ""
        problems.append(f"{owner}{path} must be {type_name(annotation)}. "
                        f"Got {value!r} instead.{hint}")
        return value
    if constraint is not None and coerced is not None and coerced not in constraint:
        problems.append(f"{owner}{path} must be {constraint}. Got {value!r} instead.")
    return coerced


def parse_section(problems, raw, cls, path):
    """Validate a mapping against a frozen dataclass's typed fields and constraints."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        problems.append(f"{path} must be a mapping. Got {raw!r} instead.")
        return cls()
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    values = {}
    for key, value in raw.items():
        if key not in fields:
            problems.append(f"unknown key '{path}.{key}'.{did_you_mean(str(key), list(fields))} "
                            f"Valid keys: {', '.join(fields)}.")
            continue
        count = len(problems)
        checked = check_value(problems, f"{path}.{key}", value, hints[key],
                               fields[key].metadata.get("check"))
        if len(problems) == count:  # a refused value keeps the default: later checks stay sane
            values[key] = checked
    return cls(**values)


def parse_component(problems, raw, path, registry: Registry, *, data_params=(),
                     known=None, external=None) -> Component | None:
    """Validate ``name`` or ``{name: ..., **params}`` against a registry entry's signature.

    ``known(name)`` admits names outside the registry (``timm:...``), whose parameters
    ``external(name, params, path)`` checks, returning a list of problems.
    """
    if isinstance(raw, str):
        name, params = raw, {}
    elif isinstance(raw, dict) and isinstance(raw.get("name"), str):
        params = {k: v for k, v in raw.items() if k != "name"}
        name = raw["name"]
    else:
        problems.append(f"{path} must be a {registry.kind} name or a mapping with 'name' and its "
                        f"parameters, e.g. {{name: focal, gamma: 2.0}}. Got {raw!r} instead.")
        return None
    if known is not None:  # an external name space (timm:...), checked by the caller
        problem = known(name)
        if problem:
            problems.append(f"{path}: {problem}")
            return None
        if name not in registry:
            found = external(name, params, path) if external is not None else []
            problems.extend(found)
            return None if found else Component(name, params)
    if name not in registry:
        problems.append(f"{path}: {registry.unknown_message(name)}")
        return None
    checked = check_parameters(problems, params, registry.schema(name, data_params),
                                kind=registry.kind, name=name, path=path)
    return Component(name, checked)


def check_parameters(problems, params: dict, schema: typing.Mapping[str, Parameter], *,
                      kind: str, name: str, path: str) -> dict:
    """The parameters given to entry ``name`` checked against its schema: the known ones, their
    types and ranges, and the required ones; returns those that passed."""
    checked = {}
    for key, value in params.items():
        if key not in schema:
            choices = ", ".join(schema) or "none"
            problems.append(
                f"unknown parameter '{key}' of {kind} '{name}' at {path}."
                f"{did_you_mean(str(key), list(schema))} Parameters: {choices}."
            )
            continue
        count = len(problems)
        value = check_value(problems, f"'{key}' parameter of {kind} '{name}' ({path}.{key})",
                             value, schema[key].annotation, schema[key].constraint, owner="the ")
        if len(problems) == count:
            checked[key] = value
    for key in [k for k, p in schema.items() if p.required and k not in params]:
        problems.append(f"{path}: {kind} '{name}' needs the parameter '{key}'.")
    return checked


def parse_list(problems, raw, path, parse_item, canonical=None) -> tuple:
    """Parse a grid axis; entries that mean the same (``canonical``) are refused as duplicates."""
    if raw is None:
        problems.append(f"'{path}' is required and must list at least one entry.")
        return ()
    items = raw if isinstance(raw, list) else [raw]
    if not items:
        problems.append(f"'{path}' is empty, so the grid has no runs; list at least one entry.")
    parsed = [parse_item(item, f"{path}[{i}]") for i, item in enumerate(items)]
    parsed = [p for p in parsed if p is not None]
    seen = {}
    for item in parsed:
        text = canonical_json(item.to_yaml() if isinstance(item, Component) else item)
        key = canonical_json(canonical(item)) if canonical else text
        if key in seen and seen[key] == text:
            problems.append(f"'{path}' lists {text} twice; each entry must be unique.")
        elif key in seen:
            problems.append(f"'{path}' lists {seen[key]} and {text}, which mean the same "
                            f"({key}); each entry must be unique.")
        seen.setdefault(key, text)
    return tuple(parsed)


def canonical_json(value) -> str:
    """Stable text of parsed YAML, whatever its keys (YAML allows 1: a and x: b in one map)."""
    def plain(v):
        if isinstance(v, dict):
            return {str(k): plain(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        return v
    return json.dumps(plain(value), sort_keys=True, default=str)


def component_defaults(registry: Registry, name: str, data_params=()) -> dict:
    """The default of each parameter of a registry entry, except those the data supply; ``{}``
    for a name outside the registry (``timm:<name>``, whose defaults timm owns)."""
    if name not in registry:
        return {}
    return {k: p.default for k, p in registry.parameters(name).items()
            if k not in data_params and p.default is not p.empty}


def with_defaults(registry: Registry, data_params=()):
    """A function giving a component with every default filled in, as a plain mapping whose
    numbers compare as floats: ``focal`` == ``{name: focal, gamma: 2.0, alpha: None}``."""
    def canonical(component: Component) -> dict:
        if component.name not in registry:  # e.g. timm:<name>, whose defaults timm owns
            return {"name": component.name, **component.params}
        defaults = component_defaults(registry, component.name, data_params)
        values = {**defaults, **component.params}
        # 2 and 2.0 are the same value for a float parameter
        return {"name": component.name,
                **{k: float(v) if isinstance(v, int) and not isinstance(v, bool) else v
                   for k, v in values.items()}}
    return canonical


