"""NIR export of rate-coded IF networks (docs/architecture.md "Outside the core").

Mapping: conv → nir.Conv1d/Conv2d, linear → nir.Affine (nir.Linear without bias), average
pooling → nir.AvgPool2d, flatten → nir.Flatten, residual add → several edges into one node
(NIR sums a node's incoming edges), IFNeuron → nir.IF followed by nir.Scale(θ) (NIR's IF emits
1-spikes; spikebridge's neurons emit the postsynaptic value θ).

THE RESET IS NOT NIR'S. NIR's IF resets to ``v_reset`` (a hard reset); spikebridge's IF
resets by subtraction, v ← v − θ, keeping the residue above threshold, which is what makes
rate-coded conversion accurate at low T. NIR has no field for that, so the IF nodes carry
``v_reset = 0`` (NIR's default) and record the real dynamics in their metadata
(``reset = "subtract"``, ``v_initial``, ``spike_condition = "v >= v_threshold"``) and in the
graph's metadata. A tool that ignores the metadata simulates a hard-reset network with v0 = 0
and fires on v > θ: a different, less accurate network.
"""
from __future__ import annotations

import warnings

import nir
import numpy as np
import torch
import torch.nn.functional as F
from torch import fx, nn

from .. import __version__
from ..errors import SpikeBridgeError
from ..conversion.ops import op_for_node
from ..snn.codings import RATE
from ..snn.network import SpikingNetwork
from ..snn.neurons import SpikingNeuron, channel_view

RESET_NOTE = ("soft reset: when v >= v_threshold the neuron spikes and v <- v - v_threshold "
              "(reset by subtraction), NOT v <- v_reset as NIR's IF defines it")


def export_nir(snn: SpikingNetwork, path=None, input_shape=None, allow_drop_ftbc: bool = False) -> nir.NIRGraph:
    """Export a rate-coded IF network to a NIR graph; write it to ``path`` unless None.

    input_shape: one sample's shape without the batch, e.g. (1, 28, 28); default
    ``snn.info["input_shape"]``. Semantics of the graph (also in its metadata): discrete
    steps (dt = 1) for T = ``snn.T`` steps; the analog input is presented unchanged at every
    step; IF neurons integrate v ← v + I, spike when v ≥ θ and reset BY SUBTRACTION, starting
    from v_initial (see the module docstring); the logits are the Output's mean over the steps.
    FTBC biases (a different bias per step) have no NIR equivalent: refused, or dropped with a
    warning when ``allow_drop_ftbc`` (the exported network is then the uncalibrated one).
    """
    if snn.coding is not RATE:
        raise SpikeBridgeError(
            f"NIR has no neuron for the sum-coded method {snn.method!r} (it needs neurons that emit graded or "
            "weighted spike trains after seeing their whole input); only rate-coded IF networks "
            "('qcfs', 'max-norm', 'percentile', 'data-driven') can be exported")
    shape = input_shape if input_shape is not None else snn.info.get("input_shape")
    if shape is None:
        raise SpikeBridgeError("give the input shape of one sample (e.g. 1,28,28); the network does not record it")
    shape = tuple(int(s) for s in shape)
    graph = _Exporter(snn, shape, allow_drop_ftbc).build()
    if path is not None:
        nir.write(str(path), graph)
    return graph


def _shapes(gm: fx.GraphModule, input_shape: tuple[int, ...]) -> dict[fx.Node, tuple[int, ...] | None]:
    """Each node's output shape without the batch (None for non-tensors), neurons as identity."""
    shapes: dict[fx.Node, tuple[int, ...] | None] = {}

    class Probe(fx.Interpreter):
        def run_node(self, n):
            if n.op == "call_module" and isinstance(self.module.get_submodule(n.target), SpikingNeuron):
                out = self.env[n.args[0]]
            else:
                out = super().run_node(n)
            shapes[n] = tuple(out.shape[1:]) if isinstance(out, torch.Tensor) else None
            return out

    dtype = next(iter(gm.parameters()), torch.zeros(())).dtype
    with torch.no_grad():
        Probe(gm).run(torch.zeros(1, *input_shape, dtype=dtype))
    return shapes


