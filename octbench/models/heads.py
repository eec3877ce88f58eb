"""A cosine classifier head, for losses defined on cosine logits (LDAM, Cao et al. 2019).

Must not import: strategies, data, the engine or config.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from octbench.errors import OctbenchError


class CosineLinear(nn.Linear):
    """``cos(x, w_c)`` for every class ``c``: features and class weights L2-normalised, no bias.

    The ``NormedLinear`` layer of Cao et al. (NeurIPS 2019, kaidic/LDAM-DRW): logits lie in
    [-1, 1], so LDAM's margins and its scale ``s = 30`` mean what the paper says. A subclass of
    ``nn.Linear``, so it is still found and trained as the classifier head (linear probe).
    """

    def __init__(self, in_features: int, out_features: int):
        super().__init__(in_features, out_features, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(F.normalize(x, dim=1), F.normalize(self.weight, dim=1))


def classifier_head(model: nn.Module) -> nn.Module:
    """The layer that maps features to class logits: timm's classifier, else the last Linear."""
    if hasattr(model, "get_classifier"):
        return model.get_classifier()
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise OctbenchError(f"{type(model).__name__} has no linear classifier head to probe.")
    return linears[-1]


def use_cosine_head(model: nn.Module) -> nn.Module:
    """Replace ``model``'s classifier head (a Linear) with a :class:`CosineLinear` of the same
    shape, in place; returns the model.

    Raises:
        OctbenchError: the model's head is not a single Linear layer.
    """
    head = classifier_head(model)
    if isinstance(head, CosineLinear):
        return model
    if not isinstance(head, nn.Linear):
        raise OctbenchError(f"{type(model).__name__} has a {type(head).__name__} head, not a "
                            "Linear layer, so it cannot become the cosine classifier that "
                            "LDAM needs; choose another model or strategy.")
    name = next(n for n, m in model.named_modules() if m is head)
    parent = model.get_submodule(name.rpartition(".")[0]) if "." in name else model
    cosine = CosineLinear(head.in_features, head.out_features).to(head.weight.device)
    setattr(parent, name.rpartition(".")[2], cosine)
    return model
