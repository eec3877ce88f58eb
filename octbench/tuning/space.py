"""The tuning YAML: search spaces, validated once, and how a trial's experiment is made from them.

Owns :class:`TuneConfig` and :class:`SearchParam` (parsing and checking a ``search:`` section
against the base experiment), the sampler and pruner a config names, and turning sampled values
into an experiment (:func:`trial_experiment`, dotted paths by
:func:`octbench.config.set_values`, as ``sweep:`` and ``--set``; each searched value checked by
:func:`octbench.config.parsed_values`, as each swept one).

Must not import: the other tuning modules (storage, objective, workers import this one), the
runner, the engine or the report.
"""

from __future__ import annotations

import copy
import inspect
import json
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna

from octbench.config import (
    NAME_PATTERN,
    TOP_LEVEL,
    ExperimentConfig,
    apply_overrides,
    parse_config,
    parsed_values,
    read_yaml,
    set_values,
    takes_parameter,
)
from octbench.dotted import COMPONENTS, canonical_path
from octbench.errors import ConfigError
from octbench.metrics import METRICS
from octbench.registry import did_you_mean, is_finite

TUNE_KEYS = ("study", "base", "search", "objective", "n_trials", "timeout", "seeds_per_trial",
             "sampler", "pruner")
SAMPLERS = {"tpe": "TPESampler", "random": "RandomSampler"}
PRUNERS = {"median": "MedianPruner", "hyperband": "HyperbandPruner", "none": "NopPruner"}
DIRECTIONS = {"maximize": "maximize", "max": "maximize", "minimize": "minimize",
              "min": "minimize"}
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

DEFAULT_SEED = 0
#: Bounds that keep a typo from queueing days of work.
MAX_TRIALS = 100_000
MAX_SEEDS = 100
#: Choices of one categorical search parameter (each is checked as a config value).
MAX_CHOICES = 1_000
#: Measured by benchmarks/pruning.py (README, Tuning): no pruning before 3 trials completed, nor
#: on a trial's first epoch, whose validation score says little about where it ends.
DEFAULT_PRUNER = {"name": "median", "n_startup_trials": 3, "n_warmup_steps": 1}
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


@dataclass(frozen=True)
class TuneConfig:
    """A validated tuning YAML (see the module docstring for the format)."""

    study: str
    base: dict
    search: tuple[SearchParam, ...]
    metric: str = "macro_f1"
    direction: str = "maximize"
    n_trials: int | None = None
    timeout: float | None = None
    seeds_per_trial: int = 1
    sampler: dict = field(default_factory=lambda: {"name": "tpe", "seed": DEFAULT_SEED})
    pruner: dict = field(default_factory=lambda: dict(DEFAULT_PRUNER))
    source: str | None = None
    #: ``--set`` values applied to the file, ``(dotted path, value)`` (workers get them too)
    overrides: tuple[tuple[str, Any], ...] = ()

    @property
    def root(self) -> Path:
        """``<results_dir>/<study>``: the study's files and its trials' run records."""
        return Path(self.base.get("results_dir", "results")) / self.study

    @property
    def seeds(self) -> list[int]:
        return list(range(self.seeds_per_trial))

    def load_data(self):
        """The base experiment's dataset (:func:`octbench.data.load_dataset`)."""
        from octbench.data import load_dataset

        params = dict(self.base["data"])
        return load_dataset(params.pop("name"), **params)

    def identity(self) -> dict:
        """What makes trials comparable; a study is only resumed by a config with the same."""
        base = {k: v for k, v in self.base.items() if k not in ("name", "results_dir")}
        base["train"] = {k: v for k, v in base.get("train", {}).items() if k != "threads"}
        return json.loads(json.dumps({
            "search": {p.path: p.to_dict() for p in self.search},
            "objective": {"metric": self.metric, "direction": self.direction},
            "seeds_per_trial": self.seeds_per_trial, "experiment": base,
        }, sort_keys=True))


def load_tune_config(path: str | Path, overrides: Mapping[str, Any] | None = None) -> TuneConfig:
    """Read and validate a tuning YAML; every problem is reported at once with its YAML path.

    ``overrides`` (``--set``): ``{dotted.path: value}`` for a tuning key (``n_trials``,
    ``sampler.seed``) or a key of the base experiment (``train.epochs``, ``data.scale``).

    Example:
        >>> config = load_tune_config("experiments/tune.yaml")
        >>> config.metric, [p.path for p in config.search][:2]
        ('macro_f1', ['strategy', 'train.lr'])
    """
    path = Path(path)
    raw = read_yaml(path)
    raw.setdefault("study", path.stem)
    return parse_tune_config(raw, source=str(path), base_dir=path.parent, overrides=overrides)


