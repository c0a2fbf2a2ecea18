"""Tracing with an example input (ann/example_tracing.py): forward passes that read their
input's shape in Python trace, specialised to the example's shape at any batch size; reading
a tensor's data, or the batch size, stays refused."""
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import spikebridge as sb
from spikebridge import SpikeBridgeError
from spikebridge.ann.tracing import trace

math_ceil = math.ceil
torch.fx.wrap("math_ceil")  # as timm does: the padding is computed from the size when the network runs


class ShapeBranch(nn.Module):
    """Pools only inputs of at least 8 pixels (timm's VGG pre-logits), then a head whose grid
    size is int(sqrt(tokens)) (NesT) and whose rank is len of a shape (Hiera)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.head = nn.Linear(4, 3)

    def forward(self, x):
        x = torch.relu(self.bn(self.conv(x)))
        if x.shape[-1] >= 8 or x.shape[-2] >= 8:
            x = F.avg_pool2d(x, 2)
        tokens = x.flatten(2).transpose(1, 2)                       # [B, N, C]
        side = int(math.sqrt(tokens.shape[1]))
        assert len(x.shape[2:]) == 2
        grid = tokens[:, :side * side].transpose(1, 2).reshape(-1, 4, side, side)
        return self.head(torch.relu(grid).mean((2, 3)))


def model():
    torch.manual_seed(0)
    m = ShapeBranch().eval()
    with torch.no_grad():
        m.bn.running_mean.uniform_(-0.2, 0.2), m.bn.running_var.uniform_(0.5, 2.0)
    return m


def test_a_branch_on_the_shape_needs_an_example_and_says_so():
    with pytest.raises(SpikeBridgeError, match="could not trace ShapeBranch.*example_input"):
        sb.prepare(model())


@settings(max_examples=15, deadline=None)
@given(h=st.integers(4, 12), w=st.integers(4, 12), batch=st.integers(1, 5))
def test_the_graph_is_the_model_at_the_examples_shape_and_any_batch_size(h, w, batch):
    m = model()
    gm = trace(m, torch.randn(7, 2, h, w))
    x = torch.randn(batch, 2, h, w)
    torch.testing.assert_close(gm(x), m(x), rtol=0, atol=0)
    pooled = any(n.target is F.avg_pool2d for n in gm.graph.nodes)
    assert pooled == (h >= 8 or w >= 8)  # the example's branch, and no other


def test_prepared_with_an_example_converts_exactly():
    m = model()
    x = torch.randn(16, 2, 10, 10)
    qann = sb.prepare(m, levels=4, example_input=x[:2]).eval()
    report = sb.verify(qann, sb.convert(qann, "pasc"), x)
    assert report.agreement == 1.0 and sum(report.mismatches.values()) == 0


def test_a_relu_model_converts_with_its_calibration_data_as_the_example():
    m = model()
    data = [torch.randn(8, 2, 10, 10) for _ in range(2)]
    snn = sb.convert(m, T=4, calibration_data=iter(data), passes=1)  # a one-shot iterator: nothing lost
    assert snn.method == "network-level" and snn.info["input_shape"] == [2, 10, 10]
    assert snn(data[0]).shape == (8, 3)
    # FTBC traces its own copy of the ANN, from the input shape the SNN records
    summary = sb.ftbc(snn, ann=m, data=data, batches=1, check_batches=1, progress=False)
    assert set(summary) == set(snn.neurons())


class DataBranch(nn.Module):
    def forward(self, x):
        return x.relu() if x.sum() > 0 else x


class BufferBranch(nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("on", torch.tensor(1.0))

    def forward(self, x):
        return x.relu() if self.on > 0 else x


class ItemSize(nn.Module):
    def forward(self, x):
        return x.relu().reshape(-1, int(x.mean().item() > 0) + 1)


@pytest.mark.parametrize("cls", [DataBranch, BufferBranch, ItemSize])
def test_control_flow_on_data_stays_refused_with_an_example(cls):
    with pytest.raises(SpikeBridgeError, match="even with an example input"):
        sb.prepare(cls(), example_input=torch.randn(2, 4))


class BatchBranch(nn.Module):
    def forward(self, x):
        return x.relu() * 2 if x.shape[0] > 2 else x.relu()


class BatchBaked(nn.Module):
    def forward(self, x):
        return x.relu().reshape(int(x.shape[0]), -1) if x.dim() > 2 else x.relu()


@pytest.mark.parametrize("cls", [BatchBranch, BatchBaked])
def test_a_graph_that_depends_on_the_batch_size_is_refused(cls):
    with pytest.raises(SpikeBridgeError, match="depends on its batch size"):
        sb.prepare(cls(), example_input=torch.randn(2, 3, 4))


class Masked(nn.Module):
    """An optional second argument, and a branch on the shape; the network takes x alone."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x, mask=None, scale: float = 2.0):
        if mask is not None:
            x = x * mask
        if x.shape[-1] == 4:
            x = x * scale
        return torch.relu(self.fc(x))


