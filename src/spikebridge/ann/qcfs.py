"""The QCFS activation (docs/methods.md §0).

    QCFS(z) = θ/L · clip(floor(z·L/θ + 1/2), 0, L)

θ (λ in the QCFS paper) is learnable, a scalar per site by default or one value per channel.
Backward: floor is straight-through and the clip passes the gradient at its bounds (its
subgradient 1 there); θ gets the autograd gradient of the expression above (as the published
QCFS code does; the paper's closed form for dθ is wrong).
"""
from __future__ import annotations

import torch
from torch import nn

from ..errors import check_levels, check_positive


def floor_ste(x: torch.Tensor) -> torch.Tensor:
    """floor(x) forward, identity backward (straight-through estimator)."""
    return x + (torch.floor(x) - x).detach()


def qcfs_level(z: torch.Tensor, threshold: torch.Tensor, levels: int) -> torch.Tensor:
    """Integer level k = clip(floor(z·L/θ + 1/2), 0, L), straight-through in z and θ.

    The gradient passes wherever 0 <= floor(z·L/θ + 1/2) <= L, bounds included: the clip's
    subgradient is 1 at its bounds, as torch.clamp's was when the QCFS code was published.
    torch 2.14's clamp passes nothing at a bound, which would stop every unit at level 0 or L
    from learning (see docs/methods.md)."""
    k = floor_ste(z * levels / threshold + 0.5)
    return torch.where((k >= 0) & (k <= levels), k, k.detach().clamp(0, levels))


def qcfs(z: torch.Tensor, threshold: torch.Tensor, levels: int) -> torch.Tensor:
    """QCFS(z) = θ/L · level(z)."""
    return qcfs_level(z, threshold, levels) * threshold / levels


THETA_MIN = 1e-3


@torch.no_grad()
def keep_thresholds_positive(model: nn.Module) -> None:
    """Project every QCFS θ of ``model`` onto θ >= THETA_MIN (after an optimiser step; docs §0).

    Nothing in the QCFS gradient keeps θ positive, and with the clip's subgradient 1 at its
    bounds a site's θ can cross 0 (seen: θ = −7.5 after one epoch at L = 3). With θ < 0 the
    site computes a negated staircase that no spiking neuron emits: PASC and rate-coded IF
    then disagree with the ANN on almost every image, and θ = 0 divides by zero."""
    for module in model.modules():
        if isinstance(module, QCFS):
            module.threshold.clamp_(min=THETA_MIN)


class QCFS(nn.Module):
    """A QCFS activation site with its own threshold θ and number of levels L.

    ``channels`` > 0 makes θ channel-wise (dimension 1 of the input). ``levels`` is kept in
    the state dict (as extra state), so a checkpoint restores it with the weights.
    """

    def __init__(self, levels: int = 8, threshold: float = 8.0, channels: int = 0):
        super().__init__()
        self.levels = check_levels(levels)
        shape = (channels,) if channels else ()
        self.threshold = nn.Parameter(torch.full(shape, check_positive(threshold, "threshold")))

    def theta(self, ndim: int) -> torch.Tensor:
        """θ shaped to broadcast against an input of ``ndim`` dimensions."""
        if self.threshold.dim() == 0:
            return self.threshold
        return self.threshold.view(-1, *([1] * (ndim - 2)))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return qcfs(z, self.theta(z.dim()), self.levels)

    def level(self, z: torch.Tensor) -> torch.Tensor:
        """The integer level of each element (no gradient needed for analysis)."""
        return qcfs_level(z, self.theta(z.dim()), self.levels)

    def get_extra_state(self):
        return {"levels": self.levels}

    def set_extra_state(self, state):
        self.levels = check_levels(state["levels"])

    def extra_repr(self) -> str:
        kind = "channel-wise" if self.threshold.dim() else "layer-wise"
        return f"levels={self.levels}, {kind} threshold"

