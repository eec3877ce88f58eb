"""Model tests, generated from the registry: adding a model adds its tests."""

import pytest
import torch

from octbench.models import MODELS, build_model, count_parameters

# ResNet-50 at 64 px costs seconds per backward pass on 2 cores; 28 px proves the same paths.
SIZES = {name: (28, 64) for name in MODELS.names()}
SIZES["resnet50_28"] = (28,)


@pytest.mark.parametrize(
    ("name", "size"), [(name, size) for name in MODELS.names() for size in SIZES[name]]
)
def test_forward_backward(name, size):
    torch.manual_seed(0)
    model = build_model(name, num_classes=4, in_chans=1, img_size=size)
    x = torch.randn(2, 1, size, size)
    logits = model(x)
    assert logits.shape == (2, 4)
    logits.sum().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_reference_cnn_matches_the_seed_project():
    model = build_model("reference_cnn")
    assert count_parameters(model) == 389_316
    linear = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linear] == [(128 * 3 * 3, 256), (256, 4)]


@pytest.mark.parametrize("size", [64, 128, 224])
def test_reference_cnn_flatten_adapts_to_size(size):
    model = build_model("reference_cnn", img_size=size)
    assert model.classifier[1].in_features == 128 * (size // 8) ** 2
    assert model(torch.zeros(1, 1, size, size)).shape == (1, 4)


def test_reference_cnn_width_and_dropout():
    model = build_model("reference_cnn", width=0.5, dropout=0.1)
    convs = [m.out_channels for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs == [16, 32, 64]
    assert model.classifier[3].p == 0.1


def test_two_conv_variant_matches_the_report():
    model = build_model("reference_cnn_2conv")
    linear = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert (linear[0].in_features, linear[0].out_features) == (12_544, 128)
    assert count_parameters(model) == 1_625_092


def test_medmnist_resnet_keeps_28px_resolution():
    model = build_model("resnet18_28")
    assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1)
    assert isinstance(model.maxpool, torch.nn.Identity)


def test_timm_models_enter_by_prefix():
    model = build_model("timm:resnet10t", num_classes=4, in_chans=1, img_size=28)
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 4)


def test_timm_vision_transformer_gets_the_image_size():
    model = build_model("timm:vit_tiny_patch16_224", img_size=32, patch_size=8)
    assert model(torch.zeros(1, 1, 32, 32)).shape == (1, 4)


RESOLUTIONS = (28, 64, 128, 224)
TIMM_AT_EVERY_SIZE = ("timm:resnet10t", "timm:test_vit", "timm:test_efficientnet")


@pytest.mark.parametrize("size", RESOLUTIONS)
@pytest.mark.parametrize("name", MODELS.names() + list(TIMM_AT_EVERY_SIZE))
def test_every_model_takes_every_resolution(name, size):
    """Shapes only, on the meta device: no memory, no compute, every model at every size."""
    # A vision transformer's patch must divide the image: 16 px patches need 4 px ones at 28 px.
    params = {"patch_size": 4} if "vit" in name and size % 16 else {}
    with torch.device("meta"):
        model = build_model(name, num_classes=4, in_chans=1, img_size=size, **params)
        assert model(torch.empty(2, 1, size, size)).shape == (2, 4)


@pytest.mark.parametrize(("size", "small"), [(28, True), (64, True), (128, False), (224, False)])
def test_medmnist_resnet_stem_follows_the_size(size, small):
    with torch.device("meta"):
        model = build_model("resnet18_28", img_size=size)
    assert model.conv1.kernel_size == ((3, 3) if small else (7, 7))
    assert isinstance(model.maxpool, torch.nn.Identity) == small


def test_timm_transformer_gets_img_size_at_224():
    with torch.device("meta"):
        model = build_model("timm:test_vit", img_size=224)
    assert model.patch_embed.img_size == (224, 224)
