"""Selections written in two calls become one op as a model is traced (ann/selections.py): the
values of a max over a dimension are amax (VOLO's ``x.max(1)[0]``), and a −inf pad read only by
max pooling is one padded max pooling (timm's MaxPool2dSame). The traced graph computes the
model's values exactly; anything else is left as it was (a −inf pad left alone is refused:
test_op_table)."""
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import spikebridge as sb
from spikebridge.ann.selections import max_pool2d_padded
from spikebridge.ann.tracing import trace

math_ceil = math.ceil
torch.fx.wrap("math_ceil")  # as timm does


class Call(nn.Module):
    def __init__(self, fn, pool: nn.Module | None = None):
        super().__init__()
        self.fn, self.pool = fn, pool

    def forward(self, x):
        return self.fn(self, x)


def targets(gm) -> list:
    return [n.target for n in gm.graph.nodes if n.op in ("call_function", "call_method", "call_module")]


VALUE_FORMS = {
    "method[0]": lambda m, x, d, k: x.max(d, keepdim=k)[0],
    "function.values": lambda m, x, d, k: torch.max(x, dim=d, keepdim=k).values,
    "function[0]": lambda m, x, d, k: torch.max(x, d, k)[0],
    "min method.values": lambda m, x, d, k: x.min(d, keepdim=k).values,
    "min function[0]": lambda m, x, d, k: torch.min(x, d, keepdim=k)[0],
}


@settings(max_examples=40, deadline=None)
@given(form=st.sampled_from(sorted(VALUE_FORMS)), shape=st.lists(st.integers(1, 4), min_size=1, max_size=4),
       data=st.data(), keepdim=st.booleans())
def test_the_values_of_a_max_over_a_dim_trace_as_amax(form, shape, data, keepdim):
    dim = data.draw(st.integers(-len(shape), len(shape) - 1))
    model = Call(lambda m, x: VALUE_FORMS[form](m, x, dim, keepdim) * 2)
    gm = trace(model)
    expected = torch.amin if form.startswith("min") else torch.amax
    assert expected in targets(gm) and not {torch.max, torch.min, "max", "min"} & set(targets(gm))
    x = torch.randn(2, *shape)
    torch.testing.assert_close(gm(x), model(x), rtol=0, atol=0)


@pytest.mark.parametrize("fn", [
    lambda m, x: x.max(1)[1].float(),                  # the indices
    lambda m, x: (lambda r: r[0] + r[1])(x.max(1)),    # values and indices of one call
    lambda m, x: torch.max(x, x.flip(1)),              # elementwise
    lambda m, x: x.max(),                              # over everything: no indices
], ids=["indices", "both", "elementwise", "full"])
def test_a_max_whose_indices_are_read_or_that_has_none_is_left(fn):
    model = Call(fn)
    gm = trace(model)
    assert torch.amax not in targets(gm)
    x = torch.randn(2, 3, 4)
    torch.testing.assert_close(gm(x), model(x), rtol=0, atol=0)


@settings(max_examples=40, deadline=None)
@given(pad=st.tuples(*[st.integers(0, 2)] * 4), kernel=st.integers(1, 3), stride=st.integers(1, 3),
       module=st.booleans(), size=st.integers(3, 7))
def test_a_minus_infinity_pad_read_by_max_pooling_traces_as_one_padded_pooling(pad, kernel, stride, module, size):
    pool = nn.MaxPool2d(kernel, stride) if module else None
    model = Call(lambda m, x: (m.pool if module else lambda v: F.max_pool2d(v, kernel, stride))(
        F.pad(x, pad, value=-math.inf)), pool)
    gm = trace(model)
    assert max_pool2d_padded in targets(gm) and F.pad not in targets(gm) and F.max_pool2d not in targets(gm)
    x = torch.randn(2, 3, size, size + 1)
    torch.testing.assert_close(gm(x), model(x), rtol=0, atol=0)


