"""The elementwise functions f a quantized activation site may quantize (docs/methods.md §8).

A site computes k = clip(floor(f(z)·L/θ + 1/2), k_min, L) and outputs s·k with step s = θ/L.
Both the ANN's ``QuantizedActivation`` and the sum-coded neurons that emit k read f from this
table by name, so a data-only SNN file names f by a string. "relu" with k_min = 0 is QCFS.
"""
from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

FUNCTIONS = {
    "relu": torch.relu,
    "gelu": F.gelu,
    "gelu_tanh": functools.partial(F.gelu, approximate="tanh"),
    "silu": F.silu,
    "hardswish": F.hardswish,
    "sigmoid": torch.sigmoid,
    "hardsigmoid": F.hardsigmoid,
    "tanh": torch.tanh,
}
SYMMETRIC = {"tanh"}  # odd functions: their sites get as many negative levels as positive, k_min = −L


def quantized_level(function: str, z: torch.Tensor, threshold: torch.Tensor, levels: int, k_min: int) -> torch.Tensor:
    """The closed form k = clip(floor(f(z)·L/θ + 1/2), k_min, L) as int64, θ broadcast against z."""
    return torch.floor(FUNCTIONS[function](z) * levels / threshold + 0.5).clamp(k_min, levels).to(torch.int64)
