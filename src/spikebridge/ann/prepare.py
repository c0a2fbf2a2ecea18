"""prepare(): every activation call site of a model becomes its own quantized site
(docs/methods.md §0, §8).

Like torch.ao.quantization's prepare_qat, the result is an ordinary trainable nn.Module
(a torch.fx GraphModule). Module ReLUs, F.relu, torch.relu, the in-place variants and one
ReLU module called at several places all become separate QCFS sites with their own θ and L;
ReLU6 and clips to [0, c] (``clamp(x, 0, c)``, ``Hardtanh(0, c)``) become a QCFS starting at θ = 6
or c, ``clamp_min(x, 0)`` a plain one, and GELU, SiLU, Hardswish, sigmoid, Hardsigmoid, tanh,
Mish, SELU, LeakyReLU, ELU, CELU and Softplus a ``QuantizedActivation`` of that f, as the op
table's ``site_form`` says.
"""
from __future__ import annotations

import operator
import warnings
from collections.abc import Collection, Mapping

import torch
import torch.nn.functional as F
from torch import fx, nn

from ..activations import FUNCTIONS, PARAMETRIC, ReLUSquared, base_name, symmetric
from ..conversion.ops import Kind, NoReplacement, SiteForm, op_for_node
from ..device import module_dtype
from ..errors import ConversionError, SpikeBridgeError, UnsupportedActivationError, check_levels
from .qcfs import QCFS
from .quantized import QuantizedActivation, check_k_min
from .tracing import (
    describe, input_data_nodes, is_inplace_relu, refused_activation, replace_with_module, site_nodes, trace,
    unique_site_name,
)


def relu_sites(gm: fx.GraphModule) -> dict[str, tuple[fx.Node, float | None]]:
    """Name every ReLU-like call site of a traced graph, for the methods that convert a ReLU ANN:
    {name: (node, bound)}, where the op table's form of the site is f = ReLU with levels from 0
    and ``bound`` is its clip (None for ReLU, 6 for ReLU6, c for clamp(x, 0, c)). Every other
    activation is refused: those methods calibrate thresholds of ReLU outputs only."""
    sites = {}
    for name, (node, form) in activation_sites(gm).items():
        if form.function != "relu" or form.k_min != 0:
            raise UnsupportedActivationError(
                f"unsupported activation at {describe(node, gm)}: methods that convert a ReLU ANN take ReLU, ReLU6 "
                "and clips to [0, c] only; sb.prepare() it and convert with a sum-coded method (docs/methods.md §8)")
        sites[name] = (node, form.threshold)
    return sites


def activation_sites(gm: fx.GraphModule) -> dict[str, tuple[fx.Node, SiteForm]]:
    """Name every activation call site of a traced graph that depends on the input's data
    with the op table's form for it (refusing the activations the table refuses). An activation
    of tensors the input cannot change (a relative-position MLP on a coordinate table, a
    sigmoid gate of a parameter, a clamp of position ids made from the input's shape) is no
    site: it stays as it is, and conversion computes it (``conversion.graph.fold_constant_calls``,
    docs/methods.md §8)."""
    taken: set[str] = set(site_nodes(gm))
    data = input_data_nodes(gm)
    sites = {}
    for node in [n for n in gm.graph.nodes if n in data]:
        if (op := refused_activation(node, gm)) is not None:
            raise UnsupportedActivationError(f"unsupported activation at {describe(node, gm)}: {op.advice}")
        op = op_for_node(node, gm)
        if op is not None and op.kind is Kind.ACTIVATION and op.site_form is not None:
            module = gm.get_submodule(node.target) if node.op == "call_module" else None
            sites[unique_site_name(gm, node, taken)] = (node, op.site_form(module, node.args, node.kwargs))
    return sites


def squares(node: fx.Node, source: fx.Node) -> bool:
    """Whether ``node`` computes source²: source ** 2, torch.pow(source, 2), source.pow(2),
    torch.square(source), source.square() or source * source."""
    args, kwargs = node.args, node.kwargs
    if _calls(node, (operator.pow, torch.pow), "pow"):
        return args[:1] == (source,) and _is_two(args[1] if len(args) > 1 else kwargs.get("exponent"))
    if _calls(node, (torch.square,), "square"):
        return args == (source,) and not kwargs
    if _calls(node, (operator.mul, torch.mul), "mul"):
        return args == (source, source) and not kwargs
    return False


def _calls(node: fx.Node, functions: tuple, method: str) -> bool:
    return (node.op == "call_function" and node.target in functions
            or node.op == "call_method" and node.target == method)


