"""Graph passes of the converter over a traced ANN (docs/architecture.md "convert"), all
driven by the op table: drop what is the identity at inference, fold BatchNorm into the
preceding synaptic layer, find the activation sites, and check that every node remains has a
spiking meaning. Anything else is a ConversionError naming the node, its op, where it came
from and what to do instead.
"""
from __future__ import annotations

import math
import operator
import warnings
from collections.abc import Iterable

import torch
from torch import fx, nn
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_linear_bn_eval

from ..ann.example_tracing import TRACED_BATCHES, batch_of
from ..ann.layer_calls import LAYER_CALLS
from ..ann.prepare import relu_sites
from ..ann.qcfs import QCFS
from ..ann.quantized import QuantizedActivation
from ..ann.tracing import describe, input_data_nodes, reached, replace_with_module, site_nodes, trace
from ..device import module_device
from ..errors import ConversionError
from ..randomness import cpu_seeded
from .constant import Constant
from .ops import CLAMPS, Kind, NotAffine, TrainProduct, on_numbers, op_for_node, supported_ops


def fold_batchnorm(gm: fx.GraphModule) -> None:
    """y = γ(Wx + b − μ)/σ + β becomes one layer (torch.nn.utils.fusion); a BatchNorm1d whose
    only user is a linear layer folds into it instead (``linear_after_batchnorm``: RepViT's and
    iFormer's heads); any other BatchNorm becomes an equivalent depthwise 1x1 conv
    (``batchnorm_as_conv``)."""
    for node in list(gm.graph.nodes):
        op = op_for_node(node, gm)
        if op is None or op.kind is not Kind.FOLDED:
            continue
        bn = gm.get_submodule(node.target)
        prev = node.args[0]
        layer = gm.get_submodule(prev.target) if isinstance(prev, fx.Node) and prev.op == "call_module" else None
        (user,) = node.users if len(node.users) == 1 else (None,)
        after = gm.get_submodule(user.target) if user is not None and user.op == "call_module" else None
        if isinstance(layer, (nn.Conv1d, nn.Conv2d)) and len(prev.users) == 1:
            gm.add_submodule(prev.target, fuse_conv_bn_eval(layer.eval(), bn.eval()))
        elif isinstance(layer, nn.Linear) and len(prev.users) == 1 and isinstance(bn, nn.BatchNorm1d):
            gm.add_submodule(prev.target, fuse_linear_bn_eval(layer.eval(), bn.eval()))
        elif isinstance(after, nn.Linear) and isinstance(bn, nn.BatchNorm1d) and user.args[0] is node:
            gm.add_submodule(user.target, linear_after_batchnorm(bn, after))
        else:
            batchnorm_as_conv(gm, node, bn)
            continue
        node.replace_all_uses_with(prev)
        gm.graph.erase_node(node)
    gm.recompile()


