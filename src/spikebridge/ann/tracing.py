"""torch.fx tracing shared by prepare() and convert(): one tracer, one site-naming rule,
one way to say where a node came from."""
from __future__ import annotations

import copy
import operator

import torch
from torch import fx, nn

from ..conversion.ops import Kind, Op, op_for_node
from ..errors import SpikeBridgeError, first_line
from .example_tracing import SiteTracer, trace_with_example
from .hf_tracing import is_transformers_model, trace_transformers
from .layer_calls import layer_calls_as_modules
from .qcfs import QCFS
from .selections import fuse_selections

INPLACE_FUNCTIONS = {torch.relu_}  # F.relu_ is torch.relu_


def trace(model: nn.Module, example: torch.Tensor | None = None) -> fx.GraphModule:
    """Symbolically trace a deep copy of ``model`` (the user's model is never modified).
    A model whose forward pass reads its input's shape in Python (branches on it, takes its
    length, converts it to a number) is traced again with ``example``, an input batch, when
    given: the graph is then specialised to the example's shape except the batch size
    (``example_tracing``).
    Re-tracing a GraphModule (a prepared model) gives one node per node of its graph, in order;
    each keeps the module path it came from (``nn_module_stack``), which the re-trace alone
    would lose (every function call would be at the top level). A Hugging Face transformers
    classifier is first traced from its token ids (``hf_tracing.trace_transformers``).
    Selections written in two calls become one (``selections``: a max's values, a −inf pad
    before max pooling)."""
    model = copy.deepcopy(model, memo=_detached_caches(model))
    if is_transformers_model(model):
        model = trace_transformers(model)
    try:
        graph = SiteTracer().trace(model)
    except SpikeBridgeError:  # the tracer's own refusal (``assignment``)
        raise
    except Exception as plain:  # fx raises many types; the user needs one clear line
        if example is None:
            raise SpikeBridgeError(
                f"torch.fx could not trace {type(model).__name__}: {first_line(plain)} (control flow on the "
                "input's shape needs an example input: sb.prepare's example_input, convert's calibration_data or "
                "input_shape; control flow on its data is not supported)") from plain
        try:
            graph = trace_with_example(model, example)
        except SpikeBridgeError:
            raise
        except Exception as exc:
            raise SpikeBridgeError(
                f"torch.fx could not trace {type(model).__name__}, even with an example input: {first_line(exc)} "
                "(data-dependent control flow is not supported; make the forward pass traceable)") from exc
    if isinstance(model, fx.GraphModule):
        _keep_origins(model.graph, graph)
    gm = fx.GraphModule(model, graph, type(model).__name__)
    layer_calls_as_modules(gm, model)
    fuse_selections(gm)
    return gm


def _detached_caches(model: nn.Module) -> dict:
    """A deepcopy memo that copies the tensors a model computed and kept outside its parameters
    and buffers (timm's LeViT and EfficientFormer cache attention biases in a dict after an eval
    forward pass) as detached clones: deepcopy refuses a tensor that is not a graph leaf."""
    memo, stack = {}, [vars(m) for m in model.modules()]
    while stack:
        value = stack.pop()
        if isinstance(value, torch.Tensor):
            if value.grad_fn is not None:
                memo[id(value)] = value.detach().clone()
        elif isinstance(value, dict):
            stack.extend(v for k, v in value.items() if k not in ("_parameters", "_modules"))
        elif isinstance(value, (list, tuple)):
            stack.extend(value)
    return memo


def _keep_origins(old: fx.Graph, new: fx.Graph) -> None:
    old_nodes, new_nodes = list(old.nodes), list(new.nodes)
    if len(old_nodes) != len(new_nodes):
        return
    for a, b in zip(old_nodes, new_nodes):
        if (a.op == b.op and a.target == b.target and a.meta.get("nn_module_stack")
                and not b.meta.get("nn_module_stack")):
            b.meta["nn_module_stack"] = a.meta["nn_module_stack"]


def node_origin(node: fx.Node) -> str:
    """The module path a node came from, e.g. 'layer1.0 (BasicBlock)', or 'the top level'."""
    stack = node.meta.get("nn_module_stack") or {}
    if not stack:
        return "the top level"
    path, kind = list(stack.values())[-1]
    kind = kind.__name__ if isinstance(kind, type) else str(kind).rsplit(".", 1)[-1]
    return f"{path or '<root>'} ({kind})"


