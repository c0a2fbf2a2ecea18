"""SpikingNetwork: layer-by-layer, time-major execution of a converted graph (DESIGN.md).

A spike train is a tensor [T, B, ...]. The analog input enters as a 1-step train. Stateless
ops (conv, linear, pooling, flatten, add, cat) run on all of a train's steps at once with
time folded into the batch; neurons loop over time. Two codings share this one engine:

- "rate" (METHODS §1): a synaptic layer adds its full bias every step; a 1-step train is a
  constant current that a neuron repeats for T steps; logits at step t are the mean of the
  output over steps 1..t.
- "sum" (METHODS §2, §3): a synaptic layer fed a train of T_in steps adds bias/T_in every
  step, so the sum over steps equals the ANN pre-activation; trains of unequal length are
  zero-padded before they are added or concatenated; logits at step t are the sum of the
  output over steps 1..t.
"""
from __future__ import annotations

import operator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import fx, nn

from .neurons import BitplaneNeuron, IFNeuron, PASCNeuron

NEURONS = (IFNeuron, PASCNeuron, BitplaneNeuron)
SYNAPTIC = (nn.Conv1d, nn.Conv2d, nn.Linear)
CODINGS = ("rate", "sum")


@dataclass
class SimulationResult:
    """What one simulation measured.

    logits: [T, B, classes], the output read out after each step (anytime).
    spikes: site -> spike count per neuron position, summed over steps and batch.
    events: synaptic layer -> non-zero input events per input position, summed over steps
        and batch (a constant rate-coded input counts once per step).
    steps: site -> number of steps of the site's output train.
    values: site -> the train's decoded value per neuron [B, ...] (sum, or mean for rate
        coding); filled only when asked for (verify uses it).
    """

    logits: torch.Tensor
    spikes: dict[str, torch.Tensor] = field(default_factory=dict)
    events: dict[str, torch.Tensor] = field(default_factory=dict)
    steps: dict[str, int] = field(default_factory=dict)
    values: dict[str, torch.Tensor] = field(default_factory=dict)
    analog_layers: set[str] = field(default_factory=set)
    batch_size: int = 0

    @property
    def T(self) -> int:
        return self.logits.shape[0]

    def accuracy(self, labels: torch.Tensor) -> torch.Tensor:
        """Fraction of correct predictions after each step: [T]."""
        return (self.logits.argmax(-1) == labels.to(self.logits.device)).double().mean(1)


def fold(train: torch.Tensor) -> torch.Tensor:
    return train.reshape(-1, *train.shape[2:])


def unfold(x: torch.Tensor, steps: int) -> torch.Tensor:
    return x.reshape(steps, -1, *x.shape[1:])


