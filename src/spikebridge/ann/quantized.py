"""Quantized activations beyond ReLU: one learnable staircase of any f (docs/methods.md §8).

    k = clip(floor(f(z)·L/θ + 1/2), k_min, L),   output s·k,   step s = θ/L

f is a function of ``spikebridge.activations`` (GELU, SiLU, Hardswish, sigmoid, LeakyReLU,
...), L > 0 the positive levels and k_min <= 0 the negative ones (GELU >= −0.17, SiLU >= −0.28
and Hardswish >= −0.375 need one or two). QCFS is the case f = ReLU, k_min = 0, and this
class is a QCFS whose level also applies f and may go negative: it has QCFS's θ (learnable,
layer- or channel-wise, kept >= 1e-3 by ``keep_thresholds_positive``), and everything that
reads a site's θ and L reads it the same way. Backward as QCFS: floor is straight-through, the
clip passes the gradient at its bounds k_min and L, f has its own autograd derivative and θ
gets the autograd gradient of the expression.
"""
from __future__ import annotations

import torch

from ..activations import activation
from ..errors import SpikeBridgeError
from .qcfs import QCFS, floor_ste


def quantized_level(fz: torch.Tensor, threshold: torch.Tensor, levels: int, k_min: int) -> torch.Tensor:
    """k = clip(floor(f(z)·L/θ + 1/2), k_min, L) from f(z), straight-through (gradient 1 for
    k_min <= k <= L, bounds included, as ``qcfs_level``)."""
    k = floor_ste(fz * levels / threshold + 0.5)
    return torch.where((k >= k_min) & (k <= levels), k, k.detach().clamp(k_min, levels))


def check_k_min(k_min: int, levels: int) -> int:
    """k_min must be an int with −L <= k_min <= 0."""
    if isinstance(k_min, bool) or not isinstance(k_min, int) or not -levels <= k_min <= 0:
        raise SpikeBridgeError(f"k_min must be an integer in [-{levels}, 0] (the negative levels), got {k_min!r}")
    return k_min


class QuantizedActivation(QCFS):
    """A site quantizing ``function`` (a name in ``FUNCTIONS``) to levels k_min..L of step θ/L."""

    def __init__(self, function: str, levels: int = 8, k_min: int = -1, threshold: float = 8.0,
                 channels: int = 0):
        super().__init__(levels, threshold, channels)
        activation(function)  # a known f, or a SpikeBridgeError
        self.function = function
        self.k_min = check_k_min(k_min, self.levels)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        theta = self.theta(z.dim())
        return quantized_level(activation(self.function)(z), theta, self.levels, self.k_min) * theta / self.levels

    def level(self, z: torch.Tensor) -> torch.Tensor:
        return quantized_level(activation(self.function)(z), self.theta(z.dim()), self.levels, self.k_min)

    def get_extra_state(self):
        return {"levels": self.levels, "function": self.function, "k_min": self.k_min}

    def set_extra_state(self, state):
        super().set_extra_state(state)
        self.function, self.k_min = state["function"], check_k_min(state["k_min"], self.levels)

    def extra_repr(self) -> str:
        return f"{self.function}, k_min={self.k_min}, {super().extra_repr()}"
