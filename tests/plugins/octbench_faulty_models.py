"""Test-only plugin: ``faulty_cnn``, a reference CNN that fails on purpose.

Loaded with ``OCTBENCH_PLUGINS=octbench_faulty_models``. ``OCTBENCH_TEST_FAULTS=off`` disables
the faults without changing the run ids, so a rerun can complete a run that failed before.
"""

from __future__ import annotations

import os

import torch
from torch import nn

from octbench.models import MODELS
from octbench.models.reference import reference_cnn
from octbench.registry import Interval, OneOf


class FaultyCNN(nn.Module):
    def __init__(self, inner: nn.Module, fault: str, after: int):
        super().__init__()
        self.inner, self.fault, self.after, self.batches = inner, fault, after, 0

    def forward(self, x):
        if self.training:
            self.batches += 1
        if self.batches <= self.after or os.environ.get("OCTBENCH_TEST_FAULTS") == "off":
            return self.inner(x)
        if self.fault == "nan":
            return self.inner(x) * float("nan")
        if self.fault == "oom":
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB "
                                         "(simulated by the faulty_cnn test plugin)")
        raise RuntimeError("injected fault in faulty_cnn.forward")


@MODELS.register(fault=OneOf(("raise", "nan", "oom")), after=Interval(0, None))
def faulty_cnn(*, num_classes: int = 4, in_chans: int = 1, img_size: int = 28,
               fault: str = "raise", after: int = 0) -> nn.Module:
    """Test only: the reference CNN (width 0.25) failing after ``after`` training batches."""
    inner = reference_cnn(num_classes=num_classes, in_chans=in_chans, img_size=img_size,
                          width=0.25)
    return FaultyCNN(inner, fault, after)
