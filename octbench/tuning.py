"""Hyperparameter tuning with Optuna, used as it is: objective -> study -> storage.

A tuning YAML names a base experiment (inline keys, or ``base: file.yaml`` plus inline
overrides) and a ``search:`` section mapping dotted config paths to Optuna distributions::

    study: quickstart-tune
    base: quickstart.yaml                 # relative to this file
    strategies: [focal]                   # inline keys override the base
    search:
      train.lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}
      train.batch_size: {type: categorical, choices: [64, 128, 256]}
      strategy.gamma: {type: float, low: 0.0, high: 5.0}
    objective: {metric: macro_f1}         # a validation metric; direction from the metric
    n_trials: 20                          # and/or timeout: seconds
    seeds_per_trial: 1                    # > 1: the objective is the mean over seeds
    sampler: {name: tpe, seed: 0}         # tpe (default) or random
    pruner: {name: median, n_startup_trials: 3}   # median (default), hyperband or none

Paths: ``train.<field>``; ``model`` / ``strategy`` (categorical over registry names) and
``model.<param>`` / ``strategy.<param>`` (``models.0.<param>``, ``strategies.0.<param>`` too). A
parameter path is suggested only when the chosen model or strategy has that parameter (an
Optuna define-by-run conditional space). Every path is checked up-front by applying sample
values to the base experiment and validating the result with :func:`octbench.config.parse_config`.

A trial trains one model x one strategy on one device for ``seeds_per_trial`` seeds with
:func:`octbench.runner.execute_run` on the train and validation splits only: the test split is
removed from the data handed to trials. Per-epoch validation values (the running mean over seeds)
feed the pruner. Completed runs are stored as run records (``kind="trial"``) under
``results/<study>/trials/<trial>/``.

Storage: a SQLite file ``results/<study>/study.db`` by default; with ``workers > 1`` an Optuna
journal file ``results/<study>/journal.log`` (SQLite is not safe for several processes); any
Optuna RDB URL (``postgresql://...``) for several machines. Dead trials are never left RUNNING:
RDB storages record heartbeats and fail trials whose heartbeat stops; on every storage a
RUNNING trial whose worker process on *this* machine no longer exists is failed at once. Either
way Optuna's ``RetryHeartbeatStaleTrialCallback`` queues the trial again with its parameters, and
the retry resumes the killed run from its last epoch checkpoint.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import datetime as dt
import inspect
import json
import logging
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import yaml
from optuna.trial import TrialState

from octbench.config import NAME_PATTERN, TOP_LEVEL, ExperimentConfig, parse_config, read_yaml
from octbench.errors import ConfigError, OctbenchError
from octbench.fileio import atomic_write_text, pid_alive
from octbench.registry import did_you_mean

log = logging.getLogger(__name__)

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
#: ``model`` -> the experiment key holding it; the registry is looked up lazily.
COMPONENTS = {"model": "models", "strategy": "strategies"}

DEFAULT_SEED = 0
#: Measured by benchmarks/pruning.py (README, Tuning): no pruning before 3 trials completed, nor
#: on a trial's first epoch, whose validation score says little about where it ends.
DEFAULT_PRUNER = {"name": "median", "n_startup_trials": 3, "n_warmup_steps": 1}
GENERATED_DIR = Path("experiments/generated")
FINAL_SEEDS = (0, 1, 2)
#: RDB heartbeats: a trial whose worker stopped beating for GRACE seconds is failed and retried.
HEARTBEAT_INTERVAL_S, HEARTBEAT_GRACE_S = 10, 60
#: A killed trial is retried with the same parameters at most this many times.
MAX_RETRY = 2
#: A RUNNING trial that no worker has claimed for this long was left by a dead worker.
UNCLAIMED_GRACE_S = 60
#: A worker stops after this many failed trials in a row (a broken setup, not bad luck).
MAX_CONSECUTIVE_FAILURES = 5
OWNER_ATTR, ORIGIN_ATTR = "octbench_worker", "octbench_origin"
ERROR_ATTR, SURPLUS_ATTR = "octbench_error", "octbench_surplus"
STUDY_ATTR = "octbench"
STUDY_FILE = "study.json"
COUNTED = (TrialState.COMPLETE, TrialState.PRUNED)


class TrialFailed(Exception):
    """A trial's run failed (its FAILED run record holds the details); Optuna records FAIL."""


class _BudgetReached(Exception):
    """Raised by a trial that was asked for after the study reached ``n_trials``."""


# ---------------------------------------------------------------------------------------------
# Configuration


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


def load_tune_config(path: str | Path) -> TuneConfig:
    """Read and validate a tuning YAML; every problem is reported at once with its YAML path.

    Example:
        >>> config = load_tune_config("experiments/tune.yaml")
        >>> config.metric, [p.path for p in config.search][:2]
        ('macro_f1', ['strategy', 'train.lr'])
    """
    path = Path(path)
    raw = read_yaml(path)
    raw.setdefault("study", path.stem)
    return parse_tune_config(raw, source=str(path), base_dir=path.parent)


