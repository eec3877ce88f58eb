"""Stacked training: N models of one architecture as one wider model, one step for all.

A small CNN's training step on a GPU is bound by kernel launches, not arithmetic. Stacking the
weights of N same-shaped models turns each layer into one layer N times wider whose N blocks
never see each other: a convolution becomes a grouped convolution (``groups = N``), a
BatchNorm normalises N blocks of channels (its statistics are per channel, so per member), a
linear layer becomes one batched matrix product. Activations keep the layout
``(B, N * C, ...)``: member ``i`` owns channel block ``i``, and ``flatten`` keeps each member's
features contiguous, in the order the single model flattens them. Each member feeds its own
batch (its own order, sampler and augmentation) and has its own loss; the stacked loss is their
sum, so each member's gradient is exactly its own loss's gradient. Adam and SGD update every
element on its own, so one optimiser over the stacked weights is N independent optimisers.

Parameters keep their names; member ``i``'s part of a stacked tensor ``t`` is
``t.view(N, *single_shape)[i]``, for weights, buffers and optimiser state alike.

Only models built from the layers in :data:`SAME_PER_CHANNEL` and the stacked ones below can
stack (the seed CNN, the MedMNIST ResNets); any other model trains on its own, as before.

Must not import: config, results, the runner, report or tuning (engine level).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from octbench.augment import Augmenter
from octbench.devices import autocast, synchronize
from octbench.engine import (
    DEFAULT_NORMALIZATION,
    GRAPH_WARMUP_STEPS,
    capturable,
    run_steps,
    to_input,
)
from octbench.models.heads import CosineLinear

#: Layers that act on each channel (or element) alone, so they work on a stack unchanged.
SAME_PER_CHANNEL = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.GELU, nn.SiLU, nn.Sigmoid, nn.Tanh, nn.Identity,
    nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d,
)


class StackedLinear(nn.Module):
    """N linear layers on (B, N * in): weight (N, out, in), bias (N, out) -> (B, N * out).

    ``cosine``: N cosine heads (:class:`~octbench.models.heads.CosineLinear`): each member's
    features and class weights are L2-normalised first.
    """

    def __init__(self, members: int, in_features: int, out_features: int, bias: bool,
                 cosine: bool = False):
        super().__init__()
        self.members, self.cosine = members, cosine
        self.weight = nn.Parameter(torch.empty(members, out_features, in_features))
        self.bias = nn.Parameter(torch.empty(members, out_features)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch = x.shape[0]
        x = x.reshape(batch, self.members, -1).transpose(0, 1)  # (N, B, in)
        weight = self.weight
        if self.cosine:
            x, weight = F.normalize(x, dim=-1), F.normalize(weight, dim=-1)
        out = torch.bmm(x, weight.transpose(1, 2))
        if self.bias is not None:
            out = out + self.bias.unsqueeze(1)
        return out.transpose(0, 1).reshape(batch, -1)


class StackedDropout(nn.Module):
    """Dropout whose mask for member ``i`` comes from ``generators[i]`` (CPU), drawn exactly as
    ``F.dropout`` draws it on the CPU (``bernoulli_(1 - p) / (1 - p)``), so a member drops the
    same units as its run trained alone. Without generators (CUDA, where the step may be a
    CUDA graph), one mask for the whole stack comes from the device's generator."""

    def __init__(self, members: int, p: float, generators: Sequence[torch.Generator] | None):
        super().__init__()
        self.members, self.p = members, p
        self.generators = list(generators) if generators is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        if self.generators is None or self.p == 1:
            return F.dropout(x, self.p, training=True)
        parts = x.reshape(x.shape[0], self.members, -1)
        noise = torch.cat([torch.empty_like(parts[:, i]).bernoulli_(1 - self.p, generator=g)
                           for i, g in enumerate(self.generators)], dim=1)
        return x * noise.div_(1 - self.p).view_as(x)


