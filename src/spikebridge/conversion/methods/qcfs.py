""""qcfs": the QCFS baseline, rate-coded IF with soft reset and v0 = θ/2 (docs/methods.md §1);
sites quantizing an f other than ReLU are refused (§8)."""
from __future__ import annotations

from dataclasses import dataclass

from ...snn.codings import RATE
from ...snn.neurons import IFNeuron
from ..graph import qcfs_site, refuse_unless_relu_like
from ..registry import ANY_T, Method, Source, register


@dataclass(frozen=True)
class QCFSOptions:
    """The QCFS baseline has no options: θ comes from the ANN, v0 = θ/2."""


def build(gm, sites, T, options: QCFSOptions, calibration=None) -> dict:
    for name in sites:
        refuse_unless_relu_like(gm, name)
        theta, _levels = qcfs_site(gm, name)
        gm.add_submodule(name, IFNeuron(theta, theta / 2, T))
    return {"T": T}


register(Method(
    name="qcfs", summary="rate-coded IF, soft reset, v0 = θ/2, any T (QCFS baseline)",
    coding=RATE, source=Source.QCFS, time=ANY_T, options=QCFSOptions, build=build,
    reference="docs/methods.md §1"))