def parse_tune_config(raw: dict, *, source: str | None = None, base_dir: str | Path = ".",
                      overrides: Mapping[str, Any] | None = None) -> TuneConfig:
    """Validate a tuning mapping (as read from YAML); ``base:`` is relative to ``base_dir``.

    Example:
        >>> config = parse_tune_config({
        ...     "study": "demo", "data": {"name": "synthetic", "scale": 0.01},
        ...     "models": [{"name": "reference_cnn", "width": 0.25}],
        ...     "search": {"train.lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True}},
        ...     "n_trials": 4})
        >>> config.search[0].log, config.pruner["name"]
        (True, 'median')
    """
    problems: list[str] = []
    overrides = dict(overrides or {})
    tuning = {k: v for k, v in overrides.items() if k.partition(".")[0] in TUNE_KEYS}
    raw = apply_overrides(raw, tuning, source) if tuning else raw
    experiment = {k: v for k, v in raw.items() if k not in TUNE_KEYS}
    for key in list(experiment):
        hint = did_you_mean(str(key), list(TUNE_KEYS))
        if key not in TOP_LEVEL and hint:  # a misspelt tuning key, not an experiment key
            problems.append(f"unknown key '{key}'.{hint} Tuning keys: {', '.join(TUNE_KEYS)}.")
            experiment.pop(key)

    study = raw.get("study")
    if not isinstance(study, str) or not NAME_PATTERN.match(study):
        problems.append(f"'study' must be a folder-safe name (letters, digits, '_', '.', '-'). "
                        f"Got {study!r} instead.")
        study = "study"
    base = _read_base(problems, raw.get("base"), Path(base_dir), experiment)
    changes = {k: v for k, v in overrides.items() if k not in tuning}
    base = apply_overrides(base, changes, source) if changes else base
    base["name"] = study  # trials' run records say which study they belong to
    base.setdefault("strategies", ["none"])  # parse_config's defaults, made explicit
    base.setdefault("devices", ["cpu"])
    for key in ("models", "strategies", "devices"):
        if key in base and not isinstance(base[key], list):
            base[key] = [base[key]]

    metric, direction = _parse_objective(problems, raw.get("objective", "macro_f1"))
    n_trials = raw.get("n_trials")
    if n_trials is not None and (not isinstance(n_trials, int) or isinstance(n_trials, bool)
                                 or not 1 <= n_trials <= MAX_TRIALS):
        problems.append(f"'n_trials' must be an int from 1 to {MAX_TRIALS:,}. Got {n_trials!r} "
                        "instead.")
    timeout = raw.get("timeout")
    if timeout is not None and (not isinstance(timeout, (int, float)) or not is_finite(timeout)
                                or isinstance(timeout, bool) or timeout <= 0):
        problems.append(f"'timeout' must be a number of seconds > 0. Got {timeout!r} instead.")
    if n_trials is None and timeout is None:
        problems.append("set 'n_trials' (e.g. n_trials: 20) and/or 'timeout' (seconds); "
                        "otherwise the study would never end.")
    seeds = raw.get("seeds_per_trial", 1)
    if not isinstance(seeds, int) or isinstance(seeds, bool) or not 1 <= seeds <= MAX_SEEDS:
        problems.append(f"'seeds_per_trial' must be an int from 1 to {MAX_SEEDS}. Got {seeds!r} "
                        "instead.")
        seeds = 1
    sampler = _parse_choice(problems, raw.get("sampler", "tpe"), "sampler", SAMPLERS,
                            optuna.samplers)
    if sampler is not None:
        sampler.setdefault("seed", DEFAULT_SEED)  # reproducible unless told `seed: null`
    pruner = _parse_choice(problems, raw.get("pruner", DEFAULT_PRUNER), "pruner", PRUNERS,
                           optuna.pruners)
    if pruner is not None and pruner["name"] == DEFAULT_PRUNER["name"]:
        pruner = {**DEFAULT_PRUNER, **pruner}  # `pruner: median` keeps the measured settings
    search = _parse_search(problems, raw.get("search"), base)
    if problems:
        raise ConfigError(problems, source)
    return TuneConfig(study=study, base=base, search=search, metric=metric, direction=direction,
                      n_trials=n_trials, timeout=float(timeout) if timeout else None,
                      seeds_per_trial=seeds, sampler=sampler, pruner=pruner, source=source,
                      overrides=tuple(overrides.items()))


