"""convert(): a trained ANN to a SpikingNetwork (docs/architecture.md "convert"; docs/methods.md §1–4).

Steps: trace with torch.fx; find the activation sites (QCFS modules, or ReLU call sites for
methods that convert a ReLU ANN); remove dropout and fold BatchNorm (``graph``); check every
node against the op table; let the method's record parse its options and put its neurons at
the sites. Anything unsupported is a ConversionError naming the node and what to do.
"""
from __future__ import annotations

import torch
from torch import fx, nn
from ..progress import progress as progress_bar

from ..ann.tracing import site_nodes, trace
from ..device import module_device, place
from ..errors import ConversionError, InputError, OptionError, check_T
from ..inputs import batches as input_batches
from ..inputs import input_spec
from ..snn.network import SpikingNetwork
from .graph import check_finite, check_supported, fold_batchnorm, redirect_inplace, relu_site_modules, remove_dropped
from .registry import Source, get_method
from .thresholds import ActivationStats

CALIBRATION_BATCH = 256  # calibration data given as one tensor is split into batches of this size


def convert(model: nn.Module, method: str = "pasc", T: int | None = None, calibration_data=None,
            statistics: ActivationStats | None = None, device=None, input_shape=None,
            **options) -> SpikingNetwork:
    """Convert a trained ANN with a registered method (``sb.methods()`` lists them).

    Methods that convert a QCFS ANN ("qcfs", "pasc", "bitplane") take a model from
    ``sb.prepare``; methods that convert a ReLU ANN take a plain ReLU ANN and
    ``calibration_data`` (batches of x or (x, y)) or ``statistics`` from
    ``calibration_statistics``. ``T``: see the method's time policy. ``options``: the fields of
    the method's options dataclass; an unknown option is an OptionError naming the valid ones.
    ``device``: where calibration runs and the SNN is put (default: the model's device); the
    user's model is not moved.
    ``input_shape``: one sample's shape without the batch, recorded in ``snn.info["input_shape"]``
    (for export); by default the shape of the calibration data, when there is some.
    """
    record = get_method(method)
    parsed = record.parse_options(options)
    if T is not None:
        check_T(T)
        if not record.time.accepts_T:
            raise OptionError(f"method {method!r} runs for {record.time.description}; do not pass T")
    if not isinstance(model, nn.Module):
        raise ConversionError(f"convert() needs a torch nn.Module, got {type(model).__name__}")
    model = model.eval()
    gm = trace(model)
    place(gm, device)
    check_finite(gm)
    if record.source is Source.QCFS:
        if calibration_data is not None or statistics is not None:
            raise OptionError(f"method {method!r} takes its thresholds from the QCFS ANN; it uses no calibration data")
        sites = list(site_nodes(gm))
        if not sites:
            raise ConversionError(f"method {method!r} needs a QCFS model: run sb.prepare(model, levels=...) "
                                  "and train it, or use a method that converts a ReLU ANN")
    else:
        sites = list(relu_site_modules(gm, method))
    remove_dropped(gm)
    fold_batchnorm(gm)
    redirect_inplace(gm)
    check_supported(gm, sites)
    if record.source is Source.RELU:
        statistics = statistics or collect_statistics(
            gm, sites, calibration_data, parsed.channel_wise, parsed.max_samples, parsed.calibration_batches)
        if sorted(statistics.sites) != sorted(sites):
            raise ConversionError(f"the statistics cover sites {sorted(statistics.sites)}, the model has {sorted(sites)}")
    info = record.build(gm, sites, T or record.time.default_T, parsed, statistics)
    foreign = [name for name in sites if gm.get_submodule(name).coding is not record.coding]
    if foreign:
        raise ConversionError(f"method {method!r} put neurons of another coding than {record.coding.name} at {foreign}")
    shape = input_shape if input_shape is not None else getattr(statistics, "input_shape", None)
    if shape is not None:
        info["input_shape"] = [int(s) for s in shape]
    gm.graph.lint()
    gm.delete_all_unused_submodules()
    gm.recompile()
    return SpikingNetwork(gm, record.name, info.pop("T"), info)


@torch.no_grad()
def collect_statistics(gm: fx.GraphModule, sites: list[str], data, channel_wise: bool = False,
                       max_samples: int = 2_000_000, batches: int | None = None) -> ActivationStats:
    """Stream calibration batches (a tensor [N, ...] or an iterable of x or (x, y) batches)
    through the ReLU graph and keep each site's activation statistics (bounded memory;
    combined over ranks under torchrun). Floating-point batches are cast to the model's dtype;
    anything else that does not fit the model is an InputError."""
    if data is None:
        raise ConversionError("ReLU methods need calibration_data: a tensor [N, ...] or an iterable of "
                              "x or (x, y) batches")
    stats = ActivationStats(max_samples=max_samples, channel_wise=channel_wise)
    hooks = [gm.get_submodule(s).register_forward_hook(
        lambda m, i, out, s=s: stats.update(s, out)) for s in sites]
    device = module_device(gm)
    spec = input_spec(gm)
    who = "calibration"
    try:
        for i, x in enumerate(progress_bar(input_batches(data, CALIBRATION_BATCH, who), "calibration statistics",
                                           total=len(data) if hasattr(data, "__len__") else None)):
            if batches is not None and i >= batches:
                break
            if isinstance(x, torch.Tensor) and x.is_floating_point():
                x = x.to(device, spec.dtype)
            spec.check(x, who)
            stats.input_shape = tuple(x.shape[1:])
            try:
                gm(x)
            except (RuntimeError, ValueError, IndexError) as exc:
                first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                raise InputError(f"calibration batch of shape {tuple(x.shape)} does not fit the model ({first[:200]}); "
                                 f"the model takes {spec.describe()}") from None
    finally:
        for h in hooks:
            h.remove()
    if not stats.sites:
        raise InputError("calibration_data yielded no batches")
    stats.reduce_distributed()
    return stats


def calibration_statistics(model: nn.Module, data, channel_wise: bool = False, max_samples: int = 2_000_000,
                           batches: int | None = None, device=None) -> ActivationStats:
    """Activation statistics of a ReLU model's sites, computed once and reusable by several
    conversions: ``convert(model, "data-driven", T=T, statistics=stats)`` for each T. The
    model's forward passes run on ``device`` (default: the model's); the statistics are kept
    on the CPU."""
    gm = trace(model.eval())
    place(gm, device)
    sites = relu_site_modules(gm, "calibration_statistics")
    remove_dropped(gm)
    fold_batchnorm(gm)
    return collect_statistics(gm, list(sites), data, channel_wise, max_samples, batches)
