"""Model registry: the seed project's CNN and variants, MedMNIST-style ResNets, and timm.

A model is a keyword-only factory ``f(*, num_classes, in_chans, img_size, **params)`` registered in
:data:`MODELS`; ``num_classes``, ``in_chans`` and ``img_size`` come from the data, the rest from
the YAML. Any timm model enters by the prefix ``timm:<name>``, parsed only in :func:`build_model`.

The registry itself is :mod:`octbench.models._registry`, which the model modules import;
importing this package registers them.

Must not import: strategies, data, the engine or config: models know nothing of losses or YAML.
"""

from __future__ import annotations

from torch import nn

from octbench.errors import OctbenchError
from octbench.models import reference, resnet, timm_models  # noqa: F401  (reference, resnet register)
from octbench.models._registry import DATA_PARAMS, MODELS
from octbench.models.heads import CosineLinear, classifier_head, use_cosine_head
from octbench.models.pretrained import plan_weights, read_weights
from octbench.registry import TIMM_PREFIX, unknown_model_message


def timm_name(name: str) -> str | None:
    """The timm model name in ``timm:<name>``, or None for a registered model."""
    return name[len(TIMM_PREFIX):] if name.startswith(TIMM_PREFIX) else None


def check_model_name(name: str) -> str | None:
    """Return a problem message for an unknown model name, or None when it exists."""
    if name in MODELS:
        return None
    import timm

    return unknown_model_message(name, MODELS.names(), timm.list_models())


def external_parameter_problems(name: str, params: dict, path: str) -> list[str]:
    """Problems with the YAML parameters of a ``timm:<name>`` model (checked against timm)."""
    return timm_models.parameter_problems(timm_name(name), params, path)


def build_model(name: str, *, num_classes: int = 4, in_chans: int = 1, img_size: int = 28,
                **params) -> nn.Module:
    """Build a model for ``num_classes`` classes: randomly initialised, or from pretrained
    weights for a timm model with ``pretrained=True`` or ``pretrained="weights.safetensors"``.

    Example:
        >>> model = build_model("reference_cnn")
        >>> count_parameters(model)
        389316
    """
    inner = timm_name(name)
    if inner is None:
        if params.pop("pretrained", False):
            raise OctbenchError(no_pretrained_message(name))
        return MODELS.get(name)(num_classes=num_classes, in_chans=in_chans, img_size=img_size,
                                **params)
    problem = check_model_name(name)
    if problem:
        raise OctbenchError(problem)
    return timm_models.create_timm_model(inner, num_classes=num_classes, in_chans=in_chans,
                                         img_size=img_size, **params)


def input_normalization(name: str, params: dict) -> tuple[float, float]:
    """(mean, std) for the model's input in [0, 1]: the data default (0.5, 0.5), or the
    pretrained weights' own for a pretrained timm model."""
    inner = timm_name(name)
    if inner is None:
        return (0.5, 0.5)
    return timm_models.normalization(inner, params.get("pretrained", False))


def describe_weights(name: str, params: dict, model: nn.Module) -> dict:
    """Where a freshly built model's weights came from (``random``, timm's, or a file)."""
    inner = timm_name(name)
    if inner is None:
        return {"weights": "random"}
    return timm_models.describe_weights(inner, params.get("pretrained", False), model)


def weights_fit_problem(name: str, params: dict, model: nn.Module) -> str | None:
    """Why a model's weights file does not fit ``model`` (built on any device, even "meta"),
    or None: checked before training, so a misfit fails the whole grid up front."""
    pretrained = params.get("pretrained")
    if timm_name(name) is None or not isinstance(pretrained, str):
        return None
    if not params.get("pretrained_strict", True):
        return None
    plan = plan_weights(read_weights(pretrained), model)
    return None if plan.complete else plan.problem(pretrained)


def no_pretrained_message(name: str) -> str:
    return (f"model '{name}' has no pretrained weights (octbench's own models train from "
            "scratch); pretrained weights come with timm models, e.g. "
            "{name: timm:resnet18, pretrained: true}, or remove 'pretrained'.")


def freeze_all_but_head(model: nn.Module) -> list[nn.Module]:
    """Freeze every parameter outside the classifier head (a linear probe).

    Returns the frozen leaf modules, which must stay in eval mode while the head trains so that
    BatchNorm statistics and dropout of the backbone do not change either.
    """
    head = classifier_head(model)
    head_params = {id(p) for p in head.parameters()}
    for parameter in model.parameters():
        parameter.requires_grad_(id(parameter) in head_params)
    head_modules = {id(m) for m in head.modules()}
    return [m for m in model.modules()
            if not list(m.children()) and id(m) not in head_modules]


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


__all__ = ["MODELS", "DATA_PARAMS", "CosineLinear", "build_model", "check_model_name",
           "classifier_head", "count_parameters", "describe_weights", "freeze_all_but_head",
           "input_normalization", "timm_name", "use_cosine_head", "weights_fit_problem"]
