"""The generated pages of the documentation site: the YAML schema and the CLI reference.

Both are read from the code itself, so they cannot drift from it: the YAML schema from the
config's dataclasses (types, defaults, ranges, and the comment beside each field in
``octbench/config/``) and the registries (every dataset, model, strategy and augmentation with
its parameters); the CLI reference from the argparse parser. ``docs/hooks.py`` puts them into
the pages at ``mkdocs build``; ``tests/test_docs.py`` checks that nothing is missing.

Layer: the top, beside the CLI (it reads the parser).
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import re
import types
import typing
from typing import Any, Literal

#: The placeholder in a page and the function that replaces it.
PLACEHOLDERS = {
    "<!-- octbench:config-schema -->": "config_schema_markdown",
    "<!-- octbench:registries -->": "registries_markdown",
    "<!-- octbench:cli -->": "cli_markdown",
}


def render(markdown: str) -> str:
    """``markdown`` with each placeholder it holds replaced by its generated text."""
    for placeholder, function in PLACEHOLDERS.items():
        if placeholder in markdown:
            markdown = markdown.replace(placeholder, globals()[function]())
    return markdown


# --- the YAML schema -------------------------------------------------------------------------


def _walk_config(cls=None, prefix: str = ""):
    """(dotted path, field, type, owning dataclass) for every key, nested sections expanded."""
    if cls is None:
        from octbench.config import ExperimentConfig
        cls = ExperimentConfig
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        kind = hints[f.name]
        yield f"{prefix}{f.name}", f, kind, cls
        if dataclasses.is_dataclass(kind) and kind.__name__ != "Component":
            yield from _walk_config(kind, f"{prefix}{f.name}.")


def config_fields() -> list[tuple[str, dataclasses.Field]]:
    """Every key of an experiment YAML as (dotted path, dataclass field), sections expanded."""
    return [(path, f) for path, f, _, _ in _walk_config()]


def config_schema_markdown() -> str:
    """A table per section of the experiment YAML: key, type, default, allowed values, meaning."""
    from octbench.config import experiment, schema

    comments = _field_comments(inspect.getsource(schema) + inspect.getsource(experiment))
    rows = []
    for path, f, kind, owner_cls in _walk_config():
        owner = owner_cls.__name__
        constraint = f.metadata.get("check")
        allowed = str(constraint) if constraint is not None else _choices(kind)
        label = ("mapping of dotted path to a list of values" if path == "sweep"
                 else _type_label(kind))  # stored as pairs, written as a mapping
        default = "`{}`" if path == "sweep" else _default(f)
        rows.append((f"`{path}`", label, default, allowed,
                     comments.get((owner, f.name), "")))
    header = "| key | type | default | allowed | notes |\n| --- | --- | --- | --- | --- |\n"
    return header + "\n".join("| " + " | ".join(_cell(c) for c in row) + " |" for row in rows)


def _field_comments(source: str) -> dict[tuple[str, str], str]:
    """The ``#:`` comment above, or the ``#`` comment beside, each dataclass field."""
    comments: dict[tuple[str, str], str] = {}
    owner, pending = None, []
    for line in source.splitlines():
        if match := re.match(r"class (\w+)", line):
            owner, pending = match[1], []
        elif line.strip().startswith("#:"):
            pending.append(line.strip()[2:].strip())
        elif owner and (match := re.match(r"    (\w+): [^=]+?(?:=.*?)?(?:#\s*(.*))?$", line)):
            text = " ".join(pending + ([match[2]] if match[2] else []))
            if text:
                comments[(owner, match[1])] = text
            pending = []
        else:
            pending = []
    return comments


def _type_label(kind) -> str:
    origin = typing.get_origin(kind)
    if origin is Literal:
        return "string"
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_label(a) for a in typing.get_args(kind))
    if origin is tuple:
        args = [a for a in typing.get_args(kind) if a is not Ellipsis]
        inner = _type_label(args[0]) if args else "value"
        return f"list of {inner}"
    if dataclasses.is_dataclass(kind):
        return "name or {name: ..., param: ...}" if kind.__name__ == "Component" else "mapping"
    return {int: "int", float: "float", bool: "bool", str: "string",
            type(None): "null"}.get(kind, getattr(kind, "__name__", str(kind)))


