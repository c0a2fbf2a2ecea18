"""NIR export of rate-coded IF networks for a target importer (docs/architecture.md "Outside
the core"; targets and their semantics: ``export.targets``).

Mapping: conv → nir.Conv1d/Conv2d (a grouped one written dense: ``_dense``), linear →
nir.Affine (zero bias when it has none), average pooling → nir.AvgPool2d, or nir.SumPool2d
where the target lacks it, flatten → nir.Flatten over the last dims (``start_dim`` < 0),
residual add → several edges into one node (NIR sums a node's incoming edges), IFNeuron → nir.IF (nir.LIF for snnTorch) emitting spikes of value 1.

THE SPIKE VALUE IS FOLDED. spikebridge's neuron emits θ per spike; NIR's emit 1. Each tensor
of the graph is exported as x_nir = x / σ with a per-channel σ: σ = θ after a neuron, σ = 1/k²
more after a sum pooling. A synaptic layer reading x_nir uses W·diag(σ) (true output, σ = 1); a
neuron divides its threshold and v0 by its input's σ, and where its input comes only from
synaptic layers of its own, their rows are divided by θ instead, so that the threshold is 1. An
add whose inputs have different σ rescales the rows of an input that is a synaptic layer's, or
else passes one input through a diagonal 1x1 convolution (a "scale" node).

Adaptive pooling becomes the fixed pooling with the same windows when the input size is a
multiple of the output size; otherwise it is a linear map that is folded into the next linear
layer when a flatten and a linear layer follow, and refused elsewhere.

The reset and the initial potential are the target's (``export.targets``): the generic target
keeps spikebridge's dynamics in the metadata (``reset = "subtract"``, ``v_initial``, spike on
v ≥ θ), which no importer reads; the others get what their importer computes, and ``v0`` either
dropped or spread over the steps as a bias v0/T (``--v0``).
"""
from __future__ import annotations

import copy
import keyword
import warnings
from dataclasses import dataclass

import nir
import numpy as np
import torch
import torch.nn.functional as F
from torch import fx, nn

from .. import __version__
from ..device import module_device
from ..errors import SpikeBridgeError, first_line
from ..conversion.ops import op_for_node
from ..snn.codings import RATE
from ..snn.network import SpikingNetwork
from ..snn.neurons import SpikingNeuron, channel_view
from .chain import rewrite_joins
from .targets import Target, get_target

RESET_NOTE = ("soft reset: when v >= v_threshold the neuron spikes and v <- v - v_threshold "
              "(reset by subtraction), NOT v <- v_reset as NIR's IF defines it")


