"""Max pooling in a spiking network (docs/methods.md §8, "Max pooling"): under rate coding the
max of the running sums of its input trains, emitted as increments; under sum coding the max of
the sums. The rule as a property of the coding, then end to end on a trained max-pooling CNN."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings, strategies as st
from torch import nn

import spikebridge as sb
from spikebridge.ann.tracing import trace
from spikebridge.conversion.graph import relu_site_modules
from spikebridge.device import single_thread
from spikebridge.snn.codings import RATE

from helpers import small_relu_cnn, trained_relu


def _pooled(decoded: torch.Tensor, kernel: int, stride: int) -> torch.Tensor:
    return F.max_pool2d(decoded.flatten(0, 1), kernel, stride).unflatten(0, decoded.shape[:2])


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2 ** 31 - 1), st.integers(1, 20), st.integers(1, 20), st.floats(0.05, 0.95),
       st.sampled_from([(2, 2), (3, 1), (3, 2)]))
def test_rate_coded_max_pooling_of_spike_trains_is_a_spike_train_carrying_the_max_count(seed, T, window, rate, pool):
    """Inputs: spike trains of amplitude θ_c per channel. Output: at every step 0 or θ_c, and its
    sum over steps 1..t is the max over each window of the inputs' sums (the max count grows by
    at most one spike per step), the same bits in time windows of any length."""
    g = torch.Generator().manual_seed(seed)
    theta = (torch.rand(3, 1, 1, generator=g, dtype=torch.float64) + 0.1)
    spikes = (torch.rand(T, 2, 3, 6, 6, generator=g) < rate).double() * theta
    state = {}
    (sums,) = RATE.decode([spikes], state, homogeneous=True)
    out = RATE.encode(_pooled(sums, *pool), state, homogeneous=True)
    fired = out != 0
    assert torch.allclose(out, fired * theta, rtol=1e-12, atol=0)  # 0 or one spike of its channel
    counts = _pooled((spikes / theta).cumsum(0), *pool)  # exact small integers
    assert torch.allclose(out.cumsum(0), counts * theta, rtol=1e-12, atol=1e-12)
    chunked_state, pieces = {}, []
    for t0 in range(0, T, window):
        (s,) = RATE.decode([spikes[t0:t0 + window]], chunked_state, homogeneous=True)
        pieces.append(RATE.encode(_pooled(s, *pool), chunked_state, homogeneous=True))
    assert torch.equal(torch.cat(pieces), out)


@pytest.fixture(scope="module")
def setup():
    """helpers.trained_relu: a max-pooling CNN, 2 calibration batches of 128."""
    with single_thread():
        yield trained_relu(lambda: small_relu_cnn(nn.MaxPool2d), 2, lr=0.05, weight_decay=5e-4)


def _accuracy(model, x, y, T=None) -> float:
    with torch.no_grad():
        out = model(x) if T is None else model.simulate(x, T, record=False).logits[-1]
    return (out.argmax(1) == y).double().mean().item()


def test_the_default_converts_max_pooling_as_it_is_and_beats_swapping_it(setup):
    """A ReLU CNN with max pooling converts with the default method, no swap and no fine-tuning,
    and is better at every T than the same network with average pooling swapped in (what
    converting it took before), which loses the ANN's function."""
    ann, calib, (x, y) = setup["ann"], setup["calib"], setup["test"]
    swapped = sb.with_average_pooling(ann)
    ann_accuracy = _accuracy(ann, x, y)
    assert _accuracy(swapped, x, y) < ann_accuracy - 0.1
    for T in (2, 8):
        snn = sb.convert(ann, T=T, calibration_data=calib)
        assert any(isinstance(m, nn.MaxPool2d) for m in snn.graph.modules())
        kept = _accuracy(snn, x, y, T)
        assert kept > _accuracy(sb.convert(swapped, T=T, calibration_data=calib), x, y, T)
        if T == 8:
            assert kept > ann_accuracy - 0.03


