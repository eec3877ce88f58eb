"""Batch-wise, on-device training augmentations: ``train.augment: [hflip, {name: affine}]``.

Each augmentation is a keyword-only factory registered in :data:`AUGMENTATIONS`. It returns a
transform of a whole batch ``x`` (float (B, 1, H, W) in [0, 1], on the training device) that
draws its random parameters *per image* in one tensor operation: no per-sample Python, no host
round trip. Flips use ``torchvision.transforms.v2.functional``; rotations, translations, scaling
and resized crops are one ``affine_grid`` / ``grid_sample`` per batch (torchvision's v2
transforms draw one parameter set per call, which would flip or rotate a whole batch alike).

Randomness comes from an :class:`Augmenter`'s own generators, seeded by the run's seed and saved
in its resume checkpoint, so a run augments identically whether or not it was interrupted.
Mixing augmentations (mixup, cutmix) return each image's partner label and the mixing weight;
the loss is ``lam * loss(y) + (1 - lam) * loss(partner)``, so every strategy's criterion works.

A :class:`HostTransform` (``medmnist_c``: a library's per-image code on the host) is the
exception: it works on uint8 scans with a seed per batch, derived from the run's seed and the
batch's number, so its result does not depend on when it is computed. When host transforms
lead the pipeline, :meth:`Augmenter.stream` computes them for the next batches in a background
thread while the device trains on the current one, with the same result as computing them in
turn.

One module over 450 lines because it is one idea: the training-time image pipeline, whose
registered factories share one generator discipline (per-image draws, saved and restored).
"""

from __future__ import annotations

import math
import queue
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from octbench.registry import Interval, Registry

AUGMENTATIONS = Registry("augmentation")

PROBABILITY = Interval(0, 1)


@dataclass
class Random:
    """The generators an augmentation draws from: ``device`` for per-image and per-pixel
    tensors (on the batch's device), ``host`` for per-batch scalars (a mixing weight, a box)."""

    device: torch.Generator
    host: torch.Generator

    def uniform(self, n: int, low: float, high: float, like: torch.Tensor) -> torch.Tensor:
        """``n`` values uniform in [low, high), on ``like``'s device."""
        u = torch.rand(n, generator=self.device, device=like.device, dtype=like.dtype)
        return u.mul_(high - low).add_(low)

    def chosen(self, n: int, p: float, like: torch.Tensor) -> torch.Tensor:
        """A (n, 1, 1, 1) mask: which images get the transform (probability ``p`` each)."""
        u = torch.rand(n, generator=self.device, device=like.device)
        return (u < p).view(n, 1, 1, 1)

    def beta(self, alpha: float) -> float:
        """One Beta(alpha, alpha) draw for the batch (numpy's sampler, seeded from ``host``)."""
        seed = int(torch.randint(2**62, (1,), generator=self.host))
        return float(np.random.default_rng(seed).beta(alpha, alpha))

    def host_uniform(self) -> float:
        return float(torch.rand((), generator=self.host))


#: ``transform(x, labels, rng) -> (x, partner_labels or None, lam)``
Transform = Callable[[torch.Tensor, torch.Tensor, Random], tuple]


@dataclass(frozen=True)
class Warp:
    """A geometric augmentation: ``maps(n, rng, like)`` draws one affine map per image
    ((n, 2, 3), output to input coordinates, as ``affine_grid``). Consecutive warps are composed
    and the batch is resampled once; ``alone`` is an exact faster path used when a warp has no
    warp next to it (a flip as a flip, not as a resampling)."""

    maps: Callable[[int, Random, torch.Tensor], torch.Tensor]
    alone: Transform | None = None


@dataclass(frozen=True)
class HostTransform:
    """An augmentation computed on the host, image by image: ``apply(images, seed)`` maps uint8
    scans (B, H, W) to new ones, drawing only from ``seed`` (one per batch)."""

    apply: Callable[[np.ndarray, int], np.ndarray]


