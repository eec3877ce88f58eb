"""Experiment YAML -> frozen dataclasses, validated once, before any training.

Every problem (unknown key, unknown name, wrong type, value out of range) is collected with its
YAML path and reported together in one :class:`ConfigError`, sklearn-style: "train.epochs must be
an int >= 1. Got 0 instead."

Must not import: the runner, engine, results, report or tuning (they read the config; it reads only
the registries).
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import logging
import math
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from octbench.errors import ConfigError, OctbenchError
from octbench.registry import (
    SEED_RANGE,
    Interval,
    Parameter,
    Registry,
    did_you_mean,
    is_finite,
)
from octbench.untrusted import MAX_JSON_DEPTH, depth

log = logging.getLogger(__name__)

#: Folder-safe names, short enough for any file system once run ids are appended.
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
DEVICE_PATTERN = re.compile(r"^(cpu|mps|auto|cuda(:\d+)?)$")
DEVICE_NAMES = ["cpu", "cuda", "mps", "auto"]

#: Runs a grid may have unless ``--max-runs`` raises it: a typo in a sweep list (or an alias
#: bomb) must not start a million runs, nor spend minutes checking a million values.
MAX_RUNS = 10_000

# Upper bounds for values that could otherwise exhaust the machine (or overflow numpy).
MAX_EPOCHS = 10_000
MAX_BATCH = 65_536
#: numpy's seeds are 32-bit (the rule for every seed lives in the registry).
MAX_SEED = SEED_RANGE.high
#: More threads than this only oversubscribes the cores (and huge counts crash OpenMP).
MAX_THREADS = 4 * (os.cpu_count() or 1)


def check(constraint, **metadata) -> dict:
    """Field metadata holding a range or choice constraint."""
    return {"check": constraint, **metadata}


@dataclass(frozen=True)
class Component:
    """A registry entry chosen in the YAML: ``focal`` or ``{name: focal, gamma: 2.0}``."""

    name: str
    params: dict = field(default_factory=dict)

    @property
    def label(self) -> str:
        """A short display name: ``focal`` or ``focal(gamma=3.0)``."""
        if not self.params:
            return self.name
        inner = ",".join(f"{k}={v}" for k, v in sorted(self.params.items()))
        return f"{self.name}({inner})"

    def to_yaml(self) -> str | dict:
        return {"name": self.name, **self.params} if self.params else self.name


@dataclass(frozen=True)
class TrainConfig:
    """How every run of the grid trains (defaults: the seed project's settings)."""

    epochs: int = field(default=15, metadata=check(Interval(1, MAX_EPOCHS)))
    batch_size: int = field(default=128, metadata=check(Interval(1, MAX_BATCH)))
    #: None: 256 on CPU (cache-friendly), 1024 on a GPU.
    eval_batch_size: int | None = field(default=None, metadata=check(Interval(1, MAX_BATCH)))
    lr: float = field(default=1e-3, metadata=check(Interval(0, None, low_open=True)))
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    momentum: float = field(default=0.9, metadata=check(Interval(0, 1)))
    weight_decay: float = field(default=0.0, metadata=check(Interval(0, None)))
    schedule: Literal["none", "cosine", "step"] = "none"
    step_every: int = field(default=5, metadata=check(Interval(1, MAX_EPOCHS)))
    step_gamma: float = field(default=0.1, metadata=check(Interval(0, 1, low_open=True)))
    patience: int | None = field(default=None, metadata=check(Interval(1, MAX_EPOCHS)))
    select_on: str = "macro_f1"
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    channels_last: bool = True  # NHWC: faster convolutions on CPU (oneDNN) and GPU
    compile: bool = False
    deterministic: bool = False
    threads: int | None = field(default=None, metadata=check(Interval(1, MAX_THREADS)))
    #: end_to_end trains every weight; linear_probe only the classifier head (MedMNIST+).
    mode: Literal["end_to_end", "linear_probe"] = "end_to_end"
    #: batch-wise augmentations from octbench.augment, applied in this order
    augment: tuple[Component, ...] = ()

    def to_dict(self) -> dict:
        """Plain data for YAML and run records. Options added after the first recorded runs are
        left out at their defaults, so that those runs keep their ids."""
        values = dataclasses.asdict(self)
        values["augment"] = [c.to_yaml() for c in self.augment]
        return {k: v for k, v in values.items()
                if not (k in LATER_DEFAULTS and v == LATER_DEFAULTS[k])}


#: Train options that newer versions added, with the default that leaves a run unchanged.
LATER_DEFAULTS = {"mode": "end_to_end", "augment": []}


@dataclass(frozen=True)
class BootstrapConfig:
    """How the report's bootstrap resamples the test items.

    ``class`` (default) resamples within each class, so every resample keeps the test split's
    class counts (OCTMNIST's is balanced by design); ``groups`` resamples whole groups (e.g.
    patients, from the data's ``test_groups``); ``none`` resamples items freely.
    """

    stratify: Literal["class", "none", "groups"] = "class"


@dataclass(frozen=True)
class ReportConfig:
    """Report options: the strategy every other one is compared against, and the bootstrap.

    ``baseline`` defaults to ``none`` when the grid has it, else to the first strategy.
    """

    baseline: str | None = None
    bootstrap: BootstrapConfig = BootstrapConfig()


@dataclass(frozen=True)
class EvaluateConfig:
    """Extra evaluation of each finished run: ``evaluate: {corruptions: medmnist_c}``.

    ``corruptions`` names MedMNIST-C corruptions (``medmnist_c`` for all six of OCTMNIST), each
    scored at ``severities`` on a test set corrupted with ``seed``. It does not change training,
    so it is not part of run ids.
    """

    corruptions: tuple[str, ...] = ()
    severities: tuple[int, ...] = (1, 2, 3, 4, 5)
    seed: int = field(default=0, metadata=check(Interval(0, 2**32 - 1)))

    def to_dict(self) -> dict:
        return {"corruptions": list(self.corruptions), "severities": list(self.severities),
                "seed": self.seed}


@dataclass(frozen=True)
class ExperimentConfig:
    """A whole experiment: the grid models x strategies x seeds x devices on one dataset."""

    name: str
    data: Component
    models: tuple[Component, ...]
    strategies: tuple[Component, ...]
    seeds: tuple[int, ...] = (0, 1, 2)
    devices: tuple[str, ...] = ("cpu",)
    train: TrainConfig = TrainConfig()
    report: ReportConfig = ReportConfig()
    results_dir: str = "results"
    #: (dotted path, values) pairs whose Cartesian product multiplies the grid
    sweep: tuple[tuple[str, tuple], ...] = ()
    evaluate: EvaluateConfig = EvaluateConfig()

    def to_dict(self) -> dict:
        """Plain data that :func:`parse_config` turns back into an equal config."""
        sweep = {"sweep": {path: list(values) for path, values in self.sweep}} if self.sweep else {}
        return {
            "name": self.name,
            "data": {"name": self.data.name, **self.data.params},
            "models": [m.to_yaml() for m in self.models],
            "strategies": [s.to_yaml() for s in self.strategies],
            "seeds": list(self.seeds),
            "devices": list(self.devices),
            "train": self.train.to_dict(),
            "report": dataclasses.asdict(self.report),
            "results_dir": self.results_dir,
            **sweep,
            **({"evaluate": self.evaluate.to_dict()} if self.evaluate.corruptions else {}),
        }

    def replace(self, **changes) -> ExperimentConfig:
        return dataclasses.replace(self, **changes)

    def variants(self) -> list[tuple[dict, ExperimentConfig]]:
        """One ``(swept values, config without sweep)`` per combination of the sweep, in order
        (the last path varies fastest); ``[({}, self)]`` without a sweep."""
        if not self.sweep:
            return [({}, self)]
        base = {k: v for k, v in self.to_dict().items() if k != "sweep"}
        paths = [path for path, _ in self.sweep]
        out = []
        for combination in itertools.product(*(values for _, values in self.sweep)):
            values = dict(zip(paths, combination, strict=True))
            out.append((values, parse_config(set_values(base, values))))
        return out


def config_hash(data: Any) -> str:
    """A short stable hash of JSON-serialisable data (used to key runs by their config)."""
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:8]