def unstackable_layers(model: nn.Module) -> list[str]:
    """Names of the layer types in ``model`` that cannot be stacked (empty: it can)."""
    allowed = (*SAME_PER_CHANNEL, nn.Conv2d, nn.BatchNorm2d, nn.Linear, CosineLinear, nn.Dropout,
               nn.Flatten,
               nn.Sequential, nn.ModuleList, nn.ModuleDict)
    bad = set()
    for module in model.modules():
        if type(module) in allowed:
            if isinstance(module, nn.Flatten) and (module.start_dim, module.end_dim) != (1, -1):
                bad.add("Flatten(not from dim 1)")
            if isinstance(module, nn.Conv2d) and module.padding_mode != "zeros":
                bad.add(f"Conv2d(padding_mode={module.padding_mode})")
            continue
        if list(module.children()) and type(module).forward is not nn.Module.forward:
            continue  # a container whose forward only combines its children (checked below)
        bad.add(type(module).__name__)
    return sorted(bad)


def _stacked_layer(module: nn.Module, n: int, generators) -> nn.Module:
    if isinstance(module, nn.Conv2d):
        return nn.Conv2d(n * module.in_channels, n * module.out_channels, module.kernel_size,
                         stride=module.stride, padding=module.padding, dilation=module.dilation,
                         groups=n * module.groups, bias=module.bias is not None)
    if isinstance(module, nn.BatchNorm2d):
        return nn.BatchNorm2d(n * module.num_features, eps=module.eps, momentum=module.momentum,
                              affine=module.affine,
                              track_running_stats=module.track_running_stats)
    if isinstance(module, nn.Linear):
        return StackedLinear(n, module.in_features, module.out_features, module.bias is not None,
                             cosine=isinstance(module, CosineLinear))
    if isinstance(module, nn.Dropout):
        return StackedDropout(n, module.p, generators)
    return module


def build_stacked(template: nn.Module, members: int, *,
                  generators: Sequence[torch.Generator] | None = None) -> nn.Module:
    """A model that computes ``members`` copies of ``template``'s architecture at once.

    Its input is (B, N * in_chans, H, W) (member ``i``'s images in channel block ``i``), its
    output (B, N * classes). The weights are uninitialised: :func:`load_members` fills them.

    Raises:
        ValueError: the model has a layer that cannot be stacked (see :func:`unstackable_layers`).
    """
    bad = unstackable_layers(template)
    if bad:
        raise ValueError(f"cannot stack a model with {', '.join(bad)}")
    stacked = copy.deepcopy(template)
    for module in list(stacked.modules()):
        for child_name, child in list(module.named_children()):
            replacement = _stacked_layer(child, members, generators)
            if replacement is not child:
                setattr(module, child_name, replacement)
    return stacked


@torch.no_grad()
def stacking_problem(template: nn.Module, *, in_chans: int, img_size: int) -> str | None:
    """Why ``template``'s architecture cannot train stacked, or None when it can.

    Besides the layer types, two members with different weights are run side by side once
    (eval mode, two images): a model whose ``forward`` mixes channels in its own way (a
    reshape by a fixed channel count, say) is caught here and trains on its own instead.
    """
    bad = unstackable_layers(template)
    if bad:
        return f"layers that cannot be stacked: {', '.join(bad)}"
    members = [copy.deepcopy(template).eval() for _ in range(2)]
    generator = torch.Generator().manual_seed(0)
    for model in members[1:]:
        for tensor in _tensors(model).values():
            if tensor.is_floating_point():
                tensor.add_(0.1 * torch.randn(tensor.shape, generator=generator))
    try:
        stacked = build_stacked(template, 2).eval()
        load_members(stacked, members)
        x = torch.rand(2, in_chans, img_size, img_size, generator=generator)
        alone = [m(x) for m in members]
        together = stacked(x.repeat(1, 2, 1, 1)).view(2, 2, -1)
    except (RuntimeError, ValueError) as error:
        return f"its forward does not run stacked ({error})"
    for i, out in enumerate(alone):
        if together[:, i].shape != out.shape or not torch.allclose(together[:, i], out,
                                                                   rtol=1e-3, atol=1e-4):
            return "its forward mixes the members' channels"
    return None


