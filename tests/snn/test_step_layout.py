"""The memory format of convolution steps (snn/engine.py ``step_layout``): on the CPU a Conv2d
over at least 8x8 pixels runs channels-last, and the simulation gives what NCHW steps give up
to float rounding: the same predictions, logits within rounding, spike counts within one in
10 000 (a potential within rounding of its threshold can fire in one layout and not the other)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import spikebridge as sb
from spikebridge.device import last_level_cache_bytes
from spikebridge.snn import engine
from spikebridge.snn.codings import RATE, SUM
from spikebridge.snn.neurons import IFNeuron


class _Net(nn.Module):
    """Convolutions at 16x16 (channels-last) and 4x4 (NCHW), a residual add, pooling, and a
    ``view`` of a channels-last train (which ``view`` cannot take as it is)."""

    def __init__(self):
        super().__init__()
        self.c1, self.c2 = nn.Conv2d(2, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1)
        self.c3 = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.fc, self.fc2 = nn.Linear(8 * 4 * 4, 5), nn.Linear(8 * 16 * 16, 5)

    def forward(self, x):
        y = torch.relu(self.c1(x))
        y = torch.relu(self.c2(y)) + y
        z = torch.relu(self.c3(nn.functional.avg_pool2d(y, 4)))
        return self.fc(z.flatten(1)) + self.fc2(y.view(y.size(0), -1))


def _snn(method: str):
    torch.manual_seed(0)
    net = _Net().eval()
    x = torch.rand(16, 2, 16, 16)
    if method == "pasc":
        qann = sb.prepare(net, levels=7, threshold=1.0).eval()
        return qann, sb.convert(qann, "pasc"), x
    return net, sb.convert(net, method, T=6, calibration_data=[x]), x


def test_the_layout_rule():
    conv, x = nn.Conv2d(3, 4, 3), torch.zeros(2, 1, 3, 8, 8)
    assert engine.step_layout(conv, x) is torch.channels_last
    assert engine.step_layout(conv, x[..., :4, :4]) is torch.contiguous_format       # 16 pixels
    assert engine.step_layout(conv, x.double()) is torch.contiguous_format          # float64: no oneDNN
    assert engine.step_layout(nn.Linear(8, 2), x) is torch.contiguous_format


@pytest.mark.parametrize("method", ["max-norm", "network-level", "pasc"])
def test_channels_last_steps_simulate_what_nchw_steps_do(method, monkeypatch):
    ann, snn, x = _snn(method)
    fast = snn.simulate(x)
    with monkeypatch.context() as m:
        m.setattr(engine, "CHANNELS_LAST_PIXELS", float("inf"))
        plain = snn.simulate(x)
    torch.testing.assert_close(fast.logits, plain.logits, rtol=1e-5, atol=1e-5)
    assert torch.equal(fast.logits.argmax(-1), plain.logits.argmax(-1))
    # a spike can flip only where a potential lies within rounding of its threshold: allow one in 10^4
    for site in plain.spikes:
        assert (torch.as_tensor(fast.spikes[site]) - torch.as_tensor(plain.spikes[site])).abs().sum() <= max(
            1, torch.as_tensor(plain.spikes[site]).sum() // 10_000), site
    if method == "pasc":  # exact: the SNN's prediction is the ANN's
        assert torch.equal(fast.logits[-1].argmax(-1), ann(x).argmax(-1))


def test_the_trains_keep_the_layout_of_their_steps():
    torch.manual_seed(0)
    conv, train = nn.Conv2d(2, 4, 3, padding=1), torch.rand(3, 5, 2, 8, 8)
    y = engine.synapse(conv, train, RATE, torch.channels_last, conv.weight.contiguous(memory_format=torch.channels_last))
    assert all(y[t].is_contiguous(memory_format=torch.channels_last) for t in range(3))
    torch.testing.assert_close(y, engine.synapse(conv, train, RATE))
    neuron = IFNeuron(torch.full((4,), 0.3), v0=0.15, T=3)
    with torch.no_grad():
        out = neuron(y)
        assert all(out[t].is_contiguous(memory_format=torch.channels_last) for t in range(3))
        assert torch.equal(out, neuron(y.contiguous())) and out.any()  # element-wise: the same bits in any layout


@pytest.mark.parametrize("layer, step", [(nn.Conv2d(2, 4, 3, padding=1, stride=2), (2, 8, 8)),
                                         (nn.Conv1d(2, 4, 3), (2, 9)), (nn.Linear(6, 3), (4, 6))])
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_a_whole_train_runs_in_one_call_as_step_by_step(layer, step, layout):
    """Sum-coded trains are always whole (``Coding.whole_trains``): a small one runs in one call,
    the steps folded into the batch, and each step of the result is that step's own W·x(t) + b/T."""
    torch.manual_seed(0)
    train = torch.rand(3, 5, *step)
    layout = layout if isinstance(layer, nn.Conv2d) else torch.contiguous_format
    assert engine.folds(layer, train, SUM) and not engine.folds(layer, train, RATE)  # RATE: only with a probe
    with torch.no_grad():
        y = engine.synapse(layer, train, SUM, layout, layer.weight.contiguous(memory_format=layout))
        if isinstance(layer, nn.Linear):
            per_step = torch.stack([nn.functional.linear(x_t, layer.weight, layer.bias / 3) for x_t in train])
        else:
            per_step = torch.stack([layer._conv_forward(x_t, layer.weight, layer.bias / 3) for x_t in train])
    assert y.shape == per_step.shape and per_step.shape[:2] == (3, 5)
    torch.testing.assert_close(y, per_step)
    if layout is torch.channels_last:
        assert all(y[t].is_contiguous(memory_format=torch.channels_last) for t in range(3))


