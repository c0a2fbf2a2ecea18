"""Operation counts, spike rates, energy and latency of a converted network (docs/methods.md §6).

Every number is per image (one sample of the batch) and comes from a ``SimulationResult``
(``spikebridge.network``); nothing here re-runs the network.

- ANN cost of a conv/linear layer: #OP_ANN = MACs (000 A.4).
- SNN cost of a spiking layer: one accumulate (AC) per (input event, synapse) pair. Exact:
  Σ_in e_in · fanout(in), with border effects, stride, padding, dilation and groups. The
  papers' approximation (000 Eq. 7): #OP_SNN = SpikeRate · MACs, SpikeRate = input events
  over all steps / input neurons.
- Analog (first) layers do MACs on the real-valued input. The input is constant over the
  steps, so its pre-activation is computed once and replayed (PASC computes its level once;
  an IF neuron receives the same current every step): by default an analog layer costs its
  MACs once per image, as 000 Table 3 assumes (its term c·4.6). ``analog_steps`` charges it
  on every step instead, for hardware that recomputes it.
- Layers fed by an analog op (docs/methods.md §8) get a new input at every step of its train
  (once under sum coding, every step under rate coding): MACs on each.
- Analog ops (attention products, softmax, LayerNorm, products of trains) are computed on
  decoded values: their MACs (the op table's ``analog_macs``) count in both the ANN (once) and
  the SNN (every call), so the report shows what is still analog.
- Energy: E = e_mac · #MAC + e_ac · #AC in pJ; 4.6 / 0.9 pJ for 32-bit float in 45 nm
  (000 Table 10, Horowitz 2014). ``COSTS`` also holds the 32/8-bit integer costs of 001
  Table 6, with a MAC = mult + add as in 000 Table 10.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from ..conversion.ops import Kind, op_for_module
from ..snn.network import call_name

# pJ per operation, 45 nm CMOS. fp32: 000 Table 10. int32/int8: 001 Table 6 (mult + add).
COSTS = {
    "fp32": {"e_mac": 4.6, "e_ac": 0.9},
    "int32": {"e_mac": 3.1 + 0.1, "e_ac": 0.1},
    "int8": {"e_mac": 0.2 + 0.03, "e_ac": 0.03},
}


def count_macs(model: nn.Module, example_input: torch.Tensor) -> dict[str, int]:
    """MACs per image of every synaptic module (the op table's SYNAPTIC entries, counted by
    their ``macs`` rule), by forward hooks on one forward pass.

    conv: output elements · (C_in/groups) · prod(kernel); linear: in · out · leading dims
    (000 A.4). The pass's count is divided by the batch size (``example_input.shape[0]``);
    a module called several times (shared weights) has one entry per call, name, name#2, …,
    as a spiking network's records of its calls (``SpikingNetwork.synaptic_layers``).
    """
    macs: dict[str, int] = {}

    def hook(name, op):
        calls = 0

        def count(module, inputs, output):
            nonlocal calls
            calls += 1
            macs[call_name(name, calls)] = op.macs(module, output)
        return count

    handles = []
    for n, m in model.named_modules():
        op = op_for_module(m)
        if op is not None and op.kind is Kind.SYNAPTIC:
            handles.append(m.register_forward_hook(hook(n, op)))
    try:
        with torch.no_grad():
            model(example_input)
    finally:
        for h in handles:
            h.remove()
    batch = example_input.shape[0]
    return {name: count // batch for name, count in macs.items()}


def synaptic_ops_exact(layer: nn.Module, events: torch.Tensor) -> int:
    """Accumulates caused by ``events`` (event count per input position, no batch dim), by the
    layer's op-table rule: #AC = Σ_in e_in · fanout(in), fanout(in) = number of (output
    channel, output position) pairs whose receptive field holds ``in`` (for a conv, the
    layer's own convolution of the event map with an all-ones kernel, summed; linear:
    Σ e · out_features)."""
    op = op_for_module(layer)
    if op is None or op.synaptic_ops is None:
        raise TypeError(f"synaptic_ops_exact: {type(layer).__name__} is not a synaptic layer of the op table")
    return op.synaptic_ops(layer, events)


def synaptic_ops_approx(macs: float, spike_rate: float) -> float:
    """000 Eq. 7: #OP_SNN = SpikeRate · #OP_ANN (ignores border effects of the fan-out)."""
    return spike_rate * macs