def architecture(model: nn.Module) -> tuple:
    """Layer names, types and parameter shapes: members of a stack must agree on it (LDAM's
    cosine head, for one, changes a model's last layer)."""
    return tuple((name, type(module).__name__,
                  tuple(tuple(p.shape) for p in module.parameters(recurse=False)))
                 for name, module in model.named_modules())


def _tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    return {**dict(model.named_parameters()), **dict(model.named_buffers())}


@torch.no_grad()
def load_members(stacked: nn.Module, models: Sequence[nn.Module]) -> None:
    """Copy the weights and buffers of ``models`` (member order) into ``stacked``."""
    singles = [_tensors(m) for m in models]
    for name, target in _tensors(stacked).items():
        parts = [s[name] for s in singles]
        if target.dim() == 0:  # e.g. BatchNorm's batch count: equal for members in step
            target.copy_(parts[0])
        else:
            target.copy_(torch.stack(parts).view(target.shape))


@torch.no_grad()
def store_members(stacked: nn.Module, models: Sequence[nn.Module]) -> None:
    """Copy each member's part of ``stacked`` back into its own model."""
    n = len(models)
    stacked_tensors = _tensors(stacked)
    for i, model in enumerate(models):
        for name, target in _tensors(model).items():
            source = stacked_tensors[name]
            target.copy_(source if source.dim() == 0 else source.view(n, *target.shape)[i])


def stack_optimizer_state(single_states: Sequence[dict], stacked: nn.Module,
                          template: nn.Module) -> dict:
    """One optimiser state_dict for ``stacked`` from its members' state_dicts (same order of
    parameters; per-element state is stacked, scalar state such as Adam's step is shared)."""
    shapes = [p.shape for p in stacked.parameters()]
    first = single_states[0]
    state = {}
    for index, entries in first["state"].items():
        state[index] = {}
        for key, value in entries.items():
            if torch.is_tensor(value) and value.dim() > 0:
                value = torch.stack([s["state"][index][key] for s in single_states])
                value = value.view(shapes[index])
            elif torch.is_tensor(value):
                value = value.clone()
            state[index][key] = value
    return {"state": state, "param_groups": copy.deepcopy(first["param_groups"])}


def unstack_optimizer_state(stacked_state: dict, member: int, members: int,
                            template: nn.Module) -> dict:
    """Member ``member``'s optimiser state_dict, as its run alone would have saved it."""
    shapes = [p.shape for p in template.parameters()]
    state = {}
    for index, entries in stacked_state["state"].items():
        state[index] = {}
        for key, value in entries.items():
            if torch.is_tensor(value) and value.dim() > 0:
                value = value.view(members, *shapes[index])[member].clone()
            elif torch.is_tensor(value):
                value = value.clone()
            state[index][key] = value
    return {"state": state, "param_groups": copy.deepcopy(stacked_state["param_groups"])}


def optimizer_steps(state: dict) -> float:
    """How many steps an optimiser state_dict has taken (0 for a fresh one, or for SGD)."""
    for entries in state["state"].values():
        step = entries.get("step")
        if step is not None:
            return float(step)
    return 0.0


