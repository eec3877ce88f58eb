"""The experiment's sections as frozen dataclasses: the one source of their keys, types, defaults
and ranges (the validator and the schema reference in the docs both read them), plus the limits
that keep a config from exhausting the machine. The top level,
:class:`~octbench.config.ExperimentConfig`, lives beside its parser in
:mod:`octbench.config.experiment`, as its ``variants()`` parses each sweep combination.

Must not import: the registries, or anything that imports torch.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from typing import Any, Literal

from octbench.registry import SEED_RANGE, Interval

#: Folder-safe names, short enough for any file system once run ids are appended.
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
DEVICE_PATTERN = re.compile(r"^(cpu|mps|auto|cuda(:\d+)?)$")
DEVICE_NAMES = ["cpu", "cuda", "mps", "auto"]

#: Runs a grid may have unless ``--max-runs`` raises it: a typo in a sweep list (or an alias
#: bomb) must not start a million runs, nor spend minutes checking a million values.
MAX_RUNS = 10_000

# Upper bounds for values that could otherwise exhaust the machine (or overflow numpy).
MAX_EPOCHS = 10_000
MAX_BATCH = 65_536
#: numpy's seeds are 32-bit (the rule for every seed lives in the registry).
MAX_SEED = SEED_RANGE.high
#: More threads than this only oversubscribes the cores (and huge counts crash OpenMP).
MAX_THREADS = 4 * (os.cpu_count() or 1)


def check(constraint, **metadata) -> dict:
    """Field metadata holding a range or choice constraint."""
    return {"check": constraint, **metadata}


@dataclass(frozen=True)
class Component:
    """A registry entry chosen in the YAML: ``focal`` or ``{name: focal, gamma: 2.0}``."""

    name: str
    params: dict = field(default_factory=dict)

    @property
    def label(self) -> str:
        """A short display name: ``focal`` or ``focal(gamma=3.0)``."""
        if not self.params:
            return self.name
        inner = ",".join(f"{k}={v}" for k, v in sorted(self.params.items()))
        return f"{self.name}({inner})"

    def to_yaml(self) -> str | dict:
        return {"name": self.name, **self.params} if self.params else self.name


@dataclass(frozen=True)
class TrainConfig:
    """How every run of the grid trains (defaults: the seed project's settings)."""

    epochs: int = field(default=15, metadata=check(Interval(1, MAX_EPOCHS)))
    batch_size: int = field(default=128, metadata=check(Interval(1, MAX_BATCH)))
    #: None: 256 on CPU (cache-friendly), 1024 on a GPU.
    eval_batch_size: int | None = field(default=None, metadata=check(Interval(1, MAX_BATCH)))
    lr: float = field(default=1e-3, metadata=check(Interval(0, None, low_open=True)))
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    momentum: float = field(default=0.9, metadata=check(Interval(0, 1)))
    weight_decay: float = field(default=0.0, metadata=check(Interval(0, None)))
    schedule: Literal["none", "cosine", "step"] = "none"
    step_every: int = field(default=5, metadata=check(Interval(1, MAX_EPOCHS)))
    step_gamma: float = field(default=0.1, metadata=check(Interval(0, 1, low_open=True)))
    patience: int | None = field(default=None, metadata=check(Interval(1, MAX_EPOCHS)))
    select_on: str = "macro_f1"
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    channels_last: bool = True  # NHWC: faster convolutions on CPU (oneDNN) and GPU
    compile: bool = False
    deterministic: bool = False
    threads: int | None = field(default=None, metadata=check(Interval(1, MAX_THREADS)))
    #: end_to_end trains every weight; linear_probe only the classifier head (MedMNIST+).
    mode: Literal["end_to_end", "linear_probe"] = "end_to_end"
    #: batch-wise augmentations from octbench.augment, applied in this order
    augment: tuple[Component, ...] = ()

    def to_dict(self) -> dict:
        """Plain data for YAML and run records. Options added after the first recorded runs are
        left out at their defaults, so that those runs keep their ids."""
        values = dataclasses.asdict(self)
        values["augment"] = [c.to_yaml() for c in self.augment]
        return {k: v for k, v in values.items()
                if not (k in LATER_DEFAULTS and v == LATER_DEFAULTS[k])}


#: Train options that newer versions added, with the default that leaves a run unchanged.
LATER_DEFAULTS = {"mode": "end_to_end", "augment": []}


@dataclass(frozen=True)
class BootstrapConfig:
    """How the report's bootstrap resamples the test items.

    ``class`` (default) resamples within each class, so every resample keeps the test split's
    class counts (OCTMNIST's is balanced by design); ``groups`` resamples whole groups (e.g.
    patients, from the data's ``test_groups``); ``none`` resamples items freely.
    """

    stratify: Literal["class", "none", "groups"] = "class"


@dataclass(frozen=True)
class ReportConfig:
    """Report options: the strategy every other one is compared against, and the bootstrap.

    ``baseline`` defaults to ``none`` when the grid has it, else to the first strategy.
    """

    baseline: str | None = None
    bootstrap: BootstrapConfig = BootstrapConfig()


@dataclass(frozen=True)
class EvaluateConfig:
    """Extra evaluation of each finished run: ``evaluate: {corruptions: medmnist_c}``.

    ``corruptions`` names MedMNIST-C corruptions (``medmnist_c`` for all six of OCTMNIST), each
    scored at ``severities`` on a test set corrupted with ``seed``. It does not change training,
    so it is not part of run ids.
    """

    corruptions: tuple[str, ...] = ()
    severities: tuple[int, ...] = (1, 2, 3, 4, 5)
    seed: int = field(default=0, metadata=check(Interval(0, 2**32 - 1)))

    def to_dict(self) -> dict:
        return {"corruptions": list(self.corruptions), "severities": list(self.severities),
                "seed": self.seed}


def config_hash(data: Any) -> str:
    """A short stable hash of JSON-serialisable data (used to key runs by their config)."""
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:8]