class Background:
    """Iterate ``source`` in a daemon thread, at most ``depth`` items ahead (a bounded queue).

    An exception in the thread is raised where its item would have come; leaving the ``with``
    block (the end, an error, Ctrl-C) stops the thread after the item it is computing.
    """

    def __init__(self, source: Iterable, depth: int):
        self.ready: queue.Queue = queue.Queue(maxsize=depth)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._produce, args=(source,), daemon=True,
                                       name="octbench-host-augment")

    def _produce(self, source: Iterable) -> None:
        try:
            for item in source:
                if not self._put((True, item)):
                    return
            self._put((False, None))
        except BaseException as error:  # noqa: BLE001 - raised again in the consumer
            self._put((False, error))

    def _put(self, item) -> bool:
        while not self.stop.is_set():
            try:
                self.ready.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _items(self) -> Iterator:
        while True:
            more, item = self.ready.get()
            if more:
                yield item
            elif item is None:
                return
            else:
                raise item

    def __enter__(self) -> Iterator:
        self.thread.start()
        return self._items()

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()


def _compose(first: torch.Tensor, then: torch.Tensor) -> torch.Tensor:
    """The map of ``first`` followed by ``then``: sampling through ``first @ then``."""
    bottom = torch.tensor([0.0, 0.0, 1.0], dtype=first.dtype, device=first.device)
    square = torch.cat([then, bottom.expand(len(then), 1, 3)], dim=1)
    return first @ square


class Augmenter:
    """The run's augmentation pipeline with its generators (seeded; saved on resume).

    Example:
        >>> augmenter = build_augmenter(["hflip", {"name": "affine", "degrees": 10}], seed=0,
        ...                             device=torch.device("cpu"))
        >>> x, partner, lam = augmenter(torch.rand(8, 1, 28, 28), torch.zeros(8, dtype=int))
        >>> x.shape, partner, lam
        (torch.Size([8, 1, 28, 28]), None, 1.0)
    """

    def __init__(self, transforms: Sequence[Transform | Warp | HostTransform], *, seed: int,
                 device: torch.device, prefetch: int = 2):
        self.steps = _group_warps(list(transforms))
        self.random = Random(device=torch.Generator(device).manual_seed(seed),
                             host=torch.Generator().manual_seed(seed + 1))
        self.seed = seed
        #: Batches augmented so far: a host transform's seed is drawn from it (and the seed).
        self.batches = 0
        #: How many batches host transforms may run ahead in a thread (0: in turn, no thread).
        self.prefetch = prefetch
        self.lead = next((i for i, s in enumerate(self.steps) if not isinstance(s, HostTransform)),
                         len(self.steps))

    def host_seed(self, batch: int, position: int) -> int:
        """The seed of the host transform at ``position`` for the ``batch``-th batch."""
        return int(np.random.SeedSequence([self.seed, batch, position]).generate_state(1)[0])

    def __call__(self, x: torch.Tensor, labels: torch.Tensor):
        """Augment a batch; return (x, partner labels or None, weight of ``labels``)."""
        return self._augment(x, labels, first=0)

    def _host(self, images: np.ndarray, batch: int, steps: range) -> np.ndarray:
        for position in steps:
            images = self.steps[position].apply(images, self.host_seed(batch, position))
        return images

    def _augment(self, x: torch.Tensor, labels: torch.Tensor, *, first: int):
        """Steps ``first``... of the pipeline on a batch in [0, 1]; counts the batch."""
        partner, lam = None, 1.0
        for position in range(first, len(self.steps)):
            step = self.steps[position]
            if isinstance(step, HostTransform):
                x = _from_uint8(self._host(_to_uint8(x), self.batches,
                                           range(position, position + 1)), x.device, x.dtype)
                continue
            if isinstance(step, list):  # consecutive warps: one resampling
                theta = step[0].maps(len(x), self.random, x)
                for warp in step[1:]:
                    theta = _compose(theta, warp.maps(len(x), self.random, x))
                x = _warp(x, theta)
                continue
            x, mixed, weight = step(x, labels, self.random)
            if mixed is not None:
                partner, lam = mixed, weight
        self.batches += 1
        return x, partner, lam

    @contextmanager
    def stream(self, images: torch.Tensor, labels: torch.Tensor,
               batches: Sequence[torch.Tensor]) -> Iterator[Iterator[tuple]]:
        """The augmented batches ``images[index]`` (uint8) for each index of ``batches``, in
        order, as :meth:`__call__` gives them. Host transforms leading the pipeline run
        ``prefetch`` batches ahead in a background thread (they draw only from their per-batch
        seeds, so the result is the same); the thread stops when the ``with`` block ends.

        Example:
            >>> with augmenter.stream(images, labels, batches) as augmented:  # doctest: +SKIP
            ...     x, partner, lam = next(augmented)
        """
        if not self.lead or self.prefetch <= 0:
            yield (self(images[index].unsqueeze(1).float().mul_(1 / 255), labels[index])
                   for index in batches)
            return
        first = self.batches

        def host_stage():  # in the thread: numpy, PIL, ImageMagick; no device work but a copy
            for number, index in enumerate(batches):
                yield self._host(images[index].cpu().numpy(), first + number, range(self.lead))

        with Background(host_stage(), self.prefetch) as ready:
            yield (self._augment(_from_uint8(done, images.device), labels[index],
                                 first=self.lead)
                   for done, index in zip(ready, batches, strict=False))

    def state_dict(self) -> dict:
        return {"device": self.random.device.get_state(), "host": self.random.host.get_state(),
                "batches": self.batches}

    def load_state_dict(self, state: dict) -> None:
        self.random.device.set_state(state["device"])
        self.random.host.set_state(state["host"])
        self.batches = int(state.get("batches", 0))  # states saved before it: from the start


