"""Time-chunked simulation (snn/network.py ``simulate(chunk=...)``): a rate-coded network run
in chunks of steps, each neuron carrying its potential across chunks, gives exactly what one
run over all T steps gives — anytime logits, spike counts, input events and site values; a
network run in batch pieces (``batch_chunk``) gives what one run of the batch gives."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import spikebridge as sb
from spikebridge import models
from spikebridge.snn import engine, neurons
from spikebridge.snn.network import (AUTO_PIECE_TRAIN_BYTES, STEP_PIECE, STEP_PIECE_BYTES, SpikingNetwork,
                                     auto_batch_chunk, auto_step_pieces)


def _qann(act=nn.ReLU):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), act(), nn.AvgPool2d(2),
                        nn.Conv2d(4, 6, 3, padding=1), act(), nn.Flatten(), nn.Linear(6 * 16, 8), act(),
                        nn.Linear(8, 3))
    return sb.prepare(net, levels=4, threshold=1.0).eval()


def _qcfs_snn(T: int):
    qann = _qann()
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


def test_a_snapshot_lets_several_continuations_start_from_one_point():
    """TrainRunner.snapshot/restore: after steps 0..2 of a run, the steps 3..7 run twice from
    the snapshot give what one run of all 8 steps gives, each time. The network keeps its max
    pooling (an ANALOG op whose running sums carry from one window to the next) and a ReLU
    after a product (an ANALOG op that is not homogeneous), so both kinds of state are covered."""
    torch.manual_seed(0)

    class Pooled(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.fc = nn.Conv2d(1, 4, 3, padding=1), nn.Linear(4 * 16, 3)

        def forward(self, x):
            y = torch.relu(nn.functional.max_pool2d(torch.relu(self.conv(x)), 2))
            return self.fc(torch.relu(y * y).flatten(1))

    ann, x = Pooled().eval(), torch.rand(5, 1, 8, 8)
    snn = sb.convert(ann, "max-norm", T=8, calibration_data=[x])
    whole = engine.TrainRunner(snn).run_window(x, (0, 8))
    runner = engine.TrainRunner(snn)
    runner.run_window(x, (0, 3))
    start = runner.snapshot()
    assert len(start["analog"]) == 2  # the pooling's and the product's state
    for _ in range(2):
        runner.restore(start)
        assert torch.equal(runner.run_window(x, (3, 5)), whole[3:])


def test_sum_coded_networks_run_in_one_piece():
    qann, _ = _qcfs_snn(T=4)
    snn = sb.convert(qann, "pasc")
    x = torch.rand(3, 1, 8, 8)
    _same(snn.simulate(x, values=True, chunk=1), snn.simulate(x, values=True))


def test_bad_chunk_is_an_option_error():
    _, snn = _qcfs_snn(T=4)
    with pytest.raises(sb.OptionError, match="chunk must be an integer >= 1"):
        snn.simulate(torch.rand(1, 1, 8, 8), chunk=0)


def _same_counts(a, b, exact: bool = True):
    """Everything but the site values (a run in batch pieces has none) is the same; the logits
    up to float rounding unless ``exact``."""
    assert torch.equal(a.logits, b.logits) if exact else torch.allclose(a.logits, b.logits, rtol=0, atol=1e-12)
    for field in ("spikes", "events"):
        x, y = getattr(a, field), getattr(b, field)
        assert x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x), field
    assert a.steps == b.steps and a.analog_layers == b.analog_layers and a.analog_steps == b.analog_steps
    assert a.batch_size == b.batch_size and a.analog_ops == b.analog_ops


@pytest.mark.parametrize("method", ["pasc", "bitplane"])
@pytest.mark.parametrize("batch_chunk", [1, 2, 4, 100])
def test_sum_coded_networks_in_batch_pieces_give_the_same_simulation(method, batch_chunk):
    qann, _ = _qcfs_snn(T=4)
    snn = sb.convert(qann, method)
    x = torch.rand(7, 1, 8, 8)
    whole = snn.simulate(x, batch_chunk=7)
    _same_counts(snn.simulate(x, batch_chunk=batch_chunk), whole)
    assert whole.batch_size == 7 and whole.logits.shape[1] == 7
    assert sum(c.sum() for c in whole.spikes.values()) > 0  # the counts compared are not all zero


@pytest.mark.parametrize("act", [nn.ReLU, nn.GELU])
@pytest.mark.parametrize("method", ["pasc", "bitplane"])
@pytest.mark.parametrize("images", [1, 3])
def test_sum_coded_neurons_in_blocks_of_images_give_the_same_simulation(method, images, act, monkeypatch):
    """``neurons.batch_blocks``: each neuron's passes over a few images at a time, the layers
    between them over the whole batch; the simulation is that of one block (GELU: the
    quantized-activation neurons, inhibitory spikes included)."""
    snn = sb.convert(_qann(act), method)
    quantized = [type(n).__name__.startswith("Quantized") for n in snn.neurons().values()]
    assert all(quantized) if act is nn.GELU else not any(quantized)
    x = torch.rand(7, 1, 8, 8)
    whole = snn.simulate(x, values=True)
    monkeypatch.setattr(neurons, "BLOCK_STEP_BYTES", images * 4 * 8 * 8 * 4)  # a step of the first layer's images
    assert len(neurons.batch_blocks(torch.zeros(4, 7, 4, 8, 8))) == -(-7 // images)
    _same(snn.simulate(x, values=True), whole)
    assert sum(c.sum() for c in whole.spikes.values()) > 0


@pytest.mark.parametrize("batch_chunk", [1, 3, 100])
def test_rate_coded_networks_in_batch_pieces_give_the_same_simulation(batch_chunk):
    qann, snn = _qcfs_snn(T=12)
    x = torch.rand(7, 1, 8, 8)
    sb.ftbc(snn, ann=qann, data=[x], alpha=0.5, batches=1, check_batches=0, progress=False)
    whole = snn.simulate(x, chunk=5, batch_chunk=7)
    _same_counts(snn.simulate(x, chunk=5, batch_chunk=batch_chunk), whole)
    assert whole.logits.shape == (12, 7, 3) and sum(c.sum() for c in whole.spikes.values()) > 0


def test_rate_coded_batches_split_on_the_cpu_where_a_run_showed_small_steps(monkeypatch):
    """``auto_step_pieces``: pieces of ``STEP_PIECE`` images where their largest synaptic output
    of one step (per image, learnt by the previous run on that input shape) fits the budget."""
    x = torch.rand(150, 1, 8, 8)
    fits = STEP_PIECE_BYTES // STEP_PIECE
    assert auto_step_pieces(x, None) == 150  # nothing learnt yet: the whole batch
    assert auto_step_pieces(x, fits) == STEP_PIECE
    assert auto_step_pieces(x, fits + 1) == 150  # a piece's steps would outgrow the budget
    assert auto_step_pieces(x.to("meta"), fits) == 150  # measured on the CPU only
    assert auto_step_pieces(x, fits, autograd=True) == 150  # and in inference only
    _, snn = _qcfs_snn(T=8)
    runs = []
    real = SpikingNetwork._run
    monkeypatch.setattr(SpikingNetwork, "_run", lambda self, piece, *a: runs.append(len(piece)) or real(self, piece, *a))
    first = snn.simulate(x, chunk=4)  # grad mode on: the network's weights ask for none
    assert runs == [150]
    assert snn._step_bytes[(1, 8, 8), torch.float32, x.device] == 4 * 8 * 8 * 4  # the first conv's [4, 8, 8] step
    runs.clear()
    second = snn.simulate(x, chunk=4)
    assert runs == [64, 64, 22]
    _same_counts(second, first)
    runs.clear()
    snn.requires_grad_()
    snn.simulate(x, chunk=4)  # training: the whole batch
    assert runs == [150]
    snn.requires_grad_(False)
    monkeypatch.setattr("spikebridge.snn.network.STEP_PIECE_BYTES", STEP_PIECE * 4 * 8 * 8 * 4 - 1)
    runs.clear()
    snn.simulate(x, chunk=4)
    assert runs == [150]


def test_batch_pieces_add_the_analog_ops_of_a_vit():
    torch.manual_seed(0)
    ann = models.create("vit_tiny", num_classes=10, in_channels=1, image_size=16, depth=1, dim=16, heads=2)
    snn = sb.convert(sb.prepare(ann, levels=8, threshold=1.0).eval().double(), "pasc")
    x = torch.randn(5, 1, 16, 16, dtype=torch.float64)
    whole, pieces = snn.simulate(x, batch_chunk=5), snn.simulate(x, batch_chunk=2)
    assert whole.analog_ops and all(r["macs"] > 0 for r in whole.analog_ops.values())
    _same_counts(pieces, whole, exact=False)  # a GEMM over 2 images' tokens rounds unlike one over 5


def test_batches_of_sum_coded_networks_run_in_pieces_that_shrink_with_the_steps(monkeypatch):
    qann, _ = _qcfs_snn(T=4)
    snn = sb.convert(qann, "pasc")
    x = torch.rand(40, 1, 8, 8)
    assert auto_batch_chunk(x, 4) == 2 * auto_batch_chunk(x, 8) == 2 * (AUTO_PIECE_TRAIN_BYTES // (8 * 64 * 4))
    assert auto_batch_chunk(torch.rand(1, 3, 32, 32), 8) == 64 and auto_batch_chunk(torch.rand(1, 3, 32, 32), 32) == 16
    assert auto_batch_chunk(torch.rand(2, 3, 2048, 2048), 32) == 1
    runs = []
    real = SpikingNetwork._run
    monkeypatch.setattr(SpikingNetwork, "_run", lambda self, piece, *a: runs.append(len(piece)) or real(self, piece, *a))
    snn.simulate(x, batch_chunk=16)
    assert runs == [16, 16, 8]
    runs.clear()
    snn.simulate(x, batch_chunk=16, values=True)  # values keep the batch in one piece
    assert runs == [40]



def test_bad_batch_chunk_is_an_option_error():
    qann, _ = _qcfs_snn(T=4)
    with pytest.raises(sb.OptionError, match="batch_chunk must be an integer >= 1"):
        sb.convert(qann, "pasc").simulate(torch.rand(2, 1, 8, 8), batch_chunk=0)
