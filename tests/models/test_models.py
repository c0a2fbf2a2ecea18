"""Model registry: shapes, fx traceability, VGG-16 MACs, errors, rebuild specs."""
import pytest
import torch
from torch import nn

import spikebridge.models as models
from spikebridge.errors import SpikeBridgeError

NAMES = [name for name in models.available() if not models.takes_text(name)]  # image models


def _size(name):
    return models.input_size(name) or 28


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("in_channels", [3, 1])
def test_builds_and_gives_logits(name, in_channels):
    torch.manual_seed(0)
    model = models.create(name, num_classes=7, in_channels=in_channels).eval()
    s = _size(name)
    with torch.no_grad():
        out = model(torch.randn(2, in_channels, s, s))
    assert out.shape == (2, 7)
    assert model.spikebridge_spec == {"name": name, "num_classes": 7, "in_channels": in_channels}


@pytest.mark.parametrize("name", NAMES + ["tv:resnet18"])
def test_fx_traceable(name):
    model = models.create(name).eval()
    traced = torch.fx.symbolic_trace(model)
    # VGG-16's classifier needs 32x32, vit_tiny its image_size (28); the rest take any size
    s = {"vgg16": 32, "vit_tiny": 28}.get(name, 16)
    x = torch.randn(2, 3, s, s)
    with torch.no_grad():
        torch.testing.assert_close(traced(x), model(x))


def _macs(model, x):
    total = 0

    def hook(mod, inp, out):
        nonlocal total
        if isinstance(mod, nn.Conv2d):
            kh, kw = mod.kernel_size
            total += out.numel() // out.shape[0] * (mod.in_channels // mod.groups) * kh * kw
        else:
            total += mod.in_features * mod.out_features

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    return total


def test_vgg16_macs_match_pascal_appendix():
    model = models.create("vgg16", num_classes=10).eval()
    assert _macs(model, torch.randn(1, 3, 32, 32)) == 332_111_872
    assert not any(isinstance(m, nn.MaxPool2d) for m in model.modules())


def test_resnet20_parameter_count():
    # He et al. report 0.27M (option-A shortcuts: 269,722); the 1x1 conv-BN shortcuts add 2,752.
    model = models.create("resnet20")
    assert sum(p.numel() for p in model.parameters()) == 272_474


def test_small_cnn_any_input_size():
    model = models.create("small_cnn", in_channels=1, width=8).eval()
    with torch.no_grad():
        for s in (16, 28, 32, 45):
            assert model(torch.randn(1, 1, s, s)).shape == (1, 10)
    assert model.spikebridge_spec["width"] == 8


def test_spec_rebuilds_the_model():
    model = models.create("mobilenetv2", num_classes=5, in_channels=1, width_mult=0.5)
    rebuilt = models.create(**model.spikebridge_spec)
    rebuilt.load_state_dict(model.state_dict())


def test_mobilenetv2_uses_relu_and_depthwise():
    model = models.create("mobilenetv2")
    assert not any(isinstance(m, nn.ReLU6) for m in model.modules())
    assert any(isinstance(m, nn.Conv2d) and m.groups == m.in_channels > 1 for m in model.modules())


def test_input_sizes():
    assert models.input_size("vgg16") == 32
    assert models.input_size("resnet20") == 32
    assert models.input_size("small_cnn") is None
    assert models.input_size("tv:resnet18") is None


def test_tv_resnet18_one_channel():
    model = models.create("tv:resnet18", num_classes=4, in_channels=1).eval()
    assert model.conv1.in_channels == 1
    with torch.no_grad():
        assert model(torch.randn(2, 1, 64, 64)).shape == (2, 4)
    assert model.spikebridge_spec == {"name": "tv:resnet18", "num_classes": 4, "in_channels": 1}


@pytest.mark.parametrize("name", ["vgg19", "resnet", "", "tv:no_such_net", "tv:fasterrcnn_resnet50_fpn"])
def test_unknown_names_raise(name):
    with pytest.raises(SpikeBridgeError) as e:
        models.create(name)
    assert "\n" not in str(e.value)
    assert "tv:" in str(e.value) or "torchvision" in str(e.value)


def test_unknown_option_raises():
    with pytest.raises(SpikeBridgeError, match="width"):
        models.create("vgg16", width=3)


def test_suite_model_options():
    """The options the ReLU-conversion suite uses (BENCHMARKS.md §7)."""
    x = torch.randn(2, 1, 28, 28)
    plain = models.create("vgg_small", in_channels=1, width=4, batchnorm=False, pool="max").eval()
    assert not any(isinstance(m, nn.BatchNorm2d) for m in plain.modules())
    assert sum(isinstance(m, nn.MaxPool2d) for m in plain.modules()) == 3
    assert all(m.bias is not None for m in plain.modules() if isinstance(m, nn.Conv2d))
    with pytest.raises(ValueError, match="pool"):
        models.create("vgg_small", pool="min")
    narrow = models.create("resnet20", in_channels=1, width=8, stem_stride=2).eval()
    assert narrow.conv1.stride == (2, 2) and narrow.fc.in_features == 32
    pooled = models.create("resnet20", in_channels=1, width=8, stem_pool=True).eval()
    stem = pooled.maxpool(pooled.relu(pooled.bn1(pooled.conv1(x))))
    assert isinstance(pooled.maxpool, nn.MaxPool2d) and stem.shape == (2, 8, 14, 14) and pooled(x).shape == (2, 10)
    mobile = models.create("mobilenetv2", in_channels=1, width_mult=0.35, stem_stride=2, last_channel=128).eval()
    assert mobile.classifier[-1].in_features == 128
    with torch.no_grad():
        for model in (plain, narrow, mobile, models.create("rescat", in_channels=1, stem_stride=2).eval()):
            assert model(x).shape == (2, 10)
