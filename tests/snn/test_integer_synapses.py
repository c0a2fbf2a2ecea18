"""Integer synapses (snn/integer_synapses.py): a layer fed by spikes computes W·(a·s) as exact
int8 digit sums. The digits hold each weight to within half its channel's grid, the layer gives
the float64 result to within that and three float32 roundings, whatever the batch, and a
converted network simulates with them what it simulates in floating point: the same
predictions (PASC's are the ANN's), time chunks bit for bit the same."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from torch import nn

import spikebridge as sb
from helpers import trained_relu
from spikebridge.device import single_thread
from spikebridge.errors import OptionError
from spikebridge.snn import integer_synapses
from spikebridge.snn.integer_synapses import IntegerLayer, fixed_point_digits

U32 = 2.0 ** -24  # float32's unit roundoff


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2 ** 31 - 1), st.integers(1, 6), st.integers(1, 40), st.integers(-30, 10))
def test_three_int8_digits_hold_each_weight_to_half_its_grid(seed, channels, fan_in, exponent):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(channels, fan_in, generator=g, dtype=torch.float64) * 2.0 ** exponent
    w[0, : fan_in // 2] *= 2.0 ** -12  # small weights beside large ones in one channel
    if channels > 1:
        w[1] = 0  # a silent channel
    (d0, d1, d2), grid = fixed_point_digits(w)
    assert d0.dtype == d1.dtype == d2.dtype == torch.int8 and d0.abs().max() <= 64
    m = d0.double() * 2 ** 16 + d1.double() * 2 ** 8 + d2.double()
    assert ((w - grid[:, None] * m).abs() <= grid[:, None] / 2).all()
    peak = w.abs().amax(1)
    assert (grid[peak > 0] <= peak[peak > 0] * 2.0 ** -21).all()  # the grid is 2^-22..2^-21 of the channel's peak


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2 ** 31 - 1), st.integers(-6, 6))
def test_weights_on_the_grid_are_exact(seed, exponent):
    """Small integers and dyadic fractions are held exactly, so the layer is exact on them."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randint(-2 ** 20, 2 ** 20, (5, 12), generator=g).double() * 2.0 ** exponent
    (d0, d1, d2), grid = fixed_point_digits(w)
    assert torch.equal(grid[:, None] * (d0.double() * 2 ** 16 + d1.double() * 2 ** 8 + d2.double()), w)
    layer = nn.Linear(12, 5, bias=False)
    layer.weight.data = torch.randint(-100, 100, (5, 12), generator=g).float() / 4
    s = (torch.rand(7, 12, generator=g) < 0.5).float()
    y = IntegerLayer(layer, layer.weight, torch.tensor(0.5))(s * 0.5, None)
    assert torch.equal(y.double(), (s.double() * 0.5) @ layer.weight.double().T)


def _bound(layer, integer, x, spikes):
    """|float64 result − integer result| allowed for the input x = a·spikes (float64): each
    active input's weight off by at most half its channel's grid, and three float32 roundings."""
    grid = integer.scales[2].double()  # the last digit's scale is the grid
    if isinstance(layer, nn.Linear):
        magnitude, active = x @ layer.weight.double().abs().T, spikes.sum(-1, keepdim=True)
    else:
        conv = lambda v, w: F.conv2d(v, w, None, layer.stride, layer.padding, layer.dilation, layer.groups)  # noqa: E731
        weight = layer.weight.double()
        magnitude, active, grid = conv(x, weight.abs()), conv(spikes, torch.ones_like(weight)), grid.view(-1, 1, 1)
    if layer.bias is not None:
        bias = layer.bias.double().abs()
        magnitude = magnitude + (bias if isinstance(layer, nn.Linear) else bias.view(-1, 1, 1))
    return active * grid / 2 + 4 * U32 * magnitude + 1e-30


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2 ** 31 - 1), st.sampled_from([1, 3]), st.sampled_from([1, 2]), st.sampled_from([0, 1]),
       st.sampled_from([1, 2]), st.sampled_from([1, 2]), st.sampled_from([3, 4, 9]), st.booleans(), st.booleans(),
       st.sampled_from([1, 4, 9]))