def train_stacked_epoch(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    orders: torch.Tensor,
    *,
    criteria: Sequence[nn.Module],
    optimizer: torch.optim.Optimizer,
    batch_size: int,
    precision: str = "fp32",
    channels_last: bool = False,
    normalize: tuple[float, float] = DEFAULT_NORMALIZATION,
    augmenters: Sequence[Augmenter | None] | None = None,
    lrs: Sequence[float] | None = None,
    cuda_graph: bool = True,
    progress=None,
) -> dict:
    """One epoch of N stacked runs: ``orders`` (N, L) holds each member's sample order.

    The stacked counterpart of :func:`octbench.engine.train_one_epoch` (same batches, same
    normalisation, same per-member loss, CUDA graphs on CUDA); returns each member's mean loss
    (``losses``; NaN or infinite for a member that diverged: its weights never touch the
    others'), the images each member saw, and the seconds the stack took.

    ``lrs``: each member's learning rate, for an ``optimizer`` set to lr 1. Adam, AdamW and SGD
    move each element by lr times a step that does not depend on lr (their state never sees
    it), so member ``i``'s step scaled by ``lrs[i]`` is the step its own optimiser takes.
    """
    device = images.device
    n = len(criteria)
    augmenters = list(augmenters) if augmenters is not None else [None] * n
    model.train()
    orders = orders.to(device)
    totals = torch.zeros(n, device=device)
    batches = list(torch.split(orders, batch_size, dim=1))
    full = orders.shape[1] // batch_size
    augmented = any(a is not None for a in augmenters)
    graphed = (cuda_graph and device.type == "cuda" and not augmented
               and full > GRAPH_WARMUP_STEPS and capturable(optimizer))
    params = [p.detach() for p in model.parameters()] if lrs is not None else []
    scales = None if lrs is None else torch.tensor(lrs, dtype=torch.float32, device=device)

    def step(index: torch.Tensor, *, cache: bool = True) -> None:
        parts, targets = [], []
        for i in range(n):
            y, partner, lam = labels[index[i]], None, 1.0
            if augmenters[i] is None:
                x = to_input(images[index[i]], normalize=normalize)
            else:
                x, partner, lam = augmenters[i](images[index[i]].unsqueeze(1).float()
                                                .mul_(1 / 255), y)
                x = x.sub_(normalize[0]).div_(normalize[1])
            parts.append(x)
            targets.append((y, partner, lam))
        x = torch.cat(parts, dim=1)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(device, precision, cache=cache):
            logits = model(x).view(x.shape[0], n, -1)
            losses = []
            for i, (y, partner, lam) in enumerate(targets):
                loss = criteria[i](logits[:, i], y)
                if partner is not None:
                    loss = lam * loss + (1 - lam) * criteria[i](logits[:, i], partner)
                losses.append(loss)
            losses = torch.stack(losses)
        losses.sum().backward()
        if scales is None:
            optimizer.step()
        else:  # an lr-1 step, then member i's part of it scaled by its own lr
            before = [p.clone() for p in params]
            optimizer.step()
            for p, old in zip(params, before, strict=True):
                moved, old = p.unflatten(0, (n, -1)), old.unflatten(0, (n, -1))
                moved.sub_(old).mul_(scales.view(n, *[1] * (moved.dim() - 1))).add_(old)
        totals.add_(losses.detach().float(), alpha=index.shape[1])

    synchronize(device)
    start = time.perf_counter()
    run_steps(step, batches, graphed=graphed, full=full, optimizer=optimizer, device=device,
              progress=progress, count=lambda index: index.numel())  # (N, B): N * B images
    losses = (totals / max(orders.shape[1], 1)).tolist()
    return {"losses": losses, "images": orders.shape[1], "seconds": time.perf_counter() - start}


@torch.inference_mode()
def evaluate_stacked(
    model: nn.Module,
    images: torch.Tensor,
    *,
    members: int,
    batch_size: int = 1024,
    precision: str = "fp32",
    logit_offsets: Sequence[torch.Tensor | None] = (),
    channels_last: bool = False,
    normalize: tuple[float, float] = DEFAULT_NORMALIZATION,
) -> tuple[list[np.ndarray], float]:
    """Class probabilities of every member on one split (as :func:`octbench.engine.evaluate`
    computes them for one model) and the seconds it took."""
    device = images.device
    model.eval()
    offsets = list(logit_offsets) or [None] * members
    synchronize(device)
    start = time.perf_counter()
    chunks: list[list[torch.Tensor]] = [[] for _ in range(members)]
    for first in range(0, len(images), batch_size):
        x = to_input(images[first:first + batch_size], normalize=normalize)
        x = x.repeat(1, members, 1, 1)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(device, precision):
            logits = model(x).float().view(x.shape[0], members, -1)
        for i in range(members):
            member_logits = logits[:, i]
            if offsets[i] is not None:
                member_logits = member_logits + offsets[i].to(device)
            chunks[i].append(torch.softmax(member_logits, dim=1))
    scores = [torch.cat(c).cpu().numpy() for c in chunks]
    synchronize(device)
    return scores, time.perf_counter() - start
