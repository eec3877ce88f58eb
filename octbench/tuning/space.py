"""Search spaces: the ``search:`` section of a tuning YAML, checked once against the base
experiment, and how a trial's experiment is made from sampled values.

:class:`SearchParam` is one searched config value and its Optuna distribution. Turning sampled
values into an experiment (:func:`trial_experiment`) sets dotted paths with
:func:`octbench.config.set_values`, as ``sweep:`` and ``--set`` do; each searched value is checked
by :func:`octbench.config.parsed_values`, as each swept one. The rest of the tuning YAML (study,
objective, budget, sampler, pruner) is :mod:`octbench.tuning.tune_config`.

Must not import: the other tuning modules (tune_config, storage, objective, workers import this
one), the runner, the engine or the report.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import optuna

from octbench.config import (
    ExperimentConfig,
    parse_config,
    parsed_values,
    set_values,
    takes_parameter,
)
from octbench.dotted import COMPONENTS, canonical_path
from octbench.errors import ConfigError
from octbench.registry import did_you_mean, is_finite

if TYPE_CHECKING:
    from octbench.tuning.tune_config import TuneConfig

SEARCH_TYPES = {"float": ("low", "high", "log", "step"), "int": ("low", "high", "log", "step"),
                "categorical": ("choices",)}
#: Config sections whose values a search may not change, and why.
FIXED = {
    "data": "every trial must be scored on the same validation split",
    "seeds": "trials use seeds 0..seeds_per_trial-1; set `seeds_per_trial` instead",
    "devices": "a trial runs on the base experiment's one device",
    "name": "the experiment name is the study name",
    "results_dir": "results go to <results_dir>/<study>/",
    "report": "report options do not change training",
}
#: Choices of one categorical search parameter (each is checked as a config value).
MAX_CHOICES = 1_000
#: The seeds of the best configuration's final experiment.
FINAL_SEEDS = (0, 1, 2)


@dataclass(frozen=True)
class SearchParam:
    """One searched config value: a dotted path and its Optuna distribution.

    ``path`` is canonical (``models.0.width`` becomes ``model.width``) and is also the Optuna
    parameter name.
    """

    path: str
    type: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple = ()

    @property
    def component(self) -> str | None:
        """``model`` or ``strategy`` when the path is a component's parameter, else None."""
        head, _, rest = self.path.partition(".")
        return head if head in COMPONENTS and rest else None

    def suggest(self, trial: optuna.Trial) -> Any:
        if self.type == "float":
            return trial.suggest_float(self.path, self.low, self.high, log=self.log,
                                       step=self.step)
        if self.type == "int":
            return trial.suggest_int(self.path, int(self.low), int(self.high), log=self.log,
                                     step=int(self.step or 1))
        return trial.suggest_categorical(self.path, list(self.choices))

    def samples(self) -> list:
        """Values that together exercise the whole range (for up-front validation)."""
        return list(self.choices) if self.type == "categorical" else [self.low, self.high]

    def to_dict(self) -> dict:
        if self.type == "categorical":
            return {"type": self.type, "choices": list(self.choices)}
        spec = {"type": self.type, "low": self.low, "high": self.high, "log": self.log}
        return {**spec, "step": self.step} if self.step is not None else spec


def parse_search(problems, raw, base: dict) -> tuple[SearchParam, ...]:
    """The ``search:`` section as search parameters, each path checked against ``base`` (the
    base experiment) by parsing it with sample values; problems are appended to ``problems``."""
    if not isinstance(raw, dict) or not raw:
        problems.append("'search' must map config paths to distributions, e.g. "
                        "search: {train.lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}}.")
        return ()
    params: list[SearchParam] = []
    seen: dict[str, str] = {}
    for path, spec in raw.items():
        where = f"search.{path}"
        if not isinstance(path, str) or not path:
            problems.append(f"search keys must be dotted config paths. Got {path!r} instead.")
            continue
        canonical = canonical_path(path)
        if canonical in seen:
            problems.append(f"{where} and search.{seen[canonical]} name the same config value; "
                            "keep one.")
            continue
        seen[canonical] = path
        param = _parse_distribution(problems, spec, where, canonical)
        if param is not None:
            params.append(param)
    # Names first: a component parameter is only suggested when the chosen component has it.
    params.sort(key=lambda p: p.path not in COMPONENTS)
    if not problems:
        _check_paths(problems, params, base)
    return tuple(params)


