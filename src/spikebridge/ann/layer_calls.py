"""Functional layer calls on a module's own tensors become layer modules (docs/architecture.md).

Some layers compute their own function in ``forward``: timm's BatchNormAct2d calls
``F.batch_norm`` on its buffers and then its activation, timm's Linear calls ``F.linear``,
a same-padding Conv2d pads and calls ``F.conv2d``. torch.fx traces through them (they are not
torch.nn's own classes), so the graph holds ``call_function`` nodes on ``get_attr`` tensors,
which the op table cannot fold or run as synapses. Each such call becomes a call of a plain
``nn.Linear``, ``nn.Conv1d/2d`` or ``nn.BatchNorm1d/2d/3d`` holding the same tensor objects
(one parameter, trained and saved once), built from the call's own arguments (stride,
padding, ...), at path "<owner>.<linear|conv|bn>". The graph computes what it computed; BatchNorm
then follows train()/eval() as the original module did, where the traced call had the mode of
the trace fixed in it. A call on computed tensors (a standardised weight) is left as it is:
training changes what they are computed from; conversion, where the weights are fixed, makes
it a layer (``conversion.graph.constant_layer_calls``).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch.nn.functional as F
from torch import fx, nn


@dataclass(frozen=True)
class LayerCall:
    """A functional form: its argument names and defaults after the input, which of them are
    the layer's tensors, and how to build the module from the bound arguments (tensors resolved)
    and the tensors' owner in the original model; ``build`` returns None when it cannot."""
    name: str
    arguments: tuple[tuple[str, object], ...]
    tensors: tuple[str, ...]
    build: Callable[[dict, nn.Module], nn.Module | None]

    def bind(self, node: fx.Node) -> dict:
        """The call's arguments after the input, by name, defaults filled in."""
        names = [name for name, _ in self.arguments]
        return dict(self.arguments) | dict(zip(names, node.args[1:])) | dict(node.kwargs)


def _linear(a: dict, owner: nn.Module) -> nn.Module:
    out_features, in_features = a["weight"].shape
    return nn.Linear(in_features, out_features, bias=a["bias"] is not None)


def _conv(kind: type[nn.Module]):
    def build(a: dict, owner: nn.Module) -> nn.Module:
        weight = a["weight"]
        return kind(weight.shape[1] * a["groups"], weight.shape[0], tuple(weight.shape[2:]), stride=a["stride"],
                    padding=a["padding"], dilation=a["dilation"], groups=a["groups"], bias=a["bias"] is not None)
    return build


def _batch_norm(a: dict, owner: nn.Module) -> nn.Module | None:
    kind = next((k for k in (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d) if isinstance(owner, k)), None)
    if kind is None:  # the dims are the owner's class's
        return None
    return kind(owner.num_features, owner.eps, owner.momentum, owner.affine, owner.track_running_stats)


_CONV_ARGS = (("weight", None), ("bias", None), ("stride", 1), ("padding", 0), ("dilation", 1), ("groups", 1))
LAYER_CALLS = {
    F.linear: LayerCall("linear", (("weight", None), ("bias", None)), ("weight", "bias"), _linear),
    F.conv1d: LayerCall("conv", _CONV_ARGS, ("weight", "bias"), _conv(nn.Conv1d)),
    F.conv2d: LayerCall("conv", _CONV_ARGS, ("weight", "bias"), _conv(nn.Conv2d)),
    F.batch_norm: LayerCall("bn", (("running_mean", None), ("running_var", None), ("weight", None), ("bias", None),
                                   ("training", False), ("momentum", 0.1), ("eps", 1e-5)),
                            ("running_mean", "running_var", "weight", "bias"), _batch_norm),
}


def _holds_node(value) -> bool:
    found = []
    fx.node.map_aggregate(value, lambda v: found.append(v) if isinstance(v, fx.Node) else None)
    return bool(found)


def _share(module: nn.Module, name: str, tensor) -> None:
    """Put ``tensor`` (the very object) at ``module.name``, as a parameter or a buffer as it was."""
    if name in dict(module.named_parameters(recurse=False)) and not isinstance(tensor, nn.Parameter):
        delattr(module, name)
        module.register_buffer(name, tensor)
    else:
        setattr(module, name, tensor)


def layer_calls_as_modules(gm: fx.GraphModule, model: nn.Module) -> None:
    """Replace every call of ``LAYER_CALLS`` whose tensors are one module's own (``get_attr``
    nodes of one owner path, or None) and whose other arguments are plain values by a call of
    the module it builds (module docstring); ``model`` is the module ``gm`` was traced from."""
    for node in list(gm.graph.nodes):
        call = LAYER_CALLS.get(node.target) if node.op == "call_function" else None
        if call is None:
            continue
        bound = call.bind(node)
        tensors = {name: bound[name] for name in call.tensors if bound[name] is not None}
        if (not all(isinstance(t, fx.Node) and t.op == "get_attr" for t in tensors.values())
                or len({t.target.rpartition(".")[0] for t in tensors.values()}) != 1
                or _holds_node([v for k, v in bound.items() if k not in call.tensors])):
            continue
        owner = next(iter(tensors.values())).target.rpartition(".")[0]
        container = gm.get_submodule(owner)
        values = bound | {name: getattr(container, t.target.rpartition(".")[2]) for name, t in tensors.items()}
        module = call.build(values, model.get_submodule(owner))
        if module is None:
            continue
        module.train(model.get_submodule(owner).training)  # batch norm: batch statistics only in training
        for name in call.tensors:
            _share(module, name, values[name])
        path = f"{owner}.{call.name}" if owner else call.name
        while path in dict(gm.named_modules()):
            path += "_"
        gm.add_submodule(path, module)
        with gm.graph.inserting_before(node):
            new = gm.graph.call_module(path, (node.args[0],))
        new.meta = dict(node.meta)
        node.replace_all_uses_with(new)
        gm.graph.erase_node(node)
        for t in tensors.values():
            if not t.users:
                gm.graph.erase_node(t)
            if not any(n.op == "get_attr" and n.target == t.target for n in gm.graph.nodes):
                delattr(container, t.target.rpartition(".")[2])  # now held by the new module only
    gm.recompile()
