"""The training loop: plain functions with explicit arguments over tensor-resident batches.

Each split is one uint8 tensor (N, H, W). A batch is gathered by indexing, converted to float and
normalised on the fly (mean 0.5, std 0.5, as the seed project did) on whatever device the tensor
lives on -- no Dataset, no per-sample Python, no host sync per step.

Must not import: config (the engine knows nothing of YAML), strategies or models by name, results,
the runner, report or tuning.
"""

from __future__ import annotations

import functools
import logging
import os
import random
import time
from collections.abc import Iterable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from octbench.augment import Augmenter
from octbench.devices import autocast, synchronize


class NonFiniteLoss(RuntimeError):
    """The training loss became NaN or infinite."""


@dataclass(frozen=True)
class Predictions:
    """Class probabilities ``scores`` (N, K) and true ``labels`` (N,) of one split, as numpy."""

    scores: np.ndarray
    labels: np.ndarray

    @property
    def predicted(self) -> np.ndarray:
        return self.scores.argmax(axis=1)


def seed_everything(seed: int, *, deterministic: bool = False) -> None:
    """Seed Python, NumPy and torch; optionally make torch kernels deterministic."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(deterministic, warn_only=True)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.backends.cudnn.deterministic = deterministic
    torch.backends.cudnn.benchmark = not deterministic


#: (mean, std) of the seed project's input normalisation, on images scaled to [0, 1].
DEFAULT_NORMALIZATION = (0.5, 0.5)


def to_input(images: torch.Tensor, *, channels_last: bool = False,
             normalize: tuple[float, float] = DEFAULT_NORMALIZATION) -> torch.Tensor:
    """uint8 (B, H, W) -> float (B, 1, H, W), (x / 255 - mean) / std, on the images' device.

    With the default (0.5, 0.5) the result lies in [-1, 1]; pretrained weights bring their own.
    """
    mean, std = normalize
    x = images.unsqueeze(1).float().mul_(1 / (255 * std)).sub_(mean / std)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def default_eval_batch(device: torch.device) -> int:
    """Evaluation batch when the config leaves it open: 256 on CPU, where activations of larger
    batches spill out of the caches and run slower, 1024 on a GPU."""
    return 256 if device.type == "cpu" else 1024


def make_optimizer(params: Iterable[nn.Parameter], name: str, *, lr: float,
                   weight_decay: float = 0.0, momentum: float = 0.9,
                   fused: bool | None = None, capturable: bool = False) -> torch.optim.Optimizer:
    """Adam, AdamW or SGD (with momentum) by name.

    ``fused=True`` (worth it on CUDA) updates every parameter in one kernel instead of several
    per step; None keeps torch's default. ``capturable=True`` keeps Adam's step count on the
    GPU so that a CUDA graph can replay the step (SGD always can).
    """
    if name in ("adam", "adamw"):
        adam = torch.optim.Adam if name == "adam" else torch.optim.AdamW
        return adam(params, lr=lr, weight_decay=weight_decay, fused=fused, capturable=capturable)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay,
                               fused=fused)
    raise ValueError(f"unknown optimizer {name!r}")


def make_scheduler(optimizer: torch.optim.Optimizer, name: str, *, epochs: int,
                   step_every: int = 5, step_gamma: float = 0.1):
    """A per-epoch learning-rate schedule: ``none``, ``cosine`` or ``step``; None for none."""
    if name == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    if name == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=step_every, gamma=step_gamma)
    return None


#: Eager steps on a side stream before a CUDA graph is captured (lazy state, cuDNN autotuning).
GRAPH_WARMUP_STEPS = 3


def train_one_epoch(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    order: torch.Tensor,
    *,
    criterion: nn.Module,
    optimizer: torch.optim.Optimizer,
    batch_size: int,
    precision: str = "fp32",
    scaler: torch.amp.GradScaler | None = None,
    channels_last: bool = False,
    normalize: tuple[float, float] = DEFAULT_NORMALIZATION,
    eval_modules: Sequence[nn.Module] = (),
    augment: Augmenter | None = None,
    cuda_graph: bool = True,
    progress=None,
) -> dict:
    """Train one pass over ``images[order]``; return mean loss, images seen and seconds.

    ``images`` (uint8) and ``labels`` live on the model's device; ``order`` holds the epoch's
    sample indices (a permutation, or a strategy's resampled draw). The loss is summed on the
    device and read once at the end, so no step waits for the host.

    On CUDA (fp32 / bf16) the full-batch step is captured once per epoch as a CUDA graph and
    replayed: a small CNN's step is bound by kernel launches, not by the GPU. Capturing each
    epoch, after the strategy's epoch hook, keeps per-epoch changes (schedules, deferred
    re-weighting) in the graph. Adam / AdamW must then be ``capturable`` (the runner does so);
    a model that cannot be captured trains eagerly, with a warning.

    ``augment`` transforms each batch on the device (images in [0, 1], before normalisation);
    a mixing augmentation's partner labels enter the loss with weight ``1 - lam``. Its host
    transforms (``medmnist_c``) prepare the next batches in a background thread meanwhile.

    ``eval_modules`` stay in eval mode while the rest trains (a linear probe's frozen backbone
    keeps its BatchNorm statistics and drops no activations).

    Raises:
        NonFiniteLoss: when the epoch's loss is NaN or infinite.
    """
    device = images.device
    model.train()
    for module in eval_modules:
        module.eval()
    order = order.to(device)
    total = torch.zeros((), device=device)
    batches = list(torch.split(order, batch_size))
    full = len(order) // batch_size
    # Augmentation draws from its own generators and mixes on the host: it runs eagerly.
    graphed = (cuda_graph and device.type == "cuda" and scaler is None and augment is None
               and full > GRAPH_WARMUP_STEPS and capturable(optimizer))

    def step(index: torch.Tensor, *, cache: bool = True) -> None:
        y, partner, lam = labels[index], None, 1.0
        if augment is None:
            x = to_input(images[index], channels_last=channels_last, normalize=normalize)
        else:
            x, partner, lam = next(augmented)
            x = x.sub_(normalize[0]).div_(normalize[1])
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
        with autocast(device, precision, cache=cache):
            logits = model(x)
            loss = criterion(logits, y)
            if partner is not None:
                loss = lam * loss + (1 - lam) * criterion(logits, partner)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        total.add_(loss.detach().float(), alpha=len(index))

    synchronize(device)
    start = time.perf_counter()
    # The augmented batches come in the order run_steps takes them (augmenting never graphs).
    stream = augment.stream(images, labels, batches) if augment is not None else nullcontext()
    with stream as augmented:
        run_steps(step, batches, graphed=graphed, full=full, optimizer=optimizer,
                  device=device, progress=progress)
    mean_loss = (total / max(len(order), 1)).item()
    seconds = time.perf_counter() - start
    check_finite_loss(mean_loss, precision)
    return {"loss": mean_loss, "images": len(order), "seconds": seconds}


def check_finite_loss(mean_loss: float, precision: str = "fp32") -> None:
    """Raise NonFiniteLoss when an epoch's mean training loss is NaN or infinite."""
    if not np.isfinite(mean_loss):
        raise NonFiniteLoss(f"the training loss became {mean_loss}; "
                            + nonfinite_loss_fix(precision))


