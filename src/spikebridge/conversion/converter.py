"""convert(): a trained ANN to a SpikingNetwork (docs/architecture.md "convert"; docs/methods.md §1–4, §9–10).

Steps: trace with torch.fx; find the activation sites (QCFS modules, or ReLU call sites for
methods that convert a ReLU ANN); remove dropout and fold BatchNorm (``graph``); check every
node against the op table; let the method's record parse its options and put its neurons at
the sites. Anything unsupported is a ConversionError naming the node and what to do. Without
a method, the registry's default for the model's kind is used (a model with QCFS sites is a
QCFS ANN, any other a ReLU ANN).
"""
from __future__ import annotations

from collections.abc import Iterator
from itertools import chain, islice

import torch
from torch import fx, nn
from ..progress import progress as progress_bar

from ..ann.tracing import input_data_nodes, site_nodes, trace
from ..device import module_device, place
from ..errors import ConversionError, InputError, OptionError, check_T
from ..inputs import batches as input_batches
from ..inputs import InputSpec, example_input, input_spec, run_on
from ..snn.network import SpikingNetwork
from .constant import constants_as_modules
from .graph import (check_finite, check_supported, constant_layer_calls, fold_batchnorm, fold_constant_calls,
                    redirect_inplace, relu_site_modules, remove_dropped, remove_unbounded_clamps, shape_made_constants,
                    shape_numbers_as_literals)
from .registry import Method, Source, default_method, get_method
from .thresholds import ActivationStats

CALIBRATION_BATCH = 256  # calibration data given as one tensor is split into batches of this size


class Calibration:
    """What a method that converts a ReLU ANN calibrates on, handed to its builder:
    ``statistics`` (the sites' activation statistics in the ReLU graph, collected on first use:
    read them before placing any neuron) and ``batches()`` (the calibration inputs themselves,
    for methods that run the network on them; read once and kept)."""

    def __init__(self, gm: fx.GraphModule, sites: list[str], data, statistics: ActivationStats | None, options):
        self._gm, self._sites, self._data, self._options = gm, sites, data, options
        self._statistics = statistics
        self._batches: list[torch.Tensor] | None = None
        self.device = module_device(gm)

    @property
    def statistics(self) -> ActivationStats:
        if self._statistics is None:
            o = self._options
            data = self._batches if self._batches is not None else self._data
            self._statistics = collect_statistics(self._gm, self._sites, data, o.channel_wise, o.max_samples,
                                                  None if self._batches is not None else o.calibration_batches)
        if sorted(self._statistics.sites) != sorted(self._sites):
            raise ConversionError(f"the statistics cover sites {sorted(self._statistics.sites)}, "
                                  f"the model has {sorted(self._sites)}")
        return self._statistics

    @property
    def input_shape(self) -> tuple[int, ...] | None:
        """One sample's shape, as the calibration data showed it (None if none was read)."""
        if self._statistics is not None and getattr(self._statistics, "input_shape", None):
            return tuple(self._statistics.input_shape)
        return tuple(self._batches[0].shape[1:]) if self._batches else None

    def batches(self) -> list[torch.Tensor]:
        if self._batches is None:
            if self._data is None:
                raise ConversionError("this method runs the network on its calibration images: pass "
                                      "calibration_data (statistics alone are not enough)")
            self._batches = checked_batches(self._data, self._options.calibration_batches, input_spec(self._gm),
                                            self.device)
            if not self._batches:
                raise ConversionError("calibration_data yielded no batches")
        return self._batches


def calibration_input(x, spec: InputSpec, device, who: str = "calibration") -> torch.Tensor:
    """A calibration batch on ``device``, floating point in the network's dtype, checked
    against what the network takes (``InputSpec.check``: shape, dtype, NaN or inf)."""
    if isinstance(x, torch.Tensor):
        x = x.to(device, spec.dtype) if x.is_floating_point() else x.to(device)
    return spec.check(x, who)


def checked_batches(data, limit: int | None, spec: InputSpec, device, who: str = "calibration") -> list[torch.Tensor]:
    """The first ``limit`` batches of ``data`` (``_inputs``), each through ``calibration_input``."""
    return [calibration_input(x, spec, device, who) for x in _inputs(data, limit, who)]


def _inputs(data, limit: int | None, who: str = "calibration") -> Iterator[torch.Tensor]:
    """The input tensors of the first ``limit`` batches of x or (x, y), a tensor [N, ...] being
    split into batches of CALIBRATION_BATCH."""
    return islice(input_batches(data, CALIBRATION_BATCH, who), limit)


def default_for(model: nn.Module, example: torch.Tensor | None = None) -> Method:
    """The registry's default method for ``model``: a model with QCFS sites (from
    ``sb.prepare``) is a QCFS ANN, any other a ReLU ANN (``example``: as for ``trace``)."""
    return _default_for_graph(trace(model.eval(), example))


def _default_for_graph(gm: fx.GraphModule) -> Method:
    return default_method(Source.QCFS if site_nodes(gm) else Source.RELU)