def _choices(kind) -> str:
    if typing.get_origin(kind) is Literal:
        return "one of " + ", ".join(f"`{a}`" for a in typing.get_args(kind))
    return ""


def _default(f: dataclasses.Field) -> str:
    if f.default is not dataclasses.MISSING:
        value = f.default
        if dataclasses.is_dataclass(value):
            return "see below"
        return "`null`" if value is None else f"`{_plain(value)}`"
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return f"`{_plain(f.default_factory())}`"  # type: ignore[misc]
    return "required"


def _plain(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, bool):
        return str(value).lower()
    return value


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def registries_markdown() -> str:
    """Every name a YAML can use under ``data``, ``models``, ``strategies``, ``train.augment``,
    with its parameters, their defaults and ranges, and the first line of its docstring."""
    from octbench.augment import AUGMENTATIONS
    from octbench.data import DATASETS
    from octbench.models import MODELS
    from octbench.strategies import STRATEGIES

    # Parameters the runner fills in itself, never the YAML.
    internal = {"num_classes", "in_chans", "img_size", "class_counts", "counts", "cache_dir"}
    parts = []
    for title, key, registry in (("Datasets", "data", DATASETS), ("Models", "models", MODELS),
                                 ("Strategies", "strategies", STRATEGIES),
                                 ("Augmentations", "train.augment", AUGMENTATIONS)):
        parts.append(f"### {title} (`{key}`)\n\n| name | parameters | what |\n| --- | --- | --- |")
        for name in registry.names():
            constraints = registry.constraints(name)
            params = []
            for param in registry.parameters(name).values():
                if param.name in internal:
                    continue
                text = f"`{param.name}`"
                if param.default is not inspect.Parameter.empty:
                    text += f" = `{_plain(param.default)}`"
                if param.name in constraints:
                    text += f" ({constraints[param.name]})"
                params.append(text)
            doc = inspect.getdoc(registry.get(name)) or ""
            summary = doc.strip().splitlines()[0] if doc.strip() else ""
            parts.append(f"| `{name}` | {_cell(', '.join(params)) or '-'} | {_cell(summary)} |")
        parts.append("")
    parts.append("Any [timm](https://huggingface.co/docs/timm) model also works as "
                 "`timm:<name>` (e.g. `timm:efficientnet_b0`).")
    return "\n".join(parts)


# --- the CLI -----------------------------------------------------------------------------------


def cli_commands() -> list[tuple[str, argparse.ArgumentParser]]:
    """Every command and subcommand as (``octbench run``, its parser), the top level first."""
    from octbench.cli import build_parser

    found = []

    def walk(name: str, parser: argparse.ArgumentParser):
        found.append((name, parser))
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub, subparser in action.choices.items():
                    walk(f"{name} {sub}", subparser)

    walk("octbench", build_parser())
    return found


def documented_options(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    """The options and arguments of one parser that a user sees in ``--help``."""
    return [a for a in parser._actions if a.help is not argparse.SUPPRESS
            and not isinstance(a, argparse._SubParsersAction)]


def cli_markdown() -> str:
    """One section per command: what it does, its usage line, and a table of its options."""
    parts = []
    for name, parser in cli_commands():
        parts.append(f"## `{name}`\n")
        if parser.description:
            parts.append(parser.description.strip() + "\n")
        usage = parser.format_usage().strip().removeprefix("usage: ")
        parts.append(f"```\n{usage}\n```\n")
        if parser.epilog:
            parts.append(f"```\n{parser.epilog.strip()}\n```\n")
        rows = []
        for action in documented_options(parser):
            flags = ", ".join(f"`{o}`" for o in action.option_strings) or f"`{action.dest}`"
            if action.metavar and action.option_strings:
                flags += f" `{action.metavar}`"
            default = ("" if action.default in (None, argparse.SUPPRESS, False)
                       or not action.option_strings else f"`{action.default}`")
            choices = ", ".join(f"`{c}`" for c in action.choices) if (
                action.choices and not isinstance(action.choices, dict)) else ""
            text = (action.help or "") % {"prog": parser.prog, "default": action.default}
            rows.append((flags, _cell(text), choices, default))
        if rows:
            parts.append("| option | what | choices | default |\n| --- | --- | --- | --- |")
            parts.extend("| " + " | ".join(row) + " |" for row in rows)
            parts.append("")
    return "\n".join(parts)
