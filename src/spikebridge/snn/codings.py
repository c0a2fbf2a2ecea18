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

    def value(self, total: torch.Tensor, steps: int) -> torch.Tensor:
        """A train's value per neuron from its sum over ``steps`` steps."""
        raise NotImplementedError

    def readout(self, train: torch.Tensor, steps: int | None, t0: int = 0,
                running: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Anytime logits from the output train, which holds the ``steps`` steps t0, t0 + 1, ...
        of the run (``running``: the sum of the output over the steps before t0). Returns (logits
        [steps, B, ...], the running sum after the train). The sum is accumulated step by step
        in order, so a run read out in chunks gives the same logits as in one piece."""
        raise NotImplementedError

    @staticmethod
    def _cumsum(train: torch.Tensor, running: torch.Tensor | None) -> torch.Tensor:
        """Sums over steps 1..t, added one step at a time (torch.cumsum's order of additions
        depends on the length, so chunks would round differently)."""
        total = torch.empty_like(train)
        for t in range(train.shape[0]):
            running = train[t] if running is None else running + train[t]
            total[t] = running
        return total

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

    def value(self, total, steps):
        return total / steps

    def presentations(self, steps, T):
        return T if steps == 1 and T else 1  # a 1-step train is a constant current

    def readout(self, train, steps, t0=0, running=None):
        if train.shape[0] == 1 and steps and steps > 1:  # a constant output (no neuron upstream)
            train = train.expand(steps, *train.shape[1:])
        total = self._cumsum(train, running)
        count = torch.arange(t0 + 1, t0 + train.shape[0] + 1, device=train.device, dtype=train.dtype)
        return total / count.view(-1, *([1] * (train.dim() - 1))), total[-1]


class SumCoding(Coding):
    name = "sum"

    def constant_per_step(self, c, steps):
        return c / steps

    def pad(self, train, steps):
        return F.pad(train, [0, 0] * (train.dim() - 1) + [0, steps - train.shape[0]])

    def value(self, total, steps):
        return total

    def readout(self, train, steps, t0=0, running=None):
        total = self._cumsum(train, running)
        return total, total[-1]


RATE = RateCoding()
SUM = SumCoding()
CODINGS = {c.name: c for c in (RATE, SUM)}
