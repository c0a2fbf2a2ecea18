"""Graph passes of the converter over a traced ANN (docs/architecture.md "convert"), all
driven by the op table: drop what is the identity at inference, fold BatchNorm into the
preceding synaptic layer, find the activation sites, and check that every node remains has a
spiking meaning. Anything else is a ConversionError naming the node, its op, where it came
from and what to do instead.
"""
from __future__ import annotations

import warnings
from collections.abc import Iterable

import torch
from torch import fx, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_linear_bn_eval

from ..ann.prepare import relu_sites
from ..ann.qcfs import QCFS
from ..ann.tracing import describe, replace_with_module, site_nodes, trace
from ..errors import ConversionError
from .ops import Kind, op_for_node, supported_ops


def fold_batchnorm(gm: fx.GraphModule) -> None:
    """y = γ(Wx + b − μ)/σ + β becomes one layer (torch.nn.utils.fusion); a BatchNorm
    without a preceding conv/linear of its own becomes an equivalent depthwise 1x1 conv."""
    for node in list(gm.graph.nodes):
        op = op_for_node(node, gm)
        if op is None or op.kind is not Kind.FOLDED:
            continue
        bn = gm.get_submodule(node.target)
        prev = node.args[0]
        layer = gm.get_submodule(prev.target) if isinstance(prev, fx.Node) and prev.op == "call_module" else None
        if isinstance(layer, (nn.Conv1d, nn.Conv2d)) and len(prev.users) == 1:
            gm.add_submodule(prev.target, fuse_conv_bn_eval(layer.eval(), bn.eval()))
        elif isinstance(layer, nn.Linear) and len(prev.users) == 1 and isinstance(bn, nn.BatchNorm1d):
            gm.add_submodule(prev.target, fuse_linear_bn_eval(layer.eval(), bn.eval()))
        else:
            gm.add_submodule(node.target, batchnorm_as_conv(bn))
            continue
        node.replace_all_uses_with(prev)
        gm.graph.erase_node(node)
    gm.recompile()


def batchnorm_as_conv(bn: nn.Module) -> nn.Module:
    """A BatchNorm in eval mode as a depthwise 1x1 conv: scale γ/σ, shift β − μγ/σ."""
    conv_type = nn.Conv2d if isinstance(bn, nn.BatchNorm2d) else nn.Conv1d
    conv = conv_type(bn.num_features, bn.num_features, 1, groups=bn.num_features,
                     dtype=bn.running_var.dtype, device=bn.running_var.device)
    scale = (bn.weight if bn.affine else 1) / torch.sqrt(bn.running_var + bn.eps)
    shift = (bn.bias if bn.affine else 0) - bn.running_mean * scale
    with torch.no_grad():
        conv.weight.copy_(scale.view(-1, *([1] * (conv.weight.dim() - 1))))
        conv.bias.copy_(shift)
    return conv


def remove_dropped(gm: fx.GraphModule) -> None:
    """Ops that are the identity at inference (dropout) leave the graph."""
    for node in list(gm.graph.nodes):
        op = op_for_node(node, gm)
        if op is not None and op.kind is Kind.DROPPED:
            node.replace_all_uses_with(node.args[0])
            gm.graph.erase_node(node)
    gm.recompile()


ACCEPTED = (Kind.SYNAPTIC, Kind.STATELESS, Kind.MERGE, Kind.SHAPE)  # what a spiking network holds


def check_supported(gm: fx.GraphModule, sites: Iterable[str]) -> None:
    """Every node must have a spiking meaning in the op table; name the first that has none."""
    sites = set(sites)
    for node in gm.graph.nodes:
        if node.op in ("placeholder", "output"):
            continue
        if node.op == "get_attr":
            raise ConversionError(f"{describe(node, gm)} reads a tensor attribute directly; "
                                  "only layers (conv, linear, BatchNorm) may hold weights")
        if node.op == "call_module" and node.target in sites:
            continue
        op = op_for_node(node, gm)
        if op is not None and op.kind in ACCEPTED:
            continue
        if op is not None and op.kind is Kind.REFUSED:
            raise ConversionError(f"{describe(node, gm)}: {op.advice}")
        raise ConversionError(
            f"unsupported {describe(node, gm)}: a spiking network can only hold {supported_ops()} "
            "(BatchNorm is folded, dropout removed); replace it in the model and retrain or fine-tune")


def relu_site_modules(gm: fx.GraphModule, method: str | None) -> dict[str, fx.Node]:
    """For ReLU methods: give every ReLU call site its own nn.ReLU module, named as prepare()
    names sites. A QCFS model is taken as its ReLU-equivalent, with a warning naming
    ``method`` (None: no warning, for helpers that follow a conversion)."""
    qcfs = site_nodes(gm)
    if qcfs and method is not None:
        warnings.warn(f"method {method!r} treats the QCFS sites as ReLU (their learned levels and thresholds are "
                      "ignored); use a method that converts a QCFS ANN to keep them", stacklevel=4)
    for name in qcfs:
        gm.add_submodule(name, nn.ReLU())
    sites = {name: replace_with_module(gm, node, name, nn.ReLU()) for name, node in relu_sites(gm).items()}
    if not sites:
        raise ConversionError("the model has no ReLU activation to convert")
    gm.recompile()
    return sites


def ann_site_modules(ann: nn.Module, relu: bool) -> tuple[fx.GraphModule, dict[str, nn.Module]]:
    """A traced copy of ``ann`` and its activation-site modules under the names convert()
    gives them: QCFS modules, or (``relu``) every ReLU call site as its own module — so hooks
    on them see what the SNN's neurons replace."""
    gm = trace(ann).eval()
    if relu:
        names = list(relu_site_modules(gm, None))  # convert() already warned about QCFS sites read as ReLU
    else:
        names = list(site_nodes(gm))
    return gm, {name: gm.get_submodule(name) for name in names}


def qcfs_site(gm: fx.GraphModule, name: str) -> tuple[torch.Tensor, int]:
    """(θ, L) of the QCFS module at site ``name``."""
    site = gm.get_submodule(name)
    assert isinstance(site, QCFS)
    return site.threshold.detach().clone(), site.levels