def parse_tune_config(raw: dict, *, source: str | None = None,
                      base_dir: str | Path = ".") -> TuneConfig:
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
    base["name"] = study  # trials' run records say which study they belong to
    base.setdefault("strategies", ["none"])  # parse_config's defaults, made explicit
    base.setdefault("devices", ["cpu"])
    for key in ("models", "strategies", "devices"):
        if key in base and not isinstance(base[key], list):
            base[key] = [base[key]]

    metric, direction = _parse_objective(problems, raw.get("objective", "macro_f1"))
    n_trials = raw.get("n_trials")
    if n_trials is not None and (not isinstance(n_trials, int) or isinstance(n_trials, bool)
                                 or n_trials < 1):
        problems.append(f"'n_trials' must be an int >= 1. Got {n_trials!r} instead.")
    timeout = raw.get("timeout")
    if timeout is not None and (not isinstance(timeout, (int, float))
                                or isinstance(timeout, bool) or timeout <= 0):
        problems.append(f"'timeout' must be a number of seconds > 0. Got {timeout!r} instead.")
    if n_trials is None and timeout is None:
        problems.append("set 'n_trials' (e.g. n_trials: 20) and/or 'timeout' (seconds); "
                        "otherwise the study would never end.")
    seeds = raw.get("seeds_per_trial", 1)
    if not isinstance(seeds, int) or isinstance(seeds, bool) or seeds < 1:
        problems.append(f"'seeds_per_trial' must be an int >= 1. Got {seeds!r} instead.")
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
                      seeds_per_trial=seeds, sampler=sampler, pruner=pruner, source=source)


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
    from octbench.metrics import METRICS

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


