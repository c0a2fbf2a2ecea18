"""Recurrent layers (nn.LSTM, nn.GRU, nn.RNN) as ANALOG ops (docs/methods.md §8): run on the
decoded sequence, so sum-coded methods keep the ANN's values exactly, whichever of the outputs
(the sequence, or the final states) the network reads; their MACs are their weights' per step."""
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import spikebridge as sb
from spikebridge.conversion.ops import recurrent_macs


class Sequences(nn.Module):
    """conv → ReLU → the rows of the map as a sequence → ``rnn`` → ReLU → linear, reading the
    sequence's last step or the last layer's final hidden state."""

    def __init__(self, rnn: nn.RNNBase, read: str):
        super().__init__()
        self.conv, self.rnn, self.read = nn.Conv2d(2, 4, 3, padding=1), rnn, read
        width = (rnn.proj_size or rnn.hidden_size) * (2 if rnn.bidirectional else 1)
        self.fc = nn.Linear(width if read == "sequence" else rnn.proj_size or rnn.hidden_size, 3)

    def forward(self, x):
        h = torch.relu(self.conv(x)).flatten(1, 2).transpose(1, 2)  # [B, W, C·H]: the columns
        if not self.rnn.batch_first:
            h = h.transpose(0, 1)
        out, state = self.rnn(h)
        if self.read == "sequence":
            last = out[:, -1] if self.rnn.batch_first else out[-1]
        else:
            last = (state[0] if isinstance(self.rnn, nn.LSTM) else state)[-1]  # h of (h, c)
        return self.fc(torch.relu(last))


RNNS = {
    "lstm": lambda: nn.LSTM(24, 6, batch_first=True),
    "lstm-2-bidirectional-seq-first": lambda: nn.LSTM(24, 5, num_layers=2, bidirectional=True),
    "lstm-projected": lambda: nn.LSTM(24, 6, batch_first=True, proj_size=3),
    "gru": lambda: nn.GRU(24, 5, num_layers=2, batch_first=True, bias=False),
    "rnn-relu": lambda: nn.RNN(24, 5, nonlinearity="relu", bidirectional=True, batch_first=True),
}


@pytest.mark.parametrize("read", ["sequence", "state"])
@pytest.mark.parametrize("name", sorted(RNNS))
def test_a_recurrent_layer_converts_and_pasc_stays_exact(name, read, tmp_path):
    torch.manual_seed(0)
    qann = sb.prepare(Sequences(RNNS[name](), read).eval(), levels=5, threshold=1.0).double().eval()
    x = torch.randn(6, 2, 6, 5, dtype=torch.float64)
    snn = sb.convert(qann, "pasc").double()
    report = sb.verify(qann, snn, x)
    assert report.agreement == 1.0 and report.max_logit_diff < 1e-9, report.table()
    rnn = snn.graph.get_submodule("rnn")
    (record,) = [r for r in snn.simulate(x).analog_ops.values() if r["op"] == type(rnn).__name__.lower()]
    weights = sum(p.numel() for n, p in rnn.named_parameters() if n.startswith("weight"))
    assert record["macs"] == 6 * 5 * weights  # 6 sequences of 5 steps, once (one decoded step)
    rate = sb.convert(qann, "qcfs", T=4).double().simulate(x)  # the recurrent layer's outputs, step by step
    assert rate.logits.shape == (4, 6, 3) and torch.isfinite(rate.logits).all()
    sb.save(snn, tmp_path / "rnn.snn")
    torch.testing.assert_close(sb.load(tmp_path / "rnn.snn")(x), snn(x), rtol=0, atol=0)


@pytest.mark.filterwarnings("ignore:LSTM with projections is not supported with oneDNN")
@settings(max_examples=30, deadline=None)
@given(mode=st.sampled_from(["LSTM", "GRU", "RNN"]), layers=st.integers(1, 3), hidden=st.integers(2, 6),
       inputs=st.integers(1, 5), bidirectional=st.booleans(), projected=st.booleans(),
       shape=st.sampled_from([(4,), (3, 4), (1, 2)]))
def test_recurrent_macs_are_the_weights_per_sample_and_step(mode, layers, hidden, inputs, bidirectional, projected,
                                                             shape):
    """Each (sample, step) multiplies every weight once (the biases are adds)."""
    extra = {"proj_size": hidden - 1} if mode == "LSTM" and projected else {}
    rnn = getattr(nn, mode)(inputs, hidden, layers, bidirectional=bidirectional, **extra)
    weights = sum(p.numel() for n, p in rnn.named_parameters() if n.startswith("weight"))
    x = torch.zeros(*shape, inputs)
    assert recurrent_macs(rnn, (x,), {}, rnn(x)) == x[..., 0].numel() * weights