def _to_uint8(x: torch.Tensor) -> np.ndarray:
    """A batch in [0, 1] (B, 1, H, W) as the uint8 scans (B, H, W) it came from."""
    return (x[:, 0] * 255).round_().clamp_(0, 255).to(torch.uint8).cpu().numpy()


def _from_uint8(images: np.ndarray, device: torch.device,
                dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 scans (B, H, W) as a batch in [0, 1] (B, 1, H, W), as the engine makes one."""
    x = torch.from_numpy(images).to(device).unsqueeze(1)
    return x.to(dtype).mul_(1 / 255)


def _group_warps(transforms: list) -> list:
    """Runs of consecutive warps become lists (resampled once); a lone warp with an exact
    path uses it."""
    steps: list = []
    for transform in transforms:
        if isinstance(transform, Warp) and steps and isinstance(steps[-1], list):
            steps[-1].append(transform)
        else:
            steps.append([transform] if isinstance(transform, Warp) else transform)
    return [s[0].alone if isinstance(s, list) and len(s) == 1 and s[0].alone else s
            for s in steps]


def build_augmenter(components: Sequence, *, seed: int, device: torch.device,
                    prefetch: int = 2) -> Augmenter | None:
    """An :class:`Augmenter` for ``train.augment`` entries (names, or ``{name: ..., **params}``
    / Components); None when the list is empty. ``prefetch``: how many batches leading host
    transforms may prepare ahead in a background thread (0: none, in turn)."""
    transforms = []
    for item in components:
        if isinstance(item, str):
            name, params = item, {}
        elif isinstance(item, dict):
            name, params = item["name"], {k: v for k, v in item.items() if k != "name"}
        else:
            name, params = item.name, item.params
        transforms.append(AUGMENTATIONS.get(name)(**params))
    return (Augmenter(transforms, seed=seed, device=device, prefetch=prefetch) if transforms
            else None)


def _per_image(transformed: torch.Tensor, x: torch.Tensor, p: float, rng: Random):
    if p >= 1:
        return transformed
    return torch.where(rng.chosen(len(x), p, x), transformed, x)


def _identity_where_not_chosen(theta: torch.Tensor, p: float, rng: Random) -> torch.Tensor:
    if p >= 1:
        return theta
    identity = torch.eye(2, 3, dtype=theta.dtype, device=theta.device).expand_as(theta)
    return torch.where(rng.chosen(len(theta), p, theta).view(-1, 1, 1), theta, identity)


def _warp(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Resample each image through its own affine map (B, 2, 3); outside is black (0)."""
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


@AUGMENTATIONS.register(p=PROBABILITY)
def hflip(*, p: float = 0.5) -> Warp:
    """Horizontal flip of each image with probability ``p`` (OCT B-scans are left-right
    symmetric in meaning: the fovea's side does not decide the class)."""
    from torchvision.transforms.v2 import functional as TF

    def flip(x, labels, rng):
        return torch.where(rng.chosen(len(x), p, x), TF.horizontal_flip(x), x), None, 1.0

    def maps(n, rng, like):
        sign = 1 - 2 * rng.chosen(n, p, like).view(n).to(like.dtype)  # -1: mirror x
        theta = torch.zeros(n, 2, 3, dtype=like.dtype, device=like.device)
        theta[:, 0, 0], theta[:, 1, 1] = sign, 1.0
        return theta
    return Warp(maps, alone=flip)


@AUGMENTATIONS.register(degrees=Interval(0, 180), translate=Interval(0, 1),
                        scale=Interval(0, 1, high_open=True), p=PROBABILITY)
def affine(*, degrees: float = 10.0, translate: float = 0.1, scale: float = 0.1,
           p: float = 1.0) -> Warp:
    """Small random affine per image: rotation in ±``degrees``, shift up to ``translate`` of
    the side, zoom in [1 - ``scale``, 1 + ``scale``] (as torchvision's RandomAffine)."""

    def maps(n, rng, x):
        angle = rng.uniform(n, -degrees, degrees, x) * (math.pi / 180)
        zoom = rng.uniform(n, 1 - scale, 1 + scale, x)
        shift = rng.uniform(2 * n, -2 * translate, 2 * translate, x).view(n, 2)  # [-1, 1] units
        cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
        theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1),
                             torch.stack([sin, cos, shift[:, 1]], 1)], 1)
        return _identity_where_not_chosen(theta, p, rng)
    return Warp(maps)