def _is_two(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == 2


def fuse_squares(gm: fx.GraphModule) -> None:
    """A ReLU whose only reader squares it (``squares``; not in place) becomes one call of a
    ReLUSquared module, which the op table makes one site of f = ReLU² (docs/methods.md §8):
    timm's StarReLU, s·ReLU(z)² + b, and Primer's squared ReLU."""
    made: set[str] = set()
    for node in list(gm.graph.nodes):
        op = op_for_node(node, gm)
        if (op is None or op.kind is not Kind.ACTIVATION or op.site_form is None or is_inplace_relu(node)
                or len(node.users) != 1):
            continue
        module = gm.get_submodule(node.target) if node.op == "call_module" else None
        (user,) = node.users
        if op.site_form(module, node.args, node.kwargs) != SiteForm("relu") or not squares(user, node):
            continue
        name = unique_site_name(gm, node, set()) + "_squared"
        while name in made:
            name += "_"
        made.add(name)
        gm.add_submodule(name, ReLUSquared())
        with gm.graph.inserting_before(user):
            fused = gm.graph.call_module(name, (node.args[0],))
        fused.meta = dict(user.meta)
        user.replace_all_uses_with(fused)
        gm.graph.erase_node(user)
        gm.graph.erase_node(node)
    gm.recompile()


def site_module(form: SiteForm, levels: int, threshold: float, channels: int) -> QCFS:
    """The module of a site: QCFS for f = ReLU, else a QuantizedActivation of f; θ starts at
    the form's threshold if it has one (ReLU6: 6, sigmoid: 1), else at ``threshold``."""
    theta = threshold if form.threshold is None else form.threshold
    if form.function == "relu":
        return QCFS(levels, theta, channels)
    k_min = -levels if symmetric(form.function) else form.k_min
    return QuantizedActivation(form.function, levels, k_min, theta, channels)


def replace_max_pooling(gm: fx.GraphModule) -> int:
    """Swap max pooling for average pooling over the same windows, where the op table declares
    a replacement (docs/methods.md §0: so that the SNN is spiking throughout); one that has no
    exact replacement (dilation, returned indices) is a ConversionError naming it. Returns how
    many were replaced."""
    count = 0
    for node in list(gm.graph.nodes):
        op = op_for_node(node, gm)
        if op is None or op.replacement is None:
            continue
        functional = node.op != "call_module"
        # the functional form has the module's arguments: F.max_pool2d(x, kernel_size, stride, padding, ...)
        pool = nn.MaxPool2d(*node.args[1:], **node.kwargs) if functional else gm.get_submodule(node.target)
        try:
            avg = op.replacement(pool)
        except NoReplacement as exc:
            raise ConversionError(f"cannot replace {describe(node, gm)} by average pooling: {exc}; "
                                  "remove the dilation (or the indices) and retrain, or keep the max pooling "
                                  "(replace_maxpool=False)") from None
        if functional:
            node.target, node.args = F.avg_pool2d, (node.args[0],)
            node.kwargs = {k: getattr(avg, k) for k in ("kernel_size", "stride", "padding", "ceil_mode",
                                                         "count_include_pad")}
        else:
            gm.add_submodule(node.target, avg)
        count += 1
    if count:
        gm.recompile()
    return count


def with_average_pooling(model: nn.Module) -> fx.GraphModule:
    """A traced copy of ``model`` with average pooling in place of every max pooling, over the
    same windows (docs/methods.md §0), for a ReLU ANN to be converted with average pooling
    instead of its max pooling (which converts as it is, §8). The values differ, so fine-tune
    the copy first; ``prepare`` does the same swap for a QCFS ANN. Max pooling with no exact
    replacement is a ConversionError."""
    gm = trace(model)
    replace_max_pooling(gm)
    gm.graph.lint()
    return gm


def prepare(
    model: nn.Module,
    levels: int | Mapping[str, int] = 8,
    threshold: float = 8.0,
    channel_wise: bool = False,
    replace_maxpool: bool = True,
    as_relu: Collection[str] = (),
    example_input: torch.Tensor | None = None,
) -> fx.GraphModule:
    """Return a copy of ``model`` with a quantized site at every activation call site: QCFS at
    ReLU and ReLU6, a QuantizedActivation at GELU, SiLU, Hardswish, sigmoid, Hardsigmoid and
    tanh, and at a ReLU squared by its only reader (f = ReLU², ``fuse_squares``)
    (docs/methods.md §8; other activations are refused).

    levels: one L for every site, or {site name: L} naming every site (see ``sites()``).
    threshold: initial θ of every site (8.0 as in the QCFS code), finite and > 0; held in
    the model's dtype. Sites of bounded activations start at their bound instead (ReLU6: 6,
    sigmoid and Hardsigmoid: 1).
    replace_maxpool: turn max pooling into average pooling over the same windows (with a
    warning), so that the SNN is spiking throughout; one without an exact replacement
    (dilation) is refused. Set False to keep it: PASC and bit-plane convert it exactly, rate
    coding as the largest spike count so far (docs/methods.md §8).
    as_relu: activations (names of ``activations.FUNCTIONS`` or ``PARAMETRIC``, e.g. ("gelu",))
    that get a QCFS site instead, a ReLU in their place — the 001 A.6 recipe for BERT (GELU → QCFS, then
    fine-tune), which rate-coded methods can convert; the quantized f is exact only with
    sum coding.
    example_input: an input batch, for a model whose forward pass branches on its input's
    shape (timm's VGG, MixNet's "same" padding): the graph then takes the branches of the
    example's shape, at any batch size (a model that torch.fx traces needs none).
    """
    unknown = sorted(set(as_relu) - set(FUNCTIONS) - set(PARAMETRIC))
    if unknown:
        raise SpikeBridgeError(f"as_relu names unknown activation(s) {unknown}; choose from "
                               f"{sorted(FUNCTIONS) + sorted(PARAMETRIC)}")
    gm = trace(model, example_input)
    fuse_squares(gm)
    sites = activation_sites(gm)
    if not sites and not site_nodes(gm):
        raise UnsupportedActivationError(f"{type(model).__name__} has no activation to turn into a quantized site")
    per_site = resolve_levels(levels, list(sites))
    dtype = module_dtype(gm, torch.get_default_dtype())
    for name, (node, form) in sites.items():
        if base_name(form.function) in as_relu:
            form = SiteForm("relu")
        channels = _channels_of(gm, node) if channel_wise else 0
        replace_with_module(gm, node, name, site_module(form, per_site[name], threshold, channels).to(dtype))
    if replace_maxpool and (n := replace_max_pooling(gm)):
        warnings.warn(f"prepare(): replaced {n} max pooling layer(s) by average pooling over the same windows "
                      "(fine-tune the ANN: the values differ)", stacklevel=2)
    gm.graph.lint()
    gm.recompile()
    return gm


def resolve_levels(levels, site_names: list[str]) -> dict[str, int]:
    """One int for all sites, or a mapping that names exactly the model's sites."""
    if isinstance(levels, Mapping):
        unknown = sorted(set(levels) - set(site_names))
        missing = [s for s in site_names if s not in levels]
        if unknown:
            raise SpikeBridgeError(f"unknown site name(s) {unknown}; the model's sites are {site_names}")
        if missing:
            raise SpikeBridgeError(f"levels mapping is missing site(s) {missing}")
        return {s: check_levels(levels[s]) for s in site_names}
    level = check_levels(levels)
    return {s: level for s in site_names}


def sites(model: nn.Module) -> dict[str, QCFS]:
    """The QCFS sites of a prepared model in execution order: {name: module}."""
    if isinstance(model, fx.GraphModule):
        return {name: model.get_submodule(name) for name in site_nodes(model)}
    return {n: m for n, m in model.named_modules() if isinstance(m, QCFS)}


def set_levels(model: nn.Module, levels: int | Mapping[str, int]) -> None:
    """Change the levels of a prepared model's sites in place (thresholds are kept); a site
    with negative levels keeps −L <= k_min, and one of an odd f (tanh) keeps k_min = −L
    (docs/methods.md §8)."""
    found = sites(model)
    for name, level in resolve_levels(levels, list(found)).items():
        site = found[name]
        if isinstance(site, QuantizedActivation):
            site.k_min = -level if symmetric(site.function) else check_k_min(site.k_min, level)
        site.levels = level


def _channels_of(gm: fx.GraphModule, node: fx.Node) -> int:
    """Channel count feeding a site, from the nearest conv/linear/BN above it."""
    current = node.args[0]
    while isinstance(current, fx.Node):
        if current.op == "call_module":
            m = gm.get_submodule(current.target)
            for attr in ("out_channels", "num_features", "out_features"):
                if hasattr(m, attr):
                    return getattr(m, attr)
        current = current.args[0] if current.args else None
    raise SpikeBridgeError(f"channel-wise thresholds need a conv, linear or BN layer before {describe(node, gm)}")
