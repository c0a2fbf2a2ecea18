"""The fast subset of benchmarks/torchvision_sweep.py (issue 11): the issue's torchvision
classifiers — transformers (ViT, Swin) in small configurations, the CNNs with SiLU/Hardswish/
ReLU6, squeeze-excitation gates, LayerNorm, layer scale and channel shuffle at 32x32 — with
random weights and BatchNorm statistics, prepared (L = 8) and converted exactly by PASC and
bit-plane in float64; the ops with no spiking form are listed as analog; qcfs converts the
ReLU-like ones and refuses the rest naming the site."""
from __future__ import annotations

import warnings

import pytest
import torch
import torchvision
from torch import nn
from torchvision.models import SwinTransformer, VisionTransformer

import spikebridge as sb
from spikebridge.conversion.converter import default_for

SMALL = {
    "vit": lambda: VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=32,
                                     mlp_dim=64, num_classes=10),
    "swin": lambda: SwinTransformer(patch_size=[4, 4], embed_dim=16, depths=[2, 1], num_heads=[1, 2],
                                    window_size=[4, 4], num_classes=10),
}
ZOO = ["convnext_tiny", "efficientnet_b0", "mobilenet_v3_small", "regnet_y_400mf", "shufflenet_v2_x0_5",
       "mobilenet_v2"]
# ops each model must hold as analog islands (docs/methods.md §8)
ANALOG = {"vit": {"layer_norm", "multihead_attention"}, "swin": {"layer_norm", "window_attention"},
          "convnext_tiny": {"layer_norm", "mul"}, "efficientnet_b0": {"mul"}, "mobilenet_v3_small": {"mul"},
          "regnet_y_400mf": {"mul"}, "shufflenet_v2_x0_5": set(), "mobilenet_v2": set()}
RATE_CODED = {"shufflenet_v2_x0_5", "mobilenet_v2"}  # ReLU and ReLU6 sites only


def _built(name: str) -> nn.Module:
    """The classifier with random weights (seed 0) and random BatchNorm statistics, in eval mode."""
    torch.manual_seed(0)
    model = SMALL[name]() if name in SMALL else torchvision.models.get_model(name, weights=None, num_classes=10)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 2.0)
    return model.eval()


def _model(name: str) -> nn.Module:
    model = _built(name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # shufflenet's max pooling is replaced, with a warning
        return sb.prepare(model, levels=8).eval().double()


@pytest.mark.parametrize("name", [*SMALL, *ZOO])
def test_torchvision_classifier_converts_exactly_with_its_analog_ops_listed(name):
    qann = _model(name)
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    for method in ("pasc", "bitplane"):
        snn = sb.convert(qann, method)
        report = sb.verify(qann, snn, x)
        assert report.agreement == 1.0 and sum(report.mismatches.values()) == 0, report.table()
        assert report.max_logit_diff < 1e-9
        ops = {r["op"] for r in snn.simulate(x).analog_ops.values()}
        assert ANALOG[name] <= ops
    if name in RATE_CODED:
        logits = sb.convert(qann, "qcfs", T=4).simulate(x.float().double()).logits
        assert logits.shape == (4, 2, 10) and torch.isfinite(logits).all()
    else:
        with pytest.raises(sb.ConversionError, match=r"site '.+' quantizes (gelu|silu|hardswish|sigmoid|hardsigmoid)"):
            sb.convert(qann, "qcfs", T=4)


MAX_POOLING = ["resnet18", "googlenet", "squeezenet1_0", "densenet121"]  # ReLU classifiers with max pooling


@pytest.mark.parametrize("name", MAX_POOLING)
def test_torchvision_relu_classifiers_convert_with_their_max_pooling(name):
    """Their max pooling kept (docs/methods.md §8): exact under PASC from the prepared model, and
    the trained-as-is ReLU model converts directly with a rate-coded method."""
    model = _built(name)
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    qann = sb.prepare(model, levels=8, replace_maxpool=False).eval().double()
    snn = sb.convert(qann, "pasc")
    report = sb.verify(qann, snn, x)
    assert report.agreement == 1.0 and sum(report.mismatches.values()) == 0 and report.max_logit_diff < 1e-9
    assert "max_pool2d" in {r["op"] for r in snn.simulate(x).analog_ops.values()}
    rate = sb.convert(model, "max-norm", T=4, calibration_data=[x.float()])
    result = rate.simulate(x.float(), record=False)
    assert result.logits.shape == (4, 2, 10) and torch.isfinite(result.logits).all()


DEFAULT_ZOO = {"resnet18": 16, "squeezenet1_0": 32, "shufflenet_v2_x0_5": 16}  # name: the smallest input it takes


@pytest.mark.parametrize("name", DEFAULT_ZOO)
def test_the_default_converts_torchvision_relu_classifiers_as_they_are(name):
    """sb.convert with no method on a ReLU classifier nobody prepared (its max pooling kept, ReLU
    modules called more than once, squeezenet's concatenations, shufflenet's channel shuffle):
    the registry's default for a ReLU ANN, a neuron at every ReLU call site, finite logits."""
    model = _built(name)
    size = DEFAULT_ZOO[name]
    x = torch.randn(12, 3, size, size, generator=torch.Generator().manual_seed(1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sites = len(sb.sites(sb.prepare(model, levels=8, replace_maxpool=False)))
        snn = sb.convert(model, T=2, calibration_data=x[:8], passes=1)  # one pass of the search: faster
    assert snn.method == default_for(model).name and len(snn.neurons()) == sites > 0
    logits = snn.simulate(x[8:], record=False).logits
    assert logits.shape == (2, 4, 10) and torch.isfinite(logits).all()
