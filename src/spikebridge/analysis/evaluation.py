"""Accuracy and spike statistics of an SNN over a dataset, from as few simulations as the
method allows: rate coding reads every T ≤ max(T) off one anytime run (docs/methods.md §1); PASC
has one fixed length; bit-plane re-codes for each T (docs/methods.md §3), so it runs once per T."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..device import place
from ..progress import progress as progress_bar
from ..snn.network import SimulationResult, SpikingNetwork


@dataclass
class Evaluation:
    accuracy: dict[int, float]                 # steps -> top-1 accuracy
    result: SimulationResult                   # spikes and events summed over the dataset (the run at the
                                               # network's own T, else the longest)
    images: int = 0
    info: dict = field(default_factory=dict)
    agreement: dict[int, float] = field(default_factory=dict)  # steps -> share of the reference's predictions
    reference_accuracy: float | None = None    # the reference's (the ANN's) accuracy on the same images


def accumulate(total: SimulationResult | None, res: SimulationResult) -> SimulationResult:
    """Sum spike and event counts of two simulations of the same network (logits dropped)."""
    if total is None:
        total = SimulationResult(logits=res.logits.new_empty(res.logits.shape[0], 0, res.logits.shape[-1]))
    return total.add_counts(res)


@torch.no_grad()
def evaluate_snn(snn: SpikingNetwork, loader, Ts: list[int] | None = None, progress: bool = True,
                 desc: str = "simulate", reference: torch.nn.Module | None = None, device=None) -> Evaluation:
    """Top-1 accuracy for each T in ``Ts`` (PASC: its own length, ``Ts`` ignored), and with a
    ``reference`` model (the ANN) the share of its predictions the SNN reproduces and the
    reference's own accuracy on the same images. Runs on ``device`` (the networks are moved
    there) or, by default, on the SNN's device."""
    snn.eval()
    device = place(snn, device)
    if reference is not None:
        reference.to(device)
    dtype = next((b.dtype for b in snn.buffers() if b.is_floating_point()), torch.float32)
    time = snn.record.time
    runs = time.runs(Ts, snn.T)
    keep = snn.T if snn.T in runs else runs[-1]  # whose spikes and events are returned
    correct: dict[int, int] = {}
    agree: dict[int, int] = {}
    total, images, reference_correct = None, 0, 0
    for x, y in progress_bar(loader, desc, enabled=progress):
        x, y = x.to(device, dtype) if x.is_floating_point() else x.to(device), y.to(device)
        images += x.shape[0]
        ann_pred = reference(x).argmax(1) if reference is not None else None
        if ann_pred is not None:
            reference_correct += int((ann_pred == y).sum())
        for T in runs:
            res = snn.simulate(x, T, record=T == keep)  # counts are kept from one run only
            pred = res.logits.argmax(-1)
            hits = (pred == y).sum(1)
            same = (pred == ann_pred).sum(1) if ann_pred is not None else hits
            steps = (Ts or [res.T]) if time.anytime else [res.T]
            for t in steps:
                i = t - 1 if time.anytime else -1
                correct[t] = correct.get(t, 0) + int(hits[i])
                agree[t] = agree.get(t, 0) + int(same[i])
            if T == keep:
                total = accumulate(total, res)
    share = {t: c / max(images, 1) for t, c in sorted(correct.items())}
    agreement = {t: c / max(images, 1) for t, c in sorted(agree.items())} if reference is not None else {}
    reference_accuracy = reference_correct / max(images, 1) if reference is not None else None
    return Evaluation(share, total, images, dict(snn.info), agreement, reference_accuracy)
