"""Robustness as a benchmark axis: MedMNIST-C corruptions, their cache and their scores.

- :mod:`~octbench.robustness.corruptions`: ``medmnistc``'s OCTMNIST corruptions (extra
  ``[robustness]``, imported only when a corruption is applied).
- :mod:`~octbench.robustness.cache`: corrupted test sets, generated once and cached.
- :mod:`~octbench.robustness.scores`: BE / rBE as ``medmnistc.eval.Evaluator`` defines them.

Scoring a model on them is :mod:`octbench.corrupted_eval` (it needs the engine).
"""

from octbench.robustness.corruptions import CORRUPTIONS, MEDMNIST_C_SIZE, SEVERITIES
from octbench.robustness.scores import ROBUSTNESS_VERSION

__all__ = ["CORRUPTIONS", "MEDMNIST_C_SIZE", "ROBUSTNESS_VERSION", "SEVERITIES"]
