"""The elementwise functions f a quantized activation site may quantize (docs/methods.md §8).

A site computes k = clip(floor(f(z)·L/θ + 1/2), k_min, L) and outputs s·k with step s = θ/L.
Both the ANN's ``QuantizedActivation`` and the sum-coded neurons that emit k read f from this
table by name, so a data-only SNN file names f by a string: a key of ``FUNCTIONS``, or a
function of ``PARAMETRIC`` with its numbers, e.g. "leaky_relu(0.1)" (``parametric_name``).
"relu" with k_min = 0 is QCFS.
"""
from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable

import torch
import torch.nn.functional as F

from .errors import SpikeBridgeError

def relu_squared(z: torch.Tensor) -> torch.Tensor:
    """ReLU(z)²: timm's StarReLU (s·ReLU(z)² + b) and Primer's squared ReLU."""
    return torch.relu(z).square()


class ReLUSquared(torch.nn.Module):
    """A call of ``relu_squared``: prepare() writes a ReLU whose only reader squares it as one
    of these, which the op table knows as one activation (docs/methods.md §8)."""

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return relu_squared(z)


FUNCTIONS = {
    "relu": torch.relu,
    "relu_squared": relu_squared,
    "gelu": F.gelu,
    "gelu_tanh": functools.partial(F.gelu, approximate="tanh"),
    "silu": F.silu,
    "hardswish": F.hardswish,
    "sigmoid": torch.sigmoid,
    "hardsigmoid": F.hardsigmoid,
    "tanh": torch.tanh,
    "mish": F.mish,
    "selu": torch.selu,
}
# functions of z and numbers, f(z, *numbers) (the numbers after the input, positionally)
PARAMETRIC = {
    "leaky_relu": F.leaky_relu,   # negative_slope
    "elu": F.elu,                 # alpha
    "celu": F.celu,               # alpha
    "softplus": F.softplus,       # beta, threshold
}
# negative values of the order of the positive ones (odd, or unbounded below, or down to −α):
# their sites get as many negative levels as positive, k_min = −L
SYMMETRIC = {"tanh", "leaky_relu", "elu", "celu", "selu"}


def parametric_name(function: str, *numbers: float) -> str:
    """The name of ``function`` of ``PARAMETRIC`` with ``numbers``: 'leaky_relu(0.1)'."""
    return f"{function}({', '.join(repr(float(n)) for n in numbers)})"


@functools.cache
def activation(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """f of a site named ``name`` (a key of ``FUNCTIONS`` or a ``parametric_name``); an unknown
    name is a SpikeBridgeError naming the known ones."""
    if name in FUNCTIONS:
        return FUNCTIONS[name]
    match = re.fullmatch(r"(\w+)\((.*)\)", name)
    if match and match[1] in PARAMETRIC:
        try:
            numbers = [float(part) for part in match[2].split(",")]
        except ValueError:
            numbers = [math.nan]
        if not any(math.isnan(n) for n in numbers):
            return functools.partial(lambda z, f, numbers: f(z, *numbers), f=PARAMETRIC[match[1]], numbers=numbers)
    raise SpikeBridgeError(f"unknown activation function {name!r}; known: {sorted(FUNCTIONS)} and "
                           f"{[f + '(numbers)' for f in sorted(PARAMETRIC)]}")


def base_name(name: str) -> str:
    """The function a site name means, without its numbers: 'leaky_relu(0.1)' → 'leaky_relu'."""
    return name.split("(", 1)[0]


def symmetric(name: str) -> bool:
    """Whether a site of f = ``name`` gets k_min = −L (``SYMMETRIC``)."""
    return base_name(name) in SYMMETRIC


def quantized_level(function: str, z: torch.Tensor, threshold: torch.Tensor, levels: int, k_min: int,
                    dtype: torch.dtype | None = torch.int64) -> torch.Tensor:
    """The closed form k = clip(floor(f(z)·L/θ + 1/2), k_min, L) as ``dtype`` (None: the float
    it is computed in, whose integers k are exact), θ broadcast against z."""
    k = torch.floor(activation(function)(z) * levels / threshold + 0.5).clamp_(k_min, levels)
    return k if dtype is None else k.to(dtype)
