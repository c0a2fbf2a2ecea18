"""QCFS activation (METHODS §0): forward is the formula, gradients are the formula's with a
straight-through floor."""
import pytest
import torch
from hypothesis import given, settings, strategies as st

from spikebridge import QCFS, SpikeBridgeError
from spikebridge.qcfs import qcfs


def reference(z, theta, L):
    """θ/L · clip(floor(z·L/θ + 1/2), 0, L) with floor replaced by identity in backward."""
    u = z * L / theta + 0.5
    u = u + (torch.floor(u) - u).detach()
    return torch.clamp(u, 0, L) * theta / L


@settings(max_examples=60, deadline=None)
@given(L=st.integers(1, 32), theta=st.floats(0.05, 20), seed=st.integers(0, 2**16))
def test_forward_and_gradients_match_formula(L, theta, seed):
    g = torch.Generator().manual_seed(seed)
    z = (torch.randn(64, generator=g, dtype=torch.float64) * theta).requires_grad_()
    m = QCFS(L, theta).double()
    out = m(z)
    expected_levels = torch.clamp(torch.floor(z.detach() * L / theta + 0.5), 0, L)
    assert torch.equal(out.detach(), expected_levels * m.threshold.detach() / L)
    assert torch.equal(m.level(z.detach()), expected_levels)

    w = torch.randn(64, generator=g, dtype=torch.float64)
    gz, gt = torch.autograd.grad((out * w).sum(), [z, m.threshold])
    z2 = z.detach().clone().requires_grad_()
    t2 = torch.tensor(theta, dtype=torch.float64, requires_grad=True)
    rz, rt = torch.autograd.grad((reference(z2, t2, L) * w).sum(), [z2, t2])
    assert torch.allclose(gz, rz) and torch.allclose(gt, rt)


def test_channel_wise_threshold_broadcasts_over_channel_dim():
    m = QCFS(4, 1.0, channels=3)
    with torch.no_grad():
        m.threshold.copy_(torch.tensor([1.0, 2.0, 4.0]))
    z = torch.ones(2, 3, 5, 5)
    out = m(z)
    assert torch.allclose(out[:, 0], qcfs(z[:, 0], torch.tensor(1.0), 4))
    assert torch.allclose(out[:, 2], qcfs(z[:, 2], torch.tensor(4.0), 4))


def test_levels_travel_in_state_dict():
    a, b = QCFS(3, 2.0), QCFS(8, 8.0)
    b.load_state_dict(a.state_dict())
    assert b.levels == 3 and float(b.threshold) == 2.0


@pytest.mark.parametrize("bad", [0, -2, 2.5, "8", True])
def test_bad_levels_are_user_errors(bad):
    with pytest.raises(SpikeBridgeError, match="levels must be an integer >= 1"):
        QCFS(bad)