def _canonical(path: str) -> str:
    for alias, name in (("models.0", "model"), ("strategies.0", "strategy")):
        if path == alias or path.startswith(alias + "."):
            return name + path[len(alias):]
    return path


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
        canonical = _canonical(path)
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
        for i, choice in enumerate(choices):
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
        if value is None or isinstance(value, bool) or not isinstance(value, number):
            problems.append(f"{where}.{key} is required and must be "
                            f"{'an int' if kind == 'int' else 'a number'}. "
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
        if isinstance(step, bool) or not isinstance(step, number) or step <= 0:
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


def _accepts(kind: str, name: str, param: str) -> bool:
    """Whether model/strategy ``name`` takes the keyword ``param`` (timm models take any)."""
    if kind == "model":
        from octbench.models import DATA_PARAMS, MODELS

        registry, data_params = MODELS, DATA_PARAMS
    else:
        from octbench.strategies import STRATEGIES

        registry, data_params = STRATEGIES, ("class_counts",)
    if not isinstance(name, str) or name not in registry:
        return kind == "model" and isinstance(name, str) and name.startswith("timm:")
    return param in registry.parameters(name) and param not in data_params


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
            accepting = [n for n in candidates if _accepts(head, n, rest)]
            if head in searched and not accepting:
                problems.append(f"{where}: none of the searched {COMPONENTS[head]} "
                                f"({', '.join(map(str, candidates))}) has a parameter '{rest}'.")
                continue
            candidates = accepting or candidates
        for sample in param.samples():
            values = {param.path: sample}
            if param.component and head in searched:
                values[head] = candidates[0]
            try:
                parse_config(apply_values(base, values))
            except _PathError as error:
                problems.append(f"{where}: {error}")
                break
            except ConfigError as error:
                problems.extend(f"{where} = {sample!r}: {p}" for p in error.problems)
                break


class _PathError(ValueError):
    pass


def apply_values(base: Mapping, values: Mapping[str, Any]) -> dict:
    """The base experiment (plain data) with searched values applied at their dotted paths.

    A chosen model or strategy name takes its parameters from the base entry of that name (if
    any); ``model.<param>`` values then set parameters of the (one) model.

    Example:
        >>> base = {"models": [{"name": "reference_cnn", "width": 0.5}], "strategies": ["none"],
        ...         "train": {"epochs": 2}}
        >>> out = apply_values(base, {"train.lr": 0.01, "strategy": "focal",
        ...                          "strategy.gamma": 1.5})
        >>> out["train"], out["strategies"]
        ({'epochs': 2, 'lr': 0.01}, [{'name': 'focal', 'gamma': 1.5}])
    """
    raw = copy.deepcopy(dict(base))
    for kind, key in COMPONENTS.items():
        entries = [e if isinstance(e, dict) else {"name": e} for e in raw.get(key) or []]
        if kind in values:
            chosen = values[kind]
            entry = next((dict(e) for e in entries if e.get("name") == chosen), {"name": chosen})
        elif entries:
            entry = dict(entries[0])
        else:
            continue
        entry.update({p.partition(".")[2]: v for p, v in values.items()
                      if p.partition(".")[0] == kind and "." in p})
        raw[key] = [entry]
    if isinstance(raw.get("report"), dict):
        raw["report"].pop("baseline", None)  # the one strategy is its own baseline
    for path, value in values.items():
        parts = path.split(".")
        if parts[0] in COMPONENTS:
            continue
        node = raw
        for i, part in enumerate(parts[:-1]):
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise _PathError(f"{'.'.join(parts[:i + 1])} is a value, not a section; "
                                 "no path goes below it.")
        node[parts[-1]] = value
    return raw


# ---------------------------------------------------------------------------------------------
# Objective


def suggest_experiment(trial: optuna.Trial, tune_config: TuneConfig) -> dict:
    """Sample one configuration: the trial's experiment as plain data (one cell, k seeds)."""
    values: dict[str, Any] = {}
    for param in tune_config.search:
        head, _, rest = param.path.partition(".")
        if param.component:
            name = values.get(head) or _component_names(tune_config.base, head)[0]
            if not _accepts(head, name, rest):
                continue  # this model/strategy has no such parameter: not part of this trial
        values[param.path] = param.suggest(trial)
    raw = apply_values(tune_config.base, _tidy(values))
    raw["seeds"] = tune_config.seeds
    return raw


def _tidy(values: Mapping[str, Any]) -> dict:
    """Floats to 4 significant digits, so run labels and the generated YAML stay readable.

    Trials train with the rounded values, so the generated experiment is exactly what was scored.
    """
    return {k: float(f"{v:.4g}") if isinstance(v, float) else v for k, v in values.items()}


def make_objective(tune_config: TuneConfig, *, data=None, quiet: bool = True,
                   budget: int | None = None) -> Callable[[optuna.Trial], float]:
    """An Optuna objective: sample a config, train it on k seeds, return the mean val metric.

    Each epoch reports the running mean over seeds (finished seeds' values and the current
    seed's epoch value) at step ``seed_index * epochs + epoch``; the trial is pruned when the
    study's pruner says so. Runs are written under ``<results_dir>/<study>/trials/<trial>/``
    (``kind="trial"``, no test metrics: the test split is removed from the data).

    Args:
        tune_config: from :func:`load_tune_config`.
        data: the loaded dataset (default: loaded on the first trial).
        quiet: no progress bars.
        budget: ``n_trials`` shared by several workers; a trial asked for after the study
            reached it fails at once (``tune`` sets this; leave None with a plain study).

    Example:
        >>> import optuna
        >>> config = load_tune_config("experiments/tune.yaml")
        >>> study = optuna.create_study(direction=config.direction)
        >>> study.optimize(make_objective(config), n_trials=2)  # doctest: +SKIP
    """
    from octbench.data import Split
    from octbench.results import COMPLETE, ResultsStore, RunLocked
    from octbench.runner import RunSpec, execute_run

    cache = {"data": data}

    def tuning_data():
        if cache["data"] is None:
            cache["data"] = tune_config.load_data()
        data = cache["data"]
        if len(data.test):  # never let a trial see the test split
            empty = Split(data.test.images[:0], data.test.labels[:0])
            cache["data"] = data = dataclasses.replace(data, test=empty)
        return data

    def objective(trial: optuna.Trial) -> float:
        trial.set_user_attr(OWNER_ATTR, _owner(trial.number))
        try:
            if budget is not None:
                _wait_for_slot(trial, budget)
            return run_trial(trial)
        except _BudgetReached:
            trial.set_user_attr(SURPLUS_ATTR, True)
            raise
        except TrialFailed as error:
            trial.set_user_attr(ERROR_ATTR, str(error)[:2000])
            raise

    def run_trial(trial: optuna.Trial) -> float:
        # A retried trial keeps its original number here, so it resumes the same runs.
        origin = trial.user_attrs.get(ORIGIN_ATTR, trial.number)
        trial.set_user_attr(ORIGIN_ATTR, origin)
        try:
            config = parse_config(suggest_experiment(trial, tune_config))
        except ConfigError as error:
            raise TrialFailed(str(error)) from None
        store = ResultsStore(tune_config.root / "trials" / f"{origin:04d}")
        store.prepare()
        data = tuning_data()
        epochs = config.train.epochs
        finished: list[float] = []
        try:
            for index, seed in enumerate(config.seeds):
                spec = RunSpec(config.name, config.data, config.models[0], config.strategies[0],
                               seed, config.devices[0], config.train)

                def report(epoch: int, val_metrics: dict, index=index, seed=seed) -> None:
                    value = statistics.fmean([*finished, val_metrics[tune_config.metric]])
                    trial.report(value, index * epochs + epoch)
                    if trial.should_prune():
                        raise optuna.TrialPruned(
                            f"val {tune_config.metric} {value:.4f} at epoch {epoch + 1} of "
                            f"seed {seed}")

                record = None
                if store.is_complete(spec.run_id):  # a retried trial: this seed already ran
                    record = store.read(spec.run_id)
                else:
                    try:
                        with store.claim(spec.run_id):
                            record = execute_run(spec, data, store, quiet=quiet,
                                                 on_epoch=report, evaluate_test=False,
                                                 kind="trial")
                    except optuna.TrialPruned:
                        shutil.rmtree(store.run_dir(spec.run_id), ignore_errors=True)
                        raise
                    except RunLocked as busy:
                        raise TrialFailed(str(busy)) from None
                if record.status != COMPLETE:
                    raise TrialFailed(f"seed {seed}: {record.status}: {record.error}")
                finished.append(record.metrics["val"][tune_config.metric])
        except KeyboardInterrupt:
            # Optuna marks this trial FAIL; queue it again so a rerun resumes its checkpoint.
            frozen = next(t for t in trial.study.get_trials(deepcopy=False)
                          if t.number == trial.number)
            _retry_callback()(trial.study, frozen)
            raise
        trial.set_user_attr("seed_values", finished)
        return statistics.fmean(finished)

    return objective


def _wait_for_slot(trial: optuna.Trial, n_trials: int, poll_s: float = 1.0) -> None:
    """Let this trial run only if it fits in ``n_trials`` together with lower-numbered ones.

    Several workers may ask for a trial at the same moment near the end of a study; trial
    numbers are unique, so the lower-numbered trials go first and an extra one fails at once.
    """
    while True:
        study = trial.study
        _fail_dead_trials(study)
        trials = study.get_trials(deepcopy=False)
        done = sum(t.state in COUNTED for t in trials)
        ahead = sum(t.state == TrialState.RUNNING and t.number < trial.number for t in trials)
        if done >= n_trials:
            study.stop()
            raise _BudgetReached(f"the study already has {n_trials} finished trials")
        if done + ahead < n_trials:
            return
        time.sleep(poll_s)  # the trials ahead may still fail; then this one is needed


# ---------------------------------------------------------------------------------------------
# Dead workers


def _process_start(pid: int) -> str:
    """The process's start time in clock ticks (Linux), to tell a reused pid apart."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return "-"
    fields = stat.rpartition(")")[2].split()
    return fields[19] if len(fields) > 19 and fields[0] != "Z" else "-"


def _owner(number: int) -> str:
    return f"{socket.gethostname()}|{os.getpid()}|{_process_start(os.getpid())}|{number}"


def _alive(pid: int, start: str) -> bool:
    if not pid_alive(pid):
        return False
    if Path("/proc").is_dir():
        now = _process_start(pid)
        return now != "-" and (start == "-" or now == start)  # "-" also for a zombie
    return True


def _is_dead(trial: optuna.trial.FrozenTrial) -> bool:
    parts = str(trial.user_attrs.get(OWNER_ATTR, "")).split("|")
    if len(parts) == 4 and parts[3] == str(trial.number) and parts[1].isdigit():
        host, pid, start, _ = parts
        # Another machine's trial: only its heartbeat (RDB storages) can tell.
        return host == socket.gethostname() and not _alive(int(pid), start)
    # Not claimed yet: just asked for (claimed within milliseconds) or abandoned long ago.
    started = trial.datetime_start
    return started is not None and (dt.datetime.now() - started).total_seconds() > \
        UNCLAIMED_GRACE_S


def _retry_callback():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.storages.RetryHeartbeatStaleTrialCallback(
            max_retry=MAX_RETRY, inherit_intermediate_values=True)


def _fail_dead_trials(study: optuna.Study) -> list[int]:
    """Fail RUNNING trials whose worker is gone, queue their retries; return their numbers.

    The rule: a trial's worker records ``host|pid|start time|trial number`` when it starts the
    trial. A RUNNING trial whose worker is on this machine and no longer runs (killed,
    crashed, or a reused pid) is dead; so is one never claimed for UNCLAIMED_GRACE_S. Trials of
    other machines are left to the RDB heartbeat (``fail_stale_trials``, checked here too).
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)  # heartbeat storages only; no-op otherwise
    failed = []
    retry = _retry_callback()
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if not _is_dead(trial):
            continue
        try:
            study.tell(trial.number, state=TrialState.FAIL)
        except (ValueError, optuna.exceptions.UpdateFinishedTrialError):
            continue  # another worker failed it first
        retry(study, trial)
        failed.append(trial.number)
        log.info("trial %d was left RUNNING by a dead worker: failed it and queued a retry",
                 trial.number)
    return failed