def describe(node: fx.Node, gm: fx.GraphModule) -> str:
    """'node relu_3 (call_function relu) in layer1.0 (BasicBlock)'."""
    if node.op == "call_module":
        what = type(gm.get_submodule(node.target)).__name__
        where = node.target
    else:
        what = getattr(node.target, "__name__", str(node.target))
        where = node_origin(node)
    return f"node '{node.name}' ({node.op} {what}) in {where}"


def is_inplace_relu(node: fx.Node) -> bool:
    if node.op == "call_function":
        return node.target in INPLACE_FUNCTIONS or bool(node.kwargs.get("inplace", False))
    return node.op == "call_method" and node.target.endswith("_")  # x.relu_(), x.sigmoid_()


def refused_activation(node: fx.Node, gm: fx.GraphModule) -> Op | None:
    """The op-table entry of an activation that cannot become a site (GELU, SiLU, ...), or None."""
    op = op_for_node(node, gm)
    return op if op is not None and op.kind is Kind.REFUSED and op.refused_by_prepare else None


def input_data_nodes(gm: fx.GraphModule) -> set[fx.Node]:
    """The nodes whose value depends on the input's data (not only on its shape): the input,
    and every call that reads one of them, except shapes read off them (``reached``)."""
    return reached(gm, ("placeholder",))


def reached(gm: fx.GraphModule, starts: tuple[str, ...]) -> set[fx.Node]:
    """The nodes of the kinds ``starts`` and every call that reads one of the set, except the
    table's shape reads (``x.shape``, ``x.size()``; indexing is not one)."""
    found: set[fx.Node] = set()
    for node in gm.graph.nodes:
        if node.op in starts:
            found.add(node)
        elif node.op.startswith("call_") and any(a in found for a in node.all_input_nodes):
            op = op_for_node(node, gm)
            if not (op is not None and op.kind is Kind.SHAPE and node.target is not operator.getitem):
                found.add(node)
    return found


def site_nodes(gm: fx.GraphModule) -> dict[str, fx.Node]:
    """QCFS sites of a prepared graph, in topological order: {module path: node}."""
    return {
        n.target: n
        for n in gm.graph.nodes
        if n.op == "call_module" and isinstance(gm.get_submodule(n.target), QCFS)
    }


def replace_with_module(gm: fx.GraphModule, node: fx.Node, name: str, module: nn.Module) -> fx.Node:
    """Put ``module`` at path ``name`` and call it on the node's input in place of ``node``.

    In-place ReLUs (``x.relu_()``, ``F.relu(x, inplace=True)``) also changed their input: uses
    of that input after the node are redirected to the new node, as the in-place op implied.
    """
    gm.add_submodule(name, module)
    source = node.args[0]
    with gm.graph.inserting_after(node):
        new = gm.graph.call_module(name, (source,))
    new.meta = dict(node.meta)
    node.replace_all_uses_with(new)
    if is_inplace_relu(node) and isinstance(source, fx.Node):
        order = {n: i for i, n in enumerate(gm.graph.nodes)}
        for user in list(source.users):
            if user is not new and order[user] > order[new]:
                user.replace_input_with(source, new)
    gm.graph.erase_node(node)
    return new


def unique_site_name(gm: fx.GraphModule, node: fx.Node, taken: set[str]) -> str:
    """Readable, unique site name: the ReLU module's path for its first call, then
    'path_1', 'path_2' ... for reuses; '<scope>.<node name>' for functional calls."""
    if node.op == "call_module":
        base = node.target
    else:
        stack = node.meta.get("nn_module_stack") or {}
        scope = list(stack.values())[-1][0] if stack else ""
        base = f"{scope}.{node.name}" if scope else node.name
    name, i = base, 0
    while name in taken or (node.op != "call_module" and _exists(gm, name)):
        i += 1
        name = f"{base}_{i}"
    taken.add(name)
    return name


def _exists(gm: fx.GraphModule, path: str) -> bool:
    try:
        gm.get_submodule(path)
        return True
    except AttributeError:
        return False