class SpikingNetwork(nn.Module):
    """A converted SNN. ``forward(x)`` returns logits [B, classes] after ``T`` steps;
    ``simulate(x, T)`` returns a SimulationResult with anytime logits and spike counts.

    graph: the model's torch.fx graph with a neuron module at every activation site and
    BatchNorm folded into the synaptic layers.
    """

    def __init__(self, graph: fx.GraphModule, method: str, coding: str, T: int | None, info: dict | None = None):
        super().__init__()
        assert coding in CODINGS
        self.graph = graph
        self.method = method
        self.coding = coding
        self.T = T
        self.info = dict(info or {})

    # -- structure -------------------------------------------------------------------------
    def neurons(self) -> dict[str, nn.Module]:
        """Activation sites in execution order: {site name: neuron}."""
        return {n.target: self.graph.get_submodule(n.target) for n in self.graph.graph.nodes
                if n.op == "call_module" and isinstance(self.graph.get_submodule(n.target), NEURONS)}

    def synaptic_layers(self) -> dict[str, nn.Module]:
        """Conv/linear layers in execution order (BatchNorm folded in)."""
        return {n.target: self.graph.get_submodule(n.target) for n in self.graph.graph.nodes
                if n.op == "call_module" and isinstance(self.graph.get_submodule(n.target), SYNAPTIC)}

    def analog_layers(self) -> set[str]:
        """Synaptic layers whose input has passed no neuron: they multiply analog values."""
        spiking: set[fx.Node] = set()
        layers = set()
        for node in self.graph.graph.nodes:
            upstream = any(a in spiking for a in node.all_input_nodes)
            if node.op == "call_module":
                module = self.graph.get_submodule(node.target)
                if isinstance(module, SYNAPTIC) and not upstream:
                    layers.add(node.target)
                if isinstance(module, NEURONS):
                    upstream = True
            if upstream:
                spiking.add(node)
        return layers

    def set_T(self, T: int | None) -> None:
        """Set the number of steps of every time-driven neuron (rate-coded IF, bit-plane)."""
        if T is None:
            return
        if isinstance(T, bool) or not isinstance(T, int) or T < 1:
            raise ValueError(f"T must be an integer >= 1, got {T!r}")
        for neuron in self.neurons().values():
            if isinstance(neuron, (IFNeuron, BitplaneNeuron)):
                neuron.T = T
        self.T = T

    # -- execution -------------------------------------------------------------------------
    def simulate(self, x: torch.Tensor, T: int | None = None, record: bool = True, values: bool = False) -> SimulationResult:
        """Run the SNN on analog input x [B, ...]. T overrides the network's steps for this
        run only (PASC's steps are its levels and cannot be overridden)."""
        if T is not None and self.method == "pasc":
            raise ValueError("PASC runs for its levels' steps; T cannot be set (see info['T_eff'])")
        timed = {n: m for n, m in self.neurons().items() if isinstance(m, (IFNeuron, BitplaneNeuron))}
        saved, default = {n: m.T for n, m in timed.items()}, self.T
        self.set_T(T)
        try:
            result = SimulationResult(logits=torch.empty(0), batch_size=x.shape[0])
            out = TrainRunner(self, result if record else None, values).run(x)
            result.logits = self.readout(out)
        finally:  # each neuron keeps its own steps (mixed-level bit-plane sites differ)
            for name, neuron in timed.items():
                neuron.T = saved[name]
            self.T = default
        return result

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.simulate(x, record=False).logits[-1]

    def readout(self, train: torch.Tensor) -> torch.Tensor:
        """Anytime logits from the output train: cumulative mean (rate) or sum (sum coding)."""
        if self.coding == "rate":
            if train.shape[0] == 1 and self.T and self.T > 1:
                train = train.expand(self.T, *train.shape[1:])
            steps = torch.arange(1, train.shape[0] + 1, device=train.device, dtype=train.dtype)
            return train.cumsum(0) / steps.view(-1, *([1] * (train.dim() - 1)))
        return train.cumsum(0)

    def decode(self, train: torch.Tensor) -> torch.Tensor:
        """A train's value per neuron: sum over steps (sum coding) or mean (rate coding)."""
        return train.mean(0) if self.coding == "rate" else train.sum(0)

    # -- the coding convention, in one place ----------------------------------------------
    def synapse(self, layer: nn.Module, train: torch.Tensor) -> torch.Tensor:
        """W·x(t) + bias per step: the full bias (rate) or bias / T_in (sum), METHODS §1–3."""
        steps = train.shape[0]
        if isinstance(layer, nn.Linear):
            y = unfold(F.linear(fold(train), layer.weight), steps)
        else:  # one step at a time: on CPU faster than one conv over all T·B (DESIGN.md)
            y = None
            for t in range(steps):
                y_t = layer._conv_forward(train[t], layer.weight, None)
                if y is None:
                    y = y_t.new_empty((steps, *y_t.shape))
                y[t] = y_t
        if layer.bias is not None:
            bias = layer.bias if self.coding == "rate" else layer.bias / steps
            y = y + bias.view(-1, *([1] * (y.dim() - 3)))
        return y

    def align(self, trains: list[torch.Tensor]) -> list[torch.Tensor]:
        """Bring trains to one length: broadcast a constant 1-step train (rate) or zero-pad
        the shorter ones at the end (sum), so that sums over steps add up."""
        steps = max(t.shape[0] for t in trains)
        out = []
        for t in trains:
            if t.shape[0] == steps:
                out.append(t)
            elif self.coding == "rate" and t.shape[0] == 1:
                out.append(t.expand(steps, *t.shape[1:]))
            elif self.coding == "sum":
                out.append(F.pad(t, [0, 0] * (t.dim() - 1) + [0, steps - t.shape[0]]))
            else:
                raise RuntimeError(f"rate-coded trains of {t.shape[0]} and {steps} steps cannot be combined")
        return out


