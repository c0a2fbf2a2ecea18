"""Clamps that clamp nothing (graph.remove_unbounded_clamps) and the finite-weights check
(graph.check_finite) on what the graph reads: Gemma4's clippable linear layers clamp their
input and output with ±inf buffers until a checkpoint sets them."""
import math

import pytest
import torch
from hypothesis import given, settings, strategies as st
from torch import nn

import spikebridge as sb
from spikebridge import ConversionError
from spikebridge.ann.tracing import trace
from spikebridge.conversion.graph import check_finite, remove_unbounded_clamps

BOUNDS = st.sampled_from([None, -math.inf, -0.5, 0.0, 0.7, math.inf])


class Clamped(nn.Module):
    """x.clamp in one of its forms, each bound a number or a buffer (or absent)."""

    def __init__(self, form: str, low, high, buffers: bool):
        super().__init__()
        self.form, self.buffers = form, buffers
        for name, value in (("low", low), ("high", high)):
            if buffers and value is not None:
                self.register_buffer(name, torch.tensor(value, dtype=torch.float64))
            else:
                setattr(self, name, value)

    def forward(self, x):
        if self.form == "torch.clamp":
            return torch.clamp(x, self.low, self.high)
        if self.form == "clip kwargs":
            return x.clip(min=self.low, max=self.high)
        if self.form == "clamp_min":
            return torch.clamp_min(x, self.low)
        return x.clamp_max(self.high)


def _usable(form, low, high) -> bool:
    if form == "clamp_min":
        return low is not None
    if form == "clamp_max":
        return high is not None
    return low is not None or high is not None


@settings(max_examples=60, deadline=None)
@given(form=st.sampled_from(["torch.clamp", "clip kwargs", "clamp_min", "clamp_max"]), low=BOUNDS, high=BOUNDS,
       buffers=st.booleans(), seed=st.integers(0, 2 ** 16))
def test_a_clamp_keeps_its_values_and_loses_only_the_bounds_that_clamp_nothing(form, low, high, buffers, seed):
    if not _usable(form, low, high):
        return
    model = Clamped(form, low, high, buffers).eval()
    gm = trace(model)
    x = torch.randn(16, dtype=torch.float64, generator=torch.Generator().manual_seed(seed)) * 2
    x[:2] = torch.tensor([math.inf, -math.inf])
    before = model(x)
    remove_unbounded_clamps(gm)
    assert torch.equal(gm(x), before)
    used = {"clamp_min": {"min": low}, "clamp_max": {"max": high}}.get(form, {"min": low, "max": high})
    effective = [b for name, b in used.items() if b is not None and b != (-math.inf if name == "min" else math.inf)]
    clamps = [n for n in gm.graph.nodes if n.op in ("call_function", "call_method")
              and "cl" in getattr(n.target, "__name__", str(n.target))]
    assert len(clamps) == (1 if effective else 0)
    if buffers and any(math.isinf(b) for b in effective):  # a bound of inf that clamps everything: inf in the ANN
        with pytest.raises(ConversionError, match="NaN or inf"):
            check_finite(gm)
    else:
        check_finite(gm)  # no inf left in what the graph reads


class ClippableLinear(nn.Module):
    """Gemma4's: a linear layer whose input and output are clamped by buffers, ±inf unless set."""

    def __init__(self, features: int, bound: float = math.inf):
        super().__init__()
        self.linear = nn.Linear(features, features)
        for name, value in (("input_min", -bound), ("input_max", bound), ("output_min", -bound),
                            ("output_max", bound)):
            self.register_buffer(name, torch.tensor(value))

    def forward(self, x):
        x = torch.clamp(x, self.input_min, self.input_max)
        return torch.clamp(self.linear(x), self.output_min, self.output_max)


class Gated(nn.Module):
    def __init__(self, bound: float = math.inf):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 2, stride=2)
        self.mix = ClippableLinear(4, bound)
        self.head = nn.Linear(4, 3)

    def forward(self, x):
        h = torch.relu(self.conv(x)).mean((2, 3))
        return self.head(torch.relu(self.mix(h)))


@pytest.mark.parametrize("method", ["pasc", "bitplane"])
def test_clamps_with_infinite_buffers_convert_exactly(method):
    torch.manual_seed(0)
    qann = sb.prepare(Gated(), levels=4, threshold=1.0).double().eval()
    snn = sb.convert(qann, method)
    x = torch.randn(8, 1, 6, 6, dtype=torch.float64)
    report = sb.verify(qann, snn, x)
    assert report.agreement == 1.0 and sum(report.mismatches.values()) == 0 and report.max_logit_diff < 1e-9


def test_a_relu_method_converts_them_too_and_finite_bounds_stay_refused():
    torch.manual_seed(0)
    data = torch.rand(32, 1, 6, 6)
    snn = sb.convert(Gated().eval(), "network-level", T=2, calibration_data=data)
    assert sorted(snn.neurons()) == ["relu", "relu_1"]
    with pytest.raises(ConversionError, match="clamp"):  # a pretrained checkpoint's finite bounds: nonlinear
        sb.convert(Gated(bound=3.0).eval(), "network-level", T=2, calibration_data=data)


class ReadAsValue(ClippableLinear):
    def forward(self, x):
        return super().forward(x) + self.output_max  # the +inf read as a value, not as a bound


def test_an_inf_the_graph_reads_otherwise_is_still_refused():
    model = Gated().eval()
    model.mix = ReadAsValue(4)
    with pytest.raises(ConversionError, match=r"mix\.output_max holds 1 NaN or inf"):
        sb.convert(model, "network-level", T=2, calibration_data=torch.rand(32, 1, 6, 6))