def nonfinite_loss_fix(precision: str) -> str:
    """What to try after a NaN or infinite loss; fp32 is suggested only when not used already."""
    fix = "lower the learning rate (train.lr)"
    if precision != "fp32":
        return f"{fix} or use precision fp32 (instead of {precision})"
    return f"{fix}, or check the data for extreme values"


def run_steps(step, batches: list[torch.Tensor], *, graphed: bool, full: int, optimizer,
              device: torch.device, progress, count=len) -> None:
    """Call ``step(index)`` for each batch: the first ``full`` (full-size) batches replayed as
    a CUDA graph when ``graphed``, the rest eagerly; ``count(index)`` images per batch go to
    ``progress``."""
    eager = batches
    if graphed:
        replayed = _replay_graph(step, batches[:full], optimizer, device, progress, count)
        eager = batches[replayed:]
    for index in eager:
        optimizer.zero_grad(set_to_none=True)
        step(index)
        if progress is not None:
            progress.update(count(index))


def capturable(optimizer: torch.optim.Optimizer) -> bool:
    # Adam's step count must live on the GPU inside a graph; SGD keeps no count.
    return all(group.get("capturable", True) for group in optimizer.param_groups)


def _replay_graph(step, batches: list[torch.Tensor], optimizer, device, progress,
                  count=len) -> int:
    """Run ``batches`` (all full size): warm-up steps eagerly, the rest as CUDA graph replays.

    Returns how many batches were trained (all of them, or only the warm-up steps when the
    model cannot be captured).
    """
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):
        for index in batches[:GRAPH_WARMUP_STEPS]:
            optimizer.zero_grad(set_to_none=True)
            step(index, cache=False)
            if progress is not None:
                progress.update(count(index))
    torch.cuda.current_stream(device).wait_stream(side)
    static_index = batches[GRAPH_WARMUP_STEPS].clone()
    graph = torch.cuda.CUDAGraph()
    optimizer.zero_grad(set_to_none=True)  # gradients are then allocated in the graph's pool
    try:
        with torch.cuda.graph(graph):
            step(static_index, cache=False)
    except RuntimeError as error:  # e.g. a model with a host sync or data-dependent shapes
        _warn_once(f"training without CUDA graphs: capture failed ({error})")
        return GRAPH_WARMUP_STEPS
    for index in batches[GRAPH_WARMUP_STEPS:]:
        static_index.copy_(index)
        graph.replay()
        if progress is not None:
            progress.update(count(index))
    return len(batches)


@functools.cache
def _warn_once(message: str) -> None:
    logging.getLogger("octbench").warning(message)


@torch.inference_mode()
def evaluate(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    batch_size: int = 1024,
    precision: str = "fp32",
    logit_offset: torch.Tensor | None = None,
    channels_last: bool = False,
    normalize: tuple[float, float] = DEFAULT_NORMALIZATION,
) -> tuple[Predictions, float]:
    """Predict a whole split in large batches; return Predictions and the seconds it took.

    ``logit_offset`` (a per-class vector) is added to the logits before the softmax: that is
    how post-hoc logit adjustment changes predictions without the engine knowing its name.
    """
    device = images.device
    model.eval()
    synchronize(device)
    start = time.perf_counter()
    chunks = []
    for first in range(0, len(images), batch_size):
        x = to_input(images[first:first + batch_size], channels_last=channels_last,
                     normalize=normalize)
        with autocast(device, precision):
            logits = model(x).float()
        if logit_offset is not None:
            logits = logits + logit_offset.to(device)
        chunks.append(torch.softmax(logits, dim=1))
    scores = torch.cat(chunks).cpu().numpy()
    synchronize(device)
    seconds = time.perf_counter() - start
    return Predictions(scores=scores, labels=labels.cpu().numpy()), seconds
