""""max-norm", "percentile", "data-driven": rate-coded IF neurons for a ReLU ANN, with each
site's θ and v0 chosen from calibration statistics (docs/methods.md §4)."""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch

from ...device import module_dtype
from ...snn.codings import RATE
from ...snn.neurons import IFNeuron
from ..registry import ANY_T, CalibrationOptions, Method, Source, option, register


@dataclass(frozen=True)
class MaxNormOptions(CalibrationOptions):
    v0_fraction: float | None = option(None, "initial potential as a fraction of θ (0.5: half threshold)")


@dataclass(frozen=True)
class PercentileOptions(MaxNormOptions):
    percentile: float = option(99.9, "which percentile of the positive activations is θ")


@dataclass(frozen=True)
class DataDrivenOptions(CalibrationOptions):
    m: int = option(1, "the error power of Σ|a − ã|^m", choices=(1, 2))


def threshold_builder(rule: str):
    """The builder of a method whose thresholds follow ``rule`` of ActivationStats.threshold."""
    def build(gm, sites, T, options, calibration) -> dict:
        statistics = calibration.statistics
        thresholds, subsampled = {}, [s for s in sites if statistics.subsampled(s)]
        if subsampled and rule != "max":  # the max is exact whatever the sample
            cap = (f"{statistics.max_samples} per site, {statistics.max_samples_per_channel} per channel"
                   if options.channel_wise else f"{statistics.max_samples} per site")
            warnings.warn(f"{len(subsampled)} site(s) had more positive activations than kept ({cap}); their "
                          f"{rule} thresholds use a uniform random subsample (raise max_samples for exact ones)",
                          stacklevel=4)
        if rule == "data-driven":
            kwargs = {"T": T, "m": options.m}
        else:
            kwargs = {"v0_fraction": options.v0_fraction}
            if rule == "percentile":
                kwargs["percentile"] = options.percentile
        dtype = module_dtype(gm, torch.get_default_dtype())
        for name in sites:
            theta, v0 = statistics.threshold(name, rule, channel_wise=options.channel_wise, **kwargs)
            gm.add_submodule(name, IFNeuron(theta.to(dtype), v0.to(dtype), T))
            thresholds[name] = theta.tolist()
        return {"T": T, "thresholds": thresholds, "subsampled_sites": subsampled, "channel_wise": options.channel_wise}
    return build


register(Method(
    name="max-norm", summary="θ = max activation on calibration data, v0 = 0",
    coding=RATE, source=Source.RELU, time=ANY_T, options=MaxNormOptions, build=threshold_builder("max"),
    reference="docs/methods.md §4"))
register(Method(
    name="percentile", summary="θ = p-th percentile (default 99.9) of the activations, v0 = 0",
    coding=RATE, source=Source.RELU, time=ANY_T, options=PercentileOptions, build=threshold_builder("percentile"),
    reference="docs/methods.md §4"))
register(Method(
    name="data-driven", summary="θ, v0 minimising Σ|a − ã|^m for the chosen T (fast exact search)",
    coding=RATE, source=Source.RELU, time=ANY_T, options=DataDrivenOptions, build=threshold_builder("data-driven"),
    reference="docs/methods.md §4"))
