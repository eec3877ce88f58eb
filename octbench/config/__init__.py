"""Experiment YAML -> frozen dataclasses, validated once, before any training.

Every problem (unknown key, unknown name, wrong type, value out of range) is collected with its
YAML path and reported together in one :class:`~octbench.errors.ConfigError`, sklearn-style:
"train.epochs must be an int >= 1. Got 0 instead."

The package, one module per idea: :mod:`~octbench.config.schema` (the dataclasses and limits),
:mod:`~octbench.config.loader` (strict YAML), :mod:`~octbench.config.validate` (the one
declarative validator), :mod:`~octbench.config.sweep` (dotted paths: ``--set``, ``sweep:``,
tuning's ``search:``) and :mod:`~octbench.config.experiment` (:func:`parse_config`). Importing it
imports no torch, so that the CLI reports a config error at once.
"""

from octbench.config.experiment import (
    NOT_IN_SCHEMA,
    TOP_LEVEL,
    ExperimentConfig,
    check_plain,
    load_config,
    parse_config,
    parse_corruptions,
    parse_data,
)
from octbench.config.loader import (
    MAX_YAML_NODES,
    check_grid_size,
    parse_scalar,
    read_config,
    read_yaml,
    yaml_problem,
)
from octbench.config.schema import (
    DEVICE_NAMES,
    DEVICE_PATTERN,
    LATER_DEFAULTS,
    MAX_BATCH,
    MAX_EPOCHS,
    MAX_RUNS,
    MAX_SEED,
    MAX_THREADS,
    NAME_PATTERN,
    BootstrapConfig,
    Component,
    EvaluateConfig,
    ReportConfig,
    TrainConfig,
    check,
    config_hash,
)
from octbench.config.sweep import (
    MAX_CHECKED_COMBINATIONS,
    NOT_SWEPT,
    apply_overrides,
    known_paths,
    parsed_values,
    set_values,
    swept_values,
    takes_parameter,
)
from octbench.config.validate import component_defaults, type_name, with_defaults
from octbench.errors import ConfigError  # what every problem is raised as

__all__ = [
    "DEVICE_NAMES", "DEVICE_PATTERN", "LATER_DEFAULTS", "MAX_BATCH", "MAX_CHECKED_COMBINATIONS",
    "MAX_EPOCHS", "MAX_RUNS", "MAX_SEED", "MAX_THREADS", "MAX_YAML_NODES", "NAME_PATTERN",
    "NOT_IN_SCHEMA", "NOT_SWEPT", "TOP_LEVEL", "BootstrapConfig", "Component", "ConfigError",
    "EvaluateConfig", "ExperimentConfig", "ReportConfig", "TrainConfig", "apply_overrides", "check",
    "check_grid_size", "check_plain", "component_defaults", "config_hash", "known_paths",
    "load_config", "parse_config", "parse_corruptions", "parse_data", "parse_scalar",
    "parsed_values", "read_config", "read_yaml", "set_values", "swept_values",
    "takes_parameter", "type_name", "with_defaults", "yaml_problem",
]
