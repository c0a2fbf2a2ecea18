"""Fine-grained ℓ1 bit regulariser (docs/methods.md §3, paper 001 Eq. 10–11).

    loss += λ · Σ_sites Σ_neurons popcount(k),   k = round(a·L/θ) the QCFS level of output a

Surrogate backward (001 Eq. 11): d popcount(k)/da = T on 0 < a < θ, else 0, with
T = ceil(log2(L+1)) bits, so d loss/da = λ·T there. The surrogate is with respect to the
activation only: the level's direct dependence on θ gets no gradient, but θ (and z) still
receive the penalty's gradient through a = QCFS(z; θ) by ordinary autograd.
"""
from __future__ import annotations

import torch
from torch import nn

from ..errors import SpikeBridgeError
from .prepare import sites


def bits_per_level(levels: int) -> int:
    """T = ceil(log2(L+1)): bits needed for the levels 0..L (docs/methods.md §3)."""
    return int(levels).bit_length()


def popcount(k: torch.Tensor, bits: int) -> torch.Tensor:
    """Number of 1-bits of each non-negative integer in ``k`` (< 2**bits)."""
    return sum(((k >> t) & 1) for t in range(bits))


class BitCount(torch.autograd.Function):
    """popcount(round(a·L/θ)) forward; grad_a = grad · T · [0 < a < θ] backward (001 Eq. 11).

    θ gets no gradient from this function (the paper's surrogate is w.r.t. the activation);
    ``levels`` is a Python int.
    """

    @staticmethod
    def forward(ctx, a: torch.Tensor, theta: torch.Tensor, levels: int) -> torch.Tensor:
        bits = bits_per_level(levels)
        k = torch.clamp(torch.round(a * levels / theta), 0, levels).long()
        ctx.save_for_backward(a, theta)
        ctx.bits = bits
        return popcount(k, bits).to(a.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        a, theta = ctx.saved_tensors
        inside = (a > 0) & (a < theta)
        return grad * ctx.bits * inside.to(grad.dtype), None, None


def bit_count(a: torch.Tensor, theta: torch.Tensor, levels: int) -> torch.Tensor:
    """Per-element bit count of QCFS outputs ``a`` with the surrogate gradient of ``BitCount``."""
    return BitCount.apply(a, theta, levels)


class BitL1Regularizer:
    """λ · Σ popcount(levels) over every QCFS site of a prepared model (docs/methods.md §3).

    Forward hooks collect each site's output during the model's forward pass; ``penalty()``
    returns the regulariser for the latest forward pass (a forward of the model clears what
    the previous one collected), to be added to the task loss::

        with BitL1Regularizer(model, lam=1e-8) as reg:
            loss = F.cross_entropy(model(x), y) + reg.penalty()

    normalize="sum" (default, as 001): raw sum over all sites, neurons and images of the batch;
    001 uses λ = 1e-8 (CIFAR) and 5e-10 (ImageNet) with this form, so λ's effect grows with
    batch size and network size.
    normalize="mean": the sum divided by the number of collected elements (neurons × images
    over all sites), i.e. λ weighs the mean number of 1-bits per neuron per image, independent
    of batch and network size.
    """

    def __init__(self, model: nn.Module, lam: float, normalize: str = "sum"):
        if normalize not in ("sum", "mean"):
            raise SpikeBridgeError(f"normalize must be 'sum' or 'mean', got {normalize!r}")
        found = sites(model)
        if not found:
            raise SpikeBridgeError("the model has no QCFS site; call spikebridge.prepare(model) first")
        self.lam = float(lam)
        self.normalize = normalize
        self._outputs: list[tuple[nn.Module, torch.Tensor]] = []
        self._handles = [model.register_forward_pre_hook(lambda *_: self._outputs.clear())]
        self._handles += [m.register_forward_hook(self._collect) for m in found.values()]

    def _collect(self, module, inputs, output) -> None:
        self._outputs.append((module, output))

    def penalty(self) -> torch.Tensor:
        """λ·Σ popcount(k) (or λ·mean, see ``normalize``) over the outputs of the last forward."""
        if not self._outputs:
            raise SpikeBridgeError("BitL1Regularizer.penalty() needs a forward pass of the model first")
        total = sum(bit_count(a, m.theta(a.dim()), m.levels).sum() for m, a in self._outputs)
        if self.normalize == "mean":
            total = total / sum(a.numel() for _, a in self._outputs)
        return self.lam * total

    def remove(self) -> None:
        """Detach the hooks and drop collected outputs."""
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self._outputs.clear()

    def __enter__(self) -> "BitL1Regularizer":
        return self

    def __exit__(self, *exc) -> None:
        self.remove()