def test_a_site_used_only_by_max_pooling_moves_after_it(setup):
    """ReLU commutes with max pooling: each site of the CNN, used only by its pooling, runs on
    the pooled map (a quarter of the neurons), and the rewritten ANN computes the same values."""
    ann, calib, (x, _) = setup["ann"], setup["calib"], setup["test"]
    gm = trace(ann)
    relu_site_modules(gm, None)
    order = [n.target for n in gm.graph.nodes if n.op == "call_module"]
    assert order.index("3") < order.index("2") and order.index("7") < order.index("6")  # pool, then site
    with torch.no_grad():
        assert torch.equal(gm(x), ann(x))
    snn = sb.convert(ann, "max-norm", T=4, calibration_data=calib)
    result = snn.simulate(x[:8], 4)
    assert result.spikes["2"].shape == (8, 7, 7) and result.spikes["6"].shape == (16, 3, 3)  # pooled maps


class _Branches(nn.Module):
    """A site used twice: max-pooled, and average-pooled beside it (so the max pooling stays
    after the site and pools its spikes)."""

    def __init__(self):
        super().__init__()
        self.conv, self.fc = nn.Conv2d(1, 4, 3, padding=1), nn.Linear(8 * 49, 10)

    def forward(self, x):
        h = torch.relu(self.conv(x))
        return self.fc(torch.cat([F.max_pool2d(h, 2), F.avg_pool2d(h, 2)], 1).flatten(1))


def test_max_pooling_of_spikes_passes_spikes_on_under_rate_coding(setup):
    """The layer after a max pooling of spike trains receives spikes (accumulates, not MACs,
    docs §6); under sum coding it receives the pooled value, once."""
    x = setup["test"][0][:32]
    torch.manual_seed(0)
    net = _Branches().eval()
    snn = sb.convert(net, "max-norm", T=8, calibration_data=[x])
    assert snn.analog_layers() == {"conv"}  # only the layer that takes the image
    result = snn.simulate(x, 8)
    assert {r["op"] for r in result.analog_ops.values()} == {"max_pool2d"}
    assert all(r["macs"] == 0 for r in result.analog_ops.values())
    assert result.analog_layers == {"conv"}
    qann = sb.prepare(net, levels=4, replace_maxpool=False)
    assert sb.convert(qann, "pasc").analog_layers() == {"conv", "fc"}


@pytest.mark.parametrize("method", ["pasc", "bitplane"])
def test_a_qcfs_ann_keeping_its_max_pooling_converts_exactly(setup, method):
    """Sum coding pools the sums, the values the ANN pools: the prediction of every image is
    the ANN's (prepare keeps max pooling when asked)."""
    qann = sb.prepare(setup["ann"], levels=7, replace_maxpool=False)
    x = setup["test"][0][:256]
    report = sb.verify(qann, sb.convert(qann, method), x)
    assert report.agreement == 1.0 and sum(report.mismatches.values()) == 0


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2 ** 31 - 1), st.sampled_from([nn.ReLU, nn.ReLU6]),
       st.sampled_from([(2, 2, 0, False), (3, 2, 1, False), (3, 2, 1, True), (2, 1, 0, False)]),
       st.booleans())
def test_moving_a_site_after_its_max_pooling_keeps_the_anns_values(seed, activation, pool, functional):
    """max_i f(z_i) = f(max_i z_i) for nondecreasing f: the graph with each site after its
    pooling (module or function, any window, padding, ceil_mode) computes the ANN's values."""
    torch.manual_seed(seed)
    kernel, stride, padding, ceil = pool

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.act = nn.Conv2d(2, 3, 3), activation()
            self.pool = nn.MaxPool2d(kernel, stride, padding, ceil_mode=ceil)

        def forward(self, x):
            h = self.act(self.conv(x) * 4)
            return F.max_pool2d(h, kernel, stride, padding, ceil_mode=ceil) if functional else self.pool(h)

    net, x = Net().eval(), torch.randn(3, 2, 9, 9)
    gm = trace(net)
    relu_site_modules(gm, None)
    nodes = [n for n in gm.graph.nodes if n.op != "placeholder" and n.op != "output"]
    assert nodes[-1].op == "call_module" and nodes[-1].target == "act"  # the site is last now
    with torch.no_grad():
        assert torch.equal(gm(x), net(x))
