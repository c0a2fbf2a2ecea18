"""NIR targets: what each importer maps and what its neurons compute, and the emulation of a
spikebridge SNN under a target's semantics (the prediction of what the importer will compute).

One ``Target`` record per importer convention. Every target gets a graph with θ folded into
the weights (thresholds 1, spikes of value 1) and a Flatten over the last dims (``start_dim``
< 0, read alike with or without a batch dim); the record says the rest:

- ``semantics``: the importer's IF neuron (``snn.neurons.Semantics``), measured from its code:
  snnTorch 1.0.0 (NIR LIF, see ``lif_node``): hard reset to 0, v > θ; Norse 1.1.0 (IAFCell):
  hard reset to 0, v > θ; sinabs 3.1.3 (IAFSqueeze): subtraction, ⌊v/θ⌋ spikes per step,
  v clamped at −θ. All start at v = 0. ``generic`` is spikebridge's own neuron, which no
  importer implements; its dynamics are in the graph's metadata.
- ``v0``: the default for the initial potential (no importer has one): "per-step" adds v0/T to
  the bias of the neuron's input layer every step (same charge after T steps), "zero" drops it.
- ``threshold_scale``: the default λ; the exported neurons fire at λ·θ and their spikes are
  still worth θ (a conversion for the target: a hard reset discards the charge above the
  threshold, and a lower threshold fires sooner; BENCHMARKS.md §8 measures λ).
- ``pool``: "avg" (nir.AvgPool2d) or "sum" (nir.SumPool2d, 1/k² folded into the next layer).
- ``chain``: the importer runs nodes in nirtorch's depth-first order (``nirtorch.load``), which
  reads a join's other inputs from the previous step; joins are rewritten (``export.chain``).
- ``uniform_threshold``: the importer needs one threshold per neuron node.
- ``importer``: the name in ``export.importers`` that loads and runs the file.
"""
from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import nir
import numpy as np

from ..errors import OptionError
from ..snn.neurons import EmulatedIFNeuron, IFNeuron, Semantics
from ..snn.network import SpikingNetwork

# snnTorch maps NIR LIF to Leaky(β = 1 − dt/τ) with dt = 1e-4 and input weight r·dt/τ: with
# τ = 1e4 and r = 1e8 the input weight is 1 and β = 1 − 1e-8, which is 1.0 in float32.
SNNTORCH_TAU, SNNTORCH_R = 1e4, 1e8


def if_node(theta: np.ndarray, metadata: dict) -> nir.NIRNode:
    """NIR IF (r = 1; NIR ≥ 1.0.5 adds v_reset = 0 by default)."""
    return nir.IF(r=np.ones_like(theta), v_threshold=theta, metadata=metadata)


def lif_node(theta: np.ndarray, metadata: dict) -> nir.NIRNode:
    """NIR LIF that integrates without leak in float32 (τ dv/dt = −v + R·I with R = τ/dt)."""
    return nir.LIF(tau=np.full_like(theta, SNNTORCH_TAU), r=np.full_like(theta, SNNTORCH_R),
                   v_leak=np.zeros_like(theta), v_threshold=theta, metadata=metadata)


@dataclass(frozen=True)
class Target:
    name: str
    summary: str
    semantics: Semantics
    neuron_node: Callable[[np.ndarray, dict], nir.NIRNode]
    v0: str = "per-step"
    threshold_scale: float = 1.0
    pool: str = "avg"
    chain: bool = False
    uniform_threshold: bool = False
    importer: str | None = None

    def semantics_for(self, v0: str | None = None, threshold_scale: float | None = None) -> Semantics:
        """The neuron semantics with the initial-potential policy ``v0`` and the threshold scale
        λ (defaults: the target's)."""
        v0 = v0 or self.v0
        threshold_scale = self.threshold_scale if threshold_scale is None else float(threshold_scale)
        if v0 not in ("initial", "zero", "per-step"):
            raise OptionError(f"v0 must be 'per-step' or 'zero' (or 'initial' for the generic target), got {v0!r}")
        if v0 == "initial" and self.semantics.v0_mode != "initial":
            raise OptionError(f"target {self.name!r} cannot set an initial potential; use v0='per-step' or 'zero'")
        if threshold_scale != 1.0 and self.semantics.v0_mode == "initial":
            raise OptionError(f"target {self.name!r} keeps spikebridge's own neuron; threshold_scale must be 1")
        return dataclasses.replace(self.semantics, v0_mode=v0, threshold_scale=threshold_scale)


TARGETS: dict[str, Target] = {t.name: t for t in (
    Target("generic", "NIR IF nodes; spikebridge's own dynamics (reset by subtraction, v >= theta, v0) are in "
           "the metadata, which no importer reads", Semantics(), if_node, v0="initial"),
    Target("snntorch", "snnTorch 1.0.0 + nirtorch 2.6 (snntorch.import_nir.import_from_nir): the IF is written as "
           "a NIR LIF that does not leak in float32 (snnTorch's IF neuron returns a tuple its executor cannot "
           "pass on); hard reset to 0, fires on v > theta, one threshold per node",
           Semantics(reset="zero", strict=True, v0_mode="zero"), lif_node,
           threshold_scale=0.6, uniform_threshold=True, importer="snntorch"),
    Target("norse", "Norse 1.1.0 + nirtorch 2.6 (norse.torch.from_nir): IAFCell, hard reset to 0, fires on "
           "v > theta; SumPool2d; residual blocks rewritten as a chain with relay neurons (Norse runs nodes "
           "depth-first and would read a shortcut from the previous step)",
           Semantics(reset="zero", strict=True, v0_mode="zero"), if_node,
           threshold_scale=0.6, pool="sum", chain=True, importer="norse"),
    Target("sinabs", "sinabs 3.1.3 + nir 1.0.4 (sinabs.from_nir with batch_size; feed [B*T, ...], sample-major): "
           "IAFSqueeze, reset by subtraction, several spikes per step, v clamped at -theta; SumPool2d; residual "
           "blocks rewritten as for norse", Semantics(multi_spike=True, floor=-1.0, v0_mode="zero"), if_node,
           pool="sum", chain=True, importer="sinabs"),
)}


def get_target(name: str) -> Target:
    if name not in TARGETS:
        raise OptionError(f"unknown NIR target {name!r}; choose one of {', '.join(TARGETS)}")
    return TARGETS[name]


def emulate(snn: SpikingNetwork, target: str = "generic", v0: str | None = None,
            threshold_scale: float | None = None) -> SpikingNetwork:
    """A copy of ``snn`` whose IF neurons follow ``target``'s semantics with the initial-
    potential policy ``v0`` and threshold scale λ (``Target.semantics_for``): what the importer
    computes from the exported file, simulated by spikebridge. FTBC biases are dropped, as in
    the export."""
    semantics = get_target(target).semantics_for(v0, threshold_scale)
    twin = copy.deepcopy(snn)
    for name, neuron in list(twin.neurons().items()):
        if not isinstance(neuron, IFNeuron):
            raise OptionError(f"only IF networks can be emulated under a NIR target; {name} is a {type(neuron).__name__}")
        emulated = EmulatedIFNeuron(neuron.threshold, neuron.v0, neuron.T, **dataclasses.asdict(semantics))
        parent, _, attr = name.rpartition(".")
        setattr(twin.graph.get_submodule(parent) if parent else twin.graph, attr, emulated)
    twin.info["emulated_target"] = target
    return twin