# ---------------------------------------------------------------------------------------------
# Storage


def _mask(spec: str) -> str:
    if spec.startswith("journal:"):
        return spec
    try:
        from sqlalchemy.engine import make_url

        return make_url(spec).render_as_string(hide_password=True)
    except Exception:  # not a URL at all; it is reported elsewhere
        return spec


def open_storage(spec: str) -> optuna.storages.BaseStorage:
    """Open an Optuna storage: an RDB URL (with heartbeats) or ``journal:PATH``.

    Example:
        >>> storage = open_storage("sqlite:///:memory:")
        >>> storage.get_heartbeat_interval()
        10
    """
    masked = _mask(spec)
    try:
        if spec.startswith("journal:"):
            path = Path(spec[len("journal:"):])
            if not path.parent.is_dir():
                raise OSError(f"folder {path.parent} does not exist")
            backend = optuna.storages.journal.JournalFileBackend(str(path))
            return optuna.storages.JournalStorage(backend)
        engine_kwargs = {}
        if spec.startswith(("postgresql", "mysql")):
            engine_kwargs = {"connect_args": {"connect_timeout": 10}, "pool_pre_ping": True}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.storages.RDBStorage(
                spec, engine_kwargs=engine_kwargs, heartbeat_interval=HEARTBEAT_INTERVAL_S,
                grace_period=HEARTBEAT_GRACE_S, heartbeat_stale_trial_callback=_retry_callback())
    except ImportError as error:
        raise OctbenchError(
            f"cannot open the Optuna storage {masked}: its database driver is missing ({error}). "
            "For PostgreSQL: pip install 'octbench[postgres]'.") from None
    except Exception as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
        raise OctbenchError(
            f"cannot open the Optuna storage {masked}: {reason}. Check the URL (e.g. "
            "postgresql://user:password@host:5432/db or sqlite:///path/study.db), that the "
            "server is running and reachable from here, and the credentials.") from None


