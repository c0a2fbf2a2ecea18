"""QCFS activation (METHODS §0): forward is the formula, gradients are the formula's with a
straight-through floor."""
import pytest
import torch
from hypothesis import given, settings, strategies as st

from spikebridge import QCFS, SpikeBridgeError
from spikebridge.ann.qcfs import qcfs


def reference_gradients(z, theta, L, w):
    """d/dz and d/dθ of Σ w·θ/L·clip(floor(z·L/θ + 1/2), 0, L) with floor straight-through and
    the clip's subgradient 1 at its bounds (the published QCFS code under the torch it was
    written for): inside 0 <= k <= L, out = z + θ/(2L) + (k − y)θ/L with y = z·L/θ + 1/2 held
    fixed, so d/dz = 1 and d/dθ = k/L − z/θ; above (k > L) out = θ; below out = 0."""
    k = torch.floor(z * L / theta + 0.5)
    inside, above = ((k >= 0) & (k <= L)).double(), (k > L).double()
    return w * inside, (w * (inside * (k / L - z / theta) + above)).sum()


@settings(max_examples=60, deadline=None)
@given(L=st.integers(1, 32), theta=st.floats(0.05, 20), seed=st.integers(0, 2**16))
def test_forward_and_gradients_match_formula(L, theta, seed):
    m = QCFS(L, theta).double()
    theta = m.threshold.item()  # θ as stored (float32-rounded at construction)
    g = torch.Generator().manual_seed(seed)
    z = (torch.randn(64, generator=g, dtype=torch.float64) * theta).requires_grad_()
    # and points exactly on the bounds' bins: level 0 (just below the first step) and level L
    z = torch.cat([z, torch.tensor([0.0, theta / (4 * L), theta, theta * (1 - 1 / (4 * L))], dtype=torch.float64)])
    out = m(z)
    expected_levels = torch.clamp(torch.floor(z.detach() * L / theta + 0.5), 0, L)
    assert torch.equal(out.detach(), expected_levels * m.threshold.detach() / L)
    assert torch.equal(m.level(z.detach()), expected_levels)

    w = torch.randn(z.numel(), generator=g, dtype=torch.float64)
    gz, gt = torch.autograd.grad((out * w).sum(), [z, m.threshold])
    rz, rt = reference_gradients(z.detach(), theta, L, w)
    assert torch.allclose(gz, rz) and torch.allclose(gt, rt)


def test_units_at_level_0_and_L_learn():
    """The clip passes the gradient at its bounds: a unit in the bin of level 0 or of level L
    gets d/dz = 1; only units below −θ/(2L) or above θ(L + 1/2)/L get none."""
    theta, L = 8.0, 3
    z = torch.tensor([-2.0, -1.0, 0.0, 1.0, 5.0, 7.5, 9.0, 9.5], requires_grad=True)
    QCFS(L, theta)(z).sum().backward()
    # bins: level 0 is [−4/3, 4/3), level 3 is [20/3, 28/3)
    assert z.grad.tolist() == [0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0]


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
    assert b.levels == 3 and b.threshold.item() == 2.0


@pytest.mark.parametrize("bad", [0, -2, 2.5, "8", True])
def test_bad_levels_are_user_errors(bad):
    with pytest.raises(SpikeBridgeError, match="levels must be an integer >= 1"):
        QCFS(bad)


def test_training_keeps_every_threshold_positive():
    """A loss that drives θ below 0 (as one epoch at L = 3 did: θ = -7.5) leaves θ at THETA_MIN
    after every step, so the site still computes a staircase a spiking neuron can emit."""
    from torch import nn

    import spikebridge as sb
    from spikebridge.ann.qcfs import THETA_MIN
    from spikebridge.train.loop import _train_epoch

    torch.manual_seed(0)
    qann = sb.prepare(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3)), levels=3, threshold=0.5)
    push_down = lambda model: 100.0 * sum(s.threshold.sum() for s in sb.sites(model).values())  # noqa: E731
    opt = torch.optim.SGD(qann.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0)
    data = [(torch.randn(16, 4), torch.randint(0, 3, (16,))) for _ in range(3)]
    _train_epoch(qann, qann, data, opt, sched, torch.device("cpu"), push_down, "", False)
    assert [float(s.threshold) for s in sb.sites(qann).values()] == [pytest.approx(THETA_MIN)]
