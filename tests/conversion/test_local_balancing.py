"""local-balancing (docs/methods.md §9): thresholds from the balancing update on the clipped
ANN, checked against the update written out by hand."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import spikebridge as sb
from spikebridge import OptionError


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 6), nn.ReLU(), nn.Linear(6, 4), nn.ReLU(), nn.Linear(4, 3)).eval()


def _by_hand(net, batches, channel_wise, rate=1.0, passes=1):
    """θ ← θ + 2c·mean((a − θ)⁺) per batch and site, the next layer fed min(a, θ)."""
    theta = [torch.zeros(6 if channel_wise else (), dtype=torch.float64),
             torch.zeros(4 if channel_wise else (), dtype=torch.float64)]
    with torch.no_grad():
        for _ in range(passes):
            for x in batches:
                h = x.double()
                for i, layer in enumerate((net[0], net[2])):
                    a = torch.relu(h @ layer.weight.double().T + layer.bias.double())
                    over = (a - theta[i]).clamp_min(0)
                    theta[i] = theta[i] + 2 * rate * (over.mean(0) if channel_wise else over.mean())
                    h = torch.minimum(a, theta[i])
    return [torch.where(t > 0, t, torch.ones_like(t)) for t in theta]


@pytest.mark.parametrize("channel_wise", [True, False])
def test_thresholds_follow_the_balancing_update_with_upstream_clipped(channel_wise):
    net = _net()
    batches = [torch.randn(16, 5) for _ in range(3)]
    snn = sb.convert(net, "local-balancing", T=4, calibration_data=batches, channel_wise=channel_wise)
    expected = _by_hand(net, batches, channel_wise)
    neurons = list(snn.neurons().values())
    for neuron, theta in zip(neurons, expected):
        assert neuron.threshold.double() == pytest.approx(theta, rel=1e-5)
        assert torch.allclose(neuron.v0, neuron.threshold / 2)
    twice = sb.convert(net, "local-balancing", T=4, calibration_data=batches, channel_wise=channel_wise, passes=2,
                       rate=0.5, v0_fraction=0.0)
    for neuron, theta in zip(twice.neurons().values(), _by_hand(net, batches, channel_wise, 0.5, 2)):
        assert neuron.threshold.double() == pytest.approx(theta, rel=1e-5)
        assert not neuron.v0.any()


def test_a_channel_that_never_fires_stays_silent_and_bad_options_are_refused():
    net = _net()
    with torch.no_grad():
        net[0].bias[0] = -100.0  # unit 0 never fires
    snn = sb.convert(net, "local-balancing", T=2, calibration_data=[torch.randn(8, 5)])
    first = next(iter(snn.neurons().values()))
    assert first.threshold[0] == 1.0
    with pytest.raises(OptionError, match="rate must be positive"):
        sb.convert(net, "local-balancing", calibration_data=[torch.randn(8, 5)], rate=0.0)
