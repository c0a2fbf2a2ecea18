"""The signed sum-coded neurons of quantized activations against the closed form
(docs/methods.md §8): after integrating z = Σx, PASC emits |k| spikes of sign(k)·θ/L and
bit-plane the bits of |k| MSB first with the sign on the spikes, k = clip(floor(f(z)·L/θ +
1/2), k_min, L); both trains sum to θ/L·k."""
from __future__ import annotations

import torch
from hypothesis import given, settings, strategies as st

from spikebridge.activations import quantized_level
from spikebridge.snn.neurons import QuantizedBitplaneNeuron, QuantizedPASCNeuron, bits_needed

from helpers import SITE_FUNCTIONS

F64 = torch.float64
FAST = settings(max_examples=60, deadline=None)
CASES = dict(function=st.sampled_from(SITE_FUNCTIONS), levels=st.integers(1, 12), k_min=st.integers(-3, 0),
             t_in=st.integers(1, 5), seed=st.integers(0, 2 ** 16))


def _input(seed, t_in):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(t_in, 4, 3, 5, generator=g, dtype=F64) * 3
    theta = torch.rand(3, generator=g, dtype=F64) * 2 + 0.1
    return x, theta


def _level(function, x, theta, levels, k_min):
    return quantized_level(function, x.sum(0), theta.view(1, 3, 1), levels, k_min)


@FAST
@given(**CASES)
def test_pasc_emits_k_as_signed_spikes(function, levels, k_min, t_in, seed):
    k_min = max(k_min, -levels)
    x, theta = _input(seed, t_in)
    neuron = QuantizedPASCNeuron(theta, levels, function, k_min)
    out, k = neuron(x), _level(function, x, theta, levels, k_min)
    unit = (theta / levels).view(1, 1, 3, 1)
    assert out.shape[0] == max(levels, -k_min)
    assert torch.equal((out != 0).sum(0), k.abs())  # |k| spikes ...
    assert torch.all((out == 0) | (out == k.sign().to(F64) * unit))  # ... each of value sign(k)·θ/L
    assert torch.allclose(out.sum(0), k.to(F64) * unit[0], atol=1e-12)


@FAST
@given(**CASES, extra=st.integers(0, 2))
def test_bitplane_emits_the_bits_of_k_with_its_sign(function, levels, k_min, t_in, seed, extra):
    k_min = max(k_min, -levels)
    x, theta = _input(seed, t_in)
    neuron = QuantizedBitplaneNeuron(theta, levels, function, k_min)
    assert neuron.T == bits_needed(max(levels, -k_min)) and not neuron.saturates()
    neuron.T += extra  # more steps: leading zeros
    out, k = neuron(x), _level(function, x, theta, levels, k_min)
    unit = (theta / levels).view(1, 3, 1)
    bits = (out / unit).abs().round().long()
    for t in range(neuron.T):
        assert torch.equal(bits[t], ((k.abs() >> (neuron.T - 1 - t)) & 1) << (neuron.T - 1 - t))
    assert torch.all((out == 0) | (out.sign() == k.sign().to(F64)))
    assert torch.allclose(out.sum(0), k.to(F64) * unit, atol=1e-12)


@FAST
@given(levels=st.integers(2, 12), T=st.integers(1, 3), seed=st.integers(0, 2 ** 16))
def test_bitplane_with_too_few_steps_saturates_the_magnitude(levels, T, seed):
    x, theta = _input(seed, 1)
    neuron = QuantizedBitplaneNeuron(theta, levels, "gelu", -1, T)
    k = _level("gelu", x, theta, levels, -1)
    assert neuron.saturates() == (2 ** T - 1 < levels)
    assert torch.allclose(neuron(x).sum(0), (k.sign() * k.abs().clamp(max=2 ** T - 1)).to(F64)
                          * (theta / levels).view(1, 3, 1), atol=1e-12)