# ---------------------------------------------------------------------------------------------
# YAML loading


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


def load_config(path: str | Path, overrides: typing.Mapping[str, Any] | None = None, *,
                max_runs: int = MAX_RUNS) -> ExperimentConfig:
    """Load and validate an experiment YAML, with ``--set`` style ``overrides`` applied first,
    whose grid has at most ``max_runs`` runs.

    Overrides are ``{dotted.path: value}`` (``train.epochs``, ``data.scale``, ``model.width``,
    ``seeds``); they are validated like the same values written in the file, and so are part of
    each run's identity.

    Example:
        >>> config = load_config("experiments/quickstart.yaml", {"train.epochs": 1})
        >>> config.data.name, config.train.epochs
        ('synthetic', 1)
    """
    raw = read_config(path, overrides)
    check_grid_size(raw, max_runs, source=str(path))
    return parse_config(raw, source=str(path))


def read_config(path: str | Path, overrides: typing.Mapping[str, Any] | None = None) -> dict:
    """An experiment YAML as a plain mapping, ``name`` defaulted to the file name and
    ``overrides`` applied; not validated yet (:func:`parse_config` does that)."""
    raw = read_yaml(path)
    raw.setdefault("name", Path(path).stem)
    return apply_overrides(raw, overrides, str(path)) if overrides else raw


