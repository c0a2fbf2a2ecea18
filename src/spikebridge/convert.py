"""convert(): a trained ANN to a SpikingNetwork (DESIGN.md "convert", METHODS §1–4).

Steps: trace with torch.fx; fold BatchNorm into the preceding conv/linear (a BatchNorm with
no such layer becomes a depthwise 1x1 conv); drop dropout; check every node against the
supported set; put the method's neuron at every activation site. Anything unsupported is a
ConversionError naming the node, its op, where it came from and what to do instead.
"""
from __future__ import annotations

import operator
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_linear_bn_eval
from tqdm.auto import tqdm

from .energy import pasc_latency, pasc_t_eff
from .errors import ConversionError
from .network import SpikingNetwork
from .neurons import BitplaneNeuron, IFNeuron, PASCNeuron, bits_needed
from .prepare import relu_sites
from .qcfs import QCFS
from .thresholds import ActivationStats
from .tracing import describe, replace_with_module, site_nodes, trace


@dataclass(frozen=True)
class Method:
    name: str
    coding: str            # "rate" or "sum" (see network.py)
    source: str            # "qcfs": needs a prepared QCFS ANN; "relu": a ReLU ANN + calibration data
    summary: str


METHODS: dict[str, Method] = {}
BUILDERS: dict[str, Callable] = {}


def register(name: str, coding: str, source: str, summary: str):
    """Add a conversion method to the registry; the decorated function builds the neurons."""
    def wrap(fn):
        METHODS[name] = Method(name, coding, source, summary)
        BUILDERS[name] = fn
        return fn
    return wrap


def methods() -> dict[str, str]:
    """Registered method names with one line each."""
    return {m.name: m.summary for m in METHODS.values()}


# -- graph preparation ---------------------------------------------------------------------

STATELESS_MODULES = (nn.AvgPool1d, nn.AvgPool2d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.Flatten,
                     nn.Identity, nn.Unflatten)
SYNAPTIC_MODULES = (nn.Conv1d, nn.Conv2d, nn.Linear)
DROPOUT_MODULES = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.AlphaDropout)
STATELESS_FUNCTIONS = {operator.add, operator.iadd, torch.add, torch.cat, torch.flatten, torch.reshape,
                       F.avg_pool1d, F.avg_pool2d, F.adaptive_avg_pool1d, F.adaptive_avg_pool2d,
                       getattr, operator.getitem, torch.mean}
STATELESS_METHODS = {"add", "add_", "view", "reshape", "flatten", "size", "dim", "contiguous", "mean"}
DROPOUT_FUNCTIONS = {F.dropout, F.dropout1d, F.dropout2d, F.alpha_dropout}
MAX_POOLING = (nn.MaxPool1d, nn.MaxPool2d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d)
MAX_POOL_FUNCTIONS = {F.max_pool1d, F.max_pool2d, F.adaptive_max_pool1d, F.adaptive_max_pool2d}
BATCHNORM = (nn.BatchNorm1d, nn.BatchNorm2d)


def fold_batchnorm(gm: fx.GraphModule) -> None:
    """y = γ(Wx + b − μ)/σ + β becomes one layer (torch.nn.utils.fusion); a BatchNorm
    without a preceding conv/linear of its own becomes an equivalent depthwise 1x1 conv."""
    for node in list(gm.graph.nodes):
        if node.op != "call_module" or not isinstance(gm.get_submodule(node.target), BATCHNORM):
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
    conv = conv_type(bn.num_features, bn.num_features, 1, groups=bn.num_features)
    scale = (bn.weight if bn.affine else 1) / torch.sqrt(bn.running_var + bn.eps)
    shift = (bn.bias if bn.affine else 0) - bn.running_mean * scale
    with torch.no_grad():
        conv.weight.copy_(scale.view(-1, *([1] * (conv.weight.dim() - 1))))
        conv.bias.copy_(shift)
    return conv


def remove_dropout(gm: fx.GraphModule) -> None:
    """Dropout is the identity at inference."""
    for node in list(gm.graph.nodes):
        drop = (node.op == "call_module" and isinstance(gm.get_submodule(node.target), DROPOUT_MODULES)) or (
            node.op == "call_function" and node.target in DROPOUT_FUNCTIONS)
        if drop:
            node.replace_all_uses_with(node.args[0])
            gm.graph.erase_node(node)
    gm.recompile()


