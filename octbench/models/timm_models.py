"""timm models (``timm:<name>``): creation, parameter checks and pretrained weights.

``pretrained: true`` loads timm's own weights (from the Hugging Face hub or timm's URL, through
their caches); ``pretrained: path/to/weights.safetensors`` (or ``.pth``) loads a local file
strictly (:mod:`octbench.models.pretrained`). Either way the first convolution is adapted to one
input channel (summing the RGB filters) and the model gets a new head for the data's classes.
Weight files are read with safetensors or ``torch.load(weights_only=True)``: loading one never
runs code. timm's own ways of loading weights (``checkpoint_path``, ``pretrained_cfg``, ...) are
refused: they would bypass both the checks and the record.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import re
from pathlib import Path

import torch
from torch import nn

from octbench.errors import OctbenchError
from octbench.models._registry import DATA_PARAMS
from octbench.models.pretrained import (
    file_normalization,
    load_weights_file,
    plan_weights,
    read_weights,
)
from octbench.registry import did_you_mean

WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")
#: The data's input normalisation (the seed project's): x / 255 -> (x - 0.5) / 0.5.
DEFAULT_NORMALIZATION = (0.5, 0.5)
#: ``timm.create_model`` arguments that load or redirect weights: refused, in a YAML and in a
#: checkpoint's model settings alike, since weights must come through ``pretrained``.
WEIGHT_LOADING_KWARGS = ("checkpoint_path", "pretrained_cfg", "pretrained_cfg_overlay",
                         "cache_dir")


def weight_kwargs_problem(inner: str, params: dict) -> str | None:
    """Why ``params`` may not reach timm (they would load weights behind octbench's back)."""
    bad = [k for k in params if k in WEIGHT_LOADING_KWARGS]
    if not bad:
        return None
    return (f"'{', '.join(bad)}' of timm model '{inner}' would load weights outside octbench's "
            "checks and record; remove it and set pretrained: true (timm's weights) or "
            "pretrained: path/to/weights.safetensors.")


def create_timm_model(inner: str, *, num_classes: int, in_chans: int, img_size: int,
                      pretrained: bool | str = False, pretrained_strict: bool = True,
                      **params) -> nn.Module:
    """``timm.create_model`` for ``num_classes`` classes, with pretrained weights if asked.

    Raises:
        OctbenchError: a weight-loading timm argument, or a weights file that does not fit.
    """
    import timm

    problem = weight_kwargs_problem(inner, params)
    if problem:
        raise OctbenchError(problem)
    kwargs = dict(num_classes=num_classes, in_chans=in_chans, **params)
    if "img_size" in model_parameters(inner):  # vision transformers and other fixed-size models
        kwargs["img_size"] = img_size
    if isinstance(pretrained, str):
        model = timm.create_model(inner, pretrained=False, **kwargs)
        load_weights_file(model, Path(pretrained).expanduser(), strict=pretrained_strict)
        return model
    return timm.create_model(inner, pretrained=bool(pretrained), **kwargs)


@functools.cache
def model_parameters(inner: str) -> dict[str, inspect.Parameter]:
    """Keyword arguments the timm model class behind ``inner`` accepts (empty if unknown).

    The class is found by building the model on the meta device: no memory, no weights.
    """
    import timm

    try:
        with torch.device("meta"):
            model = timm.create_model(inner, pretrained=False)
    except Exception:  # a model that cannot be built on the meta device: nothing to check
        return {}
    signature = inspect.signature(type(model).__init__)
    return {name: p for name, p in signature.parameters.items()
            if name != "self" and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}


def parameter_problems(inner: str, params: dict, path: str) -> list[str]:
    """Check a timm model's YAML parameters as ``timm.create_model`` would, before training."""
    import timm

    problems = []
    pretrained = params.get("pretrained", False)
    if isinstance(pretrained, str):
        problem = weights_file_problem(pretrained)
        if problem:
            problems.append(f"{path}.pretrained: {problem}")
    elif not isinstance(pretrained, bool):
        problems.append(f"{path}.pretrained must be true, false or a path to a .safetensors or "
                        f".pth weights file. Got {pretrained!r} instead.")
    elif pretrained and not _has_pretrained_source(inner):
        problems.append(f"{path}.pretrained: timm has no pretrained weights for '{inner}'; use "
                        "pretrained: false, a weights file, or a model listed by "
                        "timm.list_models(pretrained=True).")
    strict = params.get("pretrained_strict", True)
    if not isinstance(strict, bool):
        problems.append(f"{path}.pretrained_strict must be true or false. Got {strict!r} "
                        "instead.")
    elif not strict and not isinstance(pretrained, str):
        problems.append(f"{path}.pretrained_strict: false applies to a weights file only; set "
                        "pretrained: path/to/weights.safetensors, or remove it.")
    problem = weight_kwargs_problem(inner, params)
    if problem:
        problems.append(f"{path}: {problem}")
    rest = {k: v for k, v in params.items()
            if k not in ("pretrained", "pretrained_strict") and k not in WEIGHT_LOADING_KWARGS}
    for key in [k for k in rest if k in DATA_PARAMS]:
        problems.append(f"{path}.{key}: '{key}' of timm model '{inner}' is set from the data; "
                        "remove it.")
        rest.pop(key)
    accepted = model_parameters(inner)
    if not rest or not accepted:
        return problems
    kwargs = dict(num_classes=4, in_chans=1, **rest)
    if "img_size" in accepted:
        kwargs["img_size"] = 224
    try:
        with torch.device("meta"):
            timm.create_model(inner, pretrained=False, **kwargs)
    except TypeError as error:
        unknown = re.search(r"unexpected keyword argument '(\w+)'", str(error))
        if unknown and unknown[1] in rest:
            choices = sorted(k for k in accepted if k not in DATA_PARAMS)
            problems.append(
                f"unknown parameter '{unknown[1]}' of timm model '{inner}' at {path}."
                f"{did_you_mean(unknown[1], choices)} Parameters: {', '.join(choices)}.")
        else:
            problems.append(f"{path}: timm.create_model('{inner}') rejects {rest}: {error}")
    except Exception as error:
        problems.append(f"{path}: timm.create_model('{inner}') rejects {rest}: "
                        f"{type(error).__name__}: {error}")
    return problems


def _has_pretrained_source(inner: str) -> bool:
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(inner)
    return cfg is not None and bool(cfg.hf_hub_id or cfg.url or cfg.file)


def weights_file_problem(text: str) -> str | None:
    """Why ``text`` is not a usable weights file, or None."""
    path = Path(text).expanduser()
    if path.suffix not in WEIGHT_SUFFIXES:
        return (f"must be true, false or a weights file ending in "
                f"{', '.join(WEIGHT_SUFFIXES)}. Got {text!r} instead.")
    if not path.is_file():
        return f"weights file {path} does not exist; check the path."
    try:
        read_weights(path)
    except OctbenchError as error:
        return str(error)
    return None


def ensure_pretrained_weights(inner: str, where: str) -> None:
    """Fetch (or find cached) timm's pretrained weights for ``inner`` before any training.

    Raises:
        OctbenchError: offline without cached weights, naming the caches and how to fill them.
    """
    import timm

    try:
        timm.create_model(inner, pretrained=True, num_classes=4, in_chans=1)
    except Exception as error:
        raise OctbenchError(offline_message(inner, where, error)) from None


def offline_message(inner: str, where: str, error: Exception) -> str:
    from huggingface_hub import constants
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(inner)
    repo = cfg.hf_hub_id if cfg is not None and cfg.hf_hub_id else None
    cache = Path(constants.HF_HUB_CACHE)
    torch_cache = Path(torch.hub.get_dir()) / "checkpoints"
    source = (f"Hugging Face repository '{repo}' (cache: {cache})" if repo
              else f"{cfg.url if cfg else 'timm'} (cache: {torch_cache})")
    reason = str(error).splitlines()[0] if str(error) else type(error).__name__
    return (
        f"{where}: the pretrained weights of timm model '{inner}' are not cached and cannot be "
        f"downloaded ({reason}). They come from the {source}. On a machine with internet run "
        f"`python -c \"import timm; timm.create_model('{inner}', pretrained=True)\"` and copy "
        f"its cache folder to the same place here (or point HF_HOME at it), or save the weights "
        f"with safetensors and set `pretrained: path/to/weights.safetensors`."
    )


def normalization(inner: str, pretrained: bool | str) -> tuple[float, float]:
    """Input (mean, std) for a single-channel image in [0, 1] (see :func:`normalization_source`).

    Pretrained weights expect their own normalisation (ImageNet's for most timm weights); the
    RGB mean and std are averaged for one channel, matching timm's summing of the RGB filters.
    """
    return _normalization(inner, pretrained)[0]


def normalization_source(inner: str, pretrained: bool | str) -> str:
    """Where :func:`normalization` came from: ``data`` (0.5 / 0.5), ``file`` (the weights file's
    metadata or its config.json) or ``timm`` (timm's configuration for the name)."""
    return _normalization(inner, pretrained)[1]


def _normalization(inner: str, pretrained: bool | str) -> tuple[tuple[float, float], str]:
    if not pretrained:
        return DEFAULT_NORMALIZATION, "data"
    if isinstance(pretrained, str):
        carried = file_normalization(pretrained)
        if carried is not None:
            return carried, "file"
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(inner)
    if cfg is None or cfg.mean is None or cfg.std is None:
        return DEFAULT_NORMALIZATION, "data"
    return (round(sum(cfg.mean) / len(cfg.mean), 6),
            round(sum(cfg.std) / len(cfg.std), 6)), "timm"


def tensors_digest(state: dict[str, torch.Tensor], keys) -> str:
    """SHA-256 over the named tensors (sorted by name): proves which weights a model holds."""
    digest = hashlib.sha256()
    for key in sorted(keys):
        digest.update(key.encode())
        digest.update(state[key].detach().cpu().contiguous().float().numpy().tobytes())
    return digest.hexdigest()[:16]


def describe_weights(inner: str, pretrained: bool | str, model: nn.Module) -> dict:
    """Where a freshly built timm model's weights came from, for the run record.

    For a weights file: its SHA-256, the tensors loaded as they are, adapted (the stem, to one
    input channel) and new (the head), the wrapper prefix stripped, and a digest of the model's
    loaded and adapted tensors, so a record proves which weights its run started from. With
    ``pretrained_strict: false`` it also lists what did not fit and says ``partial``.
    """
    if not pretrained:
        return {"weights": "random", "normalization_source": "data"}
    if not isinstance(pretrained, str):
        cfg = getattr(model, "pretrained_cfg", {}) or {}
        return {"weights": "timm", "source": cfg.get("hf_hub_id") or cfg.get("url"),
                "normalization_source": normalization_source(inner, pretrained)}
    path = Path(pretrained).expanduser()
    plan = plan_weights(read_weights(path), model)
    described = {
        "weights": str(path), "file_sha256": _file_sha256(path),
        "loaded_tensors": len(plan.loaded), "adapted_tensors": plan.adapted,
        "new_tensors": sorted(plan.new),
        "loaded_sha256": tensors_digest(model.state_dict(), plan.loaded + plan.adapted),
        "prefix_stripped": plan.prefix or None,
        "normalization_source": normalization_source(inner, pretrained),
        "partial": not plan.complete,
    }
    if not plan.complete:
        described.update(missing=plan.missing, unexpected=plan.unexpected,
                         mismatched=plan.mismatched)
    return described


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
