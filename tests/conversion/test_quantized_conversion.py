"""End to end (docs/methods.md §8): a small CNN with mixed activations (GELU, SiLU, Hardswish,
ReLU6, sigmoid, Hardsigmoid, ReLU), random weights and thresholds small enough to reach the
negative levels, converts exactly with pasc and bitplane; rate coding refuses the f != ReLU sites.
A trained darknet-style CNN with LeakyReLU, Mish, ELU and Softplus converts exactly too."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import spikebridge as sb
from spikebridge import ConversionError

from helpers import site_levels


class Mixed(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1, self.c2, self.c3 = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1), nn.Conv2d(8, 8, 3)
        self.bn, self.gelu, self.hswish = nn.BatchNorm2d(8), nn.GELU(), nn.Hardswish()
        self.c4, self.fc1, self.fc2 = nn.Conv2d(8, 8, 3, padding=1), nn.Linear(8 * 16, 16), nn.Linear(16, 10)

    def forward(self, x):
        x = self.gelu(self.c1(x))
        x = F.avg_pool2d(F.silu(self.c2(x)), 2)
        x = F.relu6(self.hswish(self.bn(self.c3(x))) * 3)
        x = torch.sigmoid(self.c4(x))
        x = F.gelu(self.fc1(x.flatten(1)), approximate="tanh")
        return self.fc2(F.relu(F.hardsigmoid(x) - 0.5))


@pytest.fixture(scope="module")
def qann():
    torch.manual_seed(0)
    net = Mixed().eval()
    qann = sb.prepare(net, levels={"gelu": 4, "silu": 3, "hswish": 5, "relu6": 6, "sigmoid": 4, "gelu_1": 7,
                                   "hardsigmoid": 3, "relu": 4}).double().eval()
    with torch.no_grad():
        for site in sb.sites(qann).values():
            if getattr(site, "k_min", 0) < 0:  # steps small enough that f's negative part reaches level −1
                site.threshold.fill_(0.2 * site.levels)
    return qann


def test_sites_have_the_tables_forms(qann):
    forms = {n: (getattr(s, "function", "relu"), getattr(s, "k_min", 0)) for n, s in sb.sites(qann).items()}
    assert forms == {"gelu": ("gelu", -1), "silu": ("silu", -1), "hswish": ("hardswish", -1), "relu6": ("relu", 0),
                     "sigmoid": ("sigmoid", 0), "gelu_1": ("gelu_tanh", -1), "hardsigmoid": ("hardsigmoid", 0),
                     "relu": ("relu", 0)}


@pytest.mark.parametrize("method", ["pasc", "bitplane"])
def test_sum_coded_methods_convert_every_quantized_activation_exactly(qann, method):
    x = torch.randn(64, 3, 12, 12, dtype=torch.float64) * 2
    levels = site_levels(qann, x)
    assert all((levels[n] == -1).any() for n in ("gelu", "silu", "hswish"))  # the negative level is exercised
    report = sb.verify(qann, sb.convert(qann, method), x)
    assert report.agreement == 1.0 and report.max_logit_diff < 1e-9
    assert report.mismatches == {n: 0 for n in sb.sites(qann)}


def test_verify_counts_a_wrong_negative_level(qann):
    snn = sb.convert(qann, "pasc")
    neuron = snn.neurons()["gelu"]
    neuron.k_min = 0  # the neuron no longer emits level −1
    report = sb.verify(qann, snn, torch.randn(16, 3, 12, 12, dtype=torch.float64) * 2)
    assert report.mismatches["gelu"] > 0


def test_rate_coding_refuses_a_non_relu_site_by_name(qann):
    with pytest.raises(ConversionError, match=r"site 'gelu' quantizes gelu \(levels -1\.\.4\).*sum-coded"):
        sb.convert(qann, "qcfs")


def test_rate_coding_converts_relu6(qann):
    net = nn.Sequential(nn.Linear(4, 8), nn.ReLU6(), nn.Linear(8, 2))
    assert len(sb.convert(sb.prepare(net, levels=4), "qcfs").neurons()) == 1



class Darknet(nn.Module):
    """A darknet-style CNN for 14x14 images: conv-BN-LeakyReLU(0.1) and conv-BN-Mish stages (YOLO
    backbones use both), ELU(α = 0.5) and Softplus(β = 2) in the head."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.LeakyReLU(0.1), nn.AvgPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.Mish(), nn.AvgPool2d(2))
        self.fc1, self.fc2 = nn.Linear(16 * 9, 32), nn.Linear(32, 10)

    def forward(self, x):
        h = F.elu(self.fc1(self.features(x).flatten(1)), alpha=0.5)
        return self.fc2(F.softplus(h, beta=2.0) - 0.3)


def test_a_trained_leaky_relu_mish_network_converts_exactly():
    """Trained on Fashion-MNIST and prepared at L = 16, θ = 4 without fine-tuning: the sites
    quantize the functions with their numbers, LeakyReLU's and ELU's negative levels below −1
    are reached, the prepared ANN stays within 8 points of the ANN, and PASC and bit-plane give
    its logits on 512 test images."""
    from helpers import trained_relu
    s = trained_relu(Darknet, 1, lr=0.02)
    ann = s["ann"].double()
    x, y = s["test"][0][:512].double(), s["test"][1][:512]
    qann = sb.prepare(ann, levels=16, threshold=4.0).double().eval()
    forms = {name: (site.function, site.k_min) for name, site in sb.sites(qann).items()}
    assert forms == {"features.2": ("leaky_relu(0.1)", -16), "features.6": ("mish", -1), "elu": ("elu(0.5)", -16),
                     "softplus": ("softplus(2.0, 20.0)", 0)}
    levels = site_levels(qann, x)
    assert levels["features.2"].min() < -1 and levels["elu"].min() < -1 and levels["features.6"].min() == -1
    with torch.no_grad():
        accuracy = {m: (model(x).argmax(1) == y).double().mean().item() for m, model in (("ann", ann), ("qann", qann))}
    assert accuracy["ann"] > 0.7 and accuracy["qann"] >= accuracy["ann"] - 0.08, accuracy
    for method in ("pasc", "bitplane"):
        report = sb.verify(qann, sb.convert(qann, method), x)
        assert report.agreement == 1.0 and report.max_logit_diff < 1e-9
        assert report.mismatches == {n: 0 for n in sb.sites(qann)}