def test_arguments_after_the_input_take_their_defaults():
    m = Masked()
    gm = trace(m, torch.randn(2, 4))
    assert [n.target for n in gm.graph.nodes if n.op == "placeholder"] == ["x"]
    x = torch.randn(5, 4)
    torch.testing.assert_close(gm(x), m(x), rtol=0, atol=0)


class SamePadding(nn.Module):
    """TensorFlow's "same" padding as timm computes it: from the input's size, with a wrapped
    math.ceil (graph nodes) and a max that branches on the size."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3, stride=2)
        self.head = nn.Linear(3, 4)

    def forward(self, x):
        pads = [max((math_ceil(size / 2) - 1) * 2 + 3 - size, 0) for size in x.shape[-2:]]
        x = F.pad(x, [pads[1] // 2, pads[1] - pads[1] // 2, pads[0] // 2, pads[0] - pads[0] // 2])
        return self.head(torch.relu(self.conv(x)).mean((2, 3)))


def test_numbers_computed_from_the_size_run_in_the_snn_and_its_file(tmp_path):
    torch.manual_seed(0)
    m = SamePadding().eval()
    x = torch.randn(16, 2, 9, 9)
    qann = sb.prepare(m, levels=4, example_input=x).eval()
    assert any(n.target is math.ceil for n in qann.graph.nodes)
    snn = sb.convert(qann, "pasc")
    report = sb.verify(qann, snn, x)
    assert report.agreement == 1.0 and sum(report.mismatches.values()) == 0
    sb.save(snn, tmp_path / "same.snn")
    torch.testing.assert_close(sb.load(tmp_path / "same.snn")(x), snn(x), rtol=0, atol=0)


class AutocastBlock(nn.Module):
    """EfficientViT's attention: computed with autocast off for the input's device type, and a
    tensor made on the input's device."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3, padding=1)

    def forward(self, x):
        h = torch.relu(self.conv(x))
        if x.device.type != "meta":
            with torch.autocast(device_type=x.device.type, enabled=False):
                h = h.float() * 2
        return h + torch.ones(4, 1, 1, device=x.device)


def test_a_device_type_is_read_off_the_example_and_a_device_stays_a_node():
    """torch.autocast needs a str, which the example gives; the device itself stays a graph node,
    so the graph still runs on another device."""
    torch.manual_seed(0)
    m = AutocastBlock().eval()
    x = torch.randn(3, 2, 5, 5)
    with pytest.raises(SpikeBridgeError, match="could not trace"):
        trace(m)
    gm = trace(m, x)
    devices = [n for n in gm.graph.nodes if n.op == "call_function" and n.args[1:] == ("device",)]
    assert devices and all(not isinstance(a, torch.device) for n in gm.graph.nodes for a in n.kwargs.values())
    torch.testing.assert_close(gm(x), m(x), rtol=0, atol=0)


class SizedMask(nn.Module):
    """Gemma4's patch mask: a factory given the traced batch size and token count one by one."""

    def forward(self, x):
        B, C, H, W = x.shape
        valid = torch.ones(B, H * W, dtype=x.dtype) + torch.zeros(B, 1, dtype=x.dtype)
        return x.flatten(2) * valid.unsqueeze(1)


@pytest.mark.parametrize("example", [None, torch.randn(2, 3, 4, 5)])
def test_a_factory_given_traced_sizes_one_by_one_is_recorded_and_restored(example):
    factories = {name: getattr(torch, name) for name in ("ones", "zeros", "empty", "rand", "randn")}
    gm = trace(SizedMask(), example)
    assert [getattr(torch, name) for name in factories] == list(factories.values())  # put back
    assert {torch.ones, torch.zeros} <= {n.target for n in gm.graph.nodes}
    x = torch.randn(3, 3, 4, 5)
    torch.testing.assert_close(gm(x), SizedMask()(x), rtol=0, atol=0)
