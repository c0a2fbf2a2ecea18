"""Residual joins rewritten as a chain, for importers that run a NIR graph in depth-first order.

nirtorch's ``load`` (Norse 1.1.0, sinabs 3.1.3) executes the nodes in depth-first order from
the input; a node reached before all of its inputs were computed in this step reads the missing
ones from the previous step, or drops them. A residual block

    A → c1 → I1 → c2 → J,  A → (sc →) J          (A, I1: neurons; c1, c2, sc: convolutions)

is therefore rewritten as one chain A → c1' → I1' → c2' → J that computes the same J: c1' adds
C_A relay channels that copy A's spikes (a one-hot kernel at c1's padding offset, so output i
reads input s1·i), I1' adds C_A relay neurons that re-emit every spike they get (threshold 1
for v ≥ θ, 1/2 for v > θ with reset to 0: an input of n spikes emits n spikes and leaves v = 0),
and c2' applies the shortcut to the relay channels (sc's 1x1 weights, or the identity, at c2's
padding offset). Exact when s1·s2 equals sc's stride (1 for the identity).
"""
from __future__ import annotations

import dataclasses

import nir
import numpy as np

from ..errors import SpikeBridgeError
from ..snn.neurons import Semantics


def relay_threshold(semantics: Semantics) -> float:
    """A threshold at which an input of n ∈ {0, 1, ...} spikes emits n spikes and leaves v = 0."""
    if not semantics.strict:
        return 1.0
    if semantics.reset == "zero" and not semantics.multi_spike:
        return 0.5
    raise SpikeBridgeError(f"no relay neuron reproduces spikes under '{semantics.describe()}'")


def _neuron(node) -> bool:
    return isinstance(node, (nir.IF, nir.LIF))


def _pair(x) -> tuple[int, int]:
    a = np.broadcast_to(np.asarray(x, dtype=int), 2)
    return int(a[0]), int(a[1])


def _plain_conv(node) -> bool:
    return (isinstance(node, nir.Conv2d) and not isinstance(node.padding, str) and _pair(node.dilation) == (1, 1)
            and all(p < k for p, k in zip(_pair(node.padding), node.weight.shape[2:])))


def _dense_1x1(conv) -> np.ndarray | None:
    """The [C_out, C_in] matrix of a 1x1 unpadded convolution (groups expanded), else None."""
    if not isinstance(conv, nir.Conv2d) or conv.weight.shape[2:] != (1, 1) or _pair(conv.padding) != (0, 0):
        return None
    out, per_group = conv.weight.shape[:2]
    groups = int(conv.groups)
    dense = np.zeros((out, per_group * groups), dtype=conv.weight.dtype)
    n = out // groups
    for g in range(groups):
        dense[g * n:(g + 1) * n, g * per_group:(g + 1) * per_group] = conv.weight[g * n:(g + 1) * n, :, 0, 0]
    return dense


def _widened_neuron(node, extra: int, threshold: float):
    """``node`` with ``extra`` relay channels of threshold ``threshold`` appended (dim 0)."""
    fields = {}
    for f in dataclasses.fields(node):
        value = getattr(node, f.name)
        if isinstance(value, np.ndarray) and f.name not in ("input_type", "output_type"):
            relay = np.repeat(value[:1], extra, axis=0)
            if f.name == "v_threshold":
                relay = np.full_like(relay, threshold)
            elif f.name in ("v_reset", "v_leak"):
                relay = np.zeros_like(relay)
            fields[f.name] = np.concatenate([value, relay])
    metadata = dict(node.metadata, relay_channels=int(extra))
    return type(node)(**fields, metadata=metadata)


def rewrite_joins(nodes: dict, edges: list, semantics: Semantics, target: str) -> tuple[dict, list]:
    """The graph with every residual join rewritten as a chain (see the module docstring);
    a join of another form is a SpikeBridgeError."""
    nodes, edges = dict(nodes), list(edges)

    def preds(n):
        return [a for a, b in edges if b == n]

    def succs(n):
        return [b for a, b in edges if a == n]

    def only(n):  # the single input of n, if n feeds one node only
        p = preds(n)
        return p[0] if len(p) == 1 and len(succs(n)) == 1 else None

    for join in list(nodes):
        inputs = preds(join)
        if len(inputs) < 2:
            continue
        plan = None
        for main, short in (inputs, inputs[::-1]) if len(inputs) == 2 else ():
            c2 = nodes[main]
            i1 = only(main)
            c1 = only(i1) if i1 and _neuron(nodes[i1]) else None
            a = preds(c1)[0] if c1 and len(preds(c1)) == 1 else None
            if not (_plain_conv(c2) and c1 and _plain_conv(nodes[c1]) and int(nodes[c1].groups) == 1
                    and int(c2.groups) == 1 and a and _neuron(nodes[a])):
                continue
            if short == a:
                sc, shortcut, stride = None, np.eye(c2.weight.shape[0], dtype=c2.weight.dtype), (1, 1)
            elif only(short) == a and _dense_1x1(nodes[short]) is not None:
                sc, shortcut, stride = short, _dense_1x1(nodes[short]), _pair(nodes[short].stride)
            else:
                continue
            s1, s2 = _pair(nodes[c1].stride), _pair(c2.stride)
            if shortcut.shape != (c2.weight.shape[0], nodes[c1].weight.shape[1]) or \
                    (s1[0] * s2[0], s1[1] * s2[1]) != stride:
                continue
            plan = (a, c1, i1, main, sc, shortcut)
            break
        if plan is None:
            raise SpikeBridgeError(
                f"target {target!r}: its importer runs NIR nodes in depth-first order, and the join at node "
                f"{join!r} is not a residual block spikebridge can rewrite as a chain (neuron → conv → neuron → conv, "
                "plus the identity or a 1x1 conv of the first neuron); export with --target generic or snntorch")
        a, c1, i1, c2, sc, shortcut = plan
        conv1, conv2, n_a = nodes[c1], nodes[c2], nodes[c1].weight.shape[1]
        (p1h, p1w), (p2h, p2w) = _pair(conv1.padding), _pair(conv2.padding)
        relay = np.zeros((n_a, n_a, *conv1.weight.shape[2:]), dtype=conv1.weight.dtype)
        relay[np.arange(n_a), np.arange(n_a), p1h, p1w] = 1
        nodes[c1] = nir.Conv2d(input_shape=conv1.input_shape, weight=np.concatenate([conv1.weight, relay]),
                               stride=conv1.stride, padding=conv1.padding, dilation=conv1.dilation, groups=1,
                               bias=np.concatenate([conv1.bias, np.zeros(n_a, dtype=conv1.bias.dtype)]))
        nodes[i1] = _widened_neuron(nodes[i1], n_a, relay_threshold(semantics))
        applied = np.zeros((conv2.weight.shape[0], n_a, *conv2.weight.shape[2:]), dtype=conv2.weight.dtype)
        applied[:, :, p2h, p2w] = shortcut
        bias = conv2.bias + (nodes[sc].bias if sc else 0)
        nodes[c2] = nir.Conv2d(input_shape=conv2.input_shape, weight=np.concatenate([conv2.weight, applied], axis=1),
                               stride=conv2.stride, padding=conv2.padding, dilation=conv2.dilation, groups=1,
                               bias=bias.astype(conv2.bias.dtype))
        drop = {(sc, join), (a, sc)} if sc else {(a, join)}
        edges = [e for e in edges if e not in drop]
        if sc:
            del nodes[sc]
    return nodes, edges
