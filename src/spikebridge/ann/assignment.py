"""Assignment into part of a traced tensor, ``x[index] = v`` (MViTv2 adds its relative position
bias into a slice of its attention): torch.fx records no assignment, so the tracers record it
out of place, ``x = assigned(x, v, index)``, and rebind the proxy ``x`` to the result, which
the rest of the forward pass reads. A view of ``x`` taken before the assignment and read after
it would see the new values in PyTorch and the old ones in the graph: such a graph is refused
(``check_assignments``)."""
from __future__ import annotations

import operator

import torch
from torch import fx

from ..errors import SpikeBridgeError

VIEW_METHODS = {"view", "view_as", "reshape", "reshape_as", "transpose", "permute", "expand", "expand_as", "unsqueeze",
                "squeeze", "flatten", "unflatten", "narrow", "select", "chunk", "split", "unbind", "t", "movedim",
                "swapaxes", "diagonal", "unfold", "as_strided"}
VIEW_FUNCTIONS = {operator.getitem, torch.reshape, torch.transpose, torch.permute, torch.flatten, torch.unsqueeze,
                  torch.squeeze, torch.narrow, torch.select, torch.chunk, torch.split, torch.unbind, torch.t,
                  torch.movedim, torch.swapaxes, torch.diagonal, torch.as_strided}


def assigned(input: torch.Tensor, value, index) -> torch.Tensor:
    """``input`` with ``input[index] = value``, out of place."""
    out = input.clone()
    out[index] = value
    return out


class AssignableProxy(fx.Proxy):
    """A proxy that records ``x[index] = v`` as ``assigned`` and stands for its result after."""

    def __setitem__(self, index, value) -> None:
        result = self.tracer.create_proxy("call_function", assigned, (self, value, index), {})
        self.tracer.assignments.append((self.node, result.node))
        self.node = result.node


def _is_view(node: fx.Node) -> bool:
    return (node.op == "call_method" and node.target in VIEW_METHODS
            or node.op == "call_function" and node.target in VIEW_FUNCTIONS)


def check_assignments(assignments: list[tuple[fx.Node, fx.Node]]) -> None:
    """No view of an assigned tensor taken before the assignment (or a view of such a view) is
    read after it; a SpikeBridgeError names one that is."""
    if not assignments:
        return
    order = {n: i for i, n in enumerate(assignments[0][1].graph.nodes)}  # one graph: the trace's
    for before, after in assignments:
        stack = [u for u in before.users if _is_view(u) and order[u] < order[after]]
        views: set[fx.Node] = set()
        while stack:
            view = stack.pop()
            views.add(view)
            stack += [u for u in view.users if _is_view(u) and order[u] < order[after] and u not in views]
        late = [v for v in views if any(order[u] > order[after] for u in v.users)]
        if late:
            raise SpikeBridgeError(f"the forward pass assigns into part of a tensor ({after.name}) after taking a view "
                                   f"of it ({late[0].name}) that it reads after the assignment: a traced graph "
                                   "computes out of place, so that view would keep the old values; take the view "
                                   "after the assignment")
