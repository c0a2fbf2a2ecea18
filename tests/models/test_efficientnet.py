"""efficientnet_tiny: SiLU and the squeeze-excitation sigmoid become quantized sites, the gate
product x·σ(...) an analog op, and the prepared network converts exactly with pasc and
bitplane in float64 (docs/methods.md §8); the rate-coded qcfs refuses its SiLU sites."""
import pytest
import torch
from torch import nn

import spikebridge as sb
from spikebridge import ConversionError, models

from helpers import site_levels


@pytest.fixture(scope="module")
def qann():
    torch.manual_seed(0)
    ann = models.create("efficientnet_tiny", in_channels=1, width=0.5, head=16).eval()
    for m in ann.modules():  # random BatchNorm statistics, else every BatchNorm is the identity
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 2.0)
    # θ = 1 with L = 8: a step of 0.125, so SiLU's minimum −0.28 reaches level −1
    return sb.prepare(ann, levels=8, threshold=1.0).double().eval()


def test_silu_and_sigmoid_become_sites(qann):
    functions = [getattr(s, "function", "relu") for s in sb.sites(qann).values()]
    assert set(functions) == {"silu", "sigmoid"}
    assert functions.count("sigmoid") == 5  # one gate per MBConv block
    assert all(s.k_min == -1 for s in sb.sites(qann).values() if s.function == "silu")
    assert all(s.threshold.item() == 1.0 for s in sb.sites(qann).values() if s.function == "sigmoid")


@pytest.mark.parametrize("method", ["pasc", "bitplane"])
def test_converts_exactly_in_float64(qann, method):
    torch.manual_seed(1)
    x = torch.randn(8, 1, 28, 28, dtype=torch.float64)
    snn = sb.convert(qann, method)
    report = sb.verify(qann, snn, x)
    assert report.agreement == 1.0 and sum(report.mismatches.values()) == 0 and report.max_logit_diff < 1e-9
    assert any((k == -1).any() for k in site_levels(qann, x).values())  # the negative level is exercised
    ops = snn.simulate(x).analog_ops
    assert len(ops) == 5 and {r["op"] for r in ops.values()} == {"mul"}  # the five excitation products


def test_rate_coding_refuses_the_silu_sites(qann):
    with pytest.raises(ConversionError, match="silu"):
        sb.convert(qann, "qcfs", T=4)