def test_a_convolution_on_integers_is_the_float64_one_to_rounding(seed, k, stride, padding, groups, dilation, size,
                                                                  per_channel, bias, count):
    """Both kernels (oneDNN's convolution, and unfolded windows where the output has at most 16
    pixels or the kernel is 1x1), per-channel or one spike value, groups, dilation, stride, and
    inputs of spikes (count 1) or of averaged spikes k·a, 0 ≤ k ≤ count."""
    assume(size + 2 * padding >= dilation * (k - 1) + 1)
    g = torch.Generator().manual_seed(seed)
    layer = nn.Conv2d(4, 6, k, stride, padding, dilation, groups, bias=bias)
    value = torch.rand(4, generator=g) + 0.1 if per_channel else torch.tensor(0.7)
    spikes = torch.randint(0, count + 1, (5, 4, size, size), generator=g).double() * (
        torch.rand(5, 4, size, size, generator=g) < 0.4)
    x = spikes * (value.double().view(1, -1, 1, 1) if per_channel else value.double())
    integer = IntegerLayer(layer, layer.weight, value, count)
    y = integer(x.float(), None if layer.bias is None else layer.bias.detach())
    exact = F.conv2d(x, layer.weight.double(), None if layer.bias is None else layer.bias.double(), stride, padding,
                     dilation, groups)
    assert y.dtype == torch.float32 and y.shape == exact.shape
    assert ((y.double() - exact).abs() <= _bound(layer, integer, x, spikes)).all()
    x = x.float()
    # exact integer sums: a batch gives each image's bits, in any split
    assert torch.equal(torch.cat([integer(x[:2], layer.bias), integer(x[2:], layer.bias)]), integer(x, layer.bias))


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2 ** 31 - 1), st.integers(1, 70), st.integers(1, 20), st.booleans())
def test_a_linear_layer_on_integers_is_the_float64_one_to_rounding(seed, fan_in, outputs, per_feature):
    g = torch.Generator().manual_seed(seed)
    layer = nn.Linear(fan_in, outputs)
    value = torch.rand(fan_in, generator=g) + 0.1 if per_feature else torch.tensor(1.3)
    spikes = (torch.rand(3, 4, fan_in, generator=g) < 0.3).double()  # tokens: [N, L, features]
    x = spikes * value.double()
    integer = IntegerLayer(layer, layer.weight, value)
    y = integer(x.float(), layer.bias.detach())
    exact = x @ layer.weight.double().T + layer.bias.double()
    assert ((y.double() - exact).abs() <= _bound(layer, integer, x, spikes)).all()


def test_the_rule_takes_wide_layers_on_int8_matrix_units(monkeypatch):
    monkeypatch.setattr(integer_synapses, "has_matrix_units", lambda: True)
    assert integer_synapses.worthwhile(nn.Conv2d(64, 64, 3))          # K = 576
    assert not integer_synapses.worthwhile(nn.Conv2d(32, 64, 3))      # K = 288
    assert not integer_synapses.worthwhile(nn.Conv2d(512, 32, 1))     # 32 outputs
    assert not integer_synapses.worthwhile(nn.Conv2d(512, 512, 3, groups=512))  # depthwise: K = 9
    assert integer_synapses.worthwhile(nn.Linear(4096, 4096)) and not integer_synapses.worthwhile(nn.Linear(4096, 10))
    monkeypatch.setattr(integer_synapses, "has_matrix_units", lambda: False)
    assert not integer_synapses.worthwhile(nn.Conv2d(512, 512, 3))


def _net():
    """Conv layers fed by spikes through max pooling (7x7: oneDNN's convolution), directly (a
    stride-2 3x3 at 4x4: unfolded windows), through average pooling (a 1x1 on counts 0..4), and a
    linear layer fed by spikes; the first layer (the image) and the linear layer after a
    flattened map are not."""
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.AvgPool2d(2),
        nn.Conv2d(16, 32, 1), nn.BatchNorm2d(32), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 10))


@pytest.fixture(scope="module")
def setup():
    with single_thread():
        yield trained_relu(_net, 1, lr=0.05, weight_decay=5e-4)


def _counting(monkeypatch) -> list:
    """The layers IntegerLayer is called for, in order."""
    calls, call = [], IntegerLayer.__call__
    monkeypatch.setattr(IntegerLayer, "__call__", lambda self, x, b: calls.append(self.layer) or call(self, x, b))
    return calls


def _simulate(snn, x, mode, **kwargs):
    snn.integer_synapses = mode
    try:
        return snn.simulate(x, **kwargs)
    finally:
        snn.integer_synapses = "auto"


