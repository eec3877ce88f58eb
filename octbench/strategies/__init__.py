"""Class-imbalance strategies.

A strategy is a keyword-only factory ``f(*, class_counts, **params) -> Strategy`` registered in
:data:`STRATEGIES`. It hands the engine everything it needs -- a criterion, optionally a sampler,
an epoch hook and a post-hoc logit offset -- so the engine never branches on a strategy's name.
``class_counts`` always come from the training split.

Must not import: models, data, the engine or config: strategies know nothing of architectures or
YAML.
"""

from __future__ import annotations

from octbench.strategies import losses, sampling  # noqa: F401  (they register)
from octbench.strategies._registry import STRATEGIES, Sampler, Strategy, build_strategy

__all__ = ["STRATEGIES", "Sampler", "Strategy", "build_strategy"]
