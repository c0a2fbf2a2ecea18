"""The two codings of a spike train [T, B, ...], and every rule that differs between them
(docs/architecture.md "codings"; docs/methods.md §1–3):

- rate (§1): a constant of the ANN (a synaptic layer's bias, a number added to a train) is
  added in full every step, since the value of a train is the mean over its steps; a 1-step
  train is a constant current, broadcast to the other train's length; the logits after step t
  are the mean of the output over steps 1..t.
- sum (§2, §3, §8): on a train of T_in steps a constant c is added as c / T_in every step, so
  the sum over steps carries c once, as in the ANN (a bias, 000 Thm 3.3; a number added to an
  activation, docs/methods.md §8); shorter trains are zero-padded at the end; the value of a
  train is its sum, and the logits after step t are the sum over steps 1..t.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import SpikeBridgeError


class Coding:
    name: str

    def constant_per_step(self, c, steps: int):
        """What is added at each of ``steps`` steps so that the train carries the ANN's
        constant ``c`` (a layer's bias, or a number added to an activation)."""
        raise NotImplementedError

    def pad(self, train: torch.Tensor, steps: int) -> torch.Tensor:
        """``train`` brought to ``steps`` steps (it has fewer)."""
        raise NotImplementedError

    def decode(self, train: torch.Tensor) -> torch.Tensor:
        """A train's value per neuron."""
        raise NotImplementedError

    def readout(self, train: torch.Tensor, T: int | None) -> torch.Tensor:
        """Anytime logits [T, B, ...] from the output train."""
        raise NotImplementedError

    def presentations(self, steps: int, T: int | None) -> int:
        """How often each step of a train of ``steps`` steps reaches a layer in a T-step run."""
        return 1

    def align(self, trains: list[torch.Tensor]) -> list[torch.Tensor]:
        """Bring trains to one length so that they can be added or concatenated."""
        steps = max(t.shape[0] for t in trains)
        return [t if t.shape[0] == steps else self.pad(t, steps) for t in trains]

    def __repr__(self) -> str:
        return self.name


class RateCoding(Coding):
    name = "rate"

    def constant_per_step(self, c, steps):
        return c

    def pad(self, train, steps):
        if train.shape[0] != 1:
            raise SpikeBridgeError(f"rate-coded trains of {train.shape[0]} and {steps} steps cannot be combined")
        return train.expand(steps, *train.shape[1:])

    def decode(self, train):
        return train.mean(0)

    def presentations(self, steps, T):
        return T if steps == 1 and T else 1  # a 1-step train is a constant current

    def readout(self, train, T):
        if train.shape[0] == 1 and T and T > 1:
            train = train.expand(T, *train.shape[1:])
        steps = torch.arange(1, train.shape[0] + 1, device=train.device, dtype=train.dtype)
        return train.cumsum(0) / steps.view(-1, *([1] * (train.dim() - 1)))


class SumCoding(Coding):
    name = "sum"

    def constant_per_step(self, c, steps):
        return c / steps

    def pad(self, train, steps):
        return F.pad(train, [0, 0] * (train.dim() - 1) + [0, steps - train.shape[0]])

    def decode(self, train):
        return train.sum(0)

    def readout(self, train, T):
        return train.cumsum(0)


RATE = RateCoding()
SUM = SumCoding()
CODINGS = {c.name: c for c in (RATE, SUM)}
