"""convert(): a trained ANN to a SpikingNetwork (docs/architecture.md "convert"; docs/methods.md §1–4).

Steps: trace with torch.fx; find the activation sites (QCFS modules, or ReLU call sites for
methods that convert a ReLU ANN); remove dropout and fold BatchNorm (``graph``); check every
node against the op table; let the method's record parse its options and put its neurons at
the sites. Anything unsupported is a ConversionError naming the node and what to do.
"""
from __future__ import annotations

import torch
from torch import fx, nn
from tqdm.auto import tqdm

from ..ann.tracing import site_nodes, trace
from ..errors import ConversionError, OptionError, check_T
from ..snn.network import SpikingNetwork
from .graph import check_supported, fold_batchnorm, relu_site_modules, remove_dropped
from .registry import Source, get_method
from .thresholds import ActivationStats


def convert(model: nn.Module, method: str = "pasc", T: int | None = None, calibration_data=None,
            statistics: ActivationStats | None = None, input_shape=None, **options) -> SpikingNetwork:
    """Convert a trained ANN with a registered method (``sb.methods()`` lists them).

    Methods that convert a QCFS ANN ("qcfs", "pasc", "bitplane") take a model from
    ``sb.prepare``; methods that convert a ReLU ANN take a plain ReLU ANN and
    ``calibration_data`` (batches of x or (x, y)) or ``statistics`` from
    ``calibration_statistics``. ``T``: see the method's time policy. ``options``: the fields of
    the method's options dataclass; an unknown option is an OptionError naming the valid ones.
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
    check_supported(gm, sites)
    if record.source is Source.RELU:
        statistics = statistics or collect_statistics(
            gm, sites, calibration_data, parsed.channel_wise, parsed.max_samples, parsed.calibration_batches)
        if sorted(statistics.sites) != sorted(sites):
            raise ConversionError(f"the statistics cover sites {sorted(statistics.sites)}, the model has {sorted(sites)}")
    info = record.build(gm, sites, T or record.time.default_T, parsed, statistics)
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
            stats.input_shape = tuple(x.shape[1:])
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
    remove_dropped(gm)
    fold_batchnorm(gm)
    return collect_statistics(gm, list(sites), data, channel_wise, max_samples, batches)