ADD_FUNCTIONS = {operator.add, operator.iadd, torch.add}


class TrainRunner(fx.Interpreter):
    """Executes the SNN graph on spike trains, node by node (see SpikingNetwork)."""

    def __init__(self, snn: SpikingNetwork, result: SimulationResult | None, values: bool = False):
        super().__init__(snn.graph)
        self.snn = snn
        self.result = result
        self.values = values
        self.analog = snn.analog_layers()

    def placeholder(self, target, args, kwargs):
        x = super().placeholder(target, args, kwargs)
        return x.unsqueeze(0)

    def call_module(self, target, args, kwargs):
        module = self.fetch_attr(target)
        train = args[0]
        if isinstance(module, NEURONS):
            out = module(train)
            self.record_site(target, out)
            return out
        if isinstance(module, SYNAPTIC):
            self.record_events(target, train)
            return self.snn.synapse(module, train)
        return self.folded(module, args, kwargs)

    def call_function(self, target, args, kwargs):
        if target in ADD_FUNCTIONS:
            a, b = self.snn.align([args[0], args[1]]) if _both_trains(args) else args[:2]
            return a + b
        if target is torch.cat:
            trains = self.snn.align(list(args[0]))
            dim = kwargs.get("dim", args[1] if len(args) > 1 else 0)
            return torch.cat(trains, dim=dim + 1 if dim >= 0 else dim)
        return self.folded(target, args, kwargs)

    def call_method(self, target, args, kwargs):
        if target in ("add", "add_"):
            return self.call_function(operator.add, args, kwargs)
        return self.folded(lambda obj, *a, **k: getattr(obj, target)(*a, **k), args, kwargs)

    def folded(self, fn, args, kwargs):
        """Apply a per-sample op to every step at once: [T, B, ...] -> [T·B, ...] -> back."""
        steps = {a.shape[0] for a in _tensors((args, kwargs))}
        if not steps:
            return fn(*args, **kwargs)
        if len(steps) > 1:
            raise RuntimeError("an op received spike trains of different lengths")
        (steps,) = steps
        args, kwargs = fx.node.map_aggregate((args, kwargs), lambda v: fold(v) if isinstance(v, torch.Tensor) else v)
        out = fn(*args, **kwargs)
        if isinstance(out, torch.Tensor):
            return unfold(out, steps)
        return out

    def record_site(self, site: str, out: torch.Tensor) -> None:
        if self.result is None:
            return
        self.result.spikes[site] = (out != 0).sum((0, 1))
        self.result.steps[site] = out.shape[0]
        if self.values:
            self.result.values[site] = self.snn.decode(out)

    def record_events(self, layer: str, train: torch.Tensor) -> None:
        if self.result is None:
            return
        events = (train != 0).sum((0, 1))
        if self.snn.coding == "rate" and train.shape[0] == 1 and self.snn.T:
            events = events * self.snn.T  # a constant current is presented at every step
        if layer in self.analog:
            self.result.analog_layers.add(layer)
        self.result.events[layer] = events


def _tensors(tree):
    found = []
    fx.node.map_aggregate(tree, lambda v: found.append(v) if isinstance(v, torch.Tensor) else None)
    return found


def _both_trains(args) -> bool:
    return isinstance(args[0], torch.Tensor) and isinstance(args[1], torch.Tensor)