def _recorded(root: Path) -> dict:
    try:
        return json.loads((root / STUDY_FILE).read_text())
    except (OSError, ValueError):
        return {}


def _local_spec(root: Path, kind: str) -> str:
    if kind == "journal":
        return f"journal:{(root / 'journal.log').resolve()}"
    return f"sqlite:///{(root / 'study.db').resolve()}"


def resolve_storage(tune_config: TuneConfig, storage: str | None, workers: int) -> str:
    """The storage spec of this study: given, recorded in ``study.json``, or the default."""
    root = tune_config.root
    recorded = _recorded(root)
    if storage is None and recorded.get("storage_kind") in ("sqlite", "journal"):
        storage = _local_spec(root, recorded["storage_kind"])
    elif storage is None and recorded.get("storage_kind") == "url":
        raise OctbenchError(
            f"study '{tune_config.study}' lives in {recorded.get('storage')}; pass that URL "
            "again with --storage (passwords are not stored).")
    elif storage is None:
        storage = _local_spec(root, "journal" if workers > 1 else "sqlite")
    if workers > 1 and storage.startswith("sqlite"):
        raise OctbenchError(
            f"--workers {workers} cannot share the SQLite storage {_mask(storage)}: SQLite is "
            "not safe for several processes. Use --workers 1, a new study name (it gets a "
            "journal file), or --storage postgresql://...")
    return storage


def _storage_kind(spec: str, root: Path) -> str:
    for kind in ("sqlite", "journal"):
        if spec == _local_spec(root, kind):
            return kind
    return "url"


def _check_study(tune_config: TuneConfig, storage) -> bool:
    """Whether the study exists; fail if it was created for a different search or objective."""
    try:
        summaries = optuna.get_all_study_names(storage)
    except Exception as error:
        raise OctbenchError(f"cannot read studies from the storage: {error}") from None
    if tune_config.study not in summaries:
        return False
    study = optuna.load_study(study_name=tune_config.study, storage=storage)
    stored = study.user_attrs.get(STUDY_ATTR)
    mine = tune_config.identity()
    if stored is None:
        raise OctbenchError(
            f"a study named '{tune_config.study}' already exists in this storage but was not "
            "made by `octbench tune`; choose another `study:` name.")
    if stored != mine:
        differ = sorted(k for k in mine if stored.get(k) != mine.get(k))
        raise OctbenchError(
            f"study '{tune_config.study}' already exists with a different "
            f"{' and '.join(differ)} (stored: {json.dumps({k: stored.get(k) for k in differ})}); "
            "its trials would not be comparable. Choose another `study:` name, or restore the "
            "original settings to resume it.")
    return True


def _make_sampler(tune_config: TuneConfig, offset: int) -> optuna.samplers.BaseSampler:
    params = {k: v for k, v in tune_config.sampler.items() if k != "name"}
    if params.get("seed") is not None:
        # Each worker and each resumed session draws its own random numbers (same seed, same
        # sequence of studies), so two workers never propose identical first trials.
        params["seed"] = params["seed"] + offset
    return getattr(optuna.samplers, SAMPLERS[tune_config.sampler["name"]])(**params)


def _make_pruner(tune_config: TuneConfig) -> optuna.pruners.BasePruner:
    params = {k: v for k, v in tune_config.pruner.items() if k != "name"}
    return getattr(optuna.pruners, PRUNERS[tune_config.pruner["name"]])(**params)


# ---------------------------------------------------------------------------------------------
# Running a study


@dataclass
class TuneResult:
    """What :func:`tune` did: the study, its counts, the best trial and the generated YAML."""

    study: str
    storage: str
    counts: dict[str, int]
    best_value: float | None = None
    best_params: dict = field(default_factory=dict)
    best_trial: int | None = None
    generated: Path | None = None