def batchnorm_scale_shift(bn: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """A BatchNorm in eval mode as y = scale·x + shift per channel: γ/σ and β − μγ/σ."""
    scale = (bn.weight if bn.affine else 1) / torch.sqrt(bn.running_var + bn.eps)
    return scale, (bn.bias if bn.affine else 0) - bn.running_mean * scale


def linear_after_batchnorm(bn: nn.Module, linear: nn.Linear) -> nn.Linear:
    """W(scale·x + shift) + b = (W·diag(scale))x + (W·shift + b): one linear layer."""
    scale, shift = batchnorm_scale_shift(bn)
    fused = nn.Linear(linear.in_features, linear.out_features, dtype=linear.weight.dtype, device=linear.weight.device)
    with torch.no_grad():
        fused.weight.copy_(linear.weight * scale)
        fused.bias.copy_(linear.weight @ shift + (linear.bias if linear.bias is not None else 0))
    return fused


def batchnorm_as_conv(gm: fx.GraphModule, node: fx.Node, bn: nn.Module) -> None:
    """The BatchNorm called at ``node``, in eval mode, becomes a depthwise 1x1 conv in its
    place: scale γ/σ, shift β − μγ/σ. A BatchNorm1d takes [N, C] as well as [N, C, L], a
    Conv1d only the latter: its input goes through ``torch.atleast_3d`` ([N, C] → [N, C, 1],
    [N, C, L] unchanged) and its output is reshaped back (LeViT normalises its tokens
    flattened to [B·N, C])."""
    conv_type = nn.Conv2d if isinstance(bn, nn.BatchNorm2d) else nn.Conv1d
    conv = conv_type(bn.num_features, bn.num_features, 1, groups=bn.num_features,
                     dtype=bn.running_var.dtype, device=bn.running_var.device)
    scale, shift = batchnorm_scale_shift(bn)
    with torch.no_grad():
        conv.weight.copy_(scale.view(-1, *([1] * (conv.weight.dim() - 1))))
        conv.bias.copy_(shift)
    gm.add_submodule(node.target, conv)
    if conv_type is nn.Conv1d:
        x = node.args[0]
        with gm.graph.inserting_before(node):
            node.args = (gm.graph.call_function(torch.atleast_3d, (x,)),)
        with gm.graph.inserting_after(node):
            back = gm.graph.call_method("reshape_as", (node, x))
        node.replace_all_uses_with(back, delete_user_cb=lambda user: user is not back)


def remove_dropped(gm: fx.GraphModule) -> None:
    """Ops that are the identity at inference (dropout) leave the graph."""
    for node in list(gm.graph.nodes):
        op = op_for_node(node, gm)
        if op is not None and op.kind is Kind.DROPPED:
            node.replace_all_uses_with(node.args[0])
            gm.graph.erase_node(node)
    gm.recompile()


def constant_values(gm: fx.GraphModule, modules: bool = False) -> dict[fx.Node, object]:
    """The value of every node computed from tensors the ANN reads directly (``Constant``
    modules) and numbers alone, in graph order; a call that cannot be computed here is left out,
    and so is an in-place one (``x.mul_(2)``), which would change the constant it reads, and a
    call on numbers alone (after ``shape_numbers_as_literals``) that gives another value under
    another random seed (``torch.rand``). With ``modules``, module calls on such values too (on
    copies of them: a module may work in place)."""
    values: dict[fx.Node, object] = {}
    for node in gm.graph.nodes:
        name = node.target if isinstance(node.target, str) else getattr(node.target, "__name__", "")
        if _is_constant(node, gm):
            values[node] = gm.get_submodule(node.target).value
        elif ((node.op == "call_module" and modules and node.all_input_nodes
               or node.op in ("call_function", "call_method") and not name.endswith("_"))
              and all(a in values for a in node.all_input_nodes)):
            args, kwargs = fx.node.map_arg((node.args, node.kwargs), values.__getitem__)
            if node.op == "call_module":  # a module may work in place: it gets copies
                args, kwargs = _copy((args, kwargs))
            try:
                value = _call(node, args, kwargs, 0, gm)
                if not node.all_input_nodes and not _same(value, _call(node, args, kwargs, 1, gm)):
                    continue  # random: check_supported refuses it
            except (RuntimeError, TypeError, ValueError):
                continue  # check_supported judges it as it stands
            values[node] = value
    return values


def _is_constant(node: fx.Node, gm: fx.GraphModule) -> bool:
    """A call of a ``Constant`` module: a tensor the ANN reads directly."""
    return node.op == "call_module" and isinstance(gm.get_submodule(node.target), Constant)


def _call(node: fx.Node, args, kwargs, seed: int, gm: fx.GraphModule | None = None):
    """The node's call on ``args``, with torch's CPU generator seeded to ``seed`` (the
    caller's random state is kept); a module call's module is ``gm``'s."""
    with cpu_seeded(seed), torch.no_grad():
        if node.op == "call_module":
            return gm.get_submodule(node.target)(*args, **kwargs)
        return (node.target(*args, **kwargs) if node.op == "call_function"
                else getattr(args[0], node.target)(*args[1:], **kwargs))


def _copy(value):
    return fx.node.map_aggregate(value, lambda v: v.clone() if isinstance(v, torch.Tensor) else v)


def _same(a, b) -> bool:
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        return a.shape == b.shape and a.dtype == b.dtype and bool(torch.equal(a, b))
    if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


def shape_numbers_as_literals(gm: fx.GraphModule, example: torch.Tensor) -> None:
    """A call that makes a tensor from numbers alone (xcit's position encoding: ``torch.arange(1,
    H + 1)``, then cumsum, sin, ... of the feature map's size) has no spiking form, but its
    numbers are the input's. Each number such a call reads becomes the number of ``example``'s
    shape where it does not depend on the batch size (the graph run on fake tensors at batch
    sizes 2 and 3 gives it one value), so that ``constant_values`` computes the tensor here and
    the network holds it as a Constant, for inputs of the example's shape. A call that reads
    the batch size keeps it (and stays refused by ``check_supported``)."""
    trains = train_nodes(gm)
    off_trains = [n for n in gm.graph.nodes if n.op in ("call_function", "call_method") and n.all_input_nodes
                  and not any(a in trains for a in n.all_input_nodes)]
    if all(_on_numbers_or_shapes(n, gm) for n in off_trains):  # no call makes a tensor from numbers
        return
    try:
        runs = [_fake_run(gm, batch_of(example, b, gm).to(module_device(gm))) for b in TRACED_BATCHES]
    except Exception:  # an op without a fake kernel: the calls stay as they are
        return
    read = set()

    def literal(node: fx.Node):
        first = runs[0].get(node)
        if _literal(first) and all(run.get(node) == first for run in runs[1:]):
            read.add(node)
            return first
        return node

    for node in off_trains:  # the makers and the arithmetic on numbers that feeds them
        node.args, node.kwargs = fx.node.map_arg((node.args, node.kwargs), literal)
    _erase_unused(gm, [n for n in gm.graph.nodes  # and the shape reads that computed them; asserts stay
                       if n in read or _on_numbers_or_shapes(n, gm) and n.target is not torch._assert])
    gm.recompile()


def shape_made_constants(gm: fx.GraphModule, example: torch.Tensor) -> None:
    """Tensors computed from the input's shape alone, and from the weights, that no earlier pass
    could compute (their calls read the shape, or are module calls on what did), become
    Constants where that is right at every batch size. Their values are computed here at batch
    sizes 2 and 3, and under a second random seed (a random tensor stays as it is):

    - one with the batch size as its first dim, read by the network, whose rows all repeat one
      row (EdgeNeXt's Fourier position encoding, made from ``torch.zeros(B, H, W)``, projected
      by a conv and reshaped to (B, −1, C)): a Constant of that row (batch 1), which its readers
      broadcast as the ANN broadcasts a position embedding;
    - one with no spiking form (an activation of such a tensor, which prepare made no site)
      whose value is the same at both batch sizes: a Constant of that value, for inputs of the
      example's shape, as ``shape_numbers_as_literals`` does for function calls.

    Kept only if every shape in the graph, run on fake tensors at both batch sizes, stays what
    it was; otherwise the calls stay as they are and ``check_supported`` judges them
    (docs/methods.md §8)."""
    data = input_data_nodes(gm)
    free = [n for n in gm.graph.nodes if n not in data and n.op.startswith("call_")]
    made_here = [n for n in free if not _on_numbers_or_shapes(n, gm) and not _is_constant(n, gm)]
    readers = [n for n in made_here if any(u in data for u in n.users)]
    unspiking = [n for n in made_here if (op := op_for_node(n, gm)) is None or op.kind not in ACCEPTED]
    if not readers and not unspiking:  # fold_constant_calls computed every other tensor made off the input's data
        return
    xs = [batch_of(example, b, gm).to(module_device(gm)) for b in TRACED_BATCHES]
    try:
        runs = [_fake_run(gm, x) for x in xs]
    except Exception:  # an op without a fake kernel: the calls stay as they are
        return
    sized = [n for n in readers if all(isinstance(run.get(n), torch.Tensor) and run[n].dim() and run[n].shape[0] == b
                                       for run, b in zip(runs, TRACED_BATCHES))]
    values = [_values_off_the_data(gm, free, data, run, seed) for run, seed in zip(runs + runs[:1], (0, 0, 1))]
    made: dict[fx.Node, fx.Node] = {}
    for node in dict.fromkeys(sized + unspiking):
        first, *others = [v.get(node) for v in values]
        if not isinstance(first, torch.Tensor) or not _same(first, others[-1]):  # missing, or random
            continue
        if node in sized and all(torch.equal(r, r[:1].expand_as(r)) for r in (first, others[0])):
            value = first[:1]
        elif node in unspiking and _same(first, others[0]):
            value = first
        else:
            continue
        gm.add_submodule(f"constant_{node.name}", Constant(tuple(value.shape), value))
        with gm.graph.inserting_before(node):
            made[node] = gm.graph.call_module(f"constant_{node.name}")
        node.replace_all_uses_with(made[node])
    if not made:
        return
    try:
        after = [_fake_run(gm, x) for x in xs]
        kept = all(_shapes(run.get(n)) == _shapes(new.get(n)) for run, new in zip(runs, after) for n in data)
    except Exception:
        kept = False
    if not kept:  # a reader did not broadcast the row as it read the batch
        for node, call in made.items():
            call.replace_all_uses_with(node)
            gm.graph.erase_node(call)
            delattr(gm, call.target)
        return
    _erase_unused(gm, [n for n in free if n.target is not torch._assert])  # what computed them
    gm.recompile()


def _values_off_the_data(gm: fx.GraphModule, nodes: list[fx.Node], data: set[fx.Node],
                         run: dict, seed: int) -> dict[fx.Node, object]:
    """The values of ``nodes`` (calls that read no data of the input), computed in order from
    the shapes the fake ``run`` read off the input (numbers, the same on real tensors) and the
    Constants, under torch's random seed ``seed``; a call that fails is left out, and so is what
    reads it."""
    values: dict[fx.Node, object] = {}
    for node in nodes:
        if any(a in data for a in node.all_input_nodes):  # a shape read off the input
            values[node] = run[node]
            continue
        if any(a.op.startswith("call_") and a not in values for a in node.all_input_nodes):
            continue
        args, kwargs = fx.node.map_arg((node.args, node.kwargs), lambda a: _copy(values[a] if a in values else run[a]))
        try:
            values[node] = _call(node, args, kwargs, seed, gm)
        except (RuntimeError, TypeError, ValueError):
            continue
    return values


def _shapes(value):
    return fx.node.map_aggregate(value, lambda v: tuple(v.shape) if isinstance(v, torch.Tensor) else v)


def _on_numbers_or_shapes(node: fx.Node, gm: fx.GraphModule) -> bool:
    op = op_for_node(node, gm)
    return on_numbers(node.target) or op is not None and op.kind is Kind.SHAPE


def _literal(value) -> bool:
    """A number, a dtype or a device (the arguments of a tensor made at conversion, which then
    moves with the network), or a tuple or list of them."""
    if isinstance(value, (tuple, list)):
        return all(_literal(v) for v in value)
    return isinstance(value, (int, float, bool, torch.dtype, torch.device))


def _fake_run(gm: fx.GraphModule, x: torch.Tensor) -> dict[fx.Node, object]:
    """Every node's value when ``gm`` runs on a fake copy of ``x`` (shapes, no data)."""
    mode = FakeTensorMode(allow_non_fake_inputs=True)
    interpreter = fx.Interpreter(gm, garbage_collect_values=False)
    with mode, torch.no_grad():
        interpreter.run(mode.from_tensor(x))
    return interpreter.env


def _erase_unused(gm: fx.GraphModule, nodes) -> None:
    """Erase those of ``nodes`` still in the graph that nothing reads, readers first."""
    alive = set(gm.graph.nodes)
    for node in reversed(list(nodes)):
        if node in alive and not node.users:
            gm.graph.erase_node(node)


def fold_constant_calls(gm: fx.GraphModule, modules: bool = False) -> dict[fx.Node, object]:
    """A function or method call with no spiking form (not ACCEPTED by the op table) whose
    arguments hold only tensors the ANN reads directly and numbers (``constant_values``) is
    computed once, here, and becomes a Constant holding its value: SwinV2's logit scale,
    exp(clamp(θ, max=ln 100)), is a number however the network runs. Nothing of the input
    reaches it, so the value is the ANN's. With ``modules`` (before shape numbers become
    literals: a module call on a tensor sized by the batch would be computed for one batch size
    only), module calls too, as values and as what is folded: the activations of a
    relative-position MLP on a coordinate table, which prepare made no site (a QCFS module from
    an earlier prepare is folded too: its value is the ANN's). Returns the constant values, a
    folded call's under its Constant's node (for ``constant_layer_calls``)."""
    values = constant_values(gm, modules)
    for node, value in list(values.items()):
        op = op_for_node(node, gm)
        if (_is_constant(node, gm) or not isinstance(value, torch.Tensor)
                or op is not None and op.kind in ACCEPTED and node.all_input_nodes):
            continue  # (an accepted op on numbers alone, torch.add(4, 1), makes a tensor: folded)
        gm.add_submodule(f"constant_{node.name}", Constant(tuple(value.shape), value))
        with gm.graph.inserting_before(node):
            call = gm.graph.call_module(f"constant_{node.name}")
        node.replace_all_uses_with(call)
        gm.graph.erase_node(node)
        values[call] = values.pop(node)
    _erase_unused(gm, values)
    gm.recompile()
    return values


def constant_layer_calls(gm: fx.GraphModule, values: dict[fx.Node, object]) -> None:
    """A functional linear or conv call (``ann.layer_calls.LAYER_CALLS``) whose weight and bias
    are computed from constants alone (``constant_values``) becomes a call of the layer it
    describes, holding those values: BEiT's attention, F.linear(x, W, cat(b_q, 0, b_v)), and
    NFNet's convolution with a standardised weight. In the ANN they are computed from
    parameters that training changes, so prepare leaves them as they are; at conversion the
    weights are fixed. ``values``: the graph's constant values (``fold_constant_calls``)."""
    for node in list(gm.graph.nodes):
        call = LAYER_CALLS.get(node.target) if node.op == "call_function" else None
        if call is None or call.name not in ("linear", "conv"):
            continue
        bound = fx.node.map_arg(call.bind(node), lambda n: values.get(n, n))
        left = []
        fx.node.map_arg(bound, left.append)  # an argument that is not a constant
        if left or not isinstance(bound["weight"], torch.Tensor):
            continue
        layer = call.build(bound, None).to(bound["weight"].device, bound["weight"].dtype)
        with torch.no_grad():
            for name in call.tensors:
                if bound[name] is not None:
                    getattr(layer, name).copy_(bound[name])
        gm.add_submodule(f"{node.name}_layer", layer)
        with gm.graph.inserting_before(node):
            new = gm.graph.call_module(f"{node.name}_layer", (node.args[0],))
        node.replace_all_uses_with(new)
        gm.graph.erase_node(node)
    _erase_unused(gm, values)
    gm.recompile()


ACCEPTED = (Kind.SYNAPTIC, Kind.STATELESS, Kind.AFFINE, Kind.MERGE, Kind.SHAPE, Kind.ANALOG,
            Kind.CONSTANT)  # what a spiking network holds


def train_nodes(gm: fx.GraphModule) -> set[fx.Node]:
    """The nodes whose value is a spike train when the SNN runs: the input, every module call,
    and every call with a train among its arguments, except shapes read off a train
    (``x.shape``, ``x.size()``), which are numbers, as is arithmetic on them."""
    return reached(gm, ("placeholder", "call_module"))


class _Train:
    """Stands for a train when an AFFINE op's form is checked at conversion."""


def check_supported(gm: fx.GraphModule, sites: Iterable[str]) -> None:
    """Every node must have a spiking meaning in the op table, for the arguments it gets
    (trains or numbers, ``train_nodes``); name the first that has none."""
    sites = set(sites)
    trains = train_nodes(gm)
    for node in gm.graph.nodes:
        if node.op in ("placeholder", "output"):
            continue
        if node.op == "get_attr":
            raise ConversionError(f"{describe(node, gm)} reads a tensor attribute directly; "
                                  "conversion.constant.constants_as_modules makes such reads Constant modules")
        if node.op == "call_module" and node.target in sites:
            continue
        on_trains = any(a in trains for a in node.all_input_nodes)
        if node.op == "call_function" and on_numbers(node.target) and not on_trains:
            continue  # arithmetic on numbers (shapes)
        op = op_for_node(node, gm)
        if op is not None and op.kind is Kind.REFUSED:
            raise ConversionError(f"{describe(node, gm)}: {op.advice}")
        if op is None or op.kind not in ACCEPTED:
            raise ConversionError(
                f"unsupported {describe(node, gm)}: a spiking network can only hold {supported_ops()} "
                "(BatchNorm is folded, dropout removed); replace it in the model and retrain or fine-tune")
        if node.op != "call_module" and not on_trains and op.kind is not Kind.SHAPE:
            raise ConversionError(f"{describe(node, gm)} makes a tensor from numbers alone; a spiking network holds "
                                  "constants only as layer biases or as numbers in arithmetic on activations")
        if op.kind is Kind.AFFINE:
            check_affine(node, gm, op, trains)


def _affine_form(node: fx.Node, op, trains: set[fx.Node]):
    """The AFFINE op's form of ``node`` with a marker for each train argument (numbers as 1.0);
    raises what the op's ``affine`` raises (NotAffine, TrainProduct, TypeError)."""
    marker = _Train()
    args, kwargs = fx.node.map_arg((node.args, node.kwargs), lambda n: marker if n in trains else 1.0)
    return op.affine(lambda v: v is marker, *args, **kwargs)


def check_affine(node: fx.Node, gm: fx.GraphModule, op, trains: set[fx.Node]) -> None:
    """An AFFINE op must be y = Σ a_i·x_i + c in its trains (``ops.Affine``), or a product or
    quotient of two trains (computed on their decoded values); no rounding (docs/methods.md §8)."""
    try:
        _affine_form(node, op, trains)
    except TrainProduct:
        return  # computed on decoded values, as an ANALOG op (docs/methods.md §8)
    except NotAffine as exc:
        raise ConversionError(f"{describe(node, gm)} {exc}, which has no step-by-step meaning on spike trains "
                              "(docs/methods.md §8); remove it or compute it with layers and ReLU sites, and "
                              "retrain or fine-tune") from None
    except TypeError:
        raise ConversionError(f"{describe(node, gm)} has arguments {op.name!r} does not take on spike trains "
                              f"(args {node.args}, kwargs {node.kwargs})") from None


def analog_nodes(gm: fx.GraphModule) -> set[fx.Node]:
    """The nodes computed on decoded values (docs/methods.md §8): ANALOG ops, and AFFINE ops
    that multiply or divide two trains."""
    trains = train_nodes(gm)
    found = set()
    for node in gm.graph.nodes:
        op = op_for_node(node, gm) if node.op.startswith("call_") else None
        if op is None or not any(a in trains for a in node.all_input_nodes):
            continue
        if op.kind is Kind.ANALOG:
            found.add(node)
        elif op.kind is Kind.AFFINE:
            try:
                _affine_form(node, op, trains)
            except TrainProduct:
                found.add(node)
            except (NotAffine, TypeError):
                pass
    return found


def redirect_inplace(gm: fx.GraphModule) -> None:
    """An in-place method (``h.add_(g)``, ``h.mul_(2)``) also changed its first argument: uses
    of that argument after the call read the call's result, which the SNN computes out of place."""
    order = {n: i for i, n in enumerate(gm.graph.nodes)}
    for node in gm.graph.nodes:
        if node.op == "call_method" and node.target.endswith("_") and not node.target.startswith("_"):
            source = node.args[0]
            for user in list(source.users) if isinstance(source, fx.Node) else []:
                if user is not node and order[user] > order[node]:
                    user.replace_input_with(source, node)
    gm.recompile()


def relu_site_modules(gm: fx.GraphModule, method: str | None) -> dict[str, fx.Node]:
    """For ReLU methods: give every ReLU-like call site its own module, named as prepare() names
    sites: nn.ReLU, or ReLU clipped at the site's bound (ReLU6: nn.Hardtanh(0, 6), which is what
    nn.ReLU6 computes), so that statistics and the ANN references read the activation the
    neuron replaces (docs/methods.md §4). A QCFS model is taken as its ReLU-equivalent, with a
    warning naming ``method`` (None: no warning, for helpers that follow a conversion)."""
    qcfs = site_nodes(gm)
    if qcfs and method is not None:
        warnings.warn(f"method {method!r} treats the QCFS sites as ReLU (their learned levels and thresholds are "
                      "ignored); use a method that converts a QCFS ANN to keep them", stacklevel=4)
    for name in qcfs:
        if (site := quantized_site(gm, name)) is not None:
            raise ConversionError(f"site {name!r} quantizes {site.function}, not ReLU: methods that convert a ReLU "
                                  "ANN cannot take it; convert with a sum-coded method (pasc, bitplane)")
        gm.add_submodule(name, nn.ReLU())
    sites = {name: replace_with_module(gm, node, name, nn.ReLU() if bound is None else nn.Hardtanh(0.0, bound))
             for name, (node, bound) in relu_sites(gm).items()}
    if not sites:
        raise ConversionError("the model has no ReLU activation to convert")
    pool_before_sites(gm, sites)
    gm.recompile()
    return sites


def pool_before_sites(gm: fx.GraphModule, sites: dict[str, fx.Node]) -> None:
    """A ReLU site whose only use is a max pooling (an op that ``selects``) moves after it:
    max_i f(z_i) = f(max_i z_i) for every nondecreasing f, ReLU and ReLU6 included, so the ANN
    computes the same values, and the site's neuron, its statistics and its threshold are those
    of the pooled activation (docs/methods.md §8, "Max pooling"). Reads of the site's shape
    (timm's "same" max pooling pads by the size of its input) read its input instead: a ReLU
    keeps the shape."""
    for site in sites.values():
        readers = [user for user in site.users if not _reads_shape(user)]
        if len(readers) != 1:
            continue
        (pool,) = readers
        op = op_for_node(pool, gm)
        if (op is None or not op.selects or pool.args[0] is not site or site in pool.all_input_nodes[1:]
                or any(user.target is operator.getitem for user in pool.users)):  # (values, indices)
            continue
        for user in [u for u in site.users if u is not pool]:
            user.replace_input_with(site, site.args[0])
        pool.replace_all_uses_with(site)
        pool.args = (site.args[0], *pool.args[1:])
        site.args = (pool,)
        pool.append(site)


def _reads_shape(node: fx.Node) -> bool:
    """``x.shape``, ``x.size(...)`` or ``x.dim()``: a read of its input's shape alone."""
    return (node.op == "call_function" and node.target is getattr and node.args[1:] == ("shape",)
            or node.op == "call_method" and node.target in ("size", "dim"))


def ann_site_modules(ann: nn.Module, relu: bool, example: torch.Tensor | None = None
                     ) -> tuple[fx.GraphModule, dict[str, nn.Module]]:
    """A traced copy of ``ann`` (``example``: as for ``trace``) and its activation-site modules
    under the names convert() gives them: QCFS modules, or (``relu``) every ReLU call site as
    its own module — so hooks on them see what the SNN's neurons replace."""
    gm = trace(ann, example).eval()
    if relu:
        names = list(relu_site_modules(gm, None))  # convert() already warned about QCFS sites read as ReLU
    else:
        names = list(site_nodes(gm))
    return gm, {name: gm.get_submodule(name) for name in names}


def qcfs_site(gm: fx.GraphModule, name: str) -> tuple[torch.Tensor, int]:
    """(θ, L) of the QCFS module at site ``name``; θ must be finite and > 0."""
    site = gm.get_submodule(name)
    assert isinstance(site, QCFS)
    theta = site.threshold.detach().clone()
    if not (torch.isfinite(theta).all() and (theta > 0).all()):
        shown = theta.tolist() if theta.numel() <= 4 else f"{theta.numel()} values, min {theta.min().item()}"
        raise ConversionError(f"QCFS site {name!r} has threshold {shown}; a threshold must be finite and > 0 "
                              "(retrain the ANN, or set the site's threshold before converting)")
    return theta, site.levels


def quantized_site(gm: fx.GraphModule, name: str) -> QuantizedActivation | None:
    """The site's QuantizedActivation when it quantizes an f other than ReLU (docs/methods.md
    §8); None for a QCFS site (ReLU, ReLU6)."""
    site = gm.get_submodule(name)
    return site if isinstance(site, QuantizedActivation) else None


def refuse_unless_relu_like(gm: fx.GraphModule, name: str) -> None:
    """Rate coding converts QCFS sites only: a rate-coded IF neuron emits the clipped staircase
    of its input rate, clip(floor(z·L/θ + 1/2), 0, L), which is no sound form of a
    non-monotone f or of negative levels (docs/methods.md §8)."""
    if (site := quantized_site(gm, name)) is not None:
        raise ConversionError(f"site {name!r} quantizes {site.function} (levels {site.k_min}..{site.levels}), which a "
                              "rate-coded IF neuron cannot emit (its rate is a clipped staircase of ReLU); convert "
                              "with a sum-coded method (pasc, bitplane) or prepare the model with ReLU")


def remove_unbounded_clamps(gm: fx.GraphModule) -> None:
    """A clamp's bound that clamps nothing, −inf as a minimum or +inf as a maximum (a number, or a
    tensor the model reads directly that holds only that: Gemma4's clippable linear layers keep
    ±inf buffers until a checkpoint sets them), is removed, and a clamp left without bounds is
    its input. What remains is judged as before: a finite clamp on a train has no spiking form."""
    dropped = []
    for node in list(gm.graph.nodes):
        names = CLAMPS.get(node.target) if node.op in ("call_function", "call_method") else None
        if names is None:
            continue
        bounds = {name: bound for name, bound in
                  dict(zip(names, node.args[1:]), **{k: v for k, v in node.kwargs.items() if k in names}).items()
                  if bound is not None}
        kept = {name: bound for name, bound in bounds.items()
                if not _all_equal(_bound_value(bound, gm), -math.inf if name == "min" else math.inf)}
        if len(kept) == len(bounds):
            continue
        dropped += [b for b in bounds.values() if isinstance(b, fx.Node)]
        if kept:
            node.args = node.args[:1] + tuple(kept.get(name) for name in names)
            node.kwargs = {k: v for k, v in node.kwargs.items() if k not in names}
        else:
            node.replace_all_uses_with(node.args[0])
            gm.graph.erase_node(node)
    _erase_unused(gm, dict.fromkeys(dropped))
    gm.recompile()


def _bound_value(bound, gm: fx.GraphModule):
    if isinstance(bound, fx.Node):
        return operator.attrgetter(bound.target)(gm) if bound.op == "get_attr" else None
    return bound


def _all_equal(value, number: float) -> bool:
    if isinstance(value, torch.Tensor):
        return value.numel() > 0 and bool((value == number).all())
    return isinstance(value, (int, float)) and value == number


def check_finite(gm: fx.GraphModule) -> None:
    """Every floating-point parameter and buffer the graph reads must be finite: a NaN or inf
    weight makes NaN in the ANN, which no spike train can reproduce (one it does not read, such
    as a clamp bound ``remove_unbounded_clamps`` removed, does not matter)."""
    for name, tensor in _read_tensors(gm).items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            bad = int((~torch.isfinite(tensor)).sum())
            raise ConversionError(f"{name} holds {bad} NaN or inf value(s); fix or retrain the model before converting")


def _read_tensors(gm: fx.GraphModule) -> dict[str, torch.Tensor]:
    """{name: tensor} of what the graph reads: get_attr targets and the parameters and buffers
    of the modules it calls."""
    read = {}
    for node in gm.graph.nodes:
        if node.op == "get_attr" and isinstance(value := operator.attrgetter(node.target)(gm), torch.Tensor):
            read[node.target] = value
        elif node.op == "call_module":
            module = gm.get_submodule(node.target)
            read.update({f"{node.target}.{n}": t for n, t in (*module.named_parameters(), *module.named_buffers())})
    return read