def apply_overrides(raw: dict, overrides: typing.Mapping[str, Any],
                    source: str | None = None) -> dict:
    """A copy of the mapping ``raw`` with each ``{dotted.path: value}`` set (``--set``), by
    :func:`set_values`, as ``sweep:`` and tuning's ``search:`` set theirs.

    A component written as a bare name (``data: synthetic``) becomes ``{name: synthetic}`` when
    a path goes below it, so ``data.scale=0.1`` works on either spelling.

    Raises:
        ConfigError: a path goes below a value (``train.lr.x``), or no strategy takes a
            ``strategy.<param>``.
    """
    from octbench.dotted import PathError

    raw = dict(raw)
    for path in overrides:
        head = path.partition(".")[0]
        if "." in path and isinstance(raw.get(head), str):
            raw[head] = {"name": raw[head]}
    try:
        return set_values(raw, overrides)
    except PathError as error:
        raise ConfigError([f"--set {error}"], source) from None


def set_values(raw: typing.Mapping, values: typing.Mapping[str, Any]) -> dict:
    """``raw`` (plain experiment data) with each ``{dotted.path: value}`` set: the one path
    resolution of ``--set``, ``sweep:`` and tuning's ``search:``.

    ``model.<param>`` is set on every model (one that does not take it says so);
    ``strategy.<param>`` only on the strategies that take it, as a grid's baseline (``none``)
    takes no parameter. ``report.baseline`` names a strategy by its label, which a set
    parameter changes (``focal`` becomes ``focal(gamma=3.0)``): the baseline follows its strategy.

    Raises:
        PathError: a path goes below a value, or no strategy takes a ``strategy.<param>``.

    Example:
        >>> out = set_values({"strategies": ["none", "focal"], "report": {"baseline": "focal"}},
        ...                  {"strategy.gamma": 3.0})
        >>> out["strategies"], out["report"]
        (['none', {'name': 'focal', 'gamma': 3.0}], {'baseline': 'focal(gamma=3.0)'})
    """
    from octbench import dotted
    from octbench.dotted import canonical_path

    out = dotted.with_values(raw, values, accepts=_sets_parameter)
    report = raw.get("report")
    baseline = report.get("baseline") if isinstance(report, dict) else None
    before, after = raw.get("strategies"), out.get("strategies")
    if (baseline is None or not isinstance(before, list) or not isinstance(after, list)
            or len(before) != len(after)
            or not any(canonical_path(p).startswith("strategy.") for p in values)):
        return out
    for old, new in zip(before, after, strict=True):  # gamma: 2 is labelled gamma=2.0 too
        if baseline in (_label(old), _label(_floats(old))) and _label(new) is not None:
            out["report"] = {**report, "baseline": _label(new)}
    return out


def _sets_parameter(kind: str, name: str, param: str) -> bool:
    # An unknown strategy gets the parameter, so that its own problem is the one reported.
    from octbench.strategies import STRATEGIES

    return kind == "model" or name not in STRATEGIES or takes_parameter(kind, name, param)


def takes_parameter(kind: str, name: str, param: str) -> bool:
    """Whether model / strategy ``name`` takes the keyword ``param`` (timm models take any).

    Example:
        >>> takes_parameter("strategy", "focal", "gamma"), takes_parameter("strategy", "none",
        ...                                                                 "gamma")
        (True, False)
    """
    if kind == "model":
        from octbench.models import DATA_PARAMS, MODELS

        registry, data_params = MODELS, DATA_PARAMS
    else:
        from octbench.strategies import STRATEGIES

        registry, data_params = STRATEGIES, ("class_counts",)
    if not isinstance(name, str) or name not in registry:
        return kind == "model" and isinstance(name, str) and name.startswith("timm:")
    return param in registry.parameters(name) and param not in data_params


