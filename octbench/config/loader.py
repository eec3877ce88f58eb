"""Reading experiment YAML: a strict, bounded loader (no duplicate keys, no alias bombs, YAML 1.2
floats), syntax errors as one line with their fix, ``--set`` values, and the grid's size counted
before anything is built.

Must not import: the registries, or anything that imports torch.
"""

from __future__ import annotations

import math
import re
import typing
from pathlib import Path
from typing import Any

import yaml

from octbench.config.schema import MAX_RUNS
from octbench.config.sweep import apply_overrides
from octbench.errors import ConfigError, OctbenchError
from octbench.untrusted import MAX_JSON_DEPTH, depth


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate and non-scalar keys and reads ``1e-3`` as a float
    (YAML 1.2 style). Merge keys (``<<: *defaults``) work as in PyYAML: written keys override
    merged ones."""

    def construct_mapping(self, node, deep=False):
        seen = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # merged keys may be overridden; SafeLoader flattens them below
            if not isinstance(key_node, yaml.ScalarNode):
                raise yaml.constructor.ConstructorError(
                    None, None, "a key must be a plain name or number, not a list or mapping",
                    key_node.start_mark,
                )
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key '{key}' (first on line {seen[key] + 1})",
                    key_node.start_mark,
                )
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)

    def get_single_node(self):
        """The document's node, refused before construction if aliases blow it up."""
        node = super().get_single_node()
        if node is not None:
            _check_expanded_size(node)
        return node


#: Nodes a YAML document may expand to, aliases expanded (a safe loader's alias budget): a
#: "billion laughs" document of a few lines would otherwise become a grid of billions.
MAX_YAML_NODES = 100_000


def _check_expanded_size(root: yaml.Node) -> None:
    """Count the nodes of ``root`` with every alias expanded, without expanding any: each node's
    expanded size is computed once (aliases share node objects), children first."""
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()  # being counted: meeting one again means a recursive alias
    stack = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        children = ([n for pair in node.value for n in pair] if isinstance(node, yaml.MappingNode)
                    else node.value if isinstance(node, yaml.SequenceNode) else [])
        if children_done:
            open_nodes.discard(id(node))
            sizes[id(node)] = 1 + sum(sizes[id(c)] for c in children)
            if sizes[id(node)] > MAX_YAML_NODES:
                raise yaml.constructor.ConstructorError(
                    None, None, f"the document expands to more than {MAX_YAML_NODES:,} values "
                    "(aliases such as *a repeat what &a names); write the values out, or use "
                    "fewer aliases", node.start_mark)
            continue
        if id(node) in sizes:
            continue
        if id(node) in open_nodes:
            raise yaml.constructor.ConstructorError(
                None, None, "an alias refers to the list or mapping that contains it, which "
                "never ends; write the values out", node.start_mark)
        open_nodes.add(id(node))
        stack.append((node, True))
        stack.extend((c, False) for c in children if id(c) not in sizes)


# PyYAML follows YAML 1.1, where 1e-3 (no dot) is a string; researchers write it everywhere.
_StrictLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$"),
    list("-+0123456789."),
)


def _load_yaml(text: str):
    """YAML through the strict loader, nesting at most MAX_JSON_DEPTH deep (deeper documents
    only exhaust the recursion of whoever reads them)."""
    try:
        value = yaml.load(text, Loader=_StrictLoader)
    except RecursionError:
        value = None
    else:
        if depth(value) <= MAX_JSON_DEPTH:
            return value
    raise yaml.YAMLError(f"lists or mappings nest more than {MAX_JSON_DEPTH} deep")


def read_yaml(path: str | Path) -> dict:
    """Read a YAML mapping, turning every syntax problem into a ConfigError with its line."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError([f"file {path} does not exist; check the path"], None)
    try:
        text = path.read_text()
        raw = _load_yaml(text)
    except yaml.YAMLError as error:
        raise ConfigError([yaml_problem(error, text)], str(path)) from None
    except UnicodeDecodeError:
        raise ConfigError(["the file is not UTF-8 text"], str(path)) from None
    if raw is None:
        raise ConfigError(["the file is empty; see experiments/quickstart.yaml"], str(path))
    if not isinstance(raw, dict):
        raise ConfigError(
            [f"the top level must be a mapping of keys to values, got a {type(raw).__name__}"],
            str(path),
        )
    return raw


#: PyYAML's words for a line indented wrongly (it cannot say "indentation" itself).
_INDENTATION_PROBLEMS = ("expected <block end>", "mapping values are not allowed",
                         "did not find expected key", "could not find expected ':'")


def yaml_problem(error: yaml.YAMLError, text: str) -> str:
    """A YAML syntax error as one line: where, the line itself, and the likely fix."""
    mark = getattr(error, "problem_mark", None)
    problem = getattr(error, "problem", None) or str(error)
    if mark is None:
        return f"YAML syntax error: {problem}"
    lines = text.splitlines()
    line = lines[mark.line] if mark.line < len(lines) else ""
    where = f"YAML syntax error at line {mark.line + 1}, column {mark.column + 1}"
    indent = line[:len(line) - len(line.lstrip())]
    if "\t" in indent or "'\\t'" in problem:
        fix = "the line is indented with a tab; YAML allows only spaces, so replace the tab"
    elif problem.startswith(_INDENTATION_PROBLEMS):
        fix = ("check the indentation of this line and the ones above it: the keys of one "
               "section start in the same column (spaces only), and a value holding ': ' needs "
               "quotes")
    else:
        return f"{where}: {problem} ({line.strip()!r})"
    return f"{where} ({line.strip()!r}): {fix} (YAML says: {problem})"


def parse_scalar(text: str):
    """A ``--set KEY=VALUE`` value read as YAML, like the same value in an experiment file.

    Raises:
        OctbenchError: the text is not valid YAML (quote it to pass a string).
    """
    try:
        return _load_yaml(text)
    except yaml.YAMLError as error:
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise OctbenchError(f"value {text!r} is not valid YAML ({problem}); write a number, "
                            "true/false, a name, or quote it") from None



def read_config(path: str | Path, overrides: typing.Mapping[str, Any] | None = None) -> dict:
    """An experiment YAML as a plain mapping, ``name`` defaulted to the file name and
    ``overrides`` applied; not validated yet (:func:`parse_config` does that)."""
    raw = read_yaml(path)
    raw.setdefault("name", Path(path).stem)
    return apply_overrides(raw, overrides, str(path)) if overrides else raw


def check_grid_size(raw: dict, max_runs: int = MAX_RUNS, *, source: str | None = None) -> int:
    """The number of runs of an experiment's grid, counted from its lists' lengths before any
    run or sweep combination is built (or any value checked, which costs time per value).

    Raises:
        ConfigError: more than ``max_runs`` runs, with the factors and how to raise the bound.
    """
    def length(key: str, default: int = 1) -> int:
        value = raw.get(key)
        return len(value) if isinstance(value, list) else default if value is None else 1

    factors = {"models": length("models"), "strategies": length("strategies"),
               "seeds": length("seeds", 3), "devices": length("devices")}
    sweep = raw.get("sweep")
    if isinstance(sweep, dict):
        factors["sweep combinations"] = math.prod(
            len(values) if isinstance(values, list) else 1 for values in sweep.values())
    runs = math.prod(factors.values())
    if runs > max_runs:
        shown = " x ".join(f"{count:,} {name}" for name, count in factors.items())
        raise ConfigError([f"the grid has {runs:,} runs ({shown}), more than the limit of "
                           f"{max_runs:,}; shorten the lists, or raise the limit with "
                           "--max-runs N if you mean it."], source)
    return runs