def tune(tune_config: TuneConfig, *, workers: int = 1, storage: str | None = None,
         quiet: bool = False, say: Callable[[str], None] = print,
         generated_dir: str | Path = GENERATED_DIR) -> TuneResult:
    """Run (or resume) a study until it has ``n_trials`` finished trials or ``timeout`` passed.

    Everything is checked before anything is written: the config, the device, the data, the
    storage and, for an existing study, that it was made with the same search and objective.
    With ``workers > 1`` the study is created here and ``workers`` processes
    (``python -m octbench tune CONFIG --worker I``) share it.

    Args:
        tune_config: from :func:`load_tune_config`.
        workers: processes on this machine.
        storage: an Optuna RDB URL or ``journal:PATH``; default ``results/<study>/study.db``
            (one worker) or ``results/<study>/journal.log`` (several).
        quiet: no progress bars.
        say: where progress lines go.
        generated_dir: where ``<study>-best.yaml`` is written.

    Example:
        >>> result = tune(load_tune_config("experiments/tune.yaml"))  # doctest: +SKIP
        >>> result.best_params  # doctest: +SKIP
        {'train.lr': 0.0023, ...}
    """
    from octbench.devices import check_precision, resolve_device

    optuna.logging.set_verbosity(optuna.logging.ERROR)  # our own one line per trial instead
    if workers < 1:
        raise OctbenchError(f"--workers must be >= 1. Got {workers} instead.")
    if workers > 1 and tune_config.source is None:
        raise OctbenchError("several workers need a tuning YAML file to start from; "
                            "use load_tune_config(path).")
    device = resolve_device(tune_config.base.get("devices", ["cpu"])[0])  # unavailable: fail now
    check_precision(device, tune_config.base.get("train", {}).get("precision", "fp32"))
    spec = resolve_storage(tune_config, storage, workers)
    root = tune_config.root
    local = _local_file(spec)
    if local is not None and not local.exists():  # a new file: open it once checks are done
        opened = None
        if local.parent.resolve() != root.resolve() and not local.parent.is_dir():
            raise OctbenchError(f"cannot open the Optuna storage {_mask(spec)}: folder "
                                f"{local.parent} does not exist; create it or fix the path.")
    else:
        opened = open_storage(spec)
        _check_study(tune_config, opened)
    data = tune_config.load_data()

    # Checks done: from here on we write.
    root.mkdir(parents=True, exist_ok=True)
    opened = opened or open_storage(spec)
    study = _create_study(tune_config, opened)
    _write_study_file(tune_config, spec, data.synthetic)
    dead = _fail_dead_trials(study)
    if dead:
        say(f"trial(s) {', '.join(map(str, dead))} were left RUNNING by a killed process: "
            "marked failed and queued for retry.")
    busy = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    if busy and spec.startswith("sqlite"):
        owner = str(busy[0].user_attrs.get(OWNER_ATTR, "?|?")).split("|")
        raise OctbenchError(
            f"trial {busy[0].number} of study '{tune_config.study}' is running in another "
            f"process ({owner[0]}, pid {owner[1]}); SQLite is not safe for two processes. Wait "
            "for it, or stop it and rerun; use --workers N for several processes.")
    counts = _counts(study)
    timeout = f", timeout {tune_config.timeout:g} s" if tune_config.timeout else ""
    say(f"study '{tune_config.study}' in {_mask(spec)}: {counts['finished']} finished trial(s) "
        f"so far; target {tune_config.n_trials or 'none'}{timeout}"
        + (" [synthetic data]" if data.synthetic else ""))
    if workers == 1:
        _run_worker(tune_config, opened, index=0, workers=1, data=data, quiet=quiet, say=say)
    else:
        killed = _run_workers(tune_config, spec, workers, quiet=quiet, say=say)
        if killed and _remaining(study, tune_config) > 0:  # its retry may have no taker left
            say("finishing the trials that killed workers left")
            _run_worker(tune_config, opened, index=workers, workers=1, data=data, quiet=quiet,
                        say=say)
    return _finish(tune_config, study, spec, data.synthetic, say, Path(generated_dir))


def _local_file(spec: str) -> Path | None:
    """The file of a journal or SQLite storage (None for servers and in-memory SQLite)."""
    if spec.startswith("journal:"):
        return Path(spec[len("journal:"):])
    if spec.startswith("sqlite:///") and ":memory:" not in spec:
        return Path(spec[len("sqlite:///"):])
    return None


def _create_study(tune_config: TuneConfig, storage) -> optuna.Study:
    study = optuna.create_study(
        study_name=tune_config.study, storage=storage, direction=tune_config.direction,
        sampler=_make_sampler(tune_config, 0), pruner=_make_pruner(tune_config),
        load_if_exists=True)
    if STUDY_ATTR not in study.user_attrs:
        study.set_user_attr(STUDY_ATTR, tune_config.identity())
    return study


def _write_study_file(tune_config: TuneConfig, spec: str, synthetic: bool, **extra) -> None:
    root = tune_config.root
    info = {**_recorded(root), "study": tune_config.study,
            "storage_kind": _storage_kind(spec, root), "storage": _mask(spec),
            "source": tune_config.source, "metric": tune_config.metric,
            "direction": tune_config.direction, "n_trials": tune_config.n_trials,
            "seeds_per_trial": tune_config.seeds_per_trial, "synthetic": synthetic, **extra}
    atomic_write_text(root / STUDY_FILE, json.dumps(info, indent=2, default=str))


def _counts(study: optuna.Study) -> dict[str, int]:
    trials = study.get_trials(deepcopy=False)
    counts = {state.name.lower(): sum(t.state == state for t in trials) for state in TrialState}
    counts["finished"] = counts["complete"] + counts["pruned"]
    return counts


def _remaining(study: optuna.Study, tune_config: TuneConfig) -> int:
    if tune_config.n_trials is None:
        return 0
    return tune_config.n_trials - _counts(study)["finished"]


