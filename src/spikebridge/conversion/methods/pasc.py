""""pasc": exact conversion with spike counts and inhibitory spikes (docs/methods.md §2); a
site quantizing another f emits its signed level as |k| spikes of sign(k)·θ/L (§8)."""
from __future__ import annotations

from dataclasses import dataclass

from ...analysis.energy import pasc_latency, pasc_t_eff
from ...snn.codings import SUM
from ...snn.neurons import PASCNeuron, QuantizedPASCNeuron
from ..graph import qcfs_site, quantized_site
from ..registry import OWN_LEVELS, Method, Source, register


@dataclass(frozen=True)
class PASCOptions:
    """PASC has no options: every site runs for its own levels (a quantized f's site with
    k_min < 0 for max(L, −k_min) steps)."""


def build(gm, sites, T, options: PASCOptions, calibration=None) -> dict:
    levels = []
    for name in sites:
        theta, L = qcfs_site(gm, name)
        site = quantized_site(gm, name)
        neuron = PASCNeuron(theta, L) if site is None else QuantizedPASCNeuron(theta, L, site.function, site.k_min)
        gm.add_submodule(name, neuron)
        levels.append(neuron.steps_out(1))
    return {"T": None, "T_eff": pasc_t_eff(levels), "pipeline_latency": pasc_latency(levels),
            "levels": dict(zip(sites, levels))}


register(Method(
    name="pasc", summary="exact: spike counts with inhibitory spikes, T_eff = mean levels (PASCAL)",
    coding=SUM, source=Source.QCFS, time=OWN_LEVELS, options=PASCOptions, build=build, default=True,
    reference="docs/methods.md §2"))