def test_only_a_whole_train_whose_output_fits_the_budget_is_folded(monkeypatch):
    conv, train = nn.Conv2d(4, 8, 3, stride=2), torch.zeros(6, 2, 4, 9, 9)  # output 6 x 2 x 8 x 4 x 4 floats
    monkeypatch.setattr(engine, "FOLD_BYTES", 6 * 2 * 8 * 4 * 4 * 4)
    monkeypatch.setattr(engine, "last_level_cache_bytes", lambda: 0)
    assert engine.folds(conv, train, SUM)
    assert not engine.folds(conv, torch.zeros(6, 3, 4, 9, 9), SUM)  # one image more
    assert not engine.folds(conv, train, RATE)
    assert engine.folds(nn.Linear(9, 1), train, SUM)  # 6 x 2 x 4 x 9 x 1 floats


@pytest.mark.parametrize("cache_mib, budget_mib", [(0, 16), (32, 16), (48, 24), (480, 240)])
def test_the_fold_budget_is_half_the_last_level_cache_on_the_cpu(monkeypatch, cache_mib, budget_mib):
    monkeypatch.setattr(engine, "last_level_cache_bytes", lambda: cache_mib << 20)
    assert engine.fold_budget(torch.device("cpu")) == budget_mib << 20
    assert engine.fold_budget(torch.device("meta")) == engine.FOLD_BYTES  # another device: its own cache is not known
    assert engine.fold_budget(torch.device("cpu"), exact_sums=True) == engine.FOLD_BYTES  # integer synapses
    conv = nn.Conv2d(16, 16, 3, padding=1)
    assert engine.folds(conv, torch.zeros(8, 64, 16, 32, 32), SUM) == (budget_mib >= 32)  # a 32 MiB output


def test_the_last_level_cache_is_read_from_sysfs(tmp_path):
    for name, (level, kind, size) in {"index0": (1, "Data", "48K"), "index1": (1, "Instruction", "64K"),
                                      "index2": (2, "Unified", "2048K"), "index3": (3, "Unified", "32M"),
                                      "index4": (4, "Instruction", "1G")}.items():
        (tmp_path / name).mkdir()
        for field, value in (("level", level), ("type", kind), ("size", size)):
            (tmp_path / name / field).write_text(f"{value}\n")
    assert last_level_cache_bytes(tmp_path) == 32 << 20
    assert last_level_cache_bytes(tmp_path / "absent") == 0


def test_a_rate_coded_window_folds_only_where_folding_keeps_every_bit(monkeypatch):
    """Rate-coded windows vary with the time chunk: a window folds only where the folded call
    gave a call per step's bits on random values (``folding_keeps_bits``), so a run in chunks
    computes what one window computes; a layer whose result changes with the batch's size runs
    a step per call."""
    torch.manual_seed(0)
    monkeypatch.setattr(engine, "_calls", {})
    conv, train = nn.Conv2d(4, 8, 3, padding=1), torch.rand(5, 16, 4, 8, 8)
    state = torch.get_rng_state()
    with torch.no_grad():
        y = engine.synapse(conv, train, RATE)
    assert torch.equal(torch.get_rng_state(), state)  # the probe draws from a generator of its own
    with torch.no_grad():
        per_step = torch.stack([conv(x_t) for x_t in train])
    assert torch.equal(y, per_step)  # folded or not: a call per step's bits
    def probed():  # the probe results remembered
        return [known["same_bits"] for known in engine._calls.values() if "same_bits" in known]
    assert len(probed()) == 1  # probed once for this shape ...
    engine.synapse(conv, train, RATE)
    assert len(probed()) == 1  # ... and remembered
    assert engine.folds(conv, train, RATE, conv) == probed()[0]
    with torch.no_grad():
        weight = conv.weight.contiguous(memory_format=torch.channels_last)
        y = engine.synapse(conv, train, RATE, torch.channels_last, weight)
    assert len(probed()) == 2  # another step layout, another kernel: probed apart
    torch.testing.assert_close(y, per_step)

    def batch_dependent(x):  # rounds differently for a larger batch, as a matrix-vector path can
        return conv(x) * (1 + 1e-6 * (x.shape[0] > 3))
    assert not engine.folding_keeps_bits(conv, train[:, :2], batch_dependent)
    assert not engine.folds(conv, train[:, :2], RATE, batch_dependent)
    assert engine.folds(conv, train[:, :2], SUM, batch_dependent)  # a whole train needs no probe
    with torch.no_grad():
        assert torch.equal(engine.synapse(conv, train[:, :2], RATE), per_step[:, :2])