def swept_values(values: typing.Mapping[str, Any], strategy: Component) -> dict:
    """The values of a sweep combination that change the runs of ``strategy``: a swept strategy
    parameter it does not take leaves them alone, so those runs are shared by the combinations.

    Example:
        >>> values = {"train.lr": 0.01, "strategy.gamma": 3.0}
        >>> swept_values(values, Component("none")), swept_values(values, Component("focal"))
        ({'train.lr': 0.01}, {'train.lr': 0.01, 'strategy.gamma': 3.0})
    """
    from octbench.dotted import canonical_path

    def changes(path: str) -> bool:
        head, _, param = canonical_path(path).partition(".")
        return head != "strategy" or takes_parameter("strategy", strategy.name, param)

    return {path: value for path, value in values.items() if changes(path)}


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


# ---------------------------------------------------------------------------------------------
# Validation


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


def _check_value(problems, path, value, annotation, constraint, owner=""):
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


def _parse_section(problems, raw, cls, path):
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
        checked = _check_value(problems, f"{path}.{key}", value, hints[key],
                               fields[key].metadata.get("check"))
        if len(problems) == count:  # a refused value keeps the default: later checks stay sane
            values[key] = checked
    return cls(**values)


def _parse_component(problems, raw, path, registry: Registry, *, data_params=(),
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
    checked = _check_parameters(problems, params, registry.schema(name, data_params),
                                kind=registry.kind, name=name, path=path)
    return Component(name, checked)


def _check_parameters(problems, params: dict, schema: typing.Mapping[str, Parameter], *,
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
        value = _check_value(problems, f"'{key}' parameter of {kind} '{name}' ({path}.{key})",
                             value, schema[key].annotation, schema[key].constraint, owner="the ")
        if len(problems) == count:
            checked[key] = value
    for key in [k for k, p in schema.items() if p.required and k not in params]:
        problems.append(f"{path}: {kind} '{name}' needs the parameter '{key}'.")
    return checked


def _parse_list(problems, raw, path, parse_item, canonical=None) -> tuple:
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
        text = _json(item.to_yaml() if isinstance(item, Component) else item)
        key = _json(canonical(item)) if canonical else text
        if key in seen and seen[key] == text:
            problems.append(f"'{path}' lists {text} twice; each entry must be unique.")
        elif key in seen:
            problems.append(f"'{path}' lists {seen[key]} and {text}, which mean the same "
                            f"({key}); each entry must be unique.")
        seen.setdefault(key, text)
    return tuple(parsed)


def _json(value) -> str:
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


def _resolved_device(device: str) -> str:
    """The device a name picks on this machine: ``auto`` -> cpu here, ``cuda`` -> ``cuda:0``."""
    if device == "auto":
        from octbench.devices import resolve_device

        device = str(resolve_device("auto"))
    return "cuda:0" if device == "cuda" else device


TOP_LEVEL = {f.name for f in dataclasses.fields(ExperimentConfig)}


#: Parameters an entry takes besides its factory's (checked by :func:`parse_config` alone).
NOT_IN_SCHEMA = {"model": ("pretrained",), "dataset": ("on_duplicates",), "strategy": ()}


def check_plain(raw: dict, source: str | None = None, *,
                known: typing.Mapping[str, list[str]] | None = None,
                schemas: typing.Mapping[str, typing.Mapping[str, dict]] | None = None) -> None:
    """Raise the problems of the parts of a config that need no model code (fast: no torch).

    The CLI calls it before :func:`parse_config`, so a typo in a key, a name, a device, a train
    value or a parameter is reported in well under a second instead of after importing torch.
    ``known`` lists the names of each kind (``model``, ``strategy``, ``dataset``, ``timm``),
    ``schemas`` the parameters of each entry (``{kind: {name: {parameter: Parameter}}}``),
    e.g. from the cached ``octbench list`` catalog; without them names and parameters are
    checked by :func:`parse_config` only.

    Raises:
        ConfigError: every problem found.
    """
    problems: list[str] = []
    _parse_plain(problems, raw, resolve_devices=False)
    for key, kind in (("data", "dataset"), ("models", "model"), ("strategies", "strategy")):
        entries = raw.get(key)
        entries = entries if isinstance(entries, list) else [entries]
        for index, entry in enumerate(entries):
            name = entry.get("name") if isinstance(entry, dict) else entry
            if not isinstance(name, str):
                continue  # parse_config says what shape an entry must have
            path = key if key == "data" else f"{key}[{index}]"
            problem = _name_problem(kind, name, known) if known and kind in known else None
            if problem:
                problems.append(f"{path}: {problem}")
                continue
            schema = (schemas or {}).get(kind, {}).get(name)
            if schema is not None and isinstance(entry, dict):
                params = {k: v for k, v in entry.items()
                          if k != "name" and k not in NOT_IN_SCHEMA[kind]}
                _check_parameters(problems, params, schema, kind=kind, name=name, path=path)
    if problems:
        raise ConfigError(problems, source)


def _name_problem(kind: str, name: str, known: typing.Mapping[str, list[str]]) -> str | None:
    from octbench.registry import unknown_model_message, unknown_name_message

    if kind == "model" and name.startswith("timm:") and not known.get("timm"):
        return None  # no list of timm's names to check against
    if kind == "model":
        return unknown_model_message(name, known["model"], known["timm"])
    return unknown_name_message(kind, name, known[kind]) if name not in known[kind] else None


def _parse_plain(problems: list[str], raw: dict, *, resolve_devices: bool = True) -> dict:
    """Check what needs no registry: top-level keys, name, seeds, devices, the train and report
    sections and results_dir. ``resolve_devices``: compare ``auto`` with the device it picks
    here (imports torch)."""
    section_fields = {
        "train": {f.name for f in dataclasses.fields(TrainConfig)},
        "report": {f.name for f in dataclasses.fields(ReportConfig)},
    }
    for key in raw:
        if key in TOP_LEVEL:
            continue
        owner = [s for s, names in section_fields.items() if key in names]
        hint = (f" It belongs under '{owner[0]}:' ({owner[0]}.{key})." if owner
                else did_you_mean(str(key), sorted(TOP_LEVEL)))
        problems.append(f"unknown top-level key '{key}'.{hint} "
                        f"Valid keys: {', '.join(sorted(TOP_LEVEL))}.")

    name = raw.get("name")
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        shown = f"{name[:40]!r}... ({len(name)} characters)" if (
            isinstance(name, str) and len(name) > 100) else repr(name)
        problems.append(f"'name' must be a folder-safe name (letters, digits, '_', '.', '-'; "
                        f"at most 100 characters). Got {shown} instead.")

    def seed(item, path):
        return _check_value(problems, path, item, int, SEED_RANGE)

    def device(item, path):
        if not isinstance(item, str) or not DEVICE_PATTERN.match(item):
            hint = did_you_mean(item, DEVICE_NAMES) if isinstance(item, str) else ""
            problems.append(f"{path} must be one of cpu, cuda, cuda:N, mps, auto. "
                            f"Got {item!r} instead.{hint}")
            return None
        return item

    seeds = _parse_list(problems, raw.get("seeds", [0, 1, 2]), "seeds", seed)
    devices = _parse_list(problems, raw.get("devices", ["cpu"]), "devices", device,
                          canonical=_resolved_device if resolve_devices else None)
    raw_train = raw.get("train")
    augment_raw = None
    if isinstance(raw_train, dict):  # augment holds registry entries, checked like models
        raw_train = dict(raw_train)
        augment_raw = raw_train.pop("augment", None)
    train = _parse_section(problems, raw_train, TrainConfig, "train")
    raw_report = raw.get("report")
    bootstrap_raw = None
    if isinstance(raw_report, dict):  # a nested section, validated on its own
        raw_report = dict(raw_report)
        bootstrap_raw = raw_report.pop("bootstrap", None)
    report = _parse_section(problems, raw_report, ReportConfig, "report")
    if bootstrap_raw is not None:
        report = dataclasses.replace(report, bootstrap=_parse_section(
            problems, bootstrap_raw, BootstrapConfig, "report.bootstrap"))
    results_dir = raw.get("results_dir", "results")
    if not isinstance(results_dir, str) or not results_dir:
        problems.append(f"'results_dir' must be a folder path. Got {results_dir!r} instead.")
    return {"name": name, "seeds": seeds, "devices": devices, "train": train,
            "augment": augment_raw, "report": report, "results_dir": results_dir}


def parse_config(raw: dict, source: str | None = None) -> ExperimentConfig:
    """Validate a plain mapping (e.g. from YAML) into an :class:`ExperimentConfig`."""
    from octbench.metrics import METRICS
    from octbench.models import (
        DATA_PARAMS,
        MODELS,
        check_model_name,
        external_parameter_problems,
        no_pretrained_message,
        timm_name,
    )
    from octbench.strategies import STRATEGIES

    problems: list[str] = []
    plain = _parse_plain(problems, raw)
    if "data" not in raw:
        problems.append("'data' is required, e.g. data: {name: synthetic, scale: 0.05}.")
        data = None
    else:
        data = _parse_data(problems, raw["data"])

    def model(item, path):
        if isinstance(item, dict) and item.get("pretrained") is False:
            # Training from scratch is the default: the same run, and the same run id, as without.
            item = {k: v for k, v in item.items() if k != "pretrained"}
        name = item.get("name") if isinstance(item, dict) else None
        if (isinstance(name, str) and "pretrained" in item and timm_name(name) is None
                and name in MODELS):
            problems.append(f"{path}.pretrained: {no_pretrained_message(name)}")
            return None
        return _parse_component(problems, item, path, MODELS, data_params=DATA_PARAMS,
                                known=check_model_name, external=external_parameter_problems)

    models = _parse_list(problems, raw.get("models"), "models", model,
                         canonical=with_defaults(MODELS, DATA_PARAMS))
    strategies = _parse_list(
        problems, raw.get("strategies", ["none"]), "strategies",
        lambda item, path: _parse_component(problems, item, path, STRATEGIES,
                                            data_params=("class_counts",)),
        canonical=with_defaults(STRATEGIES, ("class_counts",)),
    )
    train, report = plain["train"], plain["report"]
    if plain["augment"]:
        train = dataclasses.replace(train, augment=_parse_augment(problems, plain["augment"]))
    if train.select_on not in METRICS:
        problems.append(f"train.select_on must be a validation metric, one of "
                        f"{', '.join(METRICS)}. Got {train.select_on!r} instead."
                        f"{did_you_mean(str(train.select_on), list(METRICS))}")
    written = raw.get("strategies")
    if (isinstance(report.baseline, str) and isinstance(written, list)
            and len(written) == len(strategies)):  # `focal(gamma=1)` names focal(gamma=1.0)
        as_written = {_label(entry): s.label
                      for entry, s in zip(written, strategies, strict=True)}
        report = dataclasses.replace(report, baseline=as_written.get(report.baseline,
                                                                     report.baseline))
    if strategies and report.baseline is None:
        labels = [s.label for s in strategies]
        report = dataclasses.replace(report, baseline="none" if "none" in labels else labels[0])
    elif strategies and report.baseline not in {s.label for s in strategies}:
        problems.append(f"report.baseline '{report.baseline}' is not among the strategies "
                        f"({', '.join(s.label for s in strategies)}); name one of them.")
    sweep = _parse_sweep(problems, raw["sweep"], raw) if "sweep" in raw else ()
    evaluate = _parse_evaluate(problems, raw.get("evaluate"))
    name, seeds, devices, results_dir = (plain[k] for k in ("name", "seeds", "devices",
                                                             "results_dir"))
    if train.mode == "linear_probe":
        problems += [
            f"models[{index}] ({item.label}): train.mode linear_probe trains only the "
            "classifier head on the backbone's features, so it needs pretrained weights; this "
            "model has none and would be probed on random features. Set pretrained: true or "
            "pretrained: path/to/weights.safetensors (timm models), or use mode: end_to_end."
            for index, item in enumerate(models or []) if not item.params.get("pretrained")]

    if problems:
        raise ConfigError(problems, source)
    return ExperimentConfig(name=name, data=data, models=models, strategies=strategies,
                            seeds=tuple(seeds), devices=tuple(devices), train=train,
                            report=report, results_dir=results_dir, sweep=sweep,
                            evaluate=evaluate)


#: Top-level keys a sweep cannot vary, and why.
NOT_SWEPT = {
    "models": "models are already an axis of the grid; list them under models:",
    "model": "models are already an axis of the grid; list them under models:",
    "strategies": "strategies are already an axis of the grid; list them under strategies:",
    "strategy": "strategies are already an axis of the grid; list them under strategies:",
    "seeds": "seeds are already an axis of the grid; list them under seeds:",
    "devices": "devices are already an axis of the grid; list them under devices:",
    "name": "one experiment has one name",
    "results_dir": "one experiment has one results folder",
    "report": "report options do not change training",
    "evaluate": "corrupted evaluation does not change training; list what to score under "
                "evaluate:",
    "sweep": "a sweep cannot sweep itself",
}
#: Combinations validated together (beyond each value alone) when the sweep has at most this many.
MAX_CHECKED_COMBINATIONS = 64


def _sweep_paths(raw: dict) -> list[str]:
    """Known sweep paths for "did you mean": train fields, the dataset's and the grid's
    model and strategy parameters."""
    from octbench.data import DATASETS
    from octbench.models import DATA_PARAMS, MODELS
    from octbench.strategies import STRATEGIES

    known = [f"train.{f.name}" for f in dataclasses.fields(TrainConfig)]
    data = raw.get("data")
    name = data.get("name") if isinstance(data, dict) else data
    if isinstance(name, str) and name in DATASETS:
        known += [f"data.{k}" for k in DATASETS.parameters(name)]
    for head, registry, skip in (("model", MODELS, DATA_PARAMS),
                                 ("strategy", STRATEGIES, ("class_counts",))):
        for entry in raw.get(COMPONENT_KEYS[head]) or []:
            entry = entry.get("name") if isinstance(entry, dict) else entry
            if isinstance(entry, str) and entry in registry:
                known += [f"{head}.{k}" for k in registry.parameters(entry) if k not in skip]
            elif isinstance(entry, str) and entry.startswith("timm:"):
                known.append(f"{head}.pretrained")
    return sorted(set(known))


COMPONENT_KEYS = {"model": "models", "strategy": "strategies"}


def _parse_sweep(problems, raw_sweep, raw: dict) -> tuple[tuple[str, tuple], ...]:
    """Check ``sweep:`` and every value in it as if written in place (same messages)."""
    from octbench.dotted import PathError, canonical_path

    if not isinstance(raw_sweep, dict) or not raw_sweep:
        problems.append("'sweep' must map dotted config paths to lists of values, e.g. "
                        "sweep: {data.size: [28, 64], train.lr: [1.0e-3, 3.0e-4]}. "
                        f"Got {raw_sweep!r} instead.")
        return ()
    known = _sweep_paths(raw)
    parsed, seen, count = [], set(), len(problems)
    for path, values in raw_sweep.items():
        where = f"sweep[{path!r}]"
        if not isinstance(path, str) or not path:
            problems.append(f"sweep keys must be dotted config paths. Got {path!r} instead.")
            continue
        canonical = canonical_path(path)
        head, _, rest = canonical.partition(".")
        if canonical in NOT_SWEPT or (head in NOT_SWEPT and head not in COMPONENT_KEYS):
            problems.append(f"{where}: {canonical} cannot be swept: {NOT_SWEPT[head]}.")
            continue
        if head not in ("data", "train", "model", "strategy") or (
                head in ("train", "data") and canonical not in known):
            hint = did_you_mean(canonical, known)
            problems.append(f"{where}: unknown path '{path}'.{hint} Paths: train.<key>, "
                            "data.<parameter>, model.<parameter> (every model of the grid), "
                            "strategy.<parameter>.")
            continue
        if canonical in seen:
            problems.append(f"{where} names a path that the sweep already lists; keep one.")
            continue
        seen.add(canonical)
        if not isinstance(values, list) or not values:
            problems.append(f"{where} must be a non-empty list of values. "
                            f"Got {values!r} instead.")
            continue
        if len({_json(v) for v in values}) < len(values):
            problems.append(f"{where} lists a value twice: {values!r}; each must be unique.")
            continue
        parsed.append((canonical, path, tuple(values)))
    if len(problems) > count:
        return ()
    base = {k: v for k, v in raw.items() if k != "sweep"}
    try:
        parse_config(base)
    except ConfigError:
        return ()  # the same problems are reported for the experiment itself
    for position, (canonical, path, values) in enumerate(parsed):
        kept, made_by = [], {}
        for index, value in enumerate(values):
            where = f"sweep[{path!r}][{index}]"
            try:
                config = parse_config(set_values(base, {canonical: value}))
            except PathError as error:  # the same for every value
                problems.append(f"sweep[{path!r}]: {error}")
                break
            except ConfigError as error:
                problems.extend(f"{where} = {value!r}: {p}" for p in error.problems)
                continue
            key = _json(_floats(config.to_dict()))  # 1 and 1.0 make the same runs
            if key in made_by:
                log.warning("sweep[%r] lists %r and %r, which are equal and make the same runs; "
                            "%r is dropped", path, made_by[key], value, value)
                continue
            made_by[key] = value
            kept.append(value)
        parsed[position] = (canonical, path, tuple(kept))
    combinations = math.prod(len(values) for _, _, values in parsed)
    if len(problems) == count and 1 < len(parsed) and combinations <= MAX_CHECKED_COMBINATIONS:
        for combination in itertools.product(*(values for _, _, values in parsed)):
            values = {canonical: v for (canonical, _, _), v in zip(parsed, combination,
                                                                   strict=True)}
            try:
                parse_config(set_values(base, values))
            except ConfigError as error:
                problems.extend(f"sweep combination {values}: {p}" for p in error.problems)
                break
    return tuple((canonical, values) for canonical, _, values in parsed)


def _floats(value):
    """``value`` with every int (not bool) made a float, however deeply nested."""
    if isinstance(value, dict):
        return {k: _floats(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_floats(v) for v in value]
    return float(value) if isinstance(value, int) and not isinstance(value, bool) else value


def _label(entry) -> str | None:
    """The label of a strategy entry as written (``focal`` or ``{name: focal, ...}``)."""
    if isinstance(entry, str):
        return entry
    if isinstance(entry, dict) and isinstance(entry.get("name"), str):
        params = {k: v for k, v in entry.items() if k != "name"}
        try:
            return Component(entry["name"], params).label
        except TypeError:  # unorderable keys: not a valid entry, reported elsewhere
            return None
    return None


def _parse_augment(problems, raw) -> tuple[Component, ...]:
    from octbench.augment import AUGMENTATIONS, MIXING

    augment = _parse_list(problems, raw, "train.augment",
                          lambda item, path: _parse_component(problems, item, path,
                                                              AUGMENTATIONS))
    if len([c for c in augment if c.name in MIXING]) > 1:
        problems.append("train.augment lists both mixup and cutmix; a batch is mixed once, so "
                        "keep one of them.")
    return augment


def parse_corruptions(value, path: str = "evaluate.corruptions") -> tuple[tuple[str, ...], list]:
    """``medmnist_c`` (all six), ``none``, a name, or a list of names -> (names, problems)."""
    from octbench.robustness import CORRUPTIONS

    if value in (None, "none", []):
        return (), []
    if value == "medmnist_c":
        return CORRUPTIONS, []
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        return (), [f"{path} must be medmnist_c, or a list of corruption names "
                    f"({', '.join(CORRUPTIONS)}). Got {value!r} instead."]
    problems = [f"{path}: unknown corruption '{n}'.{did_you_mean(n, list(CORRUPTIONS))} "
                f"Choose from medmnist_c (all), {', '.join(CORRUPTIONS)}."
                for n in names if n not in CORRUPTIONS]
    if len(set(names)) != len(names):
        problems.append(f"{path} lists a corruption twice: {names}.")
    return tuple(dict.fromkeys(names)), problems


def _parse_evaluate(problems, raw) -> EvaluateConfig:
    from octbench.robustness import SEVERITIES

    if raw is None:
        return EvaluateConfig()
    if not isinstance(raw, dict):
        problems.append(f"evaluate must be a mapping, e.g. evaluate: {{corruptions: medmnist_c}}."
                        f" Got {raw!r} instead.")
        return EvaluateConfig()
    raw = dict(raw)
    corruptions, found = parse_corruptions(raw.pop("corruptions", None))
    problems.extend(found)
    severities = raw.pop("severities", list(SEVERITIES))
    if (not isinstance(severities, list) or not severities
            or not all(s in SEVERITIES and isinstance(s, int) for s in severities)
            or len(set(severities)) != len(severities)):
        problems.append(f"evaluate.severities must be a list of distinct levels from "
                        f"{', '.join(map(str, SEVERITIES))}. Got {severities!r} instead.")
        severities = list(SEVERITIES)
    section = _parse_section(problems, raw, EvaluateConfig, "evaluate")
    return dataclasses.replace(section, corruptions=corruptions,
                               severities=tuple(sorted(severities)))


def parse_data(raw: str | dict) -> Component:
    """Validate a dataset choice alone (``synthetic`` or ``{name: npz, path: ...}``)."""
    problems: list[str] = []
    component = _parse_data(problems, raw)
    if problems:
        raise ConfigError(problems)
    return component


def _parse_data(problems, raw) -> Component | None:
    """The dataset entry: a registry entry, plus ``on_duplicates`` which every dataset takes."""
    from octbench.data import DATASETS
    from octbench.data.duplicates import DEFAULT_POLICY, POLICIES

    policy = DEFAULT_POLICY
    if isinstance(raw, dict) and "on_duplicates" in raw:
        raw = dict(raw)
        policy = raw.pop("on_duplicates")
        if policy not in POLICIES:
            problems.append(f"data.on_duplicates must be one of {', '.join(POLICIES)} (what to "
                            f"do with exact duplicate images). Got {policy!r} instead.")
    component = _parse_component(problems, raw, "data", DATASETS)
    if component is None or policy == DEFAULT_POLICY or policy not in POLICIES:
        return component  # the default is left out: the same run ids as without it
    return Component(component.name, {**component.params, "on_duplicates": policy})
