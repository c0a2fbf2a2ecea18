"""From trained ANN and converted SNNs to the numbers of a report (docs/architecture.md: analysis reads
SimulationResults and never re-runs a network its own way).

``analyse`` evaluates every SNN once over a loader (anytime accuracy, spikes, events), turns
the counts into spike rates and energy (docs/methods.md §6), and adds activation histograms with each
method's thresholds and, for QCFS ANNs, the AL metric per site (docs/methods.md §7). The result is the
``data`` dict that ``report.write_report`` takes.
"""
from __future__ import annotations

import torch
from torch import nn

from ..train import al
from ..conversion.graph import ann_site_modules
from ..device import module_device
from .energy import count_macs, energy_report, spike_rates
from .evaluation import evaluate_snn
from ..snn.network import SpikingNetwork
from ..ann.prepare import sites


@torch.no_grad()
def ann_accuracy(ann: nn.Module, loader) -> float:
    ann.eval()
    correct = total = 0
    device = module_device(ann)
    for x, y in loader:
        correct += int((ann(x.to(device)).argmax(1).cpu() == y).sum())
        total += y.numel()
    return correct / max(total, 1)


@torch.no_grad()
def activation_histograms(ann: nn.Module, x: torch.Tensor, snns: dict[str, SpikingNetwork], bins: int = 60) -> dict:
    """Histogram of each site's positive pre-activations on ``x`` with the thresholds every
    SNN uses there (the mean over channels for channel-wise thresholds)."""
    captured: dict[str, torch.Tensor] = {}
    gm, modules = ann_site_modules(ann, relu=not sites(ann))
    for n, m in modules.items():
        m.register_forward_hook(lambda mod, i, o, n=n: captured.__setitem__(n, i[0].detach().flatten()))
    gm(x.to(module_device(gm)))
    out = {}
    for site, values in captured.items():
        values = values[values > 0].double()
        if values.numel() == 0:
            continue
        top = float(values.max())
        counts = torch.histc(values, bins=bins, min=0.0, max=top)
        thresholds = {name: float(snn.neurons()[site].threshold.double().mean())
                      for name, snn in snns.items() if site in snn.neurons()}
        out[site] = {"hist": counts.tolist(), "edges": torch.linspace(0, top, bins + 1).tolist(),
                     "thresholds": thresholds}
    return out


def report_data(ann: nn.Module, evaluations: dict, sample: torch.Tensor, ann_accuracy_: float,
                title: str = "") -> dict:
    """Report data (see report.py) from finished evaluations {name: (snn, Evaluation)}: accuracy
    and agreement per T, spike rates, energy per layer (docs/methods.md §6), activation histograms."""
    data: dict = {"title": title or "spikebridge report", "ann_accuracy": 100 * ann_accuracy_,
                  "accuracy": {}, "agreement": {}, "timesteps": {}, "spike_rates": {}, "energy": {}}
    macs = count_macs(ann, sample[:1].to(module_device(ann)))
    for name, (snn, ev) in evaluations.items():
        data["accuracy"][name] = {T: 100 * a for T, a in ev.accuracy.items()}
        data["agreement"][name] = {T: 100 * a for T, a in ev.agreement.items()}
        data["spike_rates"][name] = {s: v["rate"] for s, v in spike_rates(ev.result)["sites"].items()}
        layer_macs = {layer: macs[layer] for layer in snn.synaptic_layers() if layer in macs}
        usable = layer_macs if len(layer_macs) == len(snn.synaptic_layers()) else None
        data["energy"][name] = energy_report(ev.result, snn.synaptic_layers(), usable)
        data["timesteps"][name] = {"steps": snn.info.get("T_eff", ev.result.T),
                                   "pipeline_latency": snn.info.get("pipeline_latency")}
    data["activations"] = activation_histograms(ann, sample, {n: snn for n, (snn, _) in evaluations.items()})
    return data


def analyse(ann: nn.Module, snns: dict[str, SpikingNetwork], loader, Ts: list[int], title: str = "",
            al_loader=None, al_images: int = 3000, al_clusters: int = 3, al_levels: tuple[int, ...] = (2, 4, 8),
            progress: bool = True, device=None) -> dict:
    """Evaluate every SNN once on ``loader`` and return the report data for ``ann`` and them;
    with ``al_loader`` (training images) also the AL metric of every QCFS site."""
    evaluations = {name: (snn, evaluate_snn(snn, loader, Ts, progress=progress, desc=name, reference=ann,
                                            device=device)) for name, snn in snns.items()}
    data = report_data(ann, evaluations, next(iter(loader))[0], ann_accuracy(ann, loader), title)
    if al_loader is not None and sites(ann):
        levels, metrics = al.adaptive_levels(ann, al_loader, al_clusters, list(al_levels), n_images=al_images)
        data["al"] = [{"site": m.site, "A": m.A, "g": m.g, "K": m.K, "M": m.M, "levels": levels[m.site]}
                      for m in metrics]
    return data
