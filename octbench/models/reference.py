"""The seed project's CNNs (``train.py`` and the variant in its report).

Must not import: octbench beyond ``octbench.models`` and the registry.
"""

from __future__ import annotations

from torch import nn

from octbench.models._registry import MODELS
from octbench.registry import Interval


def _pooled(size: int, times: int) -> int:
    for _ in range(times):
        size //= 2  # MaxPool2d(2) floors: 28 -> 14 -> 7 -> 3
    return size


class ReferenceCNN(nn.Module):
    """Three Conv-BN-ReLU-MaxPool blocks, then FC -> ReLU -> Dropout -> FC."""

    def __init__(self, *, num_classes: int, in_chans: int, img_size: int,
                 channels: tuple[int, ...] = (32, 64, 128), hidden: int = 256,
                 dropout: float = 0.5):
        super().__init__()
        blocks, previous = [], in_chans
        for width in channels:
            blocks += [nn.Conv2d(previous, width, 3, padding=1), nn.BatchNorm2d(width),
                       nn.ReLU(inplace=True), nn.MaxPool2d(2)]
            previous = width
        self.features = nn.Sequential(*blocks)
        side = _pooled(img_size, len(channels))
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(previous * side * side, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x):
        return self.classifier(self.features(x))


# width <= 16: 512 to 4,096 channels, already far beyond the seed CNN (memory grows as width^2).
@MODELS.register(width=Interval(0, 16, low_open=True), dropout=Interval(0, 1, high_open=True))
def reference_cnn(*, num_classes: int = 4, in_chans: int = 1, img_size: int = 28,
                  width: float = 1.0, dropout: float = 0.5) -> nn.Module:
    """The seed project's 3-block CNN (389,316 parameters at 28 px, 4 classes).

    Args:
        width: multiplier on every layer's width (32, 64, 128 channels; 256 hidden units).
        dropout: dropout before the last layer.
    """
    scaled = [max(1, round(c * width)) for c in (32, 64, 128, 256)]
    return ReferenceCNN(num_classes=num_classes, in_chans=in_chans, img_size=img_size,
                        channels=tuple(scaled[:3]), hidden=scaled[3], dropout=dropout)


class TwoConvCNN(nn.Module):
    """Conv-ReLU, Conv-ReLU, MaxPool, Dropout, FC -> ReLU -> Dropout -> FC."""

    def __init__(self, *, num_classes: int, in_chans: int, img_size: int, dropout: float,
                 hidden: int = 128):
        super().__init__()
        side = _pooled(img_size, 1)
        self.net = nn.Sequential(
            nn.Conv2d(in_chans, 32, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(inplace=True),
            nn.MaxPool2d(2), nn.Dropout(dropout), nn.Flatten(),
            nn.Linear(64 * side * side, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x):
        return self.net(x)


@MODELS.register(dropout=Interval(0, 1, high_open=True))
def reference_cnn_2conv(*, num_classes: int = 4, in_chans: int = 1, img_size: int = 28,
                        dropout: float = 0.25) -> nn.Module:
    """The seed report's 2-conv variant: FC 12,544 -> 128 -> 4 at 28 px (1,625,092 parameters)."""
    return TwoConvCNN(num_classes=num_classes, in_chans=in_chans, img_size=img_size,
                      dropout=dropout)
