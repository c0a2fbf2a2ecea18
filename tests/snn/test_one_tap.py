"""Convolutions over one pixel (snn/engine.py ``one_tap``): where a Conv2d's input steps have
one pixel and its one output reads it through a single tap of the kernel, the engine runs that
tap's 1x1 convolution; the result is the layer's own (exactly for a depthwise layer in float64,
to rounding otherwise), on its own and in a converted network."""
from __future__ import annotations

import pytest
import torch
from hypothesis import assume, given, settings, strategies as st
from torch import nn

import spikebridge as sb
from spikebridge.snn import engine
from spikebridge.snn.codings import RATE, SUM


@pytest.mark.parametrize("kernel, stride, padding, dilation, pixels, tap", [
    (5, 1, 2, 1, 1, (2, 2)),     # MobileNetV3's 5x5 depthwise at 1x1
    (5, 2, 2, 1, 1, (2, 2)),     # strided: still one output
    (3, 1, 1, 1, 1, (1, 1)),
    ((3, 5), 1, (1, 2), 1, 1, (1, 2)),
    (3, 1, 2, 2, 1, (1, 1)),     # dilation 2: tap p/d
    (1, 1, 0, 1, 1, (0, 0)),
    (5, 1, 2, 1, 2, None),       # 2x2 input: taps 1..3 read it
    (5, 1, 4, 1, 1, None),       # output 5x5: several outputs
    (3, 1, 1, 2, 1, None),       # p/d not a tap
    (4, 1, 2, 1, 1, None),       # output 2x2
])
def test_one_tap_is_found_only_where_one_tap_reads_the_pixel(kernel, stride, padding, dilation, pixels, tap):
    layer = nn.Conv2d(4, 4, kernel, stride, padding, dilation, groups=4)
    assert engine.one_tap(layer, torch.zeros(2, 3, 4, pixels, pixels)) == tap


def test_one_tap_leaves_other_padding_and_other_layers_alone():
    pixel = torch.zeros(2, 3, 4, 1, 1)
    assert engine.one_tap(nn.Conv2d(4, 4, 3, padding=1, padding_mode="reflect"), pixel) is None
    assert engine.one_tap(nn.Conv2d(4, 4, 3, padding="same"), pixel) is None
    assert engine.one_tap(nn.Linear(4, 4), torch.zeros(2, 3, 4)) is None


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 7), st.integers(1, 7), st.integers(1, 3), st.integers(1, 2), st.booleans(), st.booleans(),
       st.sampled_from([torch.float32, torch.float64]), st.integers(0, 2**31))
def test_a_one_tap_convolution_computes_what_the_layer_computes(kh, kw, stride, dilation, depthwise, bias, dtype,
                                                                seed):
    # Padding (k // 2)·d reads the one pixel through tap k // 2; an even k also needs stride > d
    # for one output.
    assume(all(k % 2 or stride > dilation for k in (kh, kw)))
    torch.manual_seed(seed)
    layer = nn.Conv2d(6, 6, (kh, kw), stride, (kh // 2 * dilation, kw // 2 * dilation), dilation,
                      groups=6 if depthwise else 1, bias=bias).to(dtype)
    train = torch.randn(3, 5, 6, 1, 1, dtype=dtype)
    assert engine.one_tap(layer, train) == (kh // 2, kw // 2)
    with torch.no_grad():
        expected = layer(train.flatten(0, 1)).unflatten(0, (3, 5))
        for coding in (RATE, SUM):
            got = engine.synapse(layer, train, coding)
            want = expected if coding is RATE or layer.bias is None else \
                layer._conv_forward(train.flatten(0, 1), layer.weight, layer.bias / 3).unflatten(0, (3, 5))
            assert got.shape == want.shape
            if dtype == torch.float64 and depthwise:  # one product per output: no sum to reorder
                assert torch.equal(got, want)
            else:  # the channels' products summed in another order
                tol = 1e-12 if dtype == torch.float64 else 1e-6
                assert torch.allclose(got, want, rtol=tol, atol=tol)


class _OnePixel(nn.Module):
    """A 5x5 depthwise convolution (padding 2) and a dense 3x3 one over the 1x1 maps left after
    a global average pooling, as at the end of a MobileNetV3 on small images."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.dw5, self.c3 = nn.Conv2d(8, 8, 5, padding=2, groups=8), nn.Conv2d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        y = nn.functional.adaptive_avg_pool2d(torch.relu(self.stem(x)), 1)
        y = torch.relu(self.c3(torch.relu(self.dw5(y))))
        return self.fc(y.flatten(1))


@pytest.mark.parametrize("method", ["pasc", "bitplane"])
def test_a_network_with_one_pixel_convolutions_converts_exactly(method, monkeypatch):
    torch.manual_seed(0)
    qann = sb.prepare(_OnePixel(), levels=7, threshold=1.0).double().eval()
    x = torch.rand(16, 3, 8, 8, dtype=torch.float64)
    taps = []
    monkeypatch.setattr(engine, "one_tap", lambda layer, train, found=engine.one_tap: taps.append(
        found(layer, train)) or taps[-1])
    report = sb.verify(qann, sb.convert(qann, method), x)
    assert report.agreement == 1.0 and report.max_logit_diff < 1e-9
    assert report.mismatches == {n: 0 for n in sb.sites(qann)}
    assert (2, 2) in taps and (1, 1) in taps  # both one-pixel convolutions ran as their tap
