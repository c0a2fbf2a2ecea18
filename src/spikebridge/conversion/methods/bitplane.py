""""bitplane": exact conversion, the level's bits MSB first in T = ceil(log2(L+1)) steps
(docs/methods.md §3); a site quantizing another f emits the bits of |k| as spikes of sign(k)
(sign-magnitude, §8)."""
from __future__ import annotations

import warnings
from dataclasses import dataclass

from ...snn.codings import SUM
from ...errors import ConversionError
from ...snn.neurons import BitplaneNeuron, QuantizedBitplaneNeuron
from ..graph import qcfs_site, quantized_site
from ..registry import BITS, Method, Source, option, register


@dataclass(frozen=True)
class BitplaneOptions:
    standard_if: bool = option(False, "the 001 Table 4 ablation: a standard IF neuron that fires every step")


def build(gm, sites, T, options: BitplaneOptions, calibration=None) -> dict:
    saturating = []
    for name in sites:
        theta, L = qcfs_site(gm, name)
        site = quantized_site(gm, name)
        if site is None:
            neuron = BitplaneNeuron(theta, L, T, standard_if=options.standard_if)
        elif options.standard_if:
            raise ConversionError(f"site {name!r} quantizes {site.function}: the standard_if ablation is defined for "
                                  "QCFS (ReLU) sites only")
        else:
            neuron = QuantizedBitplaneNeuron(theta, L, site.function, site.k_min, T)
        gm.add_submodule(name, neuron)
        if neuron.saturates():
            saturating.append(f"{name} (L={L})")
    if saturating:
        warnings.warn(f"bit-plane with T={T}: the top level cannot be coded at {len(saturating)} site(s) "
                      f"({', '.join(saturating[:4])}...); they saturate. Exact needs L <= 2^T - 1", stacklevel=4)
    return {"T": T or max(gm.get_submodule(n).T for n in sites), "standard_if": options.standard_if}


register(Method(
    name="bitplane", summary="exact: the level's bits MSB first, T = ceil(log2(L+1)) (error-free bit-plane)",
    coding=SUM, source=Source.QCFS, time=BITS, options=BitplaneOptions, build=build,
    reference="docs/methods.md §3"))