def check_supported(gm: fx.GraphModule, sites: Iterable[str]) -> None:
    """Every node must have a spiking meaning; name the first that has none."""
    sites = set(sites)
    for node in gm.graph.nodes:
        if node.op in ("placeholder", "output", "get_attr"):
            if node.op == "get_attr":
                raise ConversionError(f"{describe(node, gm)} reads a tensor attribute directly; "
                                      "only layers (conv, linear, BatchNorm) may hold weights")
            continue
        if node.op == "call_module":
            if node.target in sites:
                continue
            module = gm.get_submodule(node.target)
            if isinstance(module, MAX_POOLING):
                raise _max_pool_error(node, gm)
            if isinstance(module, SYNAPTIC_MODULES + STATELESS_MODULES):
                continue
        elif node.op == "call_function":
            if node.target in MAX_POOL_FUNCTIONS:
                raise _max_pool_error(node, gm)
            if node.target in STATELESS_FUNCTIONS:
                continue
        elif node.op == "call_method" and node.target in STATELESS_METHODS:
            continue
        raise ConversionError(
            f"unsupported {describe(node, gm)}: a spiking network can only hold conv/linear layers "
            "(BatchNorm is folded), average pooling, flatten/reshape, residual add, concatenation "
            "and ReLU/QCFS activations; replace it in the model and retrain or fine-tune")


def _max_pool_error(node: fx.Node, gm: fx.GraphModule) -> ConversionError:
    return ConversionError(
        f"max pooling at {describe(node, gm)} has no spiking equivalent: use average pooling "
        "(sb.prepare(model, replace_maxpool=True) swaps it) and fine-tune the ANN")


def convert(model: nn.Module, method: str = "pasc", T: int | None = None, **options) -> SpikingNetwork:
    """Convert a trained ANN with a registered method (see ``methods()``).

    QCFS methods ("qcfs", "pasc", "bitplane") take a model from ``sb.prepare``; ReLU methods
    take a plain ReLU ANN and ``calibration_data``. ``T``: steps for rate-coded methods
    (default 4) and bit-plane (default ceil(log2(L+1))); PASC's steps are its levels.
    """
    if method not in METHODS:
        raise ConversionError(f"unknown method {method!r}; choose one of {sorted(METHODS)}")
    if T is not None and (isinstance(T, bool) or not isinstance(T, int) or T < 1):
        raise ConversionError(f"T must be an integer >= 1, got {T!r}")
    spec = METHODS[method]
    model = model.eval()
    gm = trace(model)
    if spec.source == "qcfs":
        sites = site_nodes(gm)
        if not sites:
            raise ConversionError(f"method {method!r} needs a QCFS model: run sb.prepare(model, levels=...) "
                                  "and train it, or use a ReLU method (max-norm, percentile, data-driven)")
    else:
        sites = relu_site_modules(gm, method)
    remove_dropout(gm)
    fold_batchnorm(gm)
    check_supported(gm, sites)
    info = BUILDERS[method](gm, list(sites), T=T, model=model, **options)
    gm.graph.lint()
    gm.delete_all_unused_submodules()
    gm.recompile()
    return SpikingNetwork(gm, method, spec.coding, info.pop("T", T), info)


def relu_site_modules(gm: fx.GraphModule, method: str | None) -> dict[str, fx.Node]:
    """For ReLU methods: give every ReLU call site its own nn.ReLU module, named as prepare()
    names sites. A QCFS model is taken as its ReLU-equivalent, with a warning naming
    ``method`` (None: no warning, for helpers that follow a conversion)."""
    qcfs = site_nodes(gm)
    if qcfs and method is not None:
        warnings.warn(f"method {method!r} treats the QCFS sites as ReLU (their learned levels and thresholds are "
                      "ignored); use 'qcfs', 'pasc' or 'bitplane' to keep them", stacklevel=3)
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
    site = gm.get_submodule(name)
    assert isinstance(site, QCFS)
    return site.threshold.detach().clone(), site.levels


@register("qcfs", "rate", "qcfs", "rate-coded IF, soft reset, v0 = θ/2, any T (METHODS §1)")
def _build_qcfs(gm, sites, T=None, **_):
    T = T or 4
    for name in sites:
        theta, _levels = qcfs_site(gm, name)
        gm.add_submodule(name, IFNeuron(theta, theta / 2, T))
    return {"T": T}


@register("pasc", "sum", "qcfs", "exact: spike counts with inhibitory spikes, T_eff = mean levels (METHODS §2)")
def _build_pasc(gm, sites, T=None, **_):
    if T is not None:
        raise ConversionError("PASC runs for each site's levels; do not pass T (change the levels instead)")
    levels = []
    for name in sites:
        theta, L = qcfs_site(gm, name)
        gm.add_submodule(name, PASCNeuron(theta, L))
        levels.append(L)
    return {"T_eff": pasc_t_eff(levels), "pipeline_latency": pasc_latency(levels),
            "levels": dict(zip(sites, levels))}