@AUGMENTATIONS.register(scale_min=Interval(0, 1, low_open=True),
                        ratio_max=Interval(1, None), p=PROBABILITY)
def random_resized_crop(*, scale_min: float = 0.5, ratio_max: float = 4 / 3,
                        p: float = 1.0) -> Warp:
    """A random crop of each image (area in [``scale_min``, 1] of the image, aspect ratio in
    [1 / ``ratio_max``, ``ratio_max``]) resized back to full size (as RandomResizedCrop)."""

    def maps(n, rng, x):
        area = rng.uniform(n, scale_min, 1.0, x)
        log_ratio = rng.uniform(n, -math.log(ratio_max), math.log(ratio_max), x)
        width = torch.sqrt(area * torch.exp(log_ratio)).clamp(max=1.0)
        height = torch.sqrt(area / torch.exp(log_ratio)).clamp(max=1.0)
        cx = (rng.uniform(n, -1.0, 1.0, x) * (1 - width))  # keeps the crop inside the image
        cy = (rng.uniform(n, -1.0, 1.0, x) * (1 - height))
        zero = torch.zeros_like(width)
        theta = torch.stack([torch.stack([width, zero, cx], 1),
                             torch.stack([zero, height, cy], 1)], 1)
        return _identity_where_not_chosen(theta, p, rng)
    return Warp(maps)


@AUGMENTATIONS.register(brightness=Interval(0, 1), contrast=Interval(0, 1), p=PROBABILITY)
def brightness_contrast(*, brightness: float = 0.2, contrast: float = 0.2,
                        p: float = 1.0) -> Transform:
    """Brightness factor in [1 ± ``brightness``], then contrast in [1 ± ``contrast``] around
    each image's mean (as torchvision's ColorJitter), clipped to [0, 1]."""

    def transform(x, labels, rng):
        n = len(x)
        gain = rng.uniform(n, 1 - brightness, 1 + brightness, x).view(n, 1, 1, 1)
        spread = rng.uniform(n, 1 - contrast, 1 + contrast, x).view(n, 1, 1, 1)
        bright = x * gain
        mean = bright.mean(dim=(1, 2, 3), keepdim=True)
        jittered = ((bright - mean) * spread + mean).clamp_(0, 1)
        return _per_image(jittered, x, p, rng), None, 1.0
    return transform