@pytest.mark.parametrize("fn", [
    lambda m, x: F.max_pool2d(F.pad(x, (1, 1, 1, 1), value=-1.0), 2),                   # a finite value
    lambda m, x: (p := F.pad(x, (1, 1, 1, 1), value=-math.inf), F.max_pool2d(p, 2), p)[1:],  # a second reader
    lambda m, x: F.max_pool2d(F.pad(x, (1, 1, 1, 1), value=-math.inf), 2, return_indices=True)[0],
], ids=["finite", "second-reader", "indices"])
def test_a_pad_that_is_not_only_pooled_stays(fn):
    model = Call(fn)
    gm = trace(model)
    assert F.pad in targets(gm) and max_pool2d_padded not in targets(gm)


class SameMaxPool(nn.Module):
    """timm's MaxPool2dSame: TensorFlow's "same" padding computed from the input's size, with
    −inf, then a max pooling without padding."""

    def __init__(self, kernel: int = 3, stride: int = 2):
        super().__init__()
        self.kernel, self.stride = kernel, stride

    def forward(self, x):
        pads = [max((math_ceil(s / self.stride) - 1) * self.stride + self.kernel - s, 0) for s in x.shape[-2:]]
        x = F.pad(x, [pads[1] // 2, pads[1] - pads[1] // 2, pads[0] // 2, pads[0] - pads[0] // 2], value=-math.inf)
        return F.max_pool2d(x, self.kernel, self.stride)


class PooledNet(nn.Module):
    """conv → BN → ReLU → "same" max pooling → conv → ReLU → a VOLO-like head: the mean of the
    tokens plus half the max over them."""

    def __init__(self):
        super().__init__()
        self.conv1, self.bn = nn.Conv2d(2, 6, 3, padding=1), nn.BatchNorm2d(6)
        self.pool = SameMaxPool()
        self.conv2 = nn.Conv2d(6, 8, 3, padding=1)
        self.head = nn.Linear(8, 4)

    def forward(self, x):
        x = self.pool(torch.relu(self.bn(self.conv1(x))))
        tokens = torch.relu(self.conv2(x)).flatten(2).transpose(1, 2)   # [B, N, C]
        return self.head(tokens.mean(1) + 0.5 * tokens.max(1)[0])


def _pooled_net() -> nn.Module:
    torch.manual_seed(0)
    net = PooledNet()
    with torch.no_grad():
        net.bn.running_mean.uniform_(-0.5, 0.5), net.bn.running_var.uniform_(0.5, 2.0)
    return net.eval()


@pytest.mark.parametrize("method", ["pasc", "bitplane"])
def test_same_max_pooling_and_a_max_head_convert_exactly(method, tmp_path):
    x = torch.randn(16, 2, 9, 9)
    qann = sb.prepare(_pooled_net(), levels=7, example_input=x, replace_maxpool=False).eval()
    snn = sb.convert(qann, method)
    nodes = targets(snn.graph)
    assert max_pool2d_padded in nodes and torch.amax in nodes
    report = sb.verify(qann, snn, x)
    assert report.agreement == 1.0 and sum(report.mismatches.values()) == 0, report.table()
    sb.save(snn, tmp_path / "pooled.snn")
    torch.testing.assert_close(sb.load(tmp_path / "pooled.snn")(x), snn(x), rtol=0, atol=0)


def test_a_relu_site_before_same_max_pooling_moves_after_it_under_rate_coding():
    """ReLU commutes with a selection (docs/methods.md §8), so the site's neuron sits on the
    pooled map, and the rate-coded SNN still reads out the ANN's class on most images."""
    net, x = _pooled_net(), torch.randn(64, 2, 9, 9)
    snn = sb.convert(net, "max-norm", T=64, calibration_data=x)
    pooled = next(n for n in snn.graph.graph.nodes if n.target is max_pool2d_padded)
    assert pooled.args[0].op == "call_module" and pooled.args[0].target == "conv1"  # BN folded into conv1
    (site,) = pooled.users
    assert site.target in snn.neurons()
    agreement = (snn(x).argmax(1) == net(x).argmax(1)).float().mean()
    assert agreement > 0.8, agreement
