"""The strategy registry: :data:`STRATEGIES`, what a strategy returns (:class:`Strategy`) and
:func:`build_strategy`. Strategy modules import this and register themselves on import.

Must not import: the strategy modules (they import this), models, data, the engine or config.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from octbench.registry import Registry

STRATEGIES = Registry("strategy")

#: ``sampler(labels, generator) -> indices``: the training order of one epoch (indices into the
#: training split). Called once per epoch, so resampling strategies redraw every epoch.
Sampler = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


@dataclass(frozen=True)
class Strategy:
    """What a strategy contributes to training and evaluation.

    Attributes:
        criterion: ``loss = criterion(logits, targets)``; a module so that its buffers (class
            weights, margins) follow the model to its device with ``.to(device)``.
        sampler: the epoch's training order; ``None`` means a uniform random permutation.
        on_epoch_start: ``hook(epoch, epochs)`` called before each epoch (0-based), e.g. for
            deferred re-weighting; ``None`` when not needed.
        logit_offset: a per-class vector added to the logits at evaluation time (post-hoc logit
            adjustment); ``None`` leaves predictions untouched.
        cosine_head: the criterion expects cosine logits in [-1, 1]: the model's classifier
            head becomes a normalised (cosine) linear layer, for training and evaluation alike.
    """

    criterion: nn.Module
    sampler: Sampler | None = None
    on_epoch_start: Callable[[int, int], None] | None = None
    logit_offset: torch.Tensor | None = None
    cosine_head: bool = False


def build_strategy(name: str, class_counts: list[int], **params) -> Strategy:
    """Build the strategy registered as ``name`` for the given training class counts.

    Example:
        >>> s = build_strategy("weighted_ce", [100, 10])
        >>> [round(w, 4) for w in s.criterion.weight.tolist()]  # float32 buffer
        [0.55, 5.5]
    """
    return STRATEGIES.get(name)(class_counts=list(class_counts), **params)