def _parse_distribution(problems, spec, where: str, path: str) -> SearchParam | None:
    if isinstance(spec, list):  # shorthand: a list of choices
        spec = {"type": "categorical", "choices": spec}
    if not isinstance(spec, dict):
        problems.append(f"{where} must be a distribution such as {{type: float, low: 0.0, "
                        f"high: 1.0}} or a list of choices. Got {spec!r} instead.")
        return None
    kind = spec.get("type", "categorical" if "choices" in spec else None)
    if kind not in SEARCH_TYPES:
        problems.append(f"{where}.type must be one of float, int, categorical. "
                        f"Got {kind!r} instead.{did_you_mean(str(kind), list(SEARCH_TYPES))}")
        return None
    allowed = ("type", *SEARCH_TYPES[kind])
    bad = [k for k in spec if k not in allowed]
    if bad:
        problems.append(f"unknown key '{where}.{bad[0]}' for a {kind} search."
                        f"{did_you_mean(str(bad[0]), list(allowed))} Valid keys: "
                        f"{', '.join(allowed)}.")
        return None
    if kind == "categorical":
        choices = spec.get("choices")
        if not isinstance(choices, list) or not choices:
            problems.append(f"{where}.choices must be a non-empty list. Got {choices!r} instead.")
            return None
        if len(choices) > MAX_CHOICES:  # counted before each choice is checked (time per choice)
            problems.append(f"{where}.choices lists {len(choices):,} values, more than "
                            f"{MAX_CHOICES:,}; search a range instead ({{type: float, low: ..., "
                            "high: ...}).")
            return None
        for i, choice in enumerate(choices):
            if not is_finite(choice):
                problems.append(f"{where}.choices[{i}] must be finite. Got {choice!r} instead.")
                return None
            if choice is not None and not isinstance(choice, (bool, int, float, str)):
                problems.append(
                    f"{where}.choices[{i}] must be a number, string, bool or null (Optuna's "
                    f"categorical choices). Got {choice!r} instead. To search strategies with "
                    "parameters, search `strategy` by name and `strategy.<param>` separately.")
                return None
        if len({json.dumps(c) for c in choices}) < len(choices):
            problems.append(f"{where}.choices lists a value twice: {choices!r}.")
            return None
        return SearchParam(path, kind, choices=tuple(choices))
    number = int if kind == "int" else (int, float)
    values = {}
    for key in ("low", "high"):
        value = spec.get(key)
        if (value is None or isinstance(value, bool) or not isinstance(value, number)
                or not is_finite(value)):
            problems.append(f"{where}.{key} is required and must be "
                            f"{'an int' if kind == 'int' else 'a finite number'}. "
                            f"Got {value!r} instead.")
            return None
        values[key] = value
    low, high = values["low"], values["high"]
    log_scale, step = spec.get("log", False), spec.get("step")
    if low > high:
        problems.append(f"{where}: low ({low}) is greater than high ({high}); swap them.")
        return None
    if not isinstance(log_scale, bool):
        problems.append(f"{where}.log must be true or false. Got {log_scale!r} instead.")
        return None
    if log_scale and low <= 0:
        problems.append(f"{where}: a log scale needs low > 0. Got low={low}; use a small "
                        "positive low (e.g. 1.0e-6) or log: false.")
        return None
    if step is not None:
        if (isinstance(step, bool) or not isinstance(step, number) or not is_finite(step)
                or step <= 0):
            problems.append(f"{where}.step must be {'an int' if kind == 'int' else 'a number'} "
                            f"> 0. Got {step!r} instead.")
            return None
        if log_scale:
            problems.append(f"{where}: Optuna cannot combine step with log: true; drop one.")
            return None
    return SearchParam(path, kind, low=low if kind == "int" else float(low),
                       high=high if kind == "int" else float(high), log=log_scale, step=step)


def component_names(base: dict, kind: str) -> list[str]:
    """The names of the base experiment's models or strategies (``kind``: model, strategy)."""
    return [e if isinstance(e, str) else e.get("name") if isinstance(e, dict) else None
            for e in base.get(COMPONENTS[kind]) or []]


