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

An ANALOG op (docs/methods.md §8) has no spiking form: it is computed on the decoded values
of its input trains (``decode``) and its result re-encoded as a train (``encode``). Sum coding
decodes a train to its sum and encodes a value as a 1-step train: exact, as the ANN. Rate
coding decodes to the running mean m(t) = (x(1) + … + x(t))/t at every step and encodes
y(t) = f(m(t)) as o(t) = t·y(t) − (t−1)·y(t−1), a train whose running mean is y(t): the op's
value on everything seen so far, at every step (for a linear f, f applied step by step). An op
with f(a·x) = a·f(x) for a > 0 (``homogeneous``: max pooling, which selects one input,
``Op.selects``) gets the same y(t) from the running sums S(t) = t·m(t): rate coding decodes it
to S(t) and emits o(t) = f(S(t)) − f(S(t−1)), which for a selection is 0 or one spike wherever
its inputs are spike trains of one amplitude per pooled window (a max of counts grows by at
most one per step), so the layers after it still receive spikes.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import SpikeBridgeError


class Coding:
    name: str
    whole_trains: bool  # a network of this coding always runs its trains whole, in one window
    selection_keeps_spikes: bool  # an ANALOG op that selects among spike trains gives a spike train

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

    def decode(self, trains: list[torch.Tensor], state: dict, homogeneous: bool = False) -> list[torch.Tensor]:
        """The values an ANALOG op is computed on, one train of values per (aligned) input
        train; ``state`` carries what a later window of the same run needs; ``homogeneous``: the
        op has f(a·x) = a·f(x) for a > 0."""
        raise NotImplementedError

    def encode(self, values: torch.Tensor, state: dict, key: int = 0, homogeneous: bool = False) -> torch.Tensor:
        """The train that carries an ANALOG op's result ``values`` (one per decoded step)."""
        raise NotImplementedError

    def align(self, trains: list[torch.Tensor]) -> list[torch.Tensor]:
        """Bring trains to one length so that they can be added or concatenated."""
        steps = max(t.shape[0] for t in trains)
        return [t if t.shape[0] == steps else self.pad(t, steps) for t in trains]

    def __repr__(self) -> str:
        return self.name


class RateCoding(Coding):
    name = "rate"
    whole_trains = False  # rate-coded IF runs in time chunks
    selection_keeps_spikes = True

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

    def decode(self, trains, state, homogeneous=False):
        t0 = state.get("t", 0)
        sums = state.setdefault("sums", {})
        decoded = []
        for i, train in enumerate(trains):
            if not train.is_floating_point():  # indices (a constant buffer), not values
                decoded.append(train)
            elif homogeneous:  # the running sums S(t)
                decoded.append(self._cumsum(train, sums.get(i)))
                sums[i] = decoded[-1][-1]
            else:  # the running means m(t), as the logits are read
                mean, sums[i] = self.readout(train, None, t0, sums.get(i))
                decoded.append(mean)
        state["t"] = t0 + trains[0].shape[0]
        return decoded

    def encode(self, values, state, key=0, homogeneous=False):
        steps = values.shape[0]
        t0 = state["t"] - steps
        previous = state.setdefault("last", {}).get(key)
        out = torch.empty_like(values)
        for t in range(steps):
            if previous is None:
                out[t] = values[t]
            elif homogeneous:  # f(S(t)) − f(S(t−1))
                out[t] = values[t] - previous
            else:  # t·y(t) − (t−1)·y(t−1)
                out[t] = (t0 + t + 1) * values[t] - (t0 + t) * previous
            previous = values[t]
        state["last"][key] = previous
        return out

    def readout(self, train, steps, t0=0, running=None):
        if train.shape[0] == 1 and steps and steps > 1:  # a constant output (no neuron upstream)
            train = train.expand(steps, *train.shape[1:])
        total = self._cumsum(train, running)
        count = torch.arange(t0 + 1, t0 + train.shape[0] + 1, device=train.device, dtype=train.dtype)
        return total / count.view(-1, *([1] * (train.dim() - 1))), total[-1]


class SumCoding(Coding):
    name = "sum"
    whole_trains = True  # sum-coded neurons see their whole input before they emit
    selection_keeps_spikes = False  # the result is one step carrying the whole value

    def constant_per_step(self, c, steps):
        return c / steps

    def pad(self, train, steps):
        return F.pad(train, [0, 0] * (train.dim() - 1) + [0, steps - train.shape[0]])

    def value(self, total, steps):
        return total

    def readout(self, train, steps, t0=0, running=None):
        total = self._cumsum(train, running)
        return total, total[-1]

    def decode(self, trains, state, homogeneous=False):
        return [train.sum(0, keepdim=True) for train in trains]

    def encode(self, values, state, key=0, homogeneous=False):
        return values


RATE = RateCoding()
SUM = SumCoding()
CODINGS = {c.name: c for c in (RATE, SUM)}
