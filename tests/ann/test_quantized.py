"""The quantized activation of any f against its formula (docs/methods.md §8):
k = clip(floor(f(z)·L/θ + 1/2), k_min, L), output θ/L·k, straight-through floor, gradient
passing at the clip bounds, θ's gradient by autograd."""
from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings, strategies as st

import spikebridge as sb
from spikebridge import SpikeBridgeError
from spikebridge.activations import FUNCTIONS, PARAMETRIC, activation, base_name, symmetric
from spikebridge.ann.qcfs import QCFS, keep_thresholds_positive
from spikebridge.ann.quantized import QuantizedActivation

from helpers import SITE_FUNCTIONS

F64 = torch.float64
SELU_ALPHA, SELU_SCALE = 1.6732632423543772848170429916717, 1.0507009873554804934193349852946
FAST = settings(max_examples=40, deadline=None)
FORMULAS = {  # f written out from its definition, in float64
    "relu": lambda z: max(z, 0.0),
    "relu_squared": lambda z: max(z, 0.0) ** 2,
    "gelu": lambda z: 0.5 * z * (1 + math.erf(z / math.sqrt(2))),
    "gelu_tanh": lambda z: 0.5 * z * (1 + math.tanh(math.sqrt(2 / math.pi) * (z + 0.044715 * z ** 3))),
    "silu": lambda z: z / (1 + math.exp(-z)),
    "hardswish": lambda z: z * min(max(z + 3, 0.0), 6.0) / 6,
    "sigmoid": lambda z: 1 / (1 + math.exp(-z)),
    "hardsigmoid": lambda z: min(max(z / 6 + 0.5, 0.0), 1.0),
    "tanh": math.tanh,
    "mish": lambda z: z * math.tanh(math.log1p(math.exp(z))),
    "selu": lambda z: SELU_SCALE * (z if z > 0 else SELU_ALPHA * math.expm1(z)),
    "leaky_relu(0.01)": lambda z: z if z >= 0 else 0.01 * z,
    "leaky_relu(0.2)": lambda z: z if z >= 0 else 0.2 * z,
    "elu(1.0)": lambda z: z if z > 0 else math.expm1(z),
    "elu(0.5)": lambda z: z if z > 0 else 0.5 * math.expm1(z),
    "celu(2.0)": lambda z: max(0.0, z) + min(0.0, 2.0 * math.expm1(z / 2.0)),
    "softplus(1.0, 20.0)": lambda z: z if z > 20 else math.log1p(math.exp(z)),
    "softplus(2.0, 3.0)": lambda z: z if 2 * z > 3 else math.log1p(math.exp(2 * z)) / 2,
}


def test_every_function_has_a_formula():
    assert set(FORMULAS) == set(SITE_FUNCTIONS)
    assert set(FUNCTIONS) | set(PARAMETRIC) == {base_name(name) for name in SITE_FUNCTIONS}


@pytest.mark.parametrize("name", ["leaky_relu", "leaky_relu()", "elu(a)", "elu(nan)", "softplus(1.0, x)", "swish"])
def test_unknown_or_malformed_function_names_are_refused(name):
    with pytest.raises(SpikeBridgeError, match="unknown activation function"):
        activation(name)


@FAST
@given(function=st.sampled_from(SITE_FUNCTIONS), levels=st.integers(1, 12), k_min=st.integers(-2, 0),
       theta=st.floats(0.05, 4.0), seed=st.integers(0, 2 ** 16))
def test_forward_is_the_formula(function, levels, k_min, theta, seed):
    k_min = max(k_min, -levels)
    z = torch.randn(64, generator=torch.Generator().manual_seed(seed), dtype=F64) * 4
    site = QuantizedActivation(function, levels, k_min, theta).double()
    theta = site.threshold.item()  # θ as the site holds it
    out, k = site(z), site.level(z)
    for zi, oi, ki in zip(z.tolist(), out.tolist(), k.tolist()):
        fz = FORMULAS[function](zi)
        want = min(max(math.floor(fz * levels / theta + 0.5), k_min), levels)
        if abs(fz * levels / theta + 0.5 - round(fz * levels / theta + 0.5)) > 1e-9:  # not on a rounding edge
            assert ki == want
        assert oi == pytest.approx(theta / levels * ki, abs=1e-12)


