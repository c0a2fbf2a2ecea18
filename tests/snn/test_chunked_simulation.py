"""Time-chunked simulation (snn/network.py ``simulate(chunk=...)``): a rate-coded network run
in chunks of steps, each neuron carrying its potential across chunks, gives exactly what one
run over all T steps gives — anytime logits, spike counts, input events and site values."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import spikebridge as sb


def _qcfs_snn(T: int):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.AvgPool2d(2),
                        nn.Conv2d(4, 6, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(6 * 16, 8), nn.ReLU(),
                        nn.Linear(8, 3))
    qann = sb.prepare(net, levels=4, threshold=1.0).eval()
    return qann, sb.convert(qann, "qcfs", T=T)


def _same(a, b):
    assert torch.equal(a.logits, b.logits)
    for field in ("spikes", "events", "values"):
        x, y = getattr(a, field), getattr(b, field)
        assert x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x), field
    assert a.steps == b.steps and a.analog_layers == b.analog_layers


@pytest.mark.parametrize("chunk", [1, 3, 5, 12, 100])
def test_chunks_give_the_same_simulation(chunk):
    _, snn = _qcfs_snn(T=12)
    x = torch.rand(5, 1, 8, 8)
    whole = snn.simulate(x, values=True, chunk=12)
    _same(snn.simulate(x, values=True, chunk=chunk), whole)
    assert whole.logits.shape == (12, 5, 3) and set(whole.steps.values()) == {12}


def test_chunks_respect_per_step_ftbc_biases():
    qann, snn = _qcfs_snn(T=7)
    x = torch.rand(6, 1, 8, 8)
    sb.ftbc(snn, ann=qann, data=[x], alpha=0.5, batches=1, check_batches=0, progress=False)
    assert any(n.bias.any() for n in snn.neurons().values())
    _same(snn.simulate(x, values=True, chunk=2), snn.simulate(x, values=True, chunk=7))


def test_sum_coded_networks_run_in_one_piece():
    qann, _ = _qcfs_snn(T=4)
    snn = sb.convert(qann, "pasc")
    x = torch.rand(3, 1, 8, 8)
    _same(snn.simulate(x, values=True, chunk=1), snn.simulate(x, values=True))


def test_bad_chunk_is_an_option_error():
    _, snn = _qcfs_snn(T=4)
    with pytest.raises(sb.OptionError, match="chunk must be an integer >= 1"):
        snn.simulate(torch.rand(1, 1, 8, 8), chunk=0)
