"""Assignment into part of a traced tensor (ann/assignment.py): ``x[index] = v`` is recorded
out of place and the rest of the forward pass reads the result, as in PyTorch; a view taken
before the assignment and read after it is refused; the SNN computes it exactly (MViTv2)."""
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import spikebridge as sb
from spikebridge import ConversionError, SpikeBridgeError
from spikebridge.ann.assignment import assigned
from spikebridge.ann.tracing import trace

INDEXES = [
    (slice(None), slice(None), slice(1, None), slice(1, None)),
    (slice(None), 0),
    (Ellipsis, slice(0, 4, 2)),
    (slice(None), slice(1, 3), Ellipsis, 2),
]


class Assigns(nn.Module):
    def __init__(self, index, value: str):
        super().__init__()
        self.index, self.value = index, value

    def forward(self, x):
        a = x * 2
        before = a.sum()  # read before the assignment: the old values, in PyTorch as in the graph
        a[self.index] = {"region": a[self.index] * 3 + 1, "row": x[0, 0, 0, 0] - 1, "zero": 0.0}[self.value]
        return a * before


@settings(max_examples=30, deadline=None)
@given(index=st.sampled_from(INDEXES), value=st.sampled_from(["region", "row", "zero"]), batch=st.integers(1, 4),
       example=st.booleans())
def test_an_assignment_is_recorded_out_of_place_and_read_after(index, value, batch, example):
    model = Assigns(index, value)
    x = torch.randn(batch, 3, 4, 5)
    gm = trace(model, x if example else None)
    assert assigned in {n.target for n in gm.graph.nodes}
    torch.testing.assert_close(gm(x), model(x), rtol=0, atol=0)
    assert torch.equal(x, x.clone())  # the input is not written


class StaleView(nn.Module):
    def forward(self, x):
        a = x * 2
        view = a[:, 0]
        a[:, 1:] = 0.0
        return a.sum(1) + view  # PyTorch's view sees the assignment; an out-of-place graph would not


def test_a_view_taken_before_and_read_after_the_assignment_is_refused():
    with pytest.raises(SpikeBridgeError, match="after taking a view"):
        trace(StaleView())


class RelativeBias(nn.Module):
    """MViTv2's attention, small: scores of tokens, a bias computed from the queries added into
    the slice past the class token, softmax, values."""

    def __init__(self):
        super().__init__()
        self.conv, self.qkv, self.bias = nn.Conv2d(2, 8, 3, padding=1), nn.Linear(8, 24), nn.Linear(8, 5)
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        tokens = torch.relu(self.conv(x)).flatten(2).transpose(1, 2)          # [B, 6, 8]: class token first
        q, k, v = self.qkv(tokens).chunk(3, dim=-1)
        attn = q @ k.transpose(-2, -1) / 8 ** 0.5                           # [B, 6, 6]
        attn[:, 1:, 1:] = attn[:, 1:, 1:] + self.bias(q[:, 1:])
        out = torch.relu(attn.softmax(-1) @ v)
        return self.head(out.mean(1))


@pytest.mark.parametrize("method", ["pasc", "bitplane"])
def test_an_attention_with_a_bias_assigned_into_a_slice_converts_exactly(method, tmp_path):
    torch.manual_seed(0)
    qann = sb.prepare(RelativeBias().eval(), levels=7, threshold=1.0).double().eval()
    x = torch.randn(8, 2, 2, 3, dtype=torch.float64)
    snn = sb.convert(qann, method).double()
    report = sb.verify(qann, snn, x)
    assert report.agreement == 1.0 and report.max_logit_diff < 1e-9, report.table()
    sb.save(snn, tmp_path / "bias.snn")
    torch.testing.assert_close(sb.load(tmp_path / "bias.snn")(x), snn(x), rtol=0, atol=0)
    rate = sb.convert(qann, "qcfs", T=4).double().simulate(x)  # the assignment step by step
    assert rate.logits.shape == (4, 8, 3) and torch.isfinite(rate.logits).all()


class MaskAssign(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.fc = nn.Conv2d(2, 3, 3, padding=1), nn.Linear(3, 2)
        self.register_buffer("mask", torch.rand(3, 4, 4) > 0.5)

    def forward(self, x):
        h = torch.relu(self.conv(x))
        h[:, self.mask] = 0.0  # through a tensor index: not an index of slices
        return self.fc(h.mean((2, 3)))


def test_an_assignment_through_a_mask_is_refused():
    qann = sb.prepare(MaskAssign().eval(), levels=4)
    with pytest.raises(ConversionError, match="unsupported node 'assigned"):
        sb.convert(qann, "pasc")
