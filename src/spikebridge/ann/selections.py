"""Selections a model writes in two calls, made one call of the op table as it is traced (docs/methods.md §8,
"Max pooling"): each is an ANALOG op that ``selects`` (every output is one of its inputs), so
sum coding computes it exactly and rate coding runs it on running sums like max pooling.

- ``max_values_as_amax``: ``x.max(d)[0]`` / ``torch.max(x, d).values`` (and ``min``) — the values
  of a max over a dimension whose indices nobody reads — is ``torch.amax(x, d)``
  (``torch.amin``): VOLO's class-token head ``aux.max(1)[0]``.
- ``fuse_padded_max_pool``: a constant pad with −inf read only by max pooling (timm's
  ``MaxPool2dSame``, TensorFlow's "same" max pooling: NASNet, PNASNet) is one call of
  ``max_pool2d_padded``: each window's max over the input entries it covers. A −inf pad is no
  value a train can carry, and only the pooling after it makes it harmless.
"""
from __future__ import annotations

import math
import operator

import torch
import torch.nn.functional as F
from torch import fx, nn

_MAX_OVER_DIM = {torch.max: torch.amax, torch.min: torch.amin, "max": torch.amax, "min": torch.amin}
_POOL_ARGUMENTS = ("kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices")


def max_pool2d_padded(input: torch.Tensor, pad, kernel_size, stride=None, padding=0, dilation=1,
                      ceil_mode: bool = False) -> torch.Tensor:
    """max_pool2d(pad(input, pad, value=−inf), ...): a window's max over the entries of
    ``input`` inside it (a window over the pad alone would give −inf; "same" padding has none)."""
    return F.max_pool2d(F.pad(input, pad, value=-math.inf), kernel_size, stride, padding, dilation, ceil_mode)


def _values_only(node: fx.Node) -> bool:
    """Every reader of ``node`` (a max over a dimension) takes its values, none its indices."""
    return bool(node.users) and all(
        user.op == "call_function" and (user.target is operator.getitem and user.args[1:] == (0,)
                                        or user.target is getattr and user.args[1:] == ("values",))
        for user in node.users)


def _dim_and_keepdim(node: fx.Node) -> tuple[int, bool] | None:
    """(dim, keepdim) of ``max(input, dim, keepdim)`` with a literal int dim; None for the
    elementwise ``max(a, b)``, the full ``max(x)`` and a dim computed in the graph."""
    args = dict(zip(("input", "dim", "keepdim"), node.args))
    args.update(node.kwargs)
    dim, keepdim = args.get("dim"), args.get("keepdim", False)
    if not isinstance(dim, int) or isinstance(dim, bool) or not isinstance(keepdim, bool):
        return None
    return dim, keepdim


def max_values_as_amax(gm: fx.GraphModule) -> None:
    """``max(x, d)`` / ``min(x, d)`` whose readers take only the values becomes
    ``amax(x, d, keepdim)`` / ``amin``, and its readers read that call."""
    for node in list(gm.graph.nodes):
        key = node.target if node.op in ("call_function", "call_method") else None
        if key not in _MAX_OVER_DIM or not _values_only(node):
            continue
        found = _dim_and_keepdim(node)
        if found is None:
            continue
        with gm.graph.inserting_before(node):
            values = gm.graph.call_function(_MAX_OVER_DIM[key], (node.args[0], *found))
        values.meta = dict(node.meta)
        for user in list(node.users):
            user.replace_all_uses_with(values)
            gm.graph.erase_node(user)
        gm.graph.erase_node(node)
    gm.recompile()


def _pool_call(node: fx.Node, gm: fx.GraphModule) -> dict | None:
    """The arguments after the input of a 2-d max pooling call without indices
    (``F.max_pool2d`` or an ``nn.MaxPool2d``), or None for any other node."""
    if node.op == "call_function" and node.target is F.max_pool2d:
        arguments = dict(zip(_POOL_ARGUMENTS, node.args[1:]))
        arguments.update(node.kwargs)
    elif node.op == "call_module" and type(gm.get_submodule(node.target)) is nn.MaxPool2d:
        if len(node.args) != 1 or node.kwargs:
            return None
        module = gm.get_submodule(node.target)
        arguments = {a: getattr(module, a) for a in _POOL_ARGUMENTS}
    else:
        return None
    return None if arguments.pop("return_indices", False) else arguments


def _minus_infinity_pad(node: fx.Node) -> bool:
    """``F.pad(x, pad, mode="constant", value=−inf)``."""
    if node.op != "call_function" or node.target is not F.pad:
        return False
    args = dict(zip(("input", "pad", "mode", "value"), node.args))
    args.update(node.kwargs)
    value = args.get("value")
    return args.get("mode", "constant") == "constant" and isinstance(value, float) and value == -math.inf


def fuse_padded_max_pool(gm: fx.GraphModule) -> None:
    """A −inf pad read only by 2-d max pooling becomes one ``max_pool2d_padded`` call per pooling."""
    for pad in list(gm.graph.nodes):
        if not _minus_infinity_pad(pad) or not pad.users:
            continue
        pools = {user: _pool_call(user, gm) for user in pad.users}
        if any(a is None or user.args[0] is not pad for user, a in pools.items()):
            continue
        source, amounts = pad.args[0], pad.kwargs.get("pad", pad.args[1] if len(pad.args) > 1 else None)
        for pool, arguments in pools.items():
            with gm.graph.inserting_before(pool):
                fused = gm.graph.call_function(max_pool2d_padded, (source, amounts), arguments)
            fused.meta = dict(pool.meta)
            pool.replace_all_uses_with(fused)
            gm.graph.erase_node(pool)
        gm.graph.erase_node(pad)
    gm.recompile()


def fuse_selections(gm: fx.GraphModule) -> None:
    """Both rewrites; values are unchanged, so every traced graph (``tracing.trace``) gets them."""
    max_values_as_amax(gm)
    fuse_padded_max_pool(gm)
