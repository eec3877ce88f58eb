"""The training loop: plain functions with explicit arguments over tensor-resident batches.

Each split is one uint8 tensor (N, H, W). A batch is gathered by indexing, converted to float and
normalised on the fly (mean 0.5, std 0.5, as the seed project did) on whatever device the tensor
lives on -- no Dataset, no per-sample Python, no host sync per step.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

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


def to_input(images: torch.Tensor, *, channels_last: bool = False) -> torch.Tensor:
    """uint8 (B, H, W) -> float (B, 1, H, W) in [-1, 1], on the images' device."""
    x = images.unsqueeze(1).float().mul_(1 / 127.5).sub_(1.0)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def make_optimizer(params: Iterable[nn.Parameter], name: str, *, lr: float,
                   weight_decay: float = 0.0, momentum: float = 0.9) -> torch.optim.Optimizer:
    """Adam, AdamW or SGD (with momentum) by name."""
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {name!r}")


def make_scheduler(optimizer: torch.optim.Optimizer, name: str, *, epochs: int,
                   step_every: int = 5, step_gamma: float = 0.1):
    """A per-epoch learning-rate schedule: ``none``, ``cosine`` or ``step``; None for none."""
    if name == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    if name == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=step_every, gamma=step_gamma)
    return None


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
    progress=None,
) -> dict:
    """Train one pass over ``images[order]``; return mean loss, images seen and seconds.

    ``images`` (uint8) and ``labels`` live on the model's device; ``order`` holds the epoch's
    sample indices (a permutation, or a strategy's resampled draw). The loss is summed on the
    device and read once at the end, so no step waits for the host.

    Raises:
        NonFiniteLoss: when the epoch's loss is NaN or infinite.
    """
    device = images.device
    model.train()
    order = order.to(device)
    total = torch.zeros((), device=device)
    synchronize(device)
    start = time.perf_counter()
    for first in range(0, len(order), batch_size):
        index = order[first:first + batch_size]
        x = to_input(images[index], channels_last=channels_last)
        y = labels[index]
        with autocast(device, precision):
            loss = criterion(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        total += loss.detach().float() * len(index)
        if progress is not None:
            progress.update(len(index))
    mean_loss = (total / max(len(order), 1)).item()
    seconds = time.perf_counter() - start
    if not np.isfinite(mean_loss):
        raise NonFiniteLoss(f"the training loss became {mean_loss}; lower the learning rate "
                            "or use precision fp32")
    return {"loss": mean_loss, "images": len(order), "seconds": seconds}


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
        x = to_input(images[first:first + batch_size], channels_last=channels_last)
        with autocast(device, precision):
            logits = model(x).float()
        if logit_offset is not None:
            logits = logits + logit_offset.to(device)
        chunks.append(torch.softmax(logits, dim=1))
    scores = torch.cat(chunks).cpu().numpy()
    synchronize(device)
    seconds = time.perf_counter() - start
    return Predictions(scores=scores, labels=labels.cpu().numpy()), seconds