@register("bitplane", "sum", "qcfs", "exact: level bits MSB first, T = ceil(log2(L+1)) (METHODS §3)")
def _build_bitplane(gm, sites, T=None, standard_if: bool = False, **_):
    saturating = []
    for name in sites:
        theta, L = qcfs_site(gm, name)
        neuron = BitplaneNeuron(theta, L, T, standard_if=standard_if)
        gm.add_submodule(name, neuron)
        if neuron.saturates():
            saturating.append(f"{name} (L={L})")
    if saturating:
        warnings.warn(f"bit-plane with T={T}: the top level cannot be coded at {len(saturating)} site(s) "
                      f"({', '.join(saturating[:4])}...); they saturate. Exact needs L <= 2^T - 1", stacklevel=3)
    T_default = max(bits_needed(gm.get_submodule(n).levels) for n in sites)
    return {"T": T or T_default, "standard_if": standard_if}


# -- ReLU methods: thresholds from calibration statistics (METHODS §4) -----------------------

@torch.no_grad()
def collect_statistics(gm: fx.GraphModule, sites: list[str], data, channel_wise: bool = False,
                       max_samples: int = 2_000_000, batches: int | None = None) -> ActivationStats:
    """Stream calibration batches through the ReLU graph and keep each site's activation
    statistics (bounded memory; combined over ranks under torchrun)."""
    if data is None:
        raise ConversionError("ReLU methods need calibration_data: an iterable of (x, y) or x batches")
    stats = ActivationStats(max_samples=max_samples, channel_wise=channel_wise)
    hooks = [gm.get_submodule(s).register_forward_hook(
        lambda m, i, out, s=s: stats.update(s, out)) for s in sites]
    device = next((p.device for p in gm.parameters()), torch.device("cpu"))
    dtype = next((p.dtype for p in gm.parameters()), torch.float32)
    try:
        for i, batch in enumerate(tqdm(data, desc="calibration statistics", leave=False, disable=None)):
            if batches is not None and i >= batches:
                break
            x = batch[0] if isinstance(batch, (tuple, list)) else batch
            gm(x.to(device, dtype))
    finally:
        for h in hooks:
            h.remove()
    if not stats.sites:
        raise ConversionError("calibration_data yielded no batches")
    stats.reduce_distributed()
    return stats


def calibration_statistics(model: nn.Module, data, channel_wise: bool = False, max_samples: int = 2_000_000,
                           batches: int | None = None) -> ActivationStats:
    """Activation statistics of a ReLU model's sites, computed once and reusable by several
    conversions: ``convert(model, "data-driven", T=T, statistics=stats)`` for each T."""
    gm = trace(model.eval())
    sites = relu_site_modules(gm, "calibration_statistics")
    remove_dropout(gm)
    fold_batchnorm(gm)
    return collect_statistics(gm, list(sites), data, channel_wise, max_samples, batches)


def _build_relu(gm, sites, T=None, calibration_data=None, statistics: ActivationStats | None = None,
                rule: str = "max", channel_wise: bool = False, percentile: float = 99.9, m: int = 1,
                v0_fraction: float | None = None, max_samples: int = 2_000_000,
                calibration_batches: int | None = None, **_):
    T = T or 4
    stats = statistics or collect_statistics(gm, sites, calibration_data, channel_wise, max_samples, calibration_batches)
    if sorted(stats.sites) != sorted(sites):
        raise ConversionError(f"the statistics cover sites {sorted(stats.sites)}, the model has {sorted(sites)}")
    thresholds, subsampled = {}, [s for s in sites if stats.subsampled(s)]
    if subsampled and rule != "max":  # the max is exact whatever the sample
        cap = (f"{stats.max_samples} per site, {stats.max_samples_per_channel} per channel" if channel_wise
               else f"{stats.max_samples} per site")
        warnings.warn(f"{len(subsampled)} site(s) had more positive activations than kept ({cap}); their {rule} "
                      "thresholds use a uniform random subsample (raise max_samples for exact ones)", stacklevel=4)
    for name in sites:
        kwargs = {"T": T, "m": m} if rule == "data-driven" else {"percentile": percentile, "v0_fraction": v0_fraction}
        theta, v0 = stats.threshold(name, rule, channel_wise=channel_wise, **kwargs)
        dtype = torch.get_default_dtype()
        gm.add_submodule(name, IFNeuron(theta.to(dtype), v0.to(dtype), T))
        thresholds[name] = theta.tolist()
    return {"T": T, "thresholds": thresholds, "subsampled_sites": subsampled, "channel_wise": channel_wise}


@register("max-norm", "rate", "relu", "ReLU ANN: θ = max activation on calibration data, v0 = 0")
def _build_max_norm(gm, sites, **options):
    return _build_relu(gm, sites, rule="max", **options)


@register("percentile", "rate", "relu", "ReLU ANN: θ = p-th percentile (default 99.9) of activations, v0 = 0")
def _build_percentile(gm, sites, **options):
    return _build_relu(gm, sites, rule="percentile", **options)


@register("data-driven", "rate", "relu", "ReLU ANN: θ, v0 minimising Σ|a − ã|^m for the chosen T (METHODS §4)")
def _build_data_driven(gm, sites, **options):
    return _build_relu(gm, sites, rule="data-driven", **options)