def _read_base(problems, base_path, base_dir: Path, inline: dict) -> dict:
    """The base experiment: ``base:`` file (if any) with the inline keys merged over it."""
    base: dict = {}
    if base_path is not None:
        if not isinstance(base_path, str):
            problems.append(f"'base' must be the path of an experiment YAML. "
                            f"Got {base_path!r} instead.")
        else:
            path = base_dir / base_path
            try:
                base = read_yaml(path)
            except ConfigError as error:
                problems.extend(f"base ({path}): {p}" for p in error.problems)
    elif not inline:
        problems.append("no experiment: give 'base: path/to/experiment.yaml' or the experiment's "
                        "keys (data, models, strategies, train, ...) in this file.")
    return _merge(base, inline)


def _merge(base: dict, override: dict) -> dict:
    """Deep-merge mappings (``train: {lr: ...}`` in the tuning file overrides one field)."""
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict) and key != "data":
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _parse_objective(problems, raw) -> tuple[str, str]:
    if isinstance(raw, str):
        raw = {"metric": raw}
    if not isinstance(raw, dict):
        problems.append(f"'objective' must be a metric name or {{metric: ..., direction: ...}}. "
                        f"Got {raw!r} instead.")
        return "macro_f1", "maximize"
    unknown = sorted(set(raw) - {"metric", "direction"})
    if unknown:
        problems.append(f"unknown key 'objective.{unknown[0]}'; valid keys: metric, direction.")
    metric = raw.get("metric", "macro_f1")
    if metric not in METRICS:
        problems.append(f"objective.metric must be a validation metric, one of "
                        f"{', '.join(METRICS)}. Got {metric!r} instead."
                        f"{did_you_mean(str(metric), list(METRICS))}")
        return "macro_f1", "maximize"
    natural = "maximize" if METRICS[metric] == "max" else "minimize"
    direction = raw.get("direction", natural)
    if direction not in DIRECTIONS:
        problems.append(f"objective.direction must be maximize or minimize. "
                        f"Got {direction!r} instead.")
    elif DIRECTIONS[direction] != natural:
        problems.append(f"objective.direction '{direction}' contradicts the metric: {metric} "
                        f"improves when it goes {'up' if natural == 'maximize' else 'down'}; "
                        f"write direction: {natural} or leave it out.")
    return metric, natural


def _parse_choice(problems, raw, key: str, names: dict, module) -> dict | None:
    """``name`` or ``{name, **params}`` of an Optuna sampler or pruner, built once to check it."""
    if isinstance(raw, str):
        raw = {"name": raw}
    if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
        problems.append(f"'{key}' must be a name ({', '.join(names)}) or a mapping with 'name' "
                        f"and its parameters. Got {raw!r} instead.")
        return None
    name, params = raw["name"], {k: v for k, v in raw.items() if k != "name"}
    if name not in names:
        problems.append(f"{key}.name: unknown {key} '{name}'.{did_you_mean(name, list(names))} "
                        f"Choices: {', '.join(names)}.")
        return None
    cls = getattr(module, names[name])
    accepted = [p for p in inspect.signature(cls).parameters if p != "self"]
    unknown = [p for p in params if p not in accepted]
    for param in unknown:
        problems.append(f"unknown parameter '{key}.{param}' of {key} '{name}'."
                        f"{did_you_mean(param, accepted)} Parameters: "
                        f"{', '.join(accepted) or 'none'}.")
    if not unknown:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                cls(**params)
        except (TypeError, ValueError) as error:
            problems.append(f"{key} '{name}' rejects {params}: {error}")
    return {"name": name, **params}


def _parse_search(problems, raw, base: dict) -> tuple[SearchParam, ...]:
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


def _component_names(base: dict, kind: str) -> list[str]:
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
        names = _component_names(base, kind)
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
                      else _component_names(base, head)[:1]) if param.component else [None]
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
            name = values.get(head) or _component_names(tune_config.base, head)[0]
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



def make_sampler(tune_config: TuneConfig, offset: int) -> optuna.samplers.BaseSampler:
    """The config's Optuna sampler; its seed is shifted by ``offset`` (per worker and session)."""
    params = {k: v for k, v in tune_config.sampler.items() if k != "name"}
    if params.get("seed") is not None:
        # Each worker and each resumed session draws its own random numbers (same seed, same
        # sequence of studies), so two workers never propose identical first trials.
        params["seed"] = params["seed"] + offset
    return getattr(optuna.samplers, SAMPLERS[tune_config.sampler["name"]])(**params)


def make_pruner(tune_config: TuneConfig) -> optuna.pruners.BasePruner:
    """The config's Optuna pruner."""
    params = {k: v for k, v in tune_config.pruner.items() if k != "name"}
    return getattr(optuna.pruners, PRUNERS[tune_config.pruner["name"]])(**params)

