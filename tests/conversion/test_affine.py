"""Arithmetic on spike trains (docs/methods.md §8): sums of trains scaled by numbers plus a
constant run under each coding's rule and stay exact for PASC and bit-plane in float64; a
product or quotient of trains, rounding and nonlinear elementwise ops are refused naming the
node; arithmetic on numbers read off shapes runs as Python."""
from __future__ import annotations

import operator

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import spikebridge as sb
from spikebridge import ConversionError
from spikebridge.conversion.ops import OPS
from spikebridge.snn.codings import RATE, SUM


class Net(nn.Module):
    """conv → ReLU → ``body(h, g)`` → ReLU → linear, ``tail`` applied to the logits."""

    def __init__(self, body, tail=None):
        super().__init__()
        self.conv, self.conv2 = nn.Conv2d(1, 4, 3), nn.Conv2d(1, 4, 3)
        self.fc = nn.Linear(4 * 6 * 6, 3)
        self.body, self.tail = body, tail

    def forward(self, x):
        h, g = F.relu(self.conv(x)), F.relu(self.conv2(x))
        out = self.fc(torch.flatten(F.relu(self.body(h, g)), 1))
        return self.tail(out) if self.tail else out


def _qann(body, tail=None):
    torch.manual_seed(0)
    return sb.prepare(Net(body, tail), levels=4, threshold=1.0).double()


X = torch.randn(16, 1, 8, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)


def test_the_coding_spreads_a_constant_over_the_steps():
    assert RATE.constant_per_step(0.5, 4) == 0.5     # the value of a rate train is its mean
    assert SUM.constant_per_step(0.5, 4) == 0.125    # the value of a sum-coded train is its sum


@pytest.mark.parametrize("body", [
    lambda h, g: h + 0.5,                            # the example: 155 level mismatches before
    lambda h, g: torch.add(h, g, alpha=-2.5),        # alpha was ignored before
    lambda h, g: torch.sub(h, g, alpha=0.3) - 0.1,
    lambda h, g: torch.rsub(h, 1.0),
    lambda h, g: 3 * h - g / 3 + 0.1,
    lambda h, g: (h.add_(g), h * 2)[1],              # h changed in place, then read
], ids=["add-constant", "add-alpha", "sub-alpha", "rsub", "combination", "in-place"])
@pytest.mark.parametrize("method", ["pasc", "bitplane"])
def test_affine_ops_on_sum_coded_trains_are_exact(body, method):
    # (levels are multiples of θ/L = 1/4 here: coefficients are chosen so that no pre-activation
    # lies exactly on a rounding boundary (k + 1/2)/4, where float rounding would decide the level)
    qann = _qann(body)
    report = sb.verify(qann, sb.convert(qann, method).double(), X)
    assert report.agreement == 1.0 and sum(report.mismatches.values()) == 0, report.table()
    assert report.max_logit_diff < 1e-9


@pytest.mark.parametrize("method, T", [("qcfs", 3), ("pasc", None), ("bitplane", None), ("bitplane", 5)])
def test_a_constant_after_the_last_layer_shifts_the_logits_by_it_under_every_coding(method, T):
    plain, shifted = _qann(lambda h, g: h), _qann(lambda h, g: h, tail=lambda y: y - 0.75)
    a = sb.convert(plain, method).double().simulate(X, T).logits
    b = sb.convert(shifted, method).double().simulate(X, T).logits
    assert torch.allclose(b[-1], a[-1] - 0.75, atol=1e-12)


@pytest.mark.parametrize("body, reason", [
    (lambda h, g: torch.div(h, 2, rounding_mode="floor"), "rounds its result"),
    (lambda h, g: h / 0, "divides by zero"),
], ids=["rounding", "zero"])
def test_non_affine_arithmetic_on_trains_is_refused_naming_the_node(body, reason):
    with pytest.raises(ConversionError, match=rf"node '\w+' .*{reason}.*docs/methods.md §8"):
        sb.convert(_qann(body), "pasc")


@pytest.mark.parametrize("body", [lambda h, g: h * g, lambda h, g: h / (g + 1), lambda h, g: 1 / (h + 1),
                                  lambda h, g: h * h.mean()], ids=["mul", "div", "rdiv", "mul-by-a-mean"])
def test_products_and_quotients_of_trains_run_on_decoded_values_exactly_and_are_listed(body):
    qann = _qann(body)
    for method in ("pasc", "bitplane"):
        snn = sb.convert(qann, method).double()
        report = sb.verify(qann, snn, X)
        assert report.agreement == 1.0 and report.max_logit_diff < 1e-9, report.table()
        ops = snn.simulate(X).analog_ops
        assert ops and {r["op"] for r in ops.values()} <= {"mul", "div", "mean"} and all(r["macs"] > 0 for r in ops.values())


NONLINEAR = next(op for op in OPS if op.name == "nonlinear_elementwise")
TWO_TRAINS = {torch.maximum, torch.minimum, operator.matmul, torch.matmul, "maximum", "minimum", "matmul"}
WITH_NUMBER = {torch.clamp: 1.0, torch.clip: 1.0, torch.clamp_min: 0.1, torch.clamp_max: 1.0, torch.pow: 2,
               operator.pow: 2, torch.fmod: 2, torch.remainder: 2, torch.floor_divide: 2, operator.floordiv: 2,
               operator.mod: 2, "clamp": 1.0, "clamp_": 1.0, "clip": 1.0, "clip_": 1.0, "clamp_min": 0.1,
               "clamp_min_": 0.1, "clamp_max": 1.0, "clamp_max_": 1.0, "pow": 2, "pow_": 2, "fmod": 2, "remainder": 2,
               "floor_divide": 2}


def _call(form, h, g):
    extra = (g,) if form in TWO_TRAINS else (WITH_NUMBER[form],) if form in WITH_NUMBER else ()
    return getattr(h, form)(*extra) if isinstance(form, str) else form(h, *extra)


@pytest.mark.parametrize("form", [*NONLINEAR.functions, *NONLINEAR.methods], ids=lambda f: getattr(f, "__name__", f))
def test_nonlinear_elementwise_ops_on_trains_are_refused_with_the_advice(form):
    body = lambda h, g: _call(form, h, g).expand_as(h) * 1.0  # noqa: E731  (reductions keep a shape)
    with pytest.raises(ConversionError, match=r"node '\w+'.*no step-by-step meaning on spike trains"):
        sb.convert(_qann(body), "pasc")


def test_arithmetic_on_shapes_runs_as_python_and_reads_the_anns_batch_size():
    # x.size(0) is the batch B at every step, not T·B; // and % on numbers are plain Python
    body = lambda h, g: h.view(h.size(0), h.size(1) // 2, -1).reshape(h.shape) * (h.size(0) % 5) / h.size(0)  # noqa
    qann = _qann(body)
    for method in ("pasc", "bitplane"):
        report = sb.verify(qann, sb.convert(qann, method).double(), X)
        assert report.agreement == 1.0 and sum(report.mismatches.values()) == 0, report.table()


def test_a_tensor_made_from_numbers_alone_is_refused():
    with pytest.raises(ConversionError, match="makes a tensor from numbers alone"):
        sb.convert(_qann(lambda h, g: h * torch.add(h.size(1), 1)), "pasc")