def _check_paths(problems, params: list[SearchParam], base: dict) -> None:
    """Check the base and every searched path by applying sample values and parsing the config."""
    try:
        parse_config(base)
    except ConfigError as error:
        problems.extend(error.problems)
        return
    searched = {p.path: p for p in params}
    for kind, key in COMPONENTS.items():
        names = component_names(base, kind)
        if len(names) != 1 and kind not in searched:
            problems.append(
                f"a trial trains one {kind}, but the base lists {len(names)} {key} "
                f"({', '.join(map(str, names))}); keep one, or search over them with "
                f"search: {{{kind}: {{type: categorical, choices: [...]}}}}.")
    devices = base.get("devices", ["cpu"])
    if len(devices) != 1:
        problems.append(f"a trial runs on one device, but the base lists {len(devices)} devices "
                        f"({', '.join(map(str, devices))}); keep one.")
    for param in params:
        where = f"search.{param.path}"
        head, _, rest = param.path.partition(".")
        if head in FIXED:
            problems.append(f"{where}: {head} cannot be searched ({FIXED[head]}).")
            continue
        if head in ("models", "strategies"):
            singular = "model" if head == "models" else "strategy"
            problems.append(f"{where}: a trial trains one {singular}; write "
                            f"{singular}.{rest.partition('.')[2] or '<param>'} (or "
                            f"{head}.0.<param>).")
            continue
        if param.path in COMPONENTS and param.type != "categorical":
            problems.append(f"{where} must be {{type: categorical, choices: [names...]}}.")
            continue
        candidates = (list(searched[head].choices) if head in searched
                      else component_names(base, head)[:1]) if param.component else [None]
        if param.component:
            accepting = [n for n in candidates if takes_parameter(head, n, rest)]
            if head in searched and not accepting:
                problems.append(f"{where}: none of the searched {COMPONENTS[head]} "
                                f"({', '.join(map(str, candidates))}) has a parameter '{rest}'.")
                continue
            candidates = accepting or candidates
        chosen = {head: candidates[0]} if param.component and head in searched else {}
        parsed_values(problems, base, param.path, param.samples(), parse_config, where=where,
                      apply=lambda raw, values, chosen=chosen: trial_experiment(
                          raw, {**values, **chosen}),
                      first_problem_only=True)


def trial_experiment(base: Mapping, values: Mapping[str, Any]) -> dict:
    """The base experiment (plain data) with searched values applied at their dotted paths.

    A chosen model or strategy name takes its parameters from the base entry of that name (if
    any); ``model.<param>`` values then set parameters of the (one) model.

    Example:
        >>> base = {"models": [{"name": "reference_cnn", "width": 0.5}], "strategies": ["none"],
        ...         "train": {"epochs": 2}}
        >>> out = trial_experiment(base, {"train.lr": 0.01, "strategy": "focal",
        ...                          "strategy.gamma": 1.5})
        >>> out["train"], out["strategies"]
        ({'epochs': 2, 'lr': 0.01}, [{'name': 'focal', 'gamma': 1.5}])
    """
    raw = copy.deepcopy(dict(base))
    for kind, key in COMPONENTS.items():  # a trial trains one model and one strategy
        entries = [e if isinstance(e, dict) else {"name": e} for e in raw.get(key) or []]
        if kind in values:
            chosen = values[kind]
            entry = next((dict(e) for e in entries if e.get("name") == chosen), {"name": chosen})
        elif entries:
            entry = dict(entries[0])
        else:
            continue
        raw[key] = [entry]
    if isinstance(raw.get("report"), dict):
        raw["report"].pop("baseline", None)  # the one strategy is its own baseline
    return set_values(raw, {p: v for p, v in values.items() if p not in COMPONENTS})


def suggest_experiment(trial: optuna.Trial, tune_config: TuneConfig) -> dict:
    """Sample one configuration: the trial's experiment as plain data (one cell, k seeds)."""
    values: dict[str, Any] = {}
    for param in tune_config.search:
        head, _, rest = param.path.partition(".")
        if param.component:
            name = values.get(head) or component_names(tune_config.base, head)[0]
            if not takes_parameter(head, name, rest):
                continue  # this model/strategy has no such parameter: not part of this trial
        values[param.path] = param.suggest(trial)
    raw = trial_experiment(tune_config.base, _tidy(values))
    raw["seeds"] = tune_config.seeds
    return raw


def _tidy(values: Mapping[str, Any]) -> dict:
    """Floats to 4 significant digits, so run labels and the generated YAML stay readable.

    Trials train with the rounded values, so the generated experiment is exactly what was scored.
    """
    return {k: float(f"{v:.4g}") if isinstance(v, float) else v for k, v in values.items()}


def best_experiment(tune_config: TuneConfig, params: Mapping[str, Any]) -> ExperimentConfig:
    """The base experiment with ``params`` applied, named ``<study>-best``, on seeds 0, 1, 2.

    The baseline strategy (the base's ``report.baseline``, default ``none``) stays in the grid
    beside the tuned one, with the same tuned training settings, so the report of the best
    experiment compares the two instead of showing one strategy alone.
    """
    raw = trial_experiment(tune_config.base, _tidy(params))
    raw.update(name=f"{tune_config.study}-best", seeds=list(FINAL_SEEDS))
    baseline = (tune_config.base.get("report") or {}).get("baseline", "none")
    tuned = list(raw.get("strategies") or [])[:1]  # trials train the first strategy only
    if tuned and isinstance(baseline, str):
        name = tuned[0] if isinstance(tuned[0], str) else dict(tuned[0]).get("name")
        raw["strategies"] = tuned if name == baseline else [baseline, *tuned]
        raw["report"] = {**(raw.get("report") or {}), "baseline": baseline}
    return parse_config(raw)