def run_worker(tune_config: TuneConfig, *, storage: str, index: int, workers: int,
               quiet: bool = False, say: Callable[[str], None] = print) -> None:
    """One worker process of a multi-worker study (``octbench tune --worker``)."""
    opened = open_storage(storage)
    data = tune_config.load_data()
    with _threads_per_worker(tune_config, workers):
        _run_worker(tune_config, opened, index=index, workers=workers, data=data, quiet=quiet,
                    say=say)


def _run_worker(tune_config: TuneConfig, storage, *, index: int, workers: int, data,
                quiet: bool, say) -> None:
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # our own one line per trial instead
    probe = optuna.load_study(study_name=tune_config.study, storage=storage)
    offset = 1000 * index + len(probe.get_trials(deepcopy=False))
    study = optuna.load_study(study_name=tune_config.study, storage=storage,
                              sampler=_make_sampler(tune_config, offset),
                              pruner=_make_pruner(tune_config))
    callbacks: list = [_Progress(tune_config, say, f" [worker {index}]" if workers > 1 else "")]
    if tune_config.n_trials is not None:
        _fail_dead_trials(study)
        running = len(study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))
        if _counts(study)["finished"] + running >= tune_config.n_trials:
            return
        # Stop once finished + running trials reach n_trials; _wait_for_slot settles races.
        callbacks += [lambda s, _: _fail_dead_trials(s),
                      optuna.study.MaxTrialsCallback(
                          tune_config.n_trials,
                          states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING))]
    objective = make_objective(tune_config, data=data, quiet=quiet, budget=tune_config.n_trials)
    study.optimize(objective, timeout=tune_config.timeout, callbacks=callbacks,
                   catch=(TrialFailed, _BudgetReached))


class _Progress:
    """One line per finished trial; stops the worker after too many failures in a row."""

    def __init__(self, tune_config: TuneConfig, say, tag: str):
        self.config, self.say, self.tag, self.failures = tune_config, say, tag, 0

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        params = ", ".join(f"{k}={_short(v)}" for k, v in trial.params.items())
        head = f"trial {trial.number}{self.tag}"
        if trial.state == TrialState.COMPLETE:
            self.failures = 0
            self.say(f"{head}: val {self.config.metric} {trial.value:.4f} ({params})")
        elif trial.state == TrialState.PRUNED:
            self.failures = 0
            steps = trial.intermediate_values
            value = steps[max(steps)] if steps else float("nan")
            self.say(f"{head}: pruned after {len(steps)} epoch(s) (val {self.config.metric} "
                     f"{value:.4f}; {params})")
        elif trial.state == TrialState.FAIL:
            if trial.user_attrs.get(SURPLUS_ATTR):
                return
            reason = str(trial.user_attrs.get(ERROR_ATTR, "interrupted or crashed"))
            self.failures += 1
            self.say(f"{head}: failed ({params}): {reason.split(chr(10))[0][:300]}")
            if self.failures >= MAX_CONSECUTIVE_FAILURES:
                self.say(f"{self.failures} trials failed in a row; stopping this worker. "
                         "See the FAILED run records under "
                         f"{self.config.root / 'trials'} for the errors.")
                study.stop()


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _run_workers(tune_config: TuneConfig, spec: str, workers: int, *, quiet: bool,
                 say) -> bool:
    """Run ``octbench tune --worker I`` for I < N and wait; True if one of them was killed.

    All workers are processes of their own (none runs here), so they start on an equal footing.
    """
    command = [sys.executable, "-m", "octbench", *(["-q"] if quiet else []), "tune",
               str(tune_config.source), "--storage", spec, "--workers", str(workers)]
    say(f"starting {workers} worker processes")
    sys.stdout.flush()  # our lines first, then the workers' (they share the terminal)
    # Own sessions: Ctrl-C reaches this process only, which then stops the workers cleanly.
    procs = [subprocess.Popen([*command, "--worker", str(i)], start_new_session=True)
             for i in range(workers)]
    try:
        codes = [p.wait() for p in procs]
    except BaseException:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)  # the worker fails its trial and queues a retry
        for p in procs:
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()
        raise
    for i, code in enumerate(codes):
        if code < 0:
            say(f"worker {i} was killed by signal {-code}; its trial is failed and retried")
        elif code != 0:
            say(f"worker {i} exited with code {code}")
    return any(code < 0 for code in codes)


