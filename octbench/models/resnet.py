"""MedMNIST-style ResNets (Yang et al. 2023): torchvision ResNets with a small-image stem.

Must not import: octbench beyond ``octbench.models``.
"""

from __future__ import annotations

from torch import nn

from octbench.models._registry import MODELS


def _medmnist_resnet(name: str, *, num_classes: int, in_chans: int, img_size: int,
                     small_stem: bool | None) -> nn.Module:
    import torchvision.models  # imported here: it costs seconds at every CLI start-up

    model = getattr(torchvision.models, name)(weights=None, num_classes=num_classes)
    if small_stem is None:
        small_stem = img_size < 128
    stride = 1 if small_stem else 2
    model.conv1 = nn.Conv2d(in_chans, 64, kernel_size=3 if small_stem else 7, stride=stride,
                            padding=1 if small_stem else 3, bias=False)
    if small_stem:
        # A 7x7/2 stem and max-pool would shrink 28 px to 7 px before the first block.
        model.maxpool = nn.Identity()
    return model


@MODELS.register
def resnet18_28(*, num_classes: int = 4, in_chans: int = 1, img_size: int = 28,
                small_stem: bool | None = None) -> nn.Module:
    """ResNet-18 (He et al. 2016) as in MedMNIST v2: 3x3 stem, no max-pool for small images.

    Args:
        small_stem: use the 3x3/1 stem without max-pool; default when images are < 128 px.
    """
    return _medmnist_resnet("resnet18", num_classes=num_classes, in_chans=in_chans,
                            img_size=img_size, small_stem=small_stem)


@MODELS.register
def resnet50_28(*, num_classes: int = 4, in_chans: int = 1, img_size: int = 28,
                small_stem: bool | None = None) -> nn.Module:
    """ResNet-50 (He et al. 2016) as in MedMNIST v2: 3x3 stem, no max-pool for small images."""
    return _medmnist_resnet("resnet50", num_classes=num_classes, in_chans=in_chans,
                            img_size=img_size, small_stem=small_stem)