def export_nir(snn: SpikingNetwork, path=None, input_shape=None, allow_drop_ftbc: bool = False,
               target: str = "generic", v0: str | None = None, threshold_scale: float | None = None) -> nir.NIRGraph:
    """Export a rate-coded IF network to a NIR graph for ``target``; write it to ``path`` unless None.

    input_shape: one sample's shape without the batch, e.g. (1, 28, 28); default
    ``snn.info["input_shape"]``. The graph runs T = ``snn.T`` steps of dt = 1; the analog input
    is presented unchanged at every step; the logits are the Output's mean over the steps.
    target: "generic", "snntorch", "norse" or "sinabs" (``export.targets``); v0: "per-step" or
    "zero" for the importer targets (default: the target's), "initial" for generic;
    threshold_scale: λ, the neurons fire at λ·θ (default: the target's). ``targets.emulate(snn,
    target, v0, threshold_scale)`` simulates what the file computes.
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
    if module_device(snn).type != "cpu":  # NIR holds numpy arrays: export a CPU copy
        snn = copy.deepcopy(snn).cpu()
    graph = _Exporter(snn, shape, allow_drop_ftbc, get_target(target), v0, threshold_scale).build()
    if path is not None:
        write(path, graph)
    return graph


def write(path, graph: nir.NIRGraph) -> None:
    """nir.write, without the IF nodes' ``v_reset`` (0, NIR's default since nir 1.0.5), which
    nir 1.0.4 (sinabs's pin) refuses to read."""
    import h5py

    nir.write(str(path), graph)
    with h5py.File(str(path), "r+") as f:
        for node in f["node/nodes"].values():
            if "v_reset" in node and node["type"][()] in (b"IF", "IF"):
                del node["v_reset"]


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


@dataclass
class Value:
    """A tensor of the network as exported: the sum of the outputs of ``sources`` (NIR nodes),
    of shape ``shape``, times ``scale`` (per channel, broadcast to the shape) is the true value;
    where ``matrix`` is set, each channel's true values are matrix @ (scale · exported) of that
    channel (an adaptive pooling waiting for the next linear layer). ``free``: every source is a
    synaptic node feeding only this value, whose rows may be rescaled; ``biasable``: such a
    source (the place for a per-step bias), or None."""

    sources: list[str]
    shape: tuple[int, ...]
    scale: np.ndarray
    free: bool = False
    matrix: np.ndarray | None = None
    biasable: str | None = None


def _dense(weight: np.ndarray, groups: int) -> np.ndarray:
    """A grouped convolution's weight [out, in/groups, k...] as the dense weight [out, in, k...]
    of the same convolution: each group's block on the diagonal, zeros elsewhere. NIR's types
    read a convolution's input channels off its weight (``weight.shape[1]``) whatever its
    ``groups``, so a grouped (depthwise) convolution is written dense."""
    if groups == 1:
        return weight
    out, per_group = weight.shape[:2]
    per_out = out // groups
    dense = np.zeros((out, per_group * groups, *weight.shape[2:]), weight.dtype)
    for g in range(groups):
        dense[g * per_out:(g + 1) * per_out, g * per_group:(g + 1) * per_group] = weight[g * per_out:(g + 1) * per_out]
    return dense


def _channels(scale: np.ndarray) -> np.ndarray:
    """A per-channel scale [C] from a scale broadcast to [C, ...] (or [F])."""
    flat = scale.reshape(scale.shape[0], -1) if scale.ndim > 1 else scale[:, None]
    return flat[:, 0]


class _Exporter:
    """Walks the fx graph once, keeping each tensor's ``Value``."""

    def __init__(self, snn: SpikingNetwork, input_shape: tuple[int, ...], allow_drop_ftbc: bool,
                 target: Target, v0: str | None, threshold_scale: float | None):
        self.snn = snn
        self.gm = snn.graph
        self.target = target
        self.semantics = target.semantics_for(v0, threshold_scale)
        self.input_shape = input_shape
        self.allow_drop_ftbc = allow_drop_ftbc
        self.dtype = np.dtype(str(next(iter(self.gm.parameters()), torch.zeros(())).dtype).removeprefix("torch."))
        try:
            self.shapes = _shapes(self.gm, input_shape)
        except (RuntimeError, ValueError) as exc:
            raise SpikeBridgeError(f"input shape {input_shape} does not fit the network: {first_line(exc)}") from None
        self.nodes: dict[str, nir.NIRNode] = {}
        self.edges: list[tuple[str, str]] = []
        self.values: dict[fx.Node, Value] = {}
        self.sites: dict[str, str] = {}

    def build(self) -> nir.NIRGraph:
        self.check_ftbc()
        for node in self.gm.graph.nodes:
            result = getattr(self, f"on_{node.op}")(node)
            if result is not None:
                self.values[node] = result
        nodes, edges = self.nodes, self.edges
        if self.target.chain:
            nodes, edges = rewrite_joins(nodes, edges, self.semantics, self.target.name)
        metadata = {
            "producer": f"spikebridge {__version__}", "method": self.snn.method, "coding": "rate",
            "T": int(self.snn.T), "dt": 1.0, "target": self.target.name, "neuron_semantics": self.semantics.describe(),
            "input": "the analog input is presented unchanged at every one of the T steps",
            "readout": "logits = mean of the Output over the T steps",
            "edges": "a node's incoming edges are summed (residual adds)",
            "neuron_output": "spikes of value 1; spikebridge's spike value v_threshold is folded into the next layer",
            "sites": self.sites,
        }
        if self.semantics.v0_mode == "initial":
            metadata.update(neuron_reset="subtract", reset_note=RESET_NOTE, spike_condition="v >= v_threshold")
        return nir.NIRGraph(nodes=nodes, edges=edges, metadata=metadata)

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
    def name(self, base: str) -> str:
        """A node name from a module path or op name: stable across save/load, no dots, unique."""
        base = base.replace(".", "_")
        if keyword.iskeyword(base):
            base = f"{base}_"
        name, i = base, 0
        while name in self.nodes:
            i += 1
            name = f"{base}_{i}"
        return name

    def node_name(self, node: fx.Node, op_name: str | None = None) -> str:
        return self.name(node.target if node.op == "call_module" else op_name or node.op)

    def emit(self, name: str, node: nir.NIRNode, inputs: list[str]) -> str:
        self.nodes[name] = node
        self.edges.extend((src, name) for src in inputs)
        return name

    def arr(self, a) -> np.ndarray:
        return np.asarray(a, dtype=np.float64).astype(self.dtype)

    def value(self, node: fx.Node) -> Value:
        arg = node.args[0]
        if not isinstance(arg, fx.Node) or arg not in self.values:
            raise self.unsupported(node, "its input is not a tensor of the network")
        return self.values[arg]

    def plain(self, node: fx.Node, v: Value) -> Value:
        if v.matrix is not None:
            raise self.unsupported(node, self.pending_matrix)
        return v

    def unsupported(self, node: fx.Node, why: str) -> SpikeBridgeError:
        what = node.target if isinstance(node.target, str) else getattr(node.target, "__name__", node.target)
        return SpikeBridgeError(f"cannot export node {node.name} ({node.op} {what}) to NIR: {why}")

    def rescale(self, v: Value, scale: np.ndarray) -> Value:
        """The free value ``v`` with its sources' rows divided so that its scale becomes ``scale``."""
        factor = _channels(np.broadcast_to(v.scale / scale, v.shape))
        for name in v.sources:
            layer = self.nodes[name]
            layer.weight = self.arr(layer.weight * factor.reshape(-1, *[1] * (layer.weight.ndim - 1)))
            layer.bias = self.arr(layer.bias * factor)
        return Value(v.sources, v.shape, np.broadcast_to(scale, v.shape).copy(), True, biasable=v.sources[0])

    def add_bias(self, v: Value, bias: np.ndarray) -> None:
        """Add a per-channel ``bias`` (in exported units) to the biasable source of ``v``."""
        layer = self.nodes[v.biasable]
        layer.bias = self.arr(layer.bias + _channels(np.broadcast_to(bias, v.shape)))

    def freed(self, v: Value, base: str) -> Value:
        """``v`` as a free value: itself, or passed through a diagonal scale node (σ → 1)."""
        if v.free:
            return v
        scale = _channels(np.broadcast_to(v.scale, v.shape))
        c = len(scale)
        weight, zero = self.arr(np.diag(scale)), np.zeros(c, dtype=self.dtype)  # dense: NIR types ignore groups
        if len(v.shape) == 1:
            layer = nir.Affine(weight=weight, bias=zero)
        elif len(v.shape) in (2, 3):
            weight = weight.reshape(c, c, *[1] * (len(v.shape) - 1))
            layer = (nir.Conv2d(input_shape=tuple(v.shape[1:]), weight=weight, stride=(1, 1), padding=(0, 0),
                                dilation=(1, 1), groups=1, bias=zero) if len(v.shape) == 3 else
                     nir.Conv1d(input_shape=v.shape[1], weight=weight, stride=1, padding=0, dilation=1, groups=1,
                                bias=zero))
        else:
            raise SpikeBridgeError(f"NIR export cannot rescale a tensor of shape {v.shape}")
        name = self.emit(self.name(f"{base}_scale"), layer, v.sources)
        return Value([name], v.shape, np.ones(v.shape), True, biasable=name)

    def single_user(self, node: fx.Node) -> bool:
        return len(node.users) == 1

    pending_matrix = ("adaptive pooling with unequal windows has no NIR node; it can be exported only when a "
                      "flatten and a linear layer follow it (it is folded into the linear weights)")

    # -- node kinds ------------------------------------------------------------------------
    def on_placeholder(self, node):
        if self.nodes:
            raise self.unsupported(node, "NIR export supports networks with one input")
        self.emit("input", nir.Input(input_type=np.array(self.input_shape)), [])
        return Value(["input"], self.input_shape, np.ones(self.input_shape))

    def on_output(self, node):
        out = node.args[0]
        if not isinstance(out, fx.Node) or self.shapes.get(out) is None:
            raise self.unsupported(node, "the network must return one tensor (the logits)")
        v = self.freed(self.plain(node, self.values[out]), "output")
        v = self.rescale(v, np.ones(v.shape))
        self.emit("output", nir.Output(output_type=np.array(v.shape)), v.sources)

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
        return getattr(self, f"rule_{op.nir}")(node, op.name)

    # -- conversions -----------------------------------------------------------------------
    def neuron(self, node, neuron: SpikingNeuron):
        if not neuron.stepwise:
            raise self.unsupported(node, f"NIR has no neuron like {type(neuron).__name__}")
        v = self.plain(node, self.value(node))
        full = torch.zeros(1, *v.shape, dtype=torch.float64)
        theta = (full + channel_view(neuron.threshold.double(), full.dim()))[0].numpy()
        v0 = (full + channel_view(neuron.v0.double(), full.dim()))[0].numpy()
        step_bias = self.semantics.v0_mode == "per-step" and bool(v0.any())
        if (step_bias and v.biasable is None) or (self.target.uniform_threshold and np.ptp(theta / v.scale) > 0):
            v = self.freed(v, node.target)
        if v.free:
            v = self.rescale(v, theta)
        theta_nir, v0_nir = theta / v.scale, v0 / v.scale
        if step_bias:
            self.add_bias(v, v0_nir / int(self.snn.T))
        metadata = {"T": int(self.snn.T), "dynamics": self.semantics.describe(),
                    "spikebridge": {"site": node.target, "ftbc_bias_dropped": bool(neuron.bias.any())}}
        if self.semantics.v0_mode == "initial":
            metadata.update(reset="subtract", reset_note=RESET_NOTE, v_initial=self.arr(v0_nir),
                            spike_condition="v >= v_threshold")
        fire_at = self.arr(theta_nir * self.semantics.threshold_scale)
        name = self.emit(self.node_name(node), self.target.neuron_node(fire_at, metadata), v.sources)
        self.sites[name] = node.target
        return Value([name], v.shape, theta)

    def module(self, node) -> nn.Module | None:
        return self.gm.get_submodule(node.target) if node.op == "call_module" else None

    def rule_conv(self, node, op_name):
        conv, v = self.module(node), self.plain(node, self.value(node))
        if isinstance(conv, nn.Conv3d):
            raise self.unsupported(node, "NIR has no 3-d convolution")
        if conv.padding_mode != "zeros":
            raise self.unsupported(node, f"NIR convolutions pad with zeros, not {conv.padding_mode!r}")
        scale = _channels(np.broadcast_to(v.scale, v.shape))
        per_group = conv.weight.shape[1]
        weight = conv.weight.detach().double().numpy()
        weight = weight * scale.reshape(conv.groups, 1, per_group).repeat(weight.shape[0] // conv.groups, 0).reshape(
            weight.shape[0], per_group, *[1] * (weight.ndim - 2))
        weight = _dense(weight, conv.groups)
        bias = conv.bias.detach().double().numpy() if conv.bias is not None else np.zeros(weight.shape[0])
        padding = conv.padding if isinstance(conv.padding, str) else tuple(conv.padding)
        if isinstance(conv, nn.Conv2d):
            layer = nir.Conv2d(input_shape=tuple(v.shape[1:]), weight=self.arr(weight), stride=tuple(conv.stride),
                               padding=padding, dilation=tuple(conv.dilation), groups=1, bias=self.arr(bias))
        else:
            layer = nir.Conv1d(input_shape=v.shape[1], weight=self.arr(weight), stride=conv.stride[0],
                               padding=padding if isinstance(padding, str) else padding[0],
                               dilation=conv.dilation[0], groups=1, bias=self.arr(bias))
        return self.synaptic(node, layer, v)

    def rule_linear(self, node, op_name):
        linear, v = self.module(node), self.value(node)
        if len(v.shape) != 1:
            raise self.unsupported(node, f"NIR's Affine takes 1-d inputs, this layer gets {v.shape}; flatten first")
        weight = linear.weight.detach().double().numpy()
        if v.matrix is not None:  # per channel: W_c @ pooling matrix
            c = weight.shape[1] // v.matrix.shape[0]
            weight = (weight.reshape(weight.shape[0], c, -1) @ v.matrix).reshape(weight.shape[0], -1)
        weight = weight * v.scale.reshape(1, -1)
        bias = linear.bias.detach().double().numpy() if linear.bias is not None else np.zeros(weight.shape[0])
        return self.synaptic(node, nir.Affine(weight=self.arr(weight), bias=self.arr(bias)), v)

    def synaptic(self, node, layer, v: Value) -> Value:
        name = self.emit(self.node_name(node), layer, v.sources)
        own = self.single_user(node)
        return Value([name], self.shapes[node], np.ones(self.shapes[node]), own, biasable=name if own else None)

    def pool(self, node, op_name, v: Value, kernel, stride) -> Value:
        """A pooling of ``v`` with zero padding: AvgPool2d, or SumPool2d with σ/k² (``target.pool``)."""
        kernel, stride = np.array(kernel, dtype=int), np.array(stride, dtype=int)
        pooled = F.avg_pool2d(torch.as_tensor(np.broadcast_to(v.scale, v.shape).copy())[None],
                              tuple(kernel), tuple(stride))[0].numpy()
        cls = nir.AvgPool2d if self.target.pool == "avg" else nir.SumPool2d
        if cls is nir.SumPool2d:
            pooled = pooled / float(np.prod(kernel))
        name = self.emit(self.node_name(node, op_name), cls(kernel_size=kernel, stride=stride,
                                                           padding=np.zeros(2, dtype=int)), v.sources)
        return Value([name], pooled.shape, pooled)

    def rule_avg_pool(self, node, op_name):
        pool, v = self.module(node) or nn.AvgPool2d(*node.args[1:], **node.kwargs), self.plain(node, self.value(node))
        padding = np.broadcast_to(np.array(pool.padding), 2)
        if pool.ceil_mode or pool.divisor_override is not None or padding.any():
            raise self.unsupported(node, "NIR's AvgPool2d has no padding, ceil_mode or divisor_override semantics")
        kernel = np.broadcast_to(np.array(pool.kernel_size), 2)
        stride = np.broadcast_to(np.array(pool.stride if pool.stride is not None else pool.kernel_size), 2)
        return self.pool(node, op_name, v, kernel, stride)

    def rule_adaptive_pool(self, node, op_name):
        v = self.plain(node, self.value(node))
        size, out = [int(s) for s in v.shape[1:]], [int(s) for s in self.shapes[node][1:]]
        if all(s % o == 0 for s, o in zip(size, out)):
            kernel = [s // o for s, o in zip(size, out)]
            return self.pool(node, op_name, v, kernel, kernel)
        if not self.folds_into_linear(node):
            raise self.unsupported(node, f"adaptive pooling from {size[0]}x{size[1]} to {out[0]}x{out[1]} has unequal "
                                         f"windows, which no NIR pooling node expresses; it can be exported only when "
                                         f"a flatten and a linear layer follow it (it is folded into the linear weights)")
        module = self.module(node) or nn.AdaptiveAvgPool2d(self.shapes[node][1:])
        n = size[0] * size[1]
        matrix = module(torch.eye(n, dtype=torch.float64).reshape(n, 1, *size)).reshape(n, -1).T.numpy()
        return Value(v.sources, v.shape, v.scale, matrix=matrix)

    def folds_into_linear(self, node: fx.Node) -> bool:
        """The node's only user is a flatten (or 1-d reshape) whose only user is a linear layer."""
        users = list(node.users)
        if len(users) != 1 or len(self.shapes.get(users[0]) or ()) != 1:
            return False
        nxt = list(users[0].users)
        op = op_for_node(users[0], self.gm)
        return (op is not None and op.nir == "reshape" and len(nxt) == 1 and nxt[0].op == "call_module"
                and isinstance(self.gm.get_submodule(nxt[0].target), nn.Linear))

    def rule_identity(self, node, op_name):
        v, own = self.value(node), self.single_user(node)
        return Value(v.sources, v.shape, v.scale, v.free and own, v.matrix, v.biasable if own else None)

    def rule_shape(self, node, op_name):
        if self.shapes[node] is not None:
            raise self.unsupported(node, "indexing a tensor has no NIR equivalent")
        return None

    def rule_mean(self, node, op_name):
        v, in_shape = self.plain(node, self.value(node)), self.shapes[node.args[0]]
        dim = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else None)
        keepdim = node.kwargs.get("keepdim", node.args[2] if len(node.args) > 2 else False)
        dims = {d % (len(in_shape) + 1) for d in (dim if isinstance(dim, tuple | list) else [dim])} if dim is not None else set()
        if len(in_shape) != 3 or dims != {2, 3}:
            raise self.unsupported(node, "only a spatial mean over dims (2, 3) has a NIR equivalent (global AvgPool2d)")
        pooled = self.pool(node, op_name, v, in_shape[1:], in_shape[1:])
        return pooled if keepdim else self.flatten(node, pooled)

    def flatten(self, node, v: Value) -> Value:
        shape = (int(np.prod(v.shape)),)
        flat = nir.Flatten(input_type=np.array(v.shape), start_dim=-len(v.shape), end_dim=-1)
        name = self.emit(self.name("flatten"), flat, v.sources)
        scale = np.broadcast_to(v.scale, v.shape).reshape(-1)
        return Value([name], shape, scale, matrix=v.matrix)

    def rule_reshape(self, node, op_name):
        v, in_shape, out_shape = self.value(node), self.shapes[node.args[0]], self.shapes[node]
        if out_shape == in_shape:
            return self.rule_identity(node, op_name)
        if len(out_shape) != 1:
            raise self.unsupported(node, f"NIR has no reshape from {in_shape} to {out_shape}, only flattening")
        return self.flatten(node, v)

    def rule_add(self, node, op_name):
        args = [a for a in (*node.args, *node.kwargs.values()) if isinstance(a, fx.Node)]
        if len(args) != 2 or len(node.args) + len(node.kwargs) != 2 or any(self.shapes[a] != self.shapes[node] for a in args):
            raise self.unsupported(node, "only the sum of two tensors of the same shape has a NIR equivalent")
        a, b = (self.plain(node, self.values[x]) for x in args)
        if not np.array_equal(np.broadcast_to(a.scale, a.shape), np.broadcast_to(b.scale, b.shape)):
            if not b.free:
                a, b = b, a
            b = self.rescale(self.freed(b, self.node_name(node, op_name)), a.scale)
        sources = a.sources + b.sources
        if len(set(sources)) != len(sources):
            raise self.unsupported(node, "a node added to itself would need a doubled NIR edge")
        own = self.single_user(node)
        return Value(sources, a.shape, a.scale, a.free and b.free and own, biasable=(a.biasable or b.biasable) if own else None)
