"""Fine-grained ℓ1 bit regulariser (METHODS.md §3, 001 Eq. 10–11)."""
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from spikebridge import prepare, sites
from spikebridge.errors import SpikeBridgeError
from spikebridge.ann.regularizer import BitCount, BitL1Regularizer, bit_count, bits_per_level


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3, padding=1)
        self.act = nn.ReLU()
        self.fc1 = nn.Linear(4 * 16, 8)
        self.fc2 = nn.Linear(8, 3)

    def forward(self, x):
        x = self.act(self.conv(x))
        x = torch.relu(self.conv(x[:, :2] * 0 + x[:, 2:])).flatten(1)
        return self.fc2(torch.relu(self.fc1(x)))


@pytest.mark.parametrize("levels", [1, 2, 3, 7, 8, 15, 16, 31])
def test_bits_per_level_is_ceil_log2(levels):
    assert bits_per_level(levels) == math.ceil(math.log2(levels + 1))


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 64), st.floats(0.05, 20.0), st.lists(st.integers(0, 64), min_size=1, max_size=40))
def test_forward_is_popcount_of_level(levels, theta, ks):
    ks = [min(k, levels) for k in ks]
    a = torch.tensor(ks, dtype=torch.float32) * theta / levels  # QCFS outputs θ·k/L
    out = bit_count(a, torch.tensor(theta), levels)
    assert out.tolist() == [bin(k).count("1") for k in ks]


@settings(max_examples=60, deadline=None)
@given(
    st.integers(1, 64),
    st.floats(0.05, 20.0),
    st.lists(st.floats(-30.0, 30.0), min_size=1, max_size=40),
    st.floats(1e-10, 10.0),
)
def test_surrogate_gradient_is_lambda_T_inside_zero_theta(levels, theta, values, lam):
    a = torch.tensor(values, dtype=torch.float64, requires_grad=True)
    th = torch.tensor(theta, dtype=torch.float64, requires_grad=True)
    (lam * BitCount.apply(a, th, levels).sum()).backward()
    T = math.ceil(math.log2(levels + 1))
    expected = [lam * T if 0 < v < theta else 0.0 for v in values]
    assert a.grad.tolist() == pytest.approx(expected, rel=1e-12, abs=0)
    assert th.grad is None  # the surrogate is w.r.t. the activation only


def test_channelwise_theta_broadcasts():
    theta = torch.tensor([1.0, 2.0]).view(1, 2, 1)
    a = torch.tensor([[[0.5], [0.5]]], requires_grad=True)  # levels 2 of L=4 at θ=1, 1 at θ=2
    out = bit_count(a, theta, 4)
    assert out.flatten().tolist() == [1.0, 1.0]
    out.sum().backward()
    assert a.grad.flatten().tolist() == [3.0, 3.0]


def _site_levels(model, x):
    """Reference: levels of every site computed from the site inputs with QCFS.level."""
    found, levels = sites(model), []
    hooks = [m.register_forward_hook(lambda m, i, o: levels.append((m, m.level(i[0]).long()))) for m in found.values()]
    model(x)
    for h in hooks:
        h.remove()
    return levels


@pytest.mark.parametrize("normalize", ["sum", "mean"])
def test_penalty_counts_bits_of_all_sites(normalize):
    torch.manual_seed(0)
    model = prepare(Tiny(), levels={"act": 3, "relu": 7, "relu_1": 16}, threshold=1.0)
    assert len(sites(model)) == 3
    x = torch.randn(5, 2, 4, 4)
    ref = _site_levels(model, x)
    total = sum(bin(k).count("1") for _, lv in ref for k in lv.flatten().tolist())
    n = sum(lv.numel() for _, lv in ref)
    with BitL1Regularizer(model, lam=0.5, normalize=normalize) as reg:
        model(torch.randn(2, 2, 4, 4))  # an earlier forward is forgotten
        model(x)
        assert len(reg._outputs) == 3
        penalty = reg.penalty()
        expected = 0.5 * total / (n if normalize == "mean" else 1)
        assert penalty.item() == pytest.approx(expected, rel=1e-6)
        penalty.backward()
    assert all(m.threshold.grad is not None for m in sites(model).values())
    assert model.conv.weight.grad is not None and model.conv.weight.grad.abs().sum() > 0
    assert not reg._handles and not reg._outputs


def test_penalty_gradient_reaches_activation_through_hooks():
    model = prepare(nn.Sequential(nn.Linear(3, 4), nn.ReLU()), levels=4, threshold=2.0)
    with torch.no_grad():
        model.get_submodule("0").weight.copy_(torch.eye(4, 3))
        model.get_submodule("0").bias.zero_()
    x = torch.tensor([[0.1, 1.0, 5.0]], requires_grad=True)  # levels 0, 2, 4 (saturated)
    reg = BitL1Regularizer(model, lam=2.0)
    model(x)
    reg.penalty().backward()
    reg.remove()
    # d/dz through QCFS (straight-through inside (0, θ)) of λ·T·[0 < a < θ]: only the middle input.
    assert x.grad.flatten().tolist() == [0.0, 2.0 * 3, 0.0]


def test_hooks_removed_and_errors():
    model = prepare(nn.Sequential(nn.Linear(3, 4), nn.ReLU()), levels=4)
    reg = BitL1Regularizer(model, lam=1.0)
    with pytest.raises(SpikeBridgeError):
        reg.penalty()
    reg.remove()
    model(torch.randn(2, 3))
    assert not reg._outputs
    with pytest.raises(SpikeBridgeError):
        BitL1Regularizer(model, lam=1.0, normalize="max")
    with pytest.raises(SpikeBridgeError):
        BitL1Regularizer(nn.Linear(2, 2), lam=1.0)
