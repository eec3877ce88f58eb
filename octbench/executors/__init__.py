"""Ways to train a grid's pending runs: in this process (:class:`LocalExecutor`) or as Ray tasks
(:class:`RayExecutor`), behind one protocol (:class:`Executor`, :mod:`octbench.executors.base`).

Ray is imported only when a Ray executor starts (an optional extra).
"""

from octbench.executors.base import Executor, Outcome
from octbench.executors.local import LocalExecutor
from octbench.executors.ray import RayExecutor

__all__ = ["Executor", "LocalExecutor", "Outcome", "RayExecutor"]