@AUGMENTATIONS.register(std=Interval(0, 1), p=PROBABILITY)
def gaussian_noise(*, std: float = 0.05, p: float = 1.0) -> Transform:
    """Additive Gaussian noise of standard deviation ``std`` (images in [0, 1]), clipped."""

    def transform(x, labels, rng):
        noise = torch.randn(x.shape, generator=rng.device, device=x.device, dtype=x.dtype)
        return _per_image((x + std * noise).clamp_(0, 1), x, p, rng), None, 1.0
    return transform


@AUGMENTATIONS.register(std=Interval(0, 1), p=PROBABILITY)
def speckle_noise(*, std: float = 0.1, p: float = 1.0) -> Transform:
    """Multiplicative noise ``x * (1 + std * N(0, 1))``: OCT's own speckle is multiplicative."""

    def transform(x, labels, rng):
        noise = torch.randn(x.shape, generator=rng.device, device=x.device, dtype=x.dtype)
        return _per_image((x * (1 + std * noise)).clamp_(0, 1), x, p, rng), None, 1.0
    return transform


@AUGMENTATIONS.register()
def medmnist_c() -> Transform:
    """MedMNIST-C's training augmentation (Di Salvo et al. 2024, ``AugMedMNISTC``): each image
    gets one of OCTMNIST's six corruptions, or none, with a random severity.

    It is ``medmnistc``'s own code (PIL, OpenCV, ImageMagick), so it runs on the host, image by
    image, at the training size: first in the pipeline, it prepares the next batches in a
    background thread while the device trains (:meth:`Augmenter.stream`). Needs the robustness
    extra (:mod:`octbench.robustness.corruptions`).
    """
    from octbench.robustness.corruptions import random_corruptions, require_medmnistc

    require_medmnistc()
    return HostTransform(lambda images, seed: random_corruptions(images, seed=seed))


def _partner(x: torch.Tensor, rng: Random) -> torch.Tensor:
    return torch.randperm(len(x), generator=rng.device, device=x.device)


@AUGMENTATIONS.register(alpha=Interval(0, None, low_open=True), p=PROBABILITY)
def mixup(*, alpha: float = 0.2, p: float = 1.0) -> Transform:
    """mixup (Zhang et al. 2018): each batch blends every image with a partner image by
    ``lam ~ Beta(alpha, alpha)``, and the loss blends their labels alike."""

    def transform(x, labels, rng):
        if rng.host_uniform() >= p:
            return x, None, 1.0
        lam = rng.beta(alpha)
        order = _partner(x, rng)
        return x * lam + x[order] * (1 - lam), labels[order], lam
    return transform


@AUGMENTATIONS.register(alpha=Interval(0, None, low_open=True), p=PROBABILITY)
def cutmix(*, alpha: float = 1.0, p: float = 1.0) -> Transform:
    """CutMix (Yun et al. 2019): each batch pastes a box of a partner image into every image;
    the labels are weighted by the areas (box area ``1 - lam``, ``lam ~ Beta(alpha, alpha)``)."""

    def transform(x, labels, rng):
        if rng.host_uniform() >= p:
            return x, None, 1.0
        height, width = x.shape[-2:]
        cut = math.sqrt(1 - rng.beta(alpha))
        box_h, box_w = round(height * cut), round(width * cut)
        top = round(rng.host_uniform() * (height - box_h))
        left = round(rng.host_uniform() * (width - box_w))
        order = _partner(x, rng)
        mixed = x.clone()
        mixed[..., top:top + box_h, left:left + box_w] = \
            x[order][..., top:top + box_h, left:left + box_w]
        return mixed, labels[order], 1 - box_h * box_w / (height * width)
    return transform


#: Augmentations that mix images and labels; a batch is mixed by at most one of them.
MIXING = ("mixup", "cutmix")

__all__ = ["AUGMENTATIONS", "Augmenter", "HostTransform", "MIXING", "Warp", "build_augmenter"]
