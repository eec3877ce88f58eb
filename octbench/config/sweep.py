"""Dotted paths applied to an experiment: ``--set`` overrides, the ``sweep:`` section and the
values tuning's ``search:`` samples all go through :func:`set_values`, and each value is checked
as if written in place by :func:`parsed_values`; :func:`known_paths` lists the paths a sweep
may name.

Must not import: the experiment parser (it is passed in, as the one that parses each value).
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import math
import typing
from typing import Any

from octbench import dotted
from octbench.config.schema import Component, TrainConfig
from octbench.config.validate import canonical_json
from octbench.dotted import COMPONENTS, PathError, canonical_path
from octbench.errors import ConfigError
from octbench.registry import did_you_mean

log = logging.getLogger(__name__)

#: The experiment parser (:func:`octbench.config.parse_config`), handed in by its module.
Parse = typing.Callable[[dict], typing.Any]


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
    out = dotted.with_values(raw, values, accepts=_sets_parameter)
    report = raw.get("report")
    baseline = report.get("baseline") if isinstance(report, dict) else None
    before, after = raw.get("strategies"), out.get("strategies")
    if (baseline is None or not isinstance(before, list) or not isinstance(after, list)
            or len(before) != len(after)
            or not any(canonical_path(p).startswith("strategy.") for p in values)):
        return out
    for old, new in zip(before, after, strict=True):  # gamma: 2 is labelled gamma=2.0 too
        if (baseline in (entry_label(old), entry_label(as_floats(old)))
                and entry_label(new) is not None):
            out["report"] = {**report, "baseline": entry_label(new)}
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
    def changes(path: str) -> bool:
        head, _, param = canonical_path(path).partition(".")
        return head != "strategy" or takes_parameter("strategy", strategy.name, param)

    return {path: value for path, value in values.items() if changes(path)}



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


def known_paths(raw: dict) -> list[str]:
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
        for entry in raw.get(COMPONENTS[head]) or []:
            entry = entry.get("name") if isinstance(entry, dict) else entry
            if isinstance(entry, str) and entry in registry:
                known += [f"{head}.{k}" for k in registry.parameters(entry) if k not in skip]
            elif isinstance(entry, str) and entry.startswith("timm:"):
                known.append(f"{head}.pretrained")
    return sorted(set(known))


def parse_sweep(problems, raw_sweep, raw: dict, parse: Parse) -> tuple[tuple[str, tuple], ...]:
    """Check ``sweep:`` and every value in it as if written in place (same messages), each
    experiment validated by ``parse`` (:func:`octbench.config.parse_config`)."""
    if not isinstance(raw_sweep, dict) or not raw_sweep:
        problems.append("'sweep' must map dotted config paths to lists of values, e.g. "
                        "sweep: {data.size: [28, 64], train.lr: [1.0e-3, 3.0e-4]}. "
                        f"Got {raw_sweep!r} instead.")
        return ()
    known = known_paths(raw)
    parsed, seen, count = [], set(), len(problems)
    for path, values in raw_sweep.items():
        where = f"sweep[{path!r}]"
        if not isinstance(path, str) or not path:
            problems.append(f"sweep keys must be dotted config paths. Got {path!r} instead.")
            continue
        canonical = canonical_path(path)
        head, _, rest = canonical.partition(".")
        if canonical in NOT_SWEPT or (head in NOT_SWEPT and head not in COMPONENTS):
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
        if len({canonical_json(v) for v in values}) < len(values):
            problems.append(f"{where} lists a value twice: {values!r}; each must be unique.")
            continue
        parsed.append((canonical, path, tuple(values)))
    if len(problems) > count:
        return ()
    base = {k: v for k, v in raw.items() if k != "sweep"}
    try:
        parse(base)
    except ConfigError:
        return ()  # the same problems are reported for the experiment itself
    for position, (canonical, path, values) in enumerate(parsed):
        kept, made_by = [], {}
        for value, config in parsed_values(problems, base, canonical, values, parse,
                                           where=f"sweep[{path!r}]", indexed=True):
            key = canonical_json(as_floats(config.to_dict()))  # 1 and 1.0 make the same runs
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
                parse(set_values(base, values))
            except ConfigError as error:
                problems.extend(f"sweep combination {values}: {p}" for p in error.problems)
                break
    return tuple((canonical, values) for canonical, _, values in parsed)


def parsed_values(problems: list[str], base: typing.Mapping, path: str, values: typing.Iterable,
                  parse: Parse, *, where: str, indexed: bool = False, apply=None,
                  first_problem_only: bool = False) -> list[tuple[Any, typing.Any]]:
    """Each of ``values`` set at the dotted ``path`` of ``base`` (by ``apply(base, values)``,
    :func:`set_values` by default) and validated by ``parse``, as if written in place: returns
    ``(value, config)`` of those that pass and adds the problems of the others, each as
    ``<where> = <value>: <problem>`` (``<where>[<index>]`` when ``indexed``). A path that goes
    below a value is one problem for all values. The one check of ``sweep:`` and tuning's
    ``search:`` values.
    """
    apply = apply or set_values
    passed = []
    for index, value in enumerate(values):
        at = f"{where}[{index}]" if indexed else where
        try:
            config = parse(apply(base, {path: value}))
        except PathError as error:  # the same for every value
            problems.append(f"{where}: {error}")
            break
        except ConfigError as error:
            problems.extend(f"{at} = {value!r}: {p}" for p in error.problems)
            if first_problem_only:
                break
            continue
        passed.append((value, config))
    return passed


def as_floats(value):
    """``value`` with every int (not bool) made a float, however deeply nested."""
    if isinstance(value, dict):
        return {k: as_floats(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [as_floats(v) for v in value]
    return float(value) if isinstance(value, int) and not isinstance(value, bool) else value


def entry_label(entry) -> str | None:
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

