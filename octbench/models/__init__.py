"""Model registry: the seed project's CNN and variants, MedMNIST-style ResNets, and timm.

A model is a keyword-only factory ``f(*, num_classes, in_chans, img_size, **params)`` registered in
:data:`MODELS`; ``num_classes``, ``in_chans`` and ``img_size`` come from the data, the rest from
the YAML. Any timm model enters by the prefix ``timm:<name>``, parsed only in :func:`build_model`.

Must not import: strategies, data, the engine or config: models know nothing of losses or YAML.
"""

from __future__ import annotations

from torch import nn

from octbench.errors import OctbenchError
from octbench.registry import Registry, did_you_mean

MODELS = Registry("model")

#: Factory arguments supplied by the data, not by the user.
DATA_PARAMS = ("num_classes", "in_chans", "img_size")
TIMM_PREFIX = "timm:"


def timm_name(name: str) -> str | None:
    """The timm model name in ``timm:<name>``, or None for a registered model."""
    return name[len(TIMM_PREFIX):] if name.startswith(TIMM_PREFIX) else None


def check_model_name(name: str) -> str | None:
    """Return a problem message for an unknown model name, or None when it exists."""
    inner = timm_name(name)
    if inner is None:
        return None if name in MODELS else MODELS.unknown_message(name)
    import timm

    if timm.is_model(inner):
        return None
    return (
        f"unknown timm model '{inner}'.{did_you_mean(inner, timm.list_models())} "
        "See timm.list_models() for the choices."
    )


def build_model(name: str, *, num_classes: int = 4, in_chans: int = 1, img_size: int = 28,
                **params) -> nn.Module:
    """Build a randomly initialised model for ``num_classes`` classes.

    Example:
        >>> model = build_model("reference_cnn")
        >>> count_parameters(model)
        389316
    """
    inner = timm_name(name)
    if inner is None:
        return MODELS.get(name)(num_classes=num_classes, in_chans=in_chans, img_size=img_size,
                                **params)
    problem = check_model_name(name)
    if problem:
        raise OctbenchError(problem)
    import timm

    kwargs = dict(pretrained=False, num_classes=num_classes, in_chans=in_chans, **params)
    try:
        # Vision transformers and other fixed-size models need the input size.
        return timm.create_model(inner, img_size=img_size, **kwargs)
    except TypeError:
        return timm.create_model(inner, **kwargs)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


# Importing the modules registers their models.
from octbench.models import reference, resnet  # noqa: E402,F401

__all__ = ["MODELS", "DATA_PARAMS", "build_model", "check_model_name", "count_parameters"]
