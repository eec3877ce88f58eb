"""Load a local pretrained weights file into a timm model, strictly and truthfully.

A file saved from a wrapped model (``module.`` from DataParallel / DDP, ``model.`` from Lightning
and friends, ``backbone.``, ``_orig_mod.`` from ``torch.compile``) has its prefix stripped; the
``state_dict`` / ``model`` nesting of a training checkpoint is opened by
:func:`read_weights`. Then every tensor of the model must come from
the file with its own shape, except two, each named in the run record:

- the classifier head, which is new when the file's head has another number of classes;
- the stem convolution, *adapted* when the file has another number of input channels (the RGB
  filters summed for one channel, timm's ``adapt_input_conv``).

Anything else missing, unexpected or of another shape is an error that lists the keys, unless
``pretrained_strict: false`` asks to load what fits (the record then says ``partial``).

Must not import: strategies, data, the engine or config.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from octbench.errors import OctbenchError

#: Prefixes that wrappers put before every key of the model they wrap.
WRAPPER_PREFIXES = ("module.", "_orig_mod.", "model.", "backbone.")
#: Keys listed in full in an error; more are counted.
SHOWN_KEYS = 8


@dataclass(frozen=True)
class WeightsPlan:
    """How a file's tensors map onto a model's (names are the model's)."""

    loaded: list[str]
    adapted: list[str]
    new: list[str]
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)
    prefix: str = ""

    @property
    def complete(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def problem(self, path: str | Path) -> str:
        """The error for an incomplete plan: every kind of misfit with its keys, and the fix."""
        parts = []
        for what, keys in (("missing from the file", self.missing),
                           ("unexpected (not in the model)", self.unexpected),
                           ("of another shape", self.mismatched)):
            if keys:
                shown = ", ".join(keys[:SHOWN_KEYS])
                more = f" and {len(keys) - SHOWN_KEYS} more" if len(keys) > SHOWN_KEYS else ""
                parts.append(f"{len(keys)} {what}: {shown}{more}")
        stripped = f" (after stripping the prefix '{self.prefix}')" if self.prefix else ""
        return (f"the weights file {path} does not fit the model{stripped}: "
                + "; ".join(parts) + ". Only the classifier head and the stem's input channels "
                "may differ. Use weights saved from the same architecture, or set "
                "pretrained_strict: false to load only the tensors that fit (reported as "
                "partial).")


def strip_wrapper_prefix(file_state: dict[str, torch.Tensor], model_keys
                         ) -> tuple[dict[str, torch.Tensor], str]:
    """The file's tensors without a wrapper prefix that every key carries and the model's
    keys do not; returns them and the prefix(es) stripped."""
    model_keys = set(model_keys)
    stripped = ""
    changed = True
    while changed:
        changed = False
        for prefix in WRAPPER_PREFIXES:
            if (file_state and all(k.startswith(prefix) for k in file_state)
                    and not any(k.startswith(prefix) for k in model_keys)):
                file_state = {k[len(prefix):]: v for k, v in file_state.items()}
                stripped += prefix
                changed = True
    return file_state, stripped


def plan_weights(file_state: dict[str, torch.Tensor], model: nn.Module) -> WeightsPlan:
    """Match a file's tensors to ``model``'s by name and shape (works on the meta device)."""
    cfg = getattr(model, "pretrained_cfg", {}) or {}
    heads = cfg.get("classifier") or ()
    heads = (heads,) if isinstance(heads, str) else tuple(heads)
    stem = f"{cfg['first_conv']}.weight" if cfg.get("first_conv") else None
    model_state = model.state_dict()
    file_state, prefix = strip_wrapper_prefix(file_state, model_state)

    def is_head(key: str) -> bool:
        return any(key.startswith(h + ".") for h in heads)

    loaded, adapted, new, missing, mismatched = [], [], [], [], []
    for key, tensor in model_state.items():
        theirs = file_state.get(key)
        if theirs is not None and theirs.shape == tensor.shape:
            loaded.append(key)
        elif (key == stem and theirs is not None and theirs.dim() == tensor.dim() == 4
              and theirs.shape[0] == tensor.shape[0] and theirs.shape[2:] == tensor.shape[2:]):
            adapted.append(key)
        elif is_head(key):
            new.append(key)
        elif theirs is not None:
            mismatched.append(f"{key} {tuple(theirs.shape)} vs {tuple(tensor.shape)}")
        elif key.endswith("num_batches_tracked"):  # a counter, not a weight: often not saved
            new.append(key)
        else:
            missing.append(key)
    # the file's own head (e.g. 1000 ImageNet classes, or a bias a cosine head lacks) is replaced
    unexpected = sorted(k for k in file_state if k not in model_state and not is_head(k))
    return WeightsPlan(loaded=loaded, adapted=adapted, new=new, missing=missing,
                       unexpected=unexpected, mismatched=mismatched, prefix=prefix)


def read_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a weights file safely: safetensors, or ``torch.load(weights_only=True)``.

    Raises:
        OctbenchError: when the file is missing, unreadable or holds no tensors.
    """
    path = Path(path).expanduser()
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path), device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as error:
        raise OctbenchError(
            f"cannot read {path} as model weights ({type(error).__name__}: {error}); save them "
            "with safetensors.torch.save_file(model.state_dict(), ...) or "
            "torch.save(model.state_dict(), ...)") from None
    for key in ("state_dict", "model"):  # a training checkpoint around the weights, as timm reads
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    tensors = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)} if isinstance(
        state, dict) else {}
    if not tensors:
        raise OctbenchError(f"{path} holds no tensors; it must be a model's state_dict.")
    return tensors


def load_weights_file(model: nn.Module, path: str | Path, *, strict: bool = True) -> WeightsPlan:
    """Load the weights file at ``path`` into ``model`` (see the module docstring).

    Raises:
        OctbenchError: the file is unreadable, or (``strict``) does not fit, naming the keys.
    """
    from timm.models import adapt_input_conv

    file_state = read_weights(path)
    plan = plan_weights(file_state, model)
    if strict and not plan.complete:
        raise OctbenchError(plan.problem(path))
    if not plan.loaded and not plan.adapted:
        raise OctbenchError(f"no tensor of the weights file {path} fits the model; "
                            "it holds weights of another architecture.")
    file_state, _ = strip_wrapper_prefix(file_state, model.state_dict())
    state = model.state_dict()
    for key in plan.loaded:
        state[key] = file_state[key]
    for key in plan.adapted:
        state[key] = adapt_input_conv(state[key].shape[1], file_state[key].float()).to(
            state[key].dtype)
    model.load_state_dict(state)
    return plan


def file_normalization(path: str | Path) -> tuple[float, float] | None:
    """The (mean, std) a weights file carries for one channel, or None.

    Read from the file's safetensors metadata (``mean`` and ``std`` as JSON lists) or from a
    ``config.json`` beside it (the Hugging Face layout of timm's weights:
    ``{"pretrained_cfg": {"mean": [...], "std": [...]}}``); RGB values are averaged.
    """
    path = Path(path).expanduser()
    found = None
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as handle:
                metadata = handle.metadata() or {}
            if "mean" in metadata and "std" in metadata:
                found = {"mean": json.loads(metadata["mean"]), "std": json.loads(metadata["std"])}
        except (OSError, ValueError, TypeError):
            found = None
    config = path.parent / "config.json"
    if found is None and config.is_file():
        try:
            raw = json.loads(config.read_text())
            raw = raw.get("pretrained_cfg", raw) if isinstance(raw, dict) else {}
            if isinstance(raw, dict) and "mean" in raw and "std" in raw:
                found = {"mean": raw["mean"], "std": raw["std"]}
        except (OSError, ValueError, UnicodeDecodeError):
            found = None
    if found is None:
        return None
    try:
        mean, std = ([float(v) for v in (found[k] if isinstance(found[k], list) else [found[k]])]
                     for k in ("mean", "std"))
    except (TypeError, ValueError):
        raise OctbenchError(f"the normalisation that {path} carries ({found}) is not numbers; "
                            "mean and std must be lists of floats.") from None
    mean, std = round(sum(mean) / len(mean), 6), round(sum(std) / len(std), 6)
    if not (0 <= mean <= 1 and 0 < std <= 1):
        raise OctbenchError(f"the normalisation that {path} carries (mean {mean}, std {std}) "
                            "is out of range: mean in [0, 1] and std in (0, 1] for images "
                            "scaled to [0, 1].")
    return mean, std
