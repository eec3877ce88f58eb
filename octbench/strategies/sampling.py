"""Resampling strategies: they change the epoch's training order and keep plain cross-entropy.

A sampler is called once per epoch with the training labels and the run's generator, so every
epoch is a fresh draw and a seeded generator makes the whole sequence reproducible. Counts are
taken from ``labels`` themselves, so the draw always matches the split it is given. Indices are
returned on the CPU, where the generator lives.

Must not import: octbench beyond strategies and the registry.
"""

from __future__ import annotations

import torch
from torch.utils.data import WeightedRandomSampler

from octbench.registry import Interval
from octbench.strategies._registry import STRATEGIES, Strategy
from octbench.strategies.losses import AdjustedCrossEntropy


@STRATEGIES.register(power=Interval(0, None))
def oversample(*, class_counts: list[int], power: float = 1.0) -> Strategy:
    """Random oversampling (Buda et al., Neural Networks 2018), redrawn every epoch.

    Draws ``len(labels)`` indices with replacement, each sample weighted ``count[label]^-power``:
    1 balances the classes in expectation, 0 is uniform sampling with replacement.
    """

    def sampler(labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        labels = labels.cpu()
        counts = torch.bincount(labels).double()
        weights = counts[labels] ** -power
        draw = WeightedRandomSampler(
            weights, num_samples=len(labels), replacement=True, generator=generator
        )
        return torch.tensor(list(draw), dtype=torch.long)

    return Strategy(criterion=AdjustedCrossEntropy(), sampler=sampler)


@STRATEGIES.register
def undersample(*, class_counts: list[int]) -> Strategy:
    """Random undersampling (Buda et al., Neural Networks 2018), redrawn every epoch.

    Each epoch takes the smallest class's count of samples from every class, without
    replacement, and shuffles them. Classes absent from the labels are ignored. No parameters.
    """

    def sampler(labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        labels = labels.cpu()
        per_class = [(labels == c).nonzero().squeeze(1) for c in labels.unique()]
        n = min(len(idx) for idx in per_class)
        chosen = torch.cat(
            [idx[torch.randperm(len(idx), generator=generator)[:n]] for idx in per_class]
        )
        return chosen[torch.randperm(len(chosen), generator=generator)]

    return Strategy(criterion=AdjustedCrossEntropy(), sampler=sampler)