@contextlib.contextmanager
def _threads_per_worker(tune_config: TuneConfig, workers: int):
    """N workers on one machine share its cores instead of each taking all of them."""
    import torch

    before = torch.get_num_threads()
    if tune_config.base.get("train", {}).get("threads") is None:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _finish(tune_config: TuneConfig, study: optuna.Study, spec: str, synthetic: bool, say,
            generated_dir: Path) -> TuneResult:
    _fail_dead_trials(study)
    counts = _counts(study)
    result = TuneResult(study=tune_config.study, storage=_mask(spec), counts=counts)
    tag = " [synthetic data]" if synthetic else ""
    say(f"study '{tune_config.study}': {counts['finished']} finished trials "
        f"({counts['complete']} complete, {counts['pruned']} pruned), {counts['fail']} failed"
        + (f", {counts['waiting']} queued" if counts["waiting"] else ""))
    if counts["complete"] == 0:
        say("no trial completed, so there is no best configuration yet.")
        return result
    best = study.best_trial
    result.best_value, result.best_params, result.best_trial = (
        best.value, dict(best.params), best.number)
    seeds = f" (mean over {tune_config.seeds_per_trial} seeds)" \
        if tune_config.seeds_per_trial > 1 else ""
    say(f"best trial {best.number}: val {tune_config.metric} {best.value:.4f}{seeds}{tag}")
    for name, value in best.params.items():
        say(f"  {name} = {_short(value)}")
    result.generated = write_best_experiment(tune_config, best, generated_dir, synthetic)
    _write_study_file(tune_config, spec, synthetic, generated=str(result.generated))
    say(f"wrote {result.generated}; its test metrics come from running it "
        f"({len(FINAL_SEEDS)} seeds):\n  python -m octbench run {result.generated}")
    return result


def best_experiment(tune_config: TuneConfig, params: Mapping[str, Any]) -> ExperimentConfig:
    """The base experiment with ``params`` applied, named ``<study>-best``, on seeds 0, 1, 2."""
    raw = apply_values(tune_config.base, _tidy(params))
    raw.update(name=f"{tune_config.study}-best", seeds=list(FINAL_SEEDS))
    return parse_config(raw)


def write_best_experiment(tune_config: TuneConfig, trial: optuna.trial.FrozenTrial,
                          out_dir: str | Path = GENERATED_DIR, synthetic: bool = False) -> Path:
    """Write ``<out_dir>/<study>-best.yaml``: a ready-to-run experiment with the best params."""
    config = best_experiment(tune_config, trial.params)
    path = Path(out_dir) / f"{tune_config.study}-best.yaml"
    header = (
        f"# Generated by `octbench tune {tune_config.source or ''}`: study "
        f"'{tune_config.study}', best trial {trial.number},\n"
        f"# val {tune_config.metric} {trial.value:.4f} "
        f"(mean over {tune_config.seeds_per_trial} seed(s))"
        f"{', SYNTHETIC data' if synthetic else ''}. Chosen on the validation split only;\n"
        f"# test metrics come from running this file: python -m octbench run {path}\n")
    atomic_write_text(path, header + yaml.safe_dump(config.to_dict(), sort_keys=False))
    return path


# ---------------------------------------------------------------------------------------------
# Figures


def study_figures(study_dir: str | Path, out_dir: str | Path, *,
                  storage: str | None = None) -> list[Path]:
    """Optimisation history, parameter importances and learning curves of a study, as PNGs.

    ``study_dir`` is ``results/<study>`` (its ``study.json`` says where the study lives); a
    study in a server needs ``storage`` (passwords are not stored). Figures of synthetic-data
    studies say so in their titles. Returns the files written (none for a study without
    complete trials).

    Example:
        >>> study_figures("results/quickstart-tune", "reports/quickstart-tune")  # doctest: +SKIP
        [PosixPath('reports/quickstart-tune/quickstart-tune-history.png'), ...]
    """
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as ovm

    study_dir, out_dir = Path(study_dir), Path(out_dir)
    info = _recorded(study_dir)
    if not info:
        raise OctbenchError(f"{study_dir} has no {STUDY_FILE}; pass results/<study> of a study "
                            "made by `octbench tune`.")
    kind = info.get("storage_kind")
    spec = storage or (_local_spec(study_dir, kind) if kind in ("sqlite", "journal")
                       else info.get("storage"))
    if spec is None or (storage is None and kind == "url" and "***" in spec):
        raise OctbenchError(f"study '{info.get('study')}' lives in {spec}; pass storage=URL.")
    study = optuna.load_study(study_name=info["study"], storage=open_storage(spec))
    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        return []
    suffix = " (synthetic data)" if info.get("synthetic") else ""
    metric = f"val {info.get('metric', 'objective')}"
    plots = {
        "history": (lambda: ovm.plot_optimization_history(study, target_name=metric),
                    f"Optimisation history: {study.study_name}{suffix}"),
        "importance": (lambda: ovm.plot_param_importances(study, target_name=metric),
                       f"Parameter importances (fANOVA): {study.study_name}{suffix}"),
        "curves": (lambda: ovm.plot_intermediate_values(study),
                   f"Per-epoch {metric} (running mean over seeds){suffix}"),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, (plot, title) in plots.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                axes = plot()
            except (ValueError, RuntimeError) as error:  # e.g. importances of a 1-trial study
                log.info("no %s figure for %s: %s", name, study.study_name, error)
                plt.close("all")
                continue
        axes.set_title(title)
        if name == "curves":
            axes.set_ylabel(metric)
            with contextlib.suppress(AttributeError):
                axes.get_legend().remove()  # one entry per trial: unreadable
        path = out_dir / f"{study.study_name}-{name}.png"
        axes.figure.savefig(path, dpi=120, bbox_inches="tight")
        plt.close(axes.figure)
        written.append(path)
    return written
