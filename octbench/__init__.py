"""octbench: comparative benchmarking of retinal OCT classification on OCTMNIST.

Example:
    >>> import octbench
    >>> config = octbench.load_config("experiments/quickstart.yaml")
    >>> summary = octbench.run(config, overrides={"train.epochs": 1})  # doctest: +SKIP
    >>> octbench.load_results("results/quickstart").head()  # doctest: +SKIP

The notebook API (:mod:`octbench.api`): ``run``, ``load_results``, ``write_report``, ``tune``,
``evaluate``, ``load_data``, ``experiment_config``.

Must not import: the CLI (the library works without it).
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# Public names and the module that defines each. They are imported on first use (PEP 562), so
# `import octbench` and `python -m octbench --help` do not pay for importing torch.
_PUBLIC = {
    "ConfigError": "octbench.errors", "DataError": "octbench.errors",
    "OctbenchError": "octbench.errors",
    "ExperimentConfig": "octbench.config", "load_config": "octbench.config",
    "parse_config": "octbench.config",
    "DATASETS": "octbench.data", "OCTData": "octbench.data", "load_dataset": "octbench.data",
    "compute_metrics": "octbench.metrics",
    "MODELS": "octbench.models", "build_model": "octbench.models",
    "ResultsStore": "octbench.results", "RunRecord": "octbench.results",
    "run": "octbench.api", "load_results": "octbench.api", "write_report": "octbench.api",
    "tune": "octbench.api", "evaluate": "octbench.api", "load_data": "octbench.api",
    "experiment_config": "octbench.api",
    "expand_grid": "octbench.grid", "run_experiment": "octbench.experiment",
    "STRATEGIES": "octbench.strategies", "Strategy": "octbench.strategies",
    "build_strategy": "octbench.strategies",
}

__all__ = sorted(_PUBLIC)


def __getattr__(name: str):
    if name not in _PUBLIC:
        raise AttributeError(f"module 'octbench' has no attribute '{name}'")
    value = getattr(importlib.import_module(_PUBLIC[name]), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_PUBLIC])