@pytest.mark.parametrize("method", ["max-norm", "data-driven"])
def test_a_network_on_integer_synapses_simulates_what_it_does_in_floating_point(setup, method, monkeypatch):
    x, y = setup["test"]
    snn = sb.convert(setup["ann"], method, T=8, calibration_data=setup["calib"])
    plain = _simulate(snn, x, "never")
    calls = _counting(monkeypatch)
    fast = _simulate(snn, x, "always")
    layers = snn.synaptic_layers()
    assert {id(m) for m in calls} == {id(layers[n]) for n in ("4", "7", "11", "18")}  # fed by spikes
    # a spike flips only where a potential lies within rounding of its threshold: a few in 10^4
    # spikes, and in the images where one does, the logits move on
    for site in plain.spikes:
        assert (fast.spikes[site] - plain.spikes[site]).abs().sum() <= max(1, plain.spikes[site].sum() // 10_000)
    moved = ((fast.logits - plain.logits).abs() > 1e-5 * (1 + plain.logits.abs())).any(-1).any(0)
    assert moved.sum() <= len(x) // 200
    assert (fast.logits.argmax(-1) != plain.logits.argmax(-1)).any(0).sum() <= len(x) // 1000
    assert (fast.accuracy(y)[-1] - plain.accuracy(y)[-1]).abs() <= 2 / len(y)
    # time chunks: bit for bit the same (integer sums do not depend on how many steps are folded)
    chunks = [_simulate(snn, x[:64], "always", chunk=c).logits for c in (1, 3, 8)]
    assert torch.equal(chunks[0], chunks[1]) and torch.equal(chunks[0], chunks[2])


@pytest.mark.parametrize("method", ["pasc", "bitplane"])
def test_sum_coded_networks_on_integer_synapses_keep_the_anns_predictions(setup, method, monkeypatch):
    """PASC's trains are spikes of θ/L; bit-plane's bit t is θ/L times 2^(n−1−t)."""
    qann = sb.prepare(setup["ann"], levels=7).eval()
    snn = sb.convert(qann, method)
    snn.integer_synapses = "always"
    calls = _counting(monkeypatch)
    report = sb.verify(qann, snn, setup["test"][0][:500])
    assert len({id(m) for m in calls}) == 4 and report.agreement == 1.0 and sum(report.mismatches.values()) == 0


def test_a_changed_weight_or_threshold_is_packed_again(setup):
    x = setup["test"][0][:64]
    snn = sb.convert(setup["ann"], "data-driven", T=8, calibration_data=setup["calib"])
    before = _simulate(snn, x, "always").logits
    with torch.no_grad():
        snn.graph.get_submodule("18").weight.mul_(2)  # in place, as an optimizer step
    after = _simulate(snn, x, "always").logits
    assert not torch.allclose(after, before) and torch.allclose(after, _simulate(snn, x, "never").logits, atol=1e-5)
    neuron = snn.neurons()["17"]
    neuron.threshold.mul_(0.5)  # the spike value the last layer folds into its weight
    after = _simulate(snn, x, "always").logits
    assert torch.allclose(after, _simulate(snn, x, "never").logits, atol=1e-5)


def test_each_layer_is_packed_once_while_its_weight_stays(setup, monkeypatch):
    """The engine stores a weight in its steps' layout before it looks up the integer form,
    which is keyed on the weight's storage: the first run packs each layer once, later runs
    pack nothing. The images are upsampled to 28x28 so that the layers after the max pooling
    run channels-last (14x14), where the weight's storage changes on the first run."""
    x = nn.functional.interpolate(setup["test"][0][:16], scale_factor=2)
    snn = sb.convert(setup["ann"], "max-norm", T=4, calibration_data=setup["calib"])
    built, init = [], IntegerLayer.__init__
    monkeypatch.setattr(IntegerLayer, "__init__", lambda self, layer, *a: built.append(id(layer)) or init(self, layer, *a))
    _simulate(snn, x, "always")
    assert built and len(set(built)) == len(built)
    assert snn.graph.get_submodule("4").weight.is_contiguous(memory_format=torch.channels_last)
    packed = len(built)
    _simulate(snn, x, "always")
    assert len(built) == packed


def test_gradients_take_the_floating_point_path(setup, monkeypatch):
    snn = sb.convert(setup["ann"], "max-norm", T=4, calibration_data=setup["calib"])
    snn.integer_synapses = "always"
    calls = _counting(monkeypatch)
    snn.requires_grad_()
    snn.simulate(setup["test"][0][:8]).logits.sum().backward()
    assert not calls and snn.graph.get_submodule("18").weight.grad is not None


def test_an_unknown_mode_is_refused(setup):
    snn = sb.convert(setup["ann"], "max-norm", T=2, calibration_data=setup["calib"])
    snn.integer_synapses = "fast"
    with pytest.raises(OptionError, match="integer_synapses"):
        snn.simulate(setup["test"][0][:2])
