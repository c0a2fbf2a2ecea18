"""From trained ANNs and converted SNNs to the numbers of a report (docs/architecture.md: analysis reads
SimulationResults and never re-runs a network its own way).

``analyse`` evaluates every SNN once over a loader (anytime accuracy, spikes, events) against
the ANN it was converted from, and ``report_data`` turns finished evaluations (``Run``s) into
the ``data`` dict that ``report.write_report`` takes: accuracy and agreement per T, each source
ANN's accuracy on the same images, spike rates, energy at a stated T with the accuracy there
(docs/methods.md §6), activation histograms of every source ANN with the thresholds of the
SNNs converted from it, and for QCFS ANNs the AL metric per site (docs/methods.md §7).
``summary_table`` is the short text version a command prints.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..ann.prepare import sites
from ..conversion.graph import ann_site_modules
from ..device import module_device
from ..snn.codings import SUM
from ..snn.network import SpikingNetwork
from ..train import al
from .energy import count_macs, energy_report, spike_rates
from .evaluation import Evaluation, evaluate_snn


@dataclass
class Run:
    """One evaluated SNN: ``name`` is its label in the report (several runs may share one, e.g.
    a method converted for each T); ``ann`` the label of the ANN it was converted from and
    compared with (a key of ``report_data``'s ``anns``)."""
    name: str
    snn: SpikingNetwork
    evaluation: Evaluation
    ann: str = "ANN"


def ann_label(model: nn.Module) -> str:
    """"QCFS ANN" for a prepared model, else "ReLU ANN"."""
    return "QCFS ANN" if sites(model) else "ReLU ANN"


def is_exact(snn: SpikingNetwork) -> bool:
    """Sum-coded methods decode every site to the QCFS ANN's level (docs/methods.md §2–3): equal
    predictions in float64, except an activation within rounding of a level boundary."""
    return snn.record.coding is SUM


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
    gm, modules = ann_site_modules(ann, relu=not sites(ann), example=x)
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
        out[site] = {"hist": [int(c) for c in counts.tolist()], "edges": torch.linspace(0, top, bins + 1).tolist(),
                     "thresholds": thresholds}
    return out


def _threshold_labels(runs: list[Run]) -> dict[str, SpikingNetwork]:
    """{label: snn} for the activation plot: a method's name, or "name (T=..)" for each of its
    runs when they use different thresholds (e.g. data-driven, whose θ is chosen per T)."""
    by_name: dict[str, list[Run]] = {}
    for run in runs:
        by_name.setdefault(run.name, []).append(run)
    labelled = {}
    for name, group in by_name.items():
        def thetas(r):
            return [n.threshold.double().mean().item() for n in r.snn.neurons().values()]
        if len({tuple(thetas(r)) for r in group}) == 1:
            labelled[name] = group[-1].snn
        else:
            labelled.update({f"{name} (T={r.snn.T})": r.snn for r in group})
    return labelled


def report_data(runs: list[Run], anns: dict[str, nn.Module], sample: torch.Tensor, title: str = "",
                full_accuracy: dict[str, float] | None = None) -> dict:
    """Report data (schema: report.py) from finished evaluations.

    runs: evaluated SNNs; runs that share a name are one method whose accuracies are merged
    (spikes and energy come from the last of them). anns: {label: model} the runs name.
    sample: a batch of inputs for the MAC count and the activation histograms.
    full_accuracy: {label: accuracy 0..1} on the full test set, reported beside the accuracy
    on the images the SNNs ran on.
    """
    data: dict = {"title": title or "spikebridge report", "images": max((r.evaluation.images for r in runs), default=0),
                  "anns": {}, "methods": {}, "accuracy": {}, "agreement": {}, "timesteps": {}, "spike_rates": {},
                  "energy": {}}
    for run in runs:
        ev = run.evaluation
        if run.ann not in data["anns"] and ev.reference_accuracy is not None:
            data["anns"][run.ann] = {"accuracy": 100 * ev.reference_accuracy, "images": ev.images}
            if full_accuracy and run.ann in full_accuracy:
                data["anns"][run.ann]["full_accuracy"] = 100 * full_accuracy[run.ann]
    macs = {label: count_macs(model, sample[:1].to(module_device(model))) for label, model in anns.items()}
    for run in runs:
        snn, ev, name = run.snn, run.evaluation, run.name
        data["methods"][name] = {"ann": run.ann, "exact": is_exact(snn), "coding": snn.record.coding.name,
                                 "steps": "T_eff" if "T_eff" in snn.info else "T",
                                 "conversions": sum(r.name == name for r in runs)}
        data["accuracy"].setdefault(name, {}).update({T: 100 * a for T, a in ev.accuracy.items()})
        data["agreement"].setdefault(name, {}).update({T: 100 * a for T, a in ev.agreement.items()})
        rates = spike_rates(ev.result)
        data["spike_rates"][name] = {s: v["rate"] for s, v in rates["sites"].items()}
        layer_macs = {layer: macs[run.ann][layer] for layer in snn.synaptic_layers() if layer in macs.get(run.ann, {})}
        usable = layer_macs if len(layer_macs) == len(snn.synaptic_layers()) else None
        T = ev.result.T
        steps = snn.info.get("T_eff", T)
        data["energy"][name] = {"T": T, "steps": steps, "accuracy": 100 * ev.accuracy.get(T, list(ev.accuracy.values())[-1]),
                                "spikes_per_image": rates["overall"]["spikes_per_image"],
                                **energy_report(ev.result, snn.synaptic_layers(), usable).as_dict()}
        data["timesteps"][name] = {"steps": steps, "pipeline_latency": snn.info.get("pipeline_latency")}
    data["activations"] = {}
    for label, model in anns.items():
        mine = [r for r in runs if r.ann == label]
        if mine:
            data["activations"][label] = activation_histograms(model, sample, _threshold_labels(mine))
    return data


def analyse(ann: nn.Module, snns: dict[str, SpikingNetwork], loader, Ts: list[int], title: str = "",
            al_loader=None, al_images: int = 3000, al_clusters: int = 3, al_levels: tuple[int, ...] = (2, 4, 8),
            progress: bool = True, device=None) -> dict:
    """Evaluate every SNN once on ``loader`` against ``ann`` (on ``device``, default: the SNN's)
    and return the report data; a method that runs once per T (bit-plane) also runs its own T.
    With ``al_loader`` (training images) also the AL metric of every QCFS site."""
    label = ann_label(ann)
    runs = []
    for name, snn in snns.items():
        time = snn.record.time
        mine = sorted(set(Ts) | {snn.T}) if time.accepts_T and not time.anytime and snn.T else Ts
        ev = evaluate_snn(snn, loader, mine, progress=progress, desc=f"simulate {name}", reference=ann, device=device)
        runs.append(Run(name, snn, ev, label))
    data = report_data(runs, {label: ann}, next(iter(loader))[0], title)
    if al_loader is not None and sites(ann):
        levels, metrics = al.adaptive_levels(ann, al_loader, al_clusters, list(al_levels), n_images=al_images)
        data["al"] = [{"site": m.site, "A": m.A, "g": m.g, "K": m.K, "M": m.M, "levels": levels[m.site]}
                      for m in metrics]
    return data


def summary_table(data: dict, every_T: bool = True) -> str:
    """The report data as text: one row per (method, T) with ``every_T``, else one per method
    at the T its energy is given for, with the energy ratio."""
    anns, methods = data.get("anns", {}), data.get("methods", {})
    header = f"{'method':<22} {'from':<9} {'steps':>6} {'accuracy':>9} {'ANN':>7} {'agreement':>10}"
    lines = [header + ("" if every_T else f" {'E_ANN/E_SNN':>11}")]
    for name, row in data["accuracy"].items():
        info = methods.get(name, {})
        ann = anns.get(info.get("ann"), {})
        ann_acc = f"{ann['accuracy']:6.2f}%" if "accuracy" in ann else f"{'—':>7}"
        energy = data.get("energy", {}).get(name, {})
        shown = row.items() if every_T else [(energy.get("T", list(row)[-1]), row.get(energy.get("T"), list(row.values())[-1]))]
        for T, acc in shown:
            steps = f"{float(data['timesteps'][name]['steps']):.2f}" if info.get("steps") == "T_eff" else str(T)
            agree = data.get("agreement", {}).get(name, {}).get(T)
            agree = f"{agree:9.2f}%" if agree is not None else f"{'—':>10}"
            line = (f"{name + (' (exact)' if info.get('exact') else ''):<22} {info.get('ann', ''):<9} {steps:>6} "
                    f"{acc:8.2f}% {ann_acc} {agree}")
            if not every_T:
                ratio = (energy.get("totals") or {}).get("ratio")
                line += f" {ratio:10.2f}x" if ratio else f" {'—':>11}"
            lines.append(line)
    return "\n".join(lines)
