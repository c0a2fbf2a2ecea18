"""A tensor the ANN reads directly (a learned position embedding, a class token, a layer
scale): at conversion each ``get_attr`` node becomes a call of a ``Constant`` module holding
the tensor, so that the SNN's graph holds only module calls and op-table functions (and data-only
files store the tensor like a layer's weights). In the SNN it is a train of one step: under
rate coding a constant current, under sum coding the value carried once (docs/methods.md §8).
"""
from __future__ import annotations

import operator

import torch
from torch import fx, nn


class Constant(nn.Module):
    """forward() returns the tensor ``value`` (a buffer of the given shape)."""

    def __init__(self, shape: tuple[int, ...], value: torch.Tensor | None = None):
        super().__init__()
        self.register_buffer("value", torch.empty(shape) if value is None else value.detach().clone())

    @property
    def shape(self) -> list[int]:
        return list(self.value.shape)

    def forward(self) -> torch.Tensor:
        return self.value


def constants_as_modules(gm: fx.GraphModule) -> None:
    """Replace every ``get_attr`` node by a call of a ``Constant`` module holding the tensor."""
    for node in list(gm.graph.nodes):
        if node.op != "get_attr":
            continue
        value = operator.attrgetter(node.target)(gm)
        name = "constant_" + node.target.replace(".", "_")
        gm.add_submodule(name, Constant(tuple(value.shape), value))
        with gm.graph.inserting_before(node):
            call = gm.graph.call_module(name)
        call.meta = dict(node.meta)
        node.replace_all_uses_with(call)
        gm.graph.erase_node(node)
    gm.recompile()
