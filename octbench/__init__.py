"""octbench: comparative benchmarking of retinal OCT classification on OCTMNIST.

Example:
    >>> import octbench
    >>> config = octbench.load_config("experiments/quickstart.yaml")
    >>> summary = octbench.run_experiment(config)  # doctest: +SKIP
    >>> octbench.load_results("results/quickstart").head()  # doctest: +SKIP
"""

from octbench.config import ExperimentConfig, load_config, parse_config
from octbench.data import DATASETS, OCTData, load_dataset
from octbench.errors import ConfigError, DataError, OctbenchError
from octbench.metrics import compute_metrics
from octbench.models import MODELS, build_model
from octbench.results import ResultsStore, RunRecord, load_results
from octbench.runner import expand_grid, run_experiment
from octbench.strategies import STRATEGIES, Strategy, build_strategy

__version__ = "0.1.0"

__all__ = [
    "DATASETS", "MODELS", "STRATEGIES", "ConfigError", "DataError", "ExperimentConfig",
    "OCTData", "OctbenchError", "ResultsStore", "RunRecord", "Strategy", "build_model",
    "build_strategy", "compute_metrics", "expand_grid", "load_config", "load_dataset",
    "load_results", "parse_config", "run_experiment",
]
