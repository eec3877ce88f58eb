"""Checks of a grid's pending runs before anything trains: every strategy and model builds for
the data (shapes only, on the meta device), and the pretrained weights they ask for are found.

A problem found here fails the whole grid at once, with every problem listed, instead of as one
FAILED run per seed after the results folder was made.

Must not import: the CLI, report or tuning.
"""

from __future__ import annotations

import logging
import warnings

import torch

from octbench.config import Component, ExperimentConfig
from octbench.data import OCTData
from octbench.errors import ConfigError, OctbenchError
from octbench.grid import RunSpec
from octbench.models import build_model, timm_name, use_cosine_head, weights_fit_problem
from octbench.models.timm_models import ensure_pretrained_weights
from octbench.strategies import build_strategy


def check_pretrained_weights(config: ExperimentConfig, specs: list[RunSpec]) -> None:
    """Fetch or find timm's pretrained weights of every model that asks for them, before any
    run trains: offline without a cache, this fails with how to fill it (OctbenchError)."""
    # by the specs, not config.models: a sweep over model.pretrained sets it per cell
    needed = {spec.model.label: spec.model for spec in specs
              if spec.model.params.get("pretrained") is True}
    if not needed:
        return
    # The hub client logs each retry as a warning; octbench's own message (raised) says it all.
    noisy = [logging.getLogger(name) for name in ("huggingface_hub", "urllib3", "timm")]
    levels = [logger.level for logger in noisy]
    for logger in noisy:
        logger.setLevel(logging.CRITICAL)
    try:
        for model in needed.values():
            index = next((i for i, m in enumerate(config.models) if m.name == model.name), 0)
            ensure_pretrained_weights(timm_name(model.name), f"models[{index}] ({model.label})")
    finally:
        for logger, level in zip(noisy, levels, strict=True):
            logger.setLevel(level)


def check_buildable(pending: list[RunSpec], data: OCTData) -> None:
    """Build every strategy (with the data's class counts) and model (shapes only) of the
    pending runs once, so a parameter that only the data can judge (focal's ``alpha`` per
    class, a model's size) fails here, before training, instead of as one FAILED run per seed.

    Raises:
        ConfigError: every problem found, by grid entry.
    """
    counts = data.train.class_counts(data.num_classes)
    problems = []
    cosine = set()  # strategies whose loss needs a cosine classifier head (LDAM)
    for strategy in {spec.strategy.label: spec.strategy for spec in pending}.values():
        try:
            if build_strategy(strategy.name, counts, **strategy.params).cosine_head:
                cosine.add(strategy.label)
        except (OctbenchError, TypeError, ValueError) as error:
            problems.append(f"strategy {strategy.label}: {error}")
    for model in {spec.model.label: spec.model for spec in pending}.values():
        try:
            with torch.device("meta"), warnings.catch_warnings():  # sizes are checked only
                warnings.simplefilter("ignore")  # "zero-element tensors": data too small
                built = build_model(model.name, num_classes=data.num_classes, in_chans=1,
                                    img_size=data.size,  # a weights file is matched below
                                    **{k: v for k, v in model.params.items() if k != "pretrained"})
                if any(s.model == model and s.strategy.label in cosine for s in pending):
                    use_cosine_head(built)
            problem = weights_fit_problem(model.name, model.params, built)
            if problem is None and not _runs_at(built, data.size):
                problem = _too_small(model, data)
        except (OctbenchError, TypeError, ValueError) as error:
            problem = str(error)
        except Exception:  # noqa: BLE001 - a layer that cannot live on "meta": the run will tell
            continue
        if problem:
            problems.append(f"model {model.label}: {problem}")
    if problems:
        raise ConfigError(problems, None)


#: Sizes tried, on the meta device, to name the smallest input a model takes.
MIN_SIZE_PROBES = (2, 4, 8, 16, 28, 32, 64, 128, 224)


def _runs_at(net: torch.nn.Module, size: int) -> bool:
    """Whether a model built on the meta device runs a batch of ``size`` px images: shapes are
    checked without memory or weights (a 1-pixel image must fail here, before training, not
    inside the first epoch)."""
    with torch.device("meta"), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "zero-element tensors": a layer of a too-small size
        try:
            net.eval()(torch.empty(2, 1, size, size))
        except RuntimeError:
            return False
    return True


def _too_small(model: Component, data: OCTData) -> str:
    """Why ``model`` cannot take the data's images, naming the smallest size it takes."""
    def fits(size: int) -> bool:
        try:
            with torch.device("meta"), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                net = build_model(model.name, num_classes=data.num_classes, in_chans=1,
                                  img_size=size, **{k: v for k, v in model.params.items()
                                                    if k != "pretrained"})
            return _runs_at(net, size)
        except Exception:  # noqa: BLE001 - a size the model cannot even be built for
            return False

    smallest = next((size for size in MIN_SIZE_PROBES if size > data.size and fits(size)), None)
    need = (f"it needs images of at least {smallest} px" if smallest else
            f"it takes none up to {MIN_SIZE_PROBES[-1]} px")
    return (f"cannot take the data's {data.size} px images: {need}. Use larger images "
            "(e.g. data.size), or a model made for small inputs.")