@FAST
@given(function=st.sampled_from(SITE_FUNCTIONS), levels=st.integers(1, 12), theta=st.floats(0.05, 4.0),
       seed=st.integers(0, 2 ** 16))
def test_straight_through_gradients(function, levels, theta, seed):
    """dy/dz = f'(z) where k_min <= k <= L (bounds included), else 0; dy/dθ = (k − f(z)·L/θ)/L
    inside, k/L outside (autograd of θ/L·k with the straight-through floor)."""
    k_min = -levels if symmetric(function) else -1 if function in ("gelu", "gelu_tanh", "silu", "hardswish", "mish") else 0
    z = (torch.randn(64, generator=torch.Generator().manual_seed(seed), dtype=F64) * 4).requires_grad_()
    site = QuantizedActivation(function, levels, k_min, theta).double()
    theta = site.threshold.item()  # θ as the site holds it
    site(z).sum().backward()
    zd = z.detach().clone().requires_grad_()
    fz = activation(function)(zd)
    (dfdz,) = torch.autograd.grad(fz.sum(), zd)
    raw = torch.floor(fz.detach() * levels / theta + 0.5)
    inside = (raw >= k_min) & (raw <= levels)
    assert torch.allclose(z.grad, torch.where(inside, dfdz, torch.zeros_like(dfdz)))
    k = raw.clamp(k_min, levels)
    dtheta = torch.where(inside, (k - fz.detach() * levels / theta) / levels, k / levels).sum()
    assert site.threshold.grad.item() == pytest.approx(dtheta.item(), abs=1e-9)


@FAST
@given(levels=st.integers(1, 12), theta=st.floats(0.05, 4.0), seed=st.integers(0, 2 ** 16))
def test_relu_with_k_min_0_is_qcfs(levels, theta, seed):
    z = torch.randn(64, generator=torch.Generator().manual_seed(seed), dtype=F64) * 4
    assert torch.equal(QuantizedActivation("relu", levels, 0, theta).double()(z), QCFS(levels, theta).double()(z))


def test_state_dict_keeps_function_and_k_min():
    site = QuantizedActivation("gelu_tanh", 5, -2, 1.5, channels=3)
    twin = QuantizedActivation("sigmoid", 2, 0, 1.0, channels=3)
    twin.load_state_dict(site.state_dict())
    assert (twin.function, twin.k_min, twin.levels) == ("gelu_tanh", -2, 5)
    z = torch.randn(2, 3, 4)
    assert torch.equal(twin(z), site(z))


@pytest.mark.parametrize("args, match", [(("elu", 4, -1), "unknown activation"), (("gelu", 2, -3), "k_min"),
                                         (("gelu", 4, 1), "k_min")])
def test_bad_arguments_are_one_line_errors(args, match):
    with pytest.raises(SpikeBridgeError, match=match):
        QuantizedActivation(*args)


def test_tanh_sites_are_symmetric_in_prepare_and_set_levels():
    model = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.Tanh(), torch.nn.Linear(3, 2))
    qann = sb.prepare(model, levels=6)
    (site,) = sb.sites(qann).values()
    assert (site.function, site.k_min, site.levels, site.threshold.item()) == ("tanh", -6, 6, 1.0)
    sb.set_levels(qann, 3)
    assert (site.k_min, site.levels) == (-3, 3)
    z = torch.linspace(-3, 3, 101, dtype=F64)
    assert torch.equal(site.double()(z), -site.double()(-z))  # odd, like tanh (rounding aside at no edge here)


def test_prepare_starts_bounded_activations_at_their_bound():
    model = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.ReLU6(), torch.nn.Linear(3, 3), torch.nn.Sigmoid(),
                                torch.nn.Linear(3, 3), torch.nn.SiLU())
    relu6, sigmoid, silu = sb.sites(sb.prepare(model, levels=6, threshold=3.0)).values()
    assert type(relu6) is QCFS and relu6.threshold.item() == 6.0
    assert (sigmoid.function, sigmoid.k_min, sigmoid.threshold.item()) == ("sigmoid", 0, 1.0)
    assert (silu.function, silu.k_min, silu.threshold.item()) == ("silu", -1, 3.0)


def test_keep_thresholds_positive_covers_quantized_sites():
    site = QuantizedActivation("gelu", 4, -1, 1.0)
    with torch.no_grad():
        site.threshold.fill_(-2.0)
    keep_thresholds_positive(site)
    assert site.threshold.item() == pytest.approx(1e-3)