class _Exporter:
    """Walks the fx graph once; ``sources[node]`` lists the NIR nodes whose outputs sum to it."""

    def __init__(self, snn: SpikingNetwork, input_shape: tuple[int, ...], allow_drop_ftbc: bool):
        self.snn = snn
        self.gm = snn.graph
        self.input_shape = input_shape
        self.allow_drop_ftbc = allow_drop_ftbc
        try:
            self.shapes = _shapes(self.gm, input_shape)
        except (RuntimeError, ValueError) as exc:
            raise SpikeBridgeError(f"input shape {input_shape} does not fit the network: {str(exc).splitlines()[0]}") from None
        self.nodes: dict[str, nir.NIRNode] = {}
        self.edges: list[tuple[str, str]] = []
        self.sources: dict[fx.Node, list[str]] = {}
        self.sites: dict[str, str] = {}

    def build(self) -> nir.NIRGraph:
        self.check_ftbc()
        for node in self.gm.graph.nodes:
            handler = getattr(self, f"on_{node.op}")
            result = handler(node)
            if result is not None:
                self.sources[node] = result
        metadata = {
            "producer": f"spikebridge {__version__}", "method": self.snn.method, "coding": "rate",
            "T": int(self.snn.T), "dt": 1.0, "neuron_reset": "subtract", "reset_note": RESET_NOTE,
            "spike_condition": "v >= v_threshold",
            "input": "the analog input is presented unchanged at every one of the T steps",
            "readout": "logits = mean of the Output over the T steps",
            "edges": "a node's incoming edges are summed (residual adds)",
            "neuron_output": "each IF node is followed by a Scale node: a spike carries the value v_threshold",
            "sites": self.sites,
        }
        return nir.NIRGraph(nodes=self.nodes, edges=self.edges, metadata=metadata)

    def check_ftbc(self) -> None:
        neurons = self.snn.neurons()
        other = [name for name, n in neurons.items() if not n.stepwise]
        if other:
            raise SpikeBridgeError(f"NIR export needs IF neurons at every site; {other[0]} holds a "
                                   f"{type(neurons[other[0]]).__name__}")
        biased = [name for name, n in neurons.items() if n.bias.numel() and bool(n.bias.any())]
        if biased and not self.allow_drop_ftbc:
            raise SpikeBridgeError(
                f"{len(biased)} site(s) ({', '.join(biased[:3])}...) hold FTBC per-step biases, which NIR cannot "
                "express; export without them with allow_drop_ftbc=True (--allow-drop-ftbc), losing the calibration")
        if biased:
            warnings.warn(f"NIR export drops the FTBC biases of {len(biased)} site(s); the exported network is "
                          "the uncalibrated one", stacklevel=4)

    # -- helpers ---------------------------------------------------------------------------
    def emit(self, name: str, node: nir.NIRNode, inputs: list[str]) -> list[str]:
        self.nodes[name] = node
        self.edges.extend((src, name) for src in inputs)
        return [name]

    def inputs(self, node: fx.Node) -> list[str]:
        arg = node.args[0]
        if not isinstance(arg, fx.Node) or arg not in self.sources:
            raise self.unsupported(node, "its input is not a tensor of the network")
        return self.sources[arg]

    def unsupported(self, node: fx.Node, why: str) -> SpikeBridgeError:
        what = node.target if isinstance(node.target, str) else getattr(node.target, "__name__", node.target)
        return SpikeBridgeError(f"cannot export node {node.name} ({node.op} {what}) to NIR: {why}")

    # -- node kinds ------------------------------------------------------------------------
    def on_placeholder(self, node):
        if self.nodes:
            raise self.unsupported(node, "NIR export supports networks with one input")
        return self.emit("input", nir.Input(input_type=np.array(self.input_shape)), [])

    def on_output(self, node):
        out = node.args[0]
        if not isinstance(out, fx.Node) or self.shapes.get(out) is None:
            raise self.unsupported(node, "the network must return one tensor (the logits)")
        self.emit("output", nir.Output(output_type=np.array(self.shapes[out])), self.sources[out])

    def on_get_attr(self, node):
        raise self.unsupported(node, "tensor attributes have no NIR node")

    def on_call_module(self, node):
        module = self.gm.get_submodule(node.target)
        if isinstance(module, SpikingNeuron):
            return self.neuron(node, module)
        return self.on_op(node)

    def on_call_function(self, node):
        return self.on_op(node)

    def on_call_method(self, node):
        return self.on_op(node)

    def on_op(self, node):
        """Export a node by the NIR rule its op-table entry names (``rule_<nir>``)."""
        op = op_for_node(node, self.gm)
        if op is None:
            raise self.unsupported(node, "it is not an op of the op table")
        if op.nir is None:
            raise self.unsupported(node, op.nir_refusal)
        return getattr(self, f"rule_{op.nir}")(node)

    # -- conversions -----------------------------------------------------------------------
    def neuron(self, node, neuron: SpikingNeuron):
        if not neuron.stepwise:
            raise self.unsupported(node, f"NIR has no neuron like {type(neuron).__name__}")
        shape = self.shapes[node]
        full = torch.zeros(1, *shape, dtype=neuron.threshold.dtype)
        theta = _np((full + channel_view(neuron.threshold, full.dim()))[0])
        v0 = _np((full + channel_view(neuron.v0, full.dim()))[0])
        metadata = {"reset": "subtract", "reset_note": RESET_NOTE, "v_initial": v0,
                    "spike_condition": "v >= v_threshold", "T": int(self.snn.T),
                    "spikebridge": {"site": node.target, "ftbc_bias_dropped": bool(neuron.bias.any())}}
        spikes = self.emit(node.name, nir.IF(r=np.ones_like(theta), v_threshold=theta, v_reset=np.zeros_like(theta),
                                             metadata=metadata), self.inputs(node))
        self.sites[node.name] = node.target
        return self.emit(f"{node.name}_value", nir.Scale(scale=theta.copy(), metadata={
            "spikebridge": f"postsynaptic value of {node.target}'s spikes: v_threshold per spike"}), spikes)

    def module(self, node) -> nn.Module | None:
        return self.gm.get_submodule(node.target) if node.op == "call_module" else None

    def rule_conv(self, node):
        conv, in_shape = self.module(node), self.shapes[node.args[0]]
        if conv.padding_mode != "zeros":
            raise self.unsupported(node, f"NIR convolutions pad with zeros, not {conv.padding_mode!r}")
        weight = _np(conv.weight)
        bias = _np(conv.bias) if conv.bias is not None else np.zeros(weight.shape[0], dtype=weight.dtype)
        padding = conv.padding if isinstance(conv.padding, str) else tuple(conv.padding)
        if isinstance(conv, nn.Conv2d):
            layer = nir.Conv2d(input_shape=tuple(in_shape[1:]), weight=weight, stride=tuple(conv.stride),
                               padding=padding, dilation=tuple(conv.dilation), groups=conv.groups, bias=bias)
        else:
            layer = nir.Conv1d(input_shape=in_shape[1], weight=weight, stride=conv.stride[0],
                               padding=padding if isinstance(padding, str) else padding[0],
                               dilation=conv.dilation[0], groups=conv.groups, bias=bias)
        return self.emit(node.name, layer, self.inputs(node))

    def rule_linear(self, node):
        linear, in_shape = self.module(node), self.shapes[node.args[0]]
        if len(in_shape) != 1:
            raise self.unsupported(node, f"NIR's Affine takes 1-d inputs, this layer gets {in_shape}; flatten first")
        weight = _np(linear.weight)
        layer = nir.Linear(weight=weight) if linear.bias is None else nir.Affine(weight=weight, bias=_np(linear.bias))
        return self.emit(node.name, layer, self.inputs(node))

    def rule_avg_pool(self, node):
        pool = self.module(node) or nn.AvgPool2d(*node.args[1:], **node.kwargs)
        padding = np.broadcast_to(np.array(pool.padding), 2)
        if pool.ceil_mode or pool.divisor_override is not None or padding.any():
            raise self.unsupported(node, "NIR's AvgPool2d has no padding, ceil_mode or divisor_override semantics")
        kernel = np.broadcast_to(np.array(pool.kernel_size), 2).copy()
        stride = np.broadcast_to(np.array(pool.stride if pool.stride is not None else pool.kernel_size), 2).copy()
        return self.emit(node.name, nir.AvgPool2d(kernel_size=kernel, stride=stride, padding=np.zeros(2, dtype=int)),
                         self.inputs(node))

    def rule_adaptive_pool(self, node):
        in_shape = self.shapes[node.args[0]]
        size, out = np.array(in_shape[1:]), np.array(self.shapes[node][1:])
        if (size % out).any():
            raise self.unsupported(node, f"adaptive pooling from {tuple(size)} to {tuple(out)} has unequal windows")
        kernel = size // out
        return self.emit(node.name, nir.AvgPool2d(kernel_size=kernel, stride=kernel.copy(), padding=np.zeros(2, dtype=int)),
                         self.inputs(node))

    def rule_identity(self, node):
        return self.inputs(node)

    def rule_shape(self, node):
        if self.shapes[node] is not None:
            raise self.unsupported(node, "indexing a tensor has no NIR equivalent")
        return None

    def rule_mean(self, node):
        in_shape = self.shapes[node.args[0]]
        dim = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else None)
        keepdim = node.kwargs.get("keepdim", node.args[2] if len(node.args) > 2 else False)
        dims = {d % (len(in_shape) + 1) for d in (dim if isinstance(dim, tuple | list) else [dim])} if dim is not None else set()
        if len(in_shape) != 3 or dims != {2, 3}:
            raise self.unsupported(node, "only a spatial mean over dims (2, 3) has a NIR equivalent (global AvgPool2d)")
        kernel = np.array(in_shape[1:])
        pooled = self.emit(node.name, nir.AvgPool2d(kernel_size=kernel, stride=kernel.copy(),
                                                    padding=np.zeros(2, dtype=int)), self.inputs(node))
        if keepdim:
            return pooled
        return self.emit(f"{node.name}_flatten", nir.Flatten(input_type=np.array([in_shape[0], 1, 1]), start_dim=0),
                         pooled)

    def rule_reshape(self, node):
        in_shape, out_shape = self.shapes[node.args[0]], self.shapes[node]
        if out_shape == in_shape:
            return self.inputs(node)
        if len(out_shape) != 1:
            raise self.unsupported(node, f"NIR has no reshape from {in_shape} to {out_shape}, only flattening")
        return self.emit(node.name, nir.Flatten(input_type=np.array(in_shape), start_dim=0), self.inputs(node))

    def rule_add(self, node):
        args = [a for a in (*node.args, *node.kwargs.values()) if isinstance(a, fx.Node)]
        if len(args) != 2 or len(node.args) + len(node.kwargs) != 2 or any(self.shapes[a] != self.shapes[node] for a in args):
            raise self.unsupported(node, "only the sum of two tensors of the same shape has a NIR equivalent")
        sources = self.sources[args[0]] + self.sources[args[1]]
        if len(set(sources)) != len(sources):
            raise self.unsupported(node, "a node added to itself would need a doubled NIR edge")
        return sources


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy().copy()
