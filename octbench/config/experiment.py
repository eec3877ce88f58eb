"""An experiment, validated once: :func:`parse_config` turns plain data (from YAML) into an
:class:`ExperimentConfig` against the registries, and :func:`check_plain` checks the parts that
need no model code first, so that a typo is reported before torch is imported.

Must not import: the runner, engine, results, report or tuning (they read the config; it reads
only the registries).
"""

from __future__ import annotations

import dataclasses
import itertools
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from octbench.config.loader import check_grid_size, read_config
from octbench.config.schema import (
    DEVICE_NAMES,
    DEVICE_PATTERN,
    MAX_RUNS,
    NAME_PATTERN,
    BootstrapConfig,
    Component,
    EvaluateConfig,
    ReportConfig,
    TrainConfig,
)
from octbench.config.sweep import entry_label, parse_sweep, set_values
from octbench.config.validate import (
    check_parameters,
    check_value,
    parse_component,
    parse_list,
    parse_section,
    with_defaults,
)
from octbench.errors import ConfigError
from octbench.metrics import METRICS
from octbench.registry import (
    SEED_RANGE,
    did_you_mean,
    unknown_model_message,
    unknown_name_message,
)


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
                check_parameters(problems, params, schema, kind=kind, name=name, path=path)
    if problems:
        raise ConfigError(problems, source)


def _name_problem(kind: str, name: str, known: typing.Mapping[str, list[str]]) -> str | None:
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
        return check_value(problems, path, item, int, SEED_RANGE)

    def device(item, path):
        if not isinstance(item, str) or not DEVICE_PATTERN.match(item):
            hint = did_you_mean(item, DEVICE_NAMES) if isinstance(item, str) else ""
            problems.append(f"{path} must be one of cpu, cuda, cuda:N, mps, auto. "
                            f"Got {item!r} instead.{hint}")
            return None
        return item

    seeds = parse_list(problems, raw.get("seeds", [0, 1, 2]), "seeds", seed)
    devices = parse_list(problems, raw.get("devices", ["cpu"]), "devices", device,
                          canonical=_resolved_device if resolve_devices else None)
    raw_train = raw.get("train")
    augment_raw = None
    if isinstance(raw_train, dict):  # augment holds registry entries, checked like models
        raw_train = dict(raw_train)
        augment_raw = raw_train.pop("augment", None)
    train = parse_section(problems, raw_train, TrainConfig, "train")
    raw_report = raw.get("report")
    bootstrap_raw = None
    if isinstance(raw_report, dict):  # a nested section, validated on its own
        raw_report = dict(raw_report)
        bootstrap_raw = raw_report.pop("bootstrap", None)
    report = parse_section(problems, raw_report, ReportConfig, "report")
    if bootstrap_raw is not None:
        report = dataclasses.replace(report, bootstrap=parse_section(
            problems, bootstrap_raw, BootstrapConfig, "report.bootstrap"))
    results_dir = raw.get("results_dir", "results")
    if not isinstance(results_dir, str) or not results_dir:
        problems.append(f"'results_dir' must be a folder path. Got {results_dir!r} instead.")
    return {"name": name, "seeds": seeds, "devices": devices, "train": train,
            "augment": augment_raw, "report": report, "results_dir": results_dir}


def parse_config(raw: dict, source: str | None = None) -> ExperimentConfig:
    """Validate a plain mapping (e.g. from YAML) into an :class:`ExperimentConfig`."""
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
        return parse_component(problems, item, path, MODELS, data_params=DATA_PARAMS,
                                known=check_model_name, external=external_parameter_problems)

    models = parse_list(problems, raw.get("models"), "models", model,
                         canonical=with_defaults(MODELS, DATA_PARAMS))
    strategies = parse_list(
        problems, raw.get("strategies", ["none"]), "strategies",
        lambda item, path: parse_component(problems, item, path, STRATEGIES,
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
        as_written = {entry_label(entry): s.label
                      for entry, s in zip(written, strategies, strict=True)}
        report = dataclasses.replace(report, baseline=as_written.get(report.baseline,
                                                                     report.baseline))
    if strategies and report.baseline is None:
        labels = [s.label for s in strategies]
        report = dataclasses.replace(report, baseline="none" if "none" in labels else labels[0])
    elif strategies and report.baseline not in {s.label for s in strategies}:
        problems.append(f"report.baseline '{report.baseline}' is not among the strategies "
                        f"({', '.join(s.label for s in strategies)}); name one of them.")
    sweep = parse_sweep(problems, raw["sweep"], raw, parse_config) if "sweep" in raw else ()
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
def _parse_augment(problems, raw) -> tuple[Component, ...]:
    from octbench.augment import AUGMENTATIONS, MIXING

    augment = parse_list(problems, raw, "train.augment",
                          lambda item, path: parse_component(problems, item, path,
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
    section = parse_section(problems, raw, EvaluateConfig, "evaluate")
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
    component = parse_component(problems, raw, "data", DATASETS)
    if component is None or policy == DEFAULT_POLICY or policy not in POLICIES:
        return component  # the default is left out: the same run ids as without it
    return Component(component.name, {**component.params, "on_duplicates": policy})