def convert(model: nn.Module, method: str | None = None, T: int | None = None, calibration_data=None,
            statistics: ActivationStats | None = None, device=None, input_shape=None,
            **options) -> SpikingNetwork:
    """Convert a trained ANN with a registered method (``sb.methods()`` lists them).

    Methods that convert a QCFS ANN ("qcfs", "pasc", "bitplane") take a model from
    ``sb.prepare``; methods that convert a ReLU ANN take a plain ReLU (or ReLU6) ANN and
    ``calibration_data`` (batches of x or (x, y), or a tensor [N, ...] split into batches of
    CALIBRATION_BATCH) or ``statistics`` from ``calibration_statistics`` (methods that run
    the network on the images need the data).
    Without ``method``, the registry's default for the model's kind (``default_for``).
    ``T``: see the method's time policy. ``options``: the fields of the method's options
    dataclass; an unknown option is an OptionError naming the valid ones.
    ``device``: where calibration runs and the SNN is put (default: the model's device); the
    user's model is not moved.
    ``input_shape``: one sample's shape without the batch, recorded in ``snn.info["input_shape"]``
    (for export); by default the shape of the calibration data, when there is some.
    The first calibration batch (else zeros of ``input_shape``) is also the example input for a
    model whose forward pass reads its input's shape (``ann.tracing.trace``) and for tensors it
    makes from that shape, which become constants for inputs of that shape
    (``graph.shape_numbers_as_literals``, docs/methods.md §8).
    """
    if not isinstance(model, nn.Module):
        raise ConversionError(f"convert() needs a torch nn.Module, got {type(model).__name__}")
    read = calibration_data
    if isinstance(calibration_data, Iterator):  # one-shot: its first batch is read now, for the example
        first = next(calibration_data, None)
        read = [] if first is None else [first]
        calibration_data = chain(read, calibration_data)
    example = example_input(read, input_shape)
    named = None if method is None else get_method(method)  # an unknown name fails before tracing
    model = model.eval()
    gm = trace(model, example)  # once: the default method is read off this graph
    record = named if named is not None else _default_for_graph(gm)
    method = record.name
    parsed = record.parse_options(options)
    if T is not None:
        check_T(T)
        if not record.time.accepts_T:
            raise OptionError(f"method {method!r} runs for {record.time.description}; do not pass T")
    device = place(gm, device)
    remove_unbounded_clamps(gm)
    check_finite(gm)
    if record.source is Source.QCFS:
        if calibration_data is not None or statistics is not None:
            raise OptionError(f"method {method!r} takes its thresholds from the QCFS ANN; it uses no calibration data")
        data = input_data_nodes(gm)  # a site the input cannot change is folded below
        sites = [name for name, node in site_nodes(gm).items() if node in data]
        if not sites:
            raise ConversionError(f"method {method!r} needs a QCFS model: run sb.prepare(model, levels=...) "
                                  "and train it, or use a method that converts a ReLU ANN")
    else:
        sites = list(relu_site_modules(gm, method))
    remove_dropped(gm)
    fold_batchnorm(gm)
    redirect_inplace(gm)
    constants_as_modules(gm)
    fold_constant_calls(gm, modules=True)
    if example is not None:
        shape_numbers_as_literals(gm, example)
    constant_layer_calls(gm, fold_constant_calls(gm))
    if example is not None:
        shape_made_constants(gm, example)
    check_supported(gm, sites)
    calibration = None
    if record.source is Source.RELU:
        if calibration_data is None and statistics is None:
            raise ConversionError(f"method {method!r} converts a ReLU ANN: pass calibration_data (an iterable of "
                                  "(x, y) or x batches) or statistics from calibration_statistics()")
        if isinstance(calibration_data, Iterator):
            calibration_data = list(_inputs(calibration_data, parsed.calibration_batches))  # one-shot: keep it
        calibration = Calibration(gm, sites, calibration_data, statistics, parsed)
    info = record.build(gm, sites, T or record.time.default_T, parsed, calibration)
    foreign = [name for name in sites if gm.get_submodule(name).coding is not record.coding]
    if foreign:
        raise ConversionError(f"method {method!r} put neurons of another coding than {record.coding.name} at {foreign}")
    shape = input_shape if input_shape is not None else (calibration.input_shape if calibration else None)
    if shape is not None:
        info["input_shape"] = [int(s) for s in shape]
    gm.graph.lint()
    gm.delete_all_unused_submodules()
    gm.recompile()
    gm.to(device)  # the neurons, whose θ may come from statistics kept on the CPU
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
    try:
        inputs = input_batches(data, CALIBRATION_BATCH, "calibration")
        for i, x in enumerate(progress_bar(inputs, "calibration statistics",
                                           total=len(data) if hasattr(data, "__len__") else None)):
            if batches is not None and i >= batches:
                break
            x = calibration_input(x, spec, device)
            stats.input_shape = tuple(x.shape[1:])
            run_on(gm, x, spec)
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
    gm = trace(model.eval(), example_input(data))
    place(gm, device)
    sites = relu_site_modules(gm, "calibration_statistics")
    remove_dropped(gm)
    fold_batchnorm(gm)
    return collect_statistics(gm, list(sites), data, channel_wise, max_samples, batches)