def input_spike_rate(events: torch.Tensor, batch_size: int) -> float:
    """SpikeRate of a layer's input: events over all steps / (input neurons · batch)."""
    return events.sum().item() / (events.numel() * batch_size)


def paper_energy_ratio(a: float, b: float, c: float, e_mac: float = 4.6, e_ac: float = 0.9) -> float:
    """000 Table 3: E_ANN / E_SNN = a·e_mac / (c·e_mac + (1 − c)·b·e_ac).

    a: #OP_ANN normalised (1); b: SpikeRate averaged over the layers (unweighted);
    c: MACs of the analog first layer / total MACs.
    """
    return a * e_mac / (c * e_mac + (1 - c) * b * e_ac)


def _ratio(num: float, den: float) -> float | None:
    return num / den if den else None


@dataclass
class LayerEnergy:
    """One synaptic layer, per image. ``input_rate`` is None for analog layers."""
    name: str
    analog: bool
    macs: int                 # #OP_ANN
    snn_macs: int             # MACs the SNN does (analog layers only)
    acs_exact: float          # Σ e · fanout / batch
    acs_approx: float         # SpikeRate · MACs
    input_rate: float | None  # input events / (input neurons · batch)
    e_ann_pj: float
    e_snn_pj: float           # from the exact ACs
    e_snn_approx_pj: float
    ratio: float | None       # e_ann_pj / e_snn_pj; None when the layer costs nothing


@dataclass
class AnalogOpEnergy:
    """One op computed on decoded values, per image: ``macs`` of one computation (the ANN's),
    ``snn_macs`` of all its calls in the SNN."""
    name: str
    op: str
    macs: float
    snn_macs: float
    e_ann_pj: float
    e_snn_pj: float


@dataclass
class EnergyReport:
    """Per-layer and total operations and energy per image (docs/methods.md §6); see ``as_dict``."""
    layers: list[LayerEnergy]
    e_mac: float
    e_ac: float
    analog_ops: list[AnalogOpEnergy] = field(default_factory=list)
    totals: dict[str, float | None] = field(init=False)

    def __post_init__(self):
        L, A = self.layers, self.analog_ops
        macs = sum(l.macs for l in L)
        e_ann = sum(l.e_ann_pj for l in L) + sum(a.e_ann_pj for a in A)
        e_snn = sum(l.e_snn_pj for l in L) + sum(a.e_snn_pj for a in A)
        e_snn_approx = sum(l.e_snn_approx_pj for l in L) + sum(a.e_snn_pj for a in A)
        rates = [l.input_rate for l in L if not l.analog]
        b = sum(rates) / len(rates) if rates else 0.0
        c = sum(l.macs for l in L if l.analog) / macs
        self.totals = {
            "macs": macs,
            "snn_macs": sum(l.snn_macs for l in L),
            "analog_op_macs": sum(a.macs for a in A),
            "analog_op_snn_macs": sum(a.snn_macs for a in A),
            "acs_exact": sum(l.acs_exact for l in L),
            "acs_approx": sum(l.acs_approx for l in L),
            "e_ann_pj": e_ann,
            "e_snn_pj": e_snn,
            "e_snn_approx_pj": e_snn_approx,
            "e_ann_uj": e_ann * 1e-6,
            "e_snn_uj": e_snn * 1e-6,
            "ratio": _ratio(e_ann, e_snn),
            "ratio_approx": _ratio(e_ann, e_snn_approx),
            "paper_a": 1.0,
            "paper_b": b,
            "paper_c": c,
            "paper_ratio": paper_energy_ratio(1.0, b, c, self.e_mac, self.e_ac),
        }

    def as_dict(self) -> dict:
        """{"e_mac", "e_ac", "layers": [LayerEnergy fields], "totals": {...}}; JSON-ready."""
        return {"e_mac": self.e_mac, "e_ac": self.e_ac, "layers": [asdict(l) for l in self.layers],
                "analog_ops": [asdict(a) for a in self.analog_ops], "totals": dict(self.totals)}


