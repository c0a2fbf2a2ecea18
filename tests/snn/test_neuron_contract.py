"""Contract tests of the neuron protocol, parametrised over every registered neuron class:
threshold buffers, output steps, state local to one call, config round trip, and what the
protocol's flags promise (time-driven neurons follow T; stepwise neurons expose one step)."""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from spikebridge.snn.codings import CODINGS
from spikebridge.snn.neurons import (
    NEURONS, BitplaneNeuron, EmulatedIFNeuron, IFNeuron, PASCNeuron, QuantizedBitplaneNeuron, QuantizedPASCNeuron,
    SpikingNeuron,
)

# One example per registered class: a neuron with per-channel thresholds for 3 channels.
EXAMPLES = {
    "IFNeuron": lambda: IFNeuron(torch.tensor([0.5, 1.0, 2.0]), torch.tensor([0.25, 0.5, 1.0]), T=4),
    "PASCNeuron": lambda: PASCNeuron(torch.tensor([0.5, 1.0, 2.0]), levels=5),
    "BitplaneNeuron": lambda: BitplaneNeuron(torch.tensor([0.5, 1.0, 2.0]), levels=7),
    "QuantizedPASCNeuron": lambda: QuantizedPASCNeuron(torch.tensor([0.5, 1.0, 2.0]), levels=5, function="gelu",
                                                       k_min=-2),
    "QuantizedBitplaneNeuron": lambda: QuantizedBitplaneNeuron(torch.tensor([0.5, 1.0, 2.0]), levels=7,
                                                               function="silu", k_min=-1),
    "EmulatedIFNeuron": lambda: EmulatedIFNeuron(torch.tensor([0.5, 1.0, 2.0]), torch.tensor([0.25, 0.5, 1.0]), T=4,
                                                 reset="zero", strict=True, v0_mode="per-step"),
}
SIGNED = {"QuantizedPASCNeuron", "QuantizedBitplaneNeuron"}  # may emit inhibitory (negative) spikes


def test_every_registered_neuron_has_an_example():
    assert set(NEURONS) == set(EXAMPLES), "add an example for each new neuron class"
    assert {IFNeuron, PASCNeuron, BitplaneNeuron} <= set(NEURONS.values())


@pytest.fixture(params=sorted(EXAMPLES))
def neuron(request) -> SpikingNeuron:
    return EXAMPLES[request.param]().eval()


def test_threshold_is_a_buffer_not_a_parameter(neuron):
    buffers = dict(neuron.named_buffers())
    assert "threshold" in buffers and buffers["threshold"].shape == (3,)
    assert not any(name == "threshold" for name, _ in neuron.named_parameters())


def test_declares_its_coding_and_time_policy(neuron):
    assert neuron.coding in CODINGS.values()
    assert isinstance(neuron.time_driven, bool) and isinstance(neuron.stepwise, bool)


@pytest.mark.parametrize("t_in", [1, 3])
def test_output_length_is_steps_out(neuron, t_in):
    x = torch.rand(t_in if not neuron.time_driven or t_in == 1 else getattr(neuron, "T"), 2, 3, 4)
    out = neuron(x)
    assert out.shape == (neuron.steps_out(x.shape[0]), 2, 3, 4)


def test_state_is_local_to_one_call(neuron):
    x = torch.rand(1, 2, 3, 4) * 3
    first = neuron(x)
    neuron(torch.rand(1, 2, 3, 4) * 5)  # another input in between
    assert torch.equal(neuron(x), first)


def test_outputs_are_zero_or_a_spike_value_of_the_channel(neuron):
    out = neuron(torch.rand(1, 2, 3, 4) * 6 - 3)
    theta = neuron.threshold.view(1, 1, 3, 1)
    # every non-zero output is a multiple of θ / 2^k or θ / L, at most θ in size: never another channel's, and
    # negative only for the signed neurons of quantized activations
    value = out.abs() if type(neuron).__name__ in SIGNED else out
    assert torch.all((out == 0) | ((value > 0) & (value <= theta + 1e-6)))


@pytest.mark.parametrize("name", sorted(EXAMPLES))
@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2 ** 31 - 1), t_in=st.sampled_from([1, 4]), scale=st.floats(0.1, 8.0))
def test_a_declared_spike_grid_holds_every_output(name, seed, t_in, scale):
    """``spike_grid()`` = (a, n), where a neuron declares one: every output is k·a, channel by
    channel, with k an integer in 0..n, so that the layers it feeds may compute on the k
    (integer synapses). IF: (θ, 1); PASC: (θ/L, 1); bit-plane: (θ/L, 2^(n−1))."""
    neuron = EXAMPLES[name]().eval()
    grid = neuron.spike_grid()
    if grid is None:
        return
    x = (torch.rand(t_in if t_in == 1 or not neuron.time_driven else neuron.T, 2, 3, 5,
                    generator=torch.Generator().manual_seed(seed)) * 2 - 0.5) * scale
    out = neuron(x)
    value, count = grid
    k = out / value.view(1, 1, 3, 1)
    assert torch.equal(k, k.round()) and k.min() >= 0 and k.max() <= count and (k > 0).any()


def test_time_driven_neurons_follow_T(neuron):
    if not neuron.time_driven:
        assert neuron.steps_out(1) == neuron.steps_out(7)
        return
    neuron.T = 6
    assert neuron(torch.rand(1, 2, 3, 4)).shape[0] == 6 == neuron.steps_out(1)


def test_config_rebuilds_the_same_neuron(neuron):
    twin = type(neuron)(neuron.threshold.clone(), **neuron.config())
    twin.load_state_dict(neuron.state_dict())
    x = torch.rand(1, 2, 3, 4) * 3
    assert torch.equal(twin(x), neuron(x))


def test_stepwise_neurons_expose_one_step_and_a_bias(neuron):
    if not neuron.stepwise:
        return
    x = torch.rand(1, 2, 3, 4) * 3
    v = neuron.init_state(x[0])
    steps = []
    for t in range(neuron.T):
        v, o = neuron.step(v, x[0], t)
        steps.append(o)
    assert torch.equal(torch.stack(steps), neuron(x))
    assert neuron.bias.dim() == 2
