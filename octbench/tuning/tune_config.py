"""The tuning YAML: the study, its base experiment, objective, budget, sampler and pruner,
validated once (every problem reported at once with its YAML path).

:class:`TuneConfig` is the validated file; its ``search:`` section is parsed by
:func:`octbench.tuning.space.parse_search`. :func:`make_sampler` and :func:`make_pruner` build the
Optuna objects the config names.

Must not import: storage, objective, workers (they import this one), the runner, the engine or
the report.
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

from octbench.config import NAME_PATTERN, TOP_LEVEL, apply_overrides, read_yaml
from octbench.errors import ConfigError
from octbench.metrics import METRICS
from octbench.registry import did_you_mean, is_finite
from octbench.tuning.space import SearchParam, parse_search

TUNE_KEYS = ("study", "base", "search", "objective", "n_trials", "timeout", "seeds_per_trial",
             "sampler", "pruner")
SAMPLERS = {"tpe": "TPESampler", "random": "RandomSampler"}
PRUNERS = {"median": "MedianPruner", "hyperband": "HyperbandPruner", "none": "NopPruner"}
DIRECTIONS = {"maximize": "maximize", "max": "maximize", "minimize": "minimize",
              "min": "minimize"}

DEFAULT_SEED = 0
#: Bounds that keep a typo from queueing days of work.
MAX_TRIALS = 100_000
MAX_SEEDS = 100
#: Measured by benchmarks/pruning.py (README, Tuning): no pruning before 3 trials completed, nor
#: on a trial's first epoch, whose validation score says little about where it ends.
DEFAULT_PRUNER = {"name": "median", "n_startup_trials": 3, "n_warmup_steps": 1}


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
    search = parse_search(problems, raw.get("search"), base)
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