def energy_report(result, layers: dict[str, nn.Module], macs: dict[str, int] | None = None,
                  e_mac: float = 4.6, e_ac: float = 0.9, analog_steps: int = 1) -> EnergyReport:
    """Operations and energy per image of every synaptic layer of a simulated network.

    ``layers``: ``snn.synaptic_layers()``; ``macs``: per-image MACs by layer name (e.g.
    ``count_macs`` of the ANN), by default counted from each layer and its event map's shape.
    E_ANN = e_mac·MACs. Spiking layer: E_SNN = e_ac·#AC (exact fan-out count).
    Analog layer: E_SNN = e_mac·MACs·``analog_steps`` (1: computed once, see module doc), or
    per input it received when an analog op feeds it. Analog ops: e_mac per MAC.
    Costs: ``energy_report(res, layers, **COSTS["int8"])``.
    """
    rows = []
    for name, layer in layers.items():
        events = result.events[name]
        n_macs = macs[name] if macs is not None else count_macs(layer, torch.zeros(1, *events.shape, device=events.device, dtype=layer.weight.dtype))[""]
        if name in result.analog_layers:
            snn_macs, acs, acs_approx, rate = n_macs * result.analog_steps.get(name, analog_steps), 0.0, 0.0, None
        else:
            snn_macs = 0
            acs = synaptic_ops_exact(layer, events) / result.batch_size
            rate = input_spike_rate(events, result.batch_size)
            acs_approx = synaptic_ops_approx(n_macs, rate)
        e_snn = snn_macs * e_mac + acs * e_ac
        rows.append(LayerEnergy(
            name=name, analog=name in result.analog_layers, macs=n_macs, snn_macs=snn_macs,
            acs_exact=acs, acs_approx=acs_approx, input_rate=rate, e_ann_pj=n_macs * e_mac,
            e_snn_pj=e_snn, e_snn_approx_pj=snn_macs * e_mac + acs_approx * e_ac,
            ratio=_ratio(n_macs * e_mac, e_snn)))
    B = result.batch_size
    ops = [AnalogOpEnergy(name, r["op"], r["macs"] / r["calls"] / B, r["macs"] / B,
                          r["macs"] / r["calls"] / B * e_mac, r["macs"] / B * e_mac)
           for name, r in result.analog_ops.items()]
    return EnergyReport(rows, e_mac, e_ac, ops)


def spike_rates(result, neurons: dict[str, int] | None = None) -> dict:
    """Spike rates per site and overall, from ``result.spikes`` (counts over steps and batch).

    rate = spikes / (neurons · batch · steps) (per neuron per step); per_neuron = spikes /
    (neurons · batch) (000's SpikeRate); spikes_per_image = spikes / batch. ``neurons``: per
    site per image, by default the size of the site's count tensor. Overall: the same sums
    over all sites.
    """
    B = result.batch_size
    sites, tot_spikes, tot_neurons, tot_slots = {}, 0.0, 0, 0
    for site, counts in result.spikes.items():
        n = neurons[site] if neurons is not None else counts.numel()
        steps = result.steps[site]
        s = counts.sum().item()
        sites[site] = {"neurons": n, "steps": steps, "spikes_per_image": s / B,
                       "per_neuron": s / (n * B), "rate": s / (n * B * steps)}
        tot_spikes, tot_neurons, tot_slots = tot_spikes + s, tot_neurons + n, tot_slots + n * steps
    overall = {"neurons": tot_neurons, "spikes_per_image": tot_spikes / B,
               "per_neuron": tot_spikes / (tot_neurons * B), "rate": tot_spikes / (tot_slots * B)}
    return {"sites": sites, "overall": overall}


def pasc_t_eff(levels: list[int]) -> float:
    """000 Eq. 8: T_eff = mean over the sites of L_n."""
    return sum(levels) / len(levels)


def pasc_latency(levels_in_order: list[int]) -> int:
    """Steps from the input until PASC's last site has emitted its whole train (docs/methods.md §2).

    Sites L_1..L_N in order along the network (for a DAG, along its longest path). Site 1
    (analog input) emits in steps 1..L_1: E_1 = L_1. Site n integrates while site n−1 emits
    (phase 1, L_{n−1} steps), then runs max(L_{n−1}, L_n) − 1 steps without input, then emits
    L_n steps: E_n = E_{n−1} + max(L_{n−1}, L_n) − 1 + L_n. The output layer sums site N's
    train as it arrives, so the logits are ready at E_N. Each site's internal span is
    L_{n−1} + max(L_{n−1}, L_n) − 1 + L_n; consecutive spans overlap by L_{n−1}.
    Uniform L: L + (N − 1)(2L − 1).
    """
    latency = levels_in_order[0]
    for prev, cur in zip(levels_in_order, levels_in_order[1:]):
        latency += max(prev, cur) - 1 + cur
    return latency
