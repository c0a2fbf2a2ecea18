"""Residual sums computed by the convolution they read (snn/engine.py ``TrainRunner.sum_into``):
where a Conv2d's only reader adds its output to another train that is at its last use, the
engine adds the convolution into that train in one oneDNN call. The logits and spike counts
are those of the convolution and then the add, bit for bit, for every coding; a train that
is read again later, the caller's input, or a gradient's path is left alone."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import spikebridge as sb
from spikebridge.snn import engine

from helpers import Residual


class ReadAgain(nn.Module):
    """The shortcut's train is read again after the sum, and a convolution adds the network's
    own input: neither may be written in place."""

    def __init__(self):
        super().__init__()
        self.stem, self.conv = nn.Conv2d(3, 3, 3, padding=1), nn.Conv2d(3, 3, 3, padding=1)
        self.fc = nn.Linear(3, 4)

    def forward(self, x):
        y = torch.relu(self.stem(x) + x)
        z = torch.relu(self.conv(y) + y)
        return self.fc((z + y).mean((2, 3)))


class Aliased(nn.Module):
    """The shortcut's train has a view read after the sum (on 4x4 images the steps are NCHW, and
    a flatten of a one-step train shares their memory), and a second sum's other train is an
    analog op's result (a product of trains)."""

    def __init__(self):
        super().__init__()
        self.stem, self.c, self.d, self.e = (nn.Conv2d(3 if i == 0 else 4, 4, 3, padding=1) for i in range(4))
        self.fc = nn.Linear(4 * 4 * 4 + 4, 4)

    def forward(self, x):
        y = torch.relu(self.stem(x))
        flat = y.flatten(1)
        z = torch.relu(self.d(torch.relu(self.c(y))) + y)
        product = z * z
        w = torch.relu(self.e(z) + product)
        return self.fc(torch.cat([flat, w.mean((2, 3))], 1))


def _convert(model: nn.Module, method: str, size: int = 16) -> sb.SpikingNetwork:
    torch.manual_seed(0)
    model = model.eval()
    x = torch.rand(32, 3, size, size)
    if method in ("pasc", "bitplane"):
        return sb.convert(sb.prepare(model, levels=7, threshold=1.0), method)
    return sb.convert(model, method, T=6, calibration_data=[x])


def _runs(snn: sb.SpikingNetwork, x: torch.Tensor, monkeypatch, **options):
    """The simulation with sums into the other train and without, and how many were taken."""
    taken = []
    fused = engine.TrainRunner.sum_into

    def counting(self, *args):
        out = fused(self, *args)
        taken.append(out is not None)
        return out

    monkeypatch.setattr(engine.TrainRunner, "sum_into", counting)
    with torch.no_grad():
        summed = snn.simulate(x, **options)
    monkeypatch.setattr(engine.TrainRunner, "sum_into", lambda self, *args: None)
    with torch.no_grad():
        plain = snn.simulate(x, **options)
    return summed, plain, sum(taken)


def _same(a, b) -> bool:
    return torch.equal(a.logits, b.logits) and a.spikes.keys() == b.spikes.keys() and all(
        torch.equal(a.spikes[k], b.spikes[k]) for k in a.spikes)


@pytest.mark.parametrize("method, options", [("pasc", {}), ("bitplane", {}), ("max-norm", {"chunk": 2}),
                                             ("max-norm", {"chunk": 6})])
def test_a_residual_sum_made_by_its_convolution_keeps_every_bit(method, options, monkeypatch):
    snn = _convert(Residual(), method)
    x = torch.rand(5, 3, 16, 16)
    summed, plain, taken = _runs(snn, x, monkeypatch, **options)
    assert _same(summed, plain)
    windows = -(-6 // options.get("chunk", 6)) if method == "max-norm" else 1
    # both sums, in every window: after the shortcut and before it (none in a torch without oneDNN)
    assert taken == (2 * windows if torch.backends.mkldnn.is_available() else 0)


@pytest.mark.parametrize("method", ["pasc", "max-norm"])
def test_a_train_read_again_and_the_callers_input_are_not_written(method, monkeypatch):
    snn = _convert(ReadAgain(), method)
    x = torch.rand(4, 3, 16, 16)
    before = x.clone()
    summed, plain, taken = _runs(snn, x, monkeypatch)
    assert taken == 0 and torch.equal(x, before)
    assert _same(summed, plain)


def test_no_sum_in_place_on_autograds_path(monkeypatch):
    snn = _convert(Residual(), "max-norm").requires_grad_(True)  # as surrogate-gradient fine-tuning trains it
    taken = []
    fused = engine.TrainRunner.sum_into
    monkeypatch.setattr(engine.TrainRunner, "sum_into", lambda self, *a: taken.append(fused(self, *a)))
    logits = snn.simulate(torch.rand(2, 3, 16, 16), record=False).logits
    logits.sum().backward()
    assert taken and all(t is None for t in taken)
    assert all(p.grad is not None for name, p in snn.named_parameters() if "weight" in name)


def test_a_train_another_live_node_shares_or_an_analog_result_is_not_written(monkeypatch):
    snn = _convert(Aliased(), "max-norm", size=4)
    summed, plain, taken = _runs(snn, torch.rand(4, 3, 4, 4), monkeypatch, chunk=1)
    assert taken == 0
    assert _same(summed, plain)


@pytest.mark.parametrize("parameter", ["weight", "bias"])
def test_no_sum_in_place_where_only_the_convolution_is_on_autograds_path(parameter):
    # The shortcut's train needs no gradient, the convolution's weight (or bias) does: a sum in
    # place would leave it without one.
    snn = _convert(Residual(), "max-norm")
    conv = next(m for name, m in snn.named_modules() if name.endswith("a2"))
    getattr(conv, parameter).requires_grad_(True)
    snn.simulate(torch.rand(2, 3, 16, 16), record=False).logits.sum().backward()
    grad = getattr(conv, parameter).grad
    assert grad is not None and grad.abs().sum() > 0
