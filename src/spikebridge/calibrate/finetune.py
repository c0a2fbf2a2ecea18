"""Surrogate-gradient fine-tuning of a converted rate-coded SNN (docs/methods.md §4 "SNN calibration";
002 Sec. 8.2.1).

Latency-increasing: train at T_schedule[0] for epochs[0], then at T_schedule[1] starting from
those weights, and so on (002: T = 1 for 50 epochs, then T = 2, 3, 4 for 20 each). Loss:
cross-entropy of the rate-coded logits, the mean of the output over the T steps. Spikes are
differentiated with IFNeuron's rectangular surrogate ds/dv = 1 where |v − θ| < θ/T. Only the
synaptic weights and biases train; thresholds, v0 and FTBC biases are buffers and stay fixed.

Optimiser (002's paper does not name it; its code train_snn_converted.py does): SGD with
momentum 0.9, weight decay 5e-4, cosine annealing over each stage's epochs, a fresh optimiser
per stage (002 runs one script per T). Default lr 1e-3 as in that code (the paper text: 5e-3).
"""
from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.nn.functional as F

from ..train.checkpoint import save_checkpoint
from ..data import set_epoch
from ..device import place
from ..errors import CheckpointError, SpikeBridgeError, first_line
from ..progress import progress as progress_bar
from ..snn.codings import RATE
from ..snn.network import SpikingNetwork

FORMAT = "spikebridge-finetune"
VERSION = 1
CHECKPOINT = "finetune_last.pt"


def finetune(snn: SpikingNetwork, data: Iterable, T_schedule: Sequence[int] = (1, 2, 4),
             epochs: Sequence[int] | int = (5, 2, 2), lr: float = 1e-3, momentum: float = 0.9,
             weight_decay: float = 5e-4, out=None, resume: bool = False, progress: bool = True,
             test_data: Iterable | None = None, device=None) -> list[dict]:
    """Fine-tune ``snn`` in place; return one record per epoch
    {"stage", "T", "epoch", "loss", "accuracy", "lr", "seconds"} (training-set mean loss/accuracy).
    With ``test_data`` ((x, y) batches) the last record of every stage also holds
    "test_accuracy", the accuracy at that stage's T after its last epoch.
    progress: progress bars (spikebridge.progress) and one line per epoch and stage.

    data: (x, y) batches; a loader from spikebridge.data is set to the global epoch number
    before every epoch, so a resumed run sees the same batches. out: after every epoch
    ``<out>/finetune_last.pt`` is written atomically (weights, optimiser, scheduler, stage,
    epoch, history); ``resume=True`` continues from it exactly (from scratch if it is absent).
    device: where to train (the SNN is moved there; default: where it is).
    """
    T_schedule, epochs = _check(snn, T_schedule, epochs, lr)
    settings = {"T_schedule": T_schedule, "epochs": epochs, "lr": lr, "momentum": momentum,
                "weight_decay": weight_decay}
    path = Path(out) / CHECKPOINT if out is not None else None
    ckpt = _resume_point(path, resume, settings)
    history: list[dict] = list(ckpt["history"]) if ckpt else []
    if ckpt:
        snn.load_state_dict(ckpt["state_dict"])
    stage, done = (ckpt["stage"], ckpt["epoch"]) if ckpt else (0, 0)
    device = place(snn, device)
    log = print if progress else (lambda *a, **k: None)
    with _trainable(snn):
        for s in range(stage, len(T_schedule)):
            T = T_schedule[s]
            optimizer = torch.optim.SGD(snn.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
            scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs[s])
            first = 0
            if ckpt and s == stage:
                optimizer.load_state_dict(ckpt["optimizer"])
                scheduler.load_state_dict(ckpt["scheduler"])
                first = done
            for e in range(first, epochs[s]):
                start = time.perf_counter()
                set_epoch(data, sum(epochs[:s]) + e)
                lr_now = optimizer.param_groups[0]["lr"]
                loss, acc = _epoch(snn, data, T, optimizer, device, f"T={T} epoch {e + 1}/{epochs[s]}", progress)
                scheduler.step()
                history.append({"stage": s, "T": T, "epoch": e + 1, "loss": loss, "accuracy": acc, "lr": lr_now,
                                "seconds": round(time.perf_counter() - start, 3)})
                log(f"T={T} epoch {e + 1}/{epochs[s]}  loss {loss:.4f}  train {100 * acc:.2f}%  lr {lr_now:.3g}  "
                    f"{history[-1]['seconds']:.1f}s")
                if e + 1 == epochs[s] and test_data is not None:
                    history[-1]["test_accuracy"] = test_accuracy(snn, test_data, T, progress)
                    log(f"T={T} (stage {s + 1}/{len(T_schedule)} done): test accuracy "
                        f"{100 * history[-1]['test_accuracy']:.2f}%")
                if path is not None:
                    save_checkpoint(path, {"format": FORMAT, "version": VERSION, "settings": settings,
                                           "state_dict": snn.state_dict(), "optimizer": optimizer.state_dict(),
                                           "scheduler": scheduler.state_dict(), "stage": s, "epoch": e + 1,
                                           "history": history})
    snn.set_T(T_schedule[-1])
    snn.eval()
    return history


@contextmanager
def _trainable(snn: SpikingNetwork):
    """The SNN's weights ask for gradients while it trains; a converted SNN's ask for none
    (``SpikingNetwork``), so that simulating it builds no autograd graph."""
    snn.requires_grad_()
    try:
        yield
    finally:
        snn.requires_grad_(False)


@torch.no_grad()
def test_accuracy(snn: SpikingNetwork, data: Iterable, T: int, progress: bool = False) -> float:
    """Top-1 accuracy (0..1) of ``snn`` after ``T`` steps over (x, y) batches."""
    was_training = snn.training
    snn.eval()
    device = next(iter(snn.parameters())).device
    correct = seen = 0
    for x, y in progress_bar(data, f"test at T={T}", enabled=progress):
        logits = snn.simulate(x.to(device), T, record=False).logits[-1]
        correct += int((logits.argmax(-1) == y.to(device)).sum())
        seen += len(y)
    snn.train(was_training)
    if not seen:
        raise SpikeBridgeError("the test data is empty")
    return correct / seen


def _check(snn, T_schedule, epochs, lr) -> tuple[list[int], list[int]]:
    if not isinstance(snn, SpikingNetwork) or snn.coding is not RATE:
        what = (f"method {snn.method!r} ({snn.coding.name}-coded)" if isinstance(snn, SpikingNetwork)
                else type(snn).__name__)
        raise SpikeBridgeError(f"fine-tuning needs a rate-coded SpikingNetwork, got {what}")
    T_schedule = [T_schedule] if isinstance(T_schedule, int) else list(T_schedule)
    epochs = [epochs] * len(T_schedule) if isinstance(epochs, int) else list(epochs)
    if not T_schedule or any(isinstance(T, bool) or not isinstance(T, int) or T < 1 for T in T_schedule):
        raise SpikeBridgeError(f"T_schedule must be integers >= 1, got {T_schedule}")
    if len(epochs) != len(T_schedule) or any(isinstance(e, bool) or not isinstance(e, int) or e < 0 for e in epochs):
        raise SpikeBridgeError(f"epochs must be one integer >= 0 or one per T ({len(T_schedule)}), got {epochs}")
    if not lr > 0:
        raise SpikeBridgeError(f"the learning rate must be > 0, got {lr!r}")
    return T_schedule, epochs


def _resume_point(path: Path | None, resume: bool, settings: dict) -> dict | None:
    if path is None:
        if resume:
            raise SpikeBridgeError("resume=True needs the checkpoint directory (out)")
        return None
    if not path.exists():
        return None
    if not resume:
        raise SpikeBridgeError(f"{path.parent} already holds a fine-tuning run ({path.name}); "
                               "pass resume=True (--resume) to continue it or choose another out directory")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch.load fails in many ways; the user needs one line
        raise CheckpointError(f"{path} is not a readable fine-tuning checkpoint "
                              f"({first_line(exc)})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT or ckpt.get("version") != VERSION:
        raise CheckpointError(f"{path} is not a spikebridge fine-tuning checkpoint")
    if ckpt["settings"] != settings:
        raise SpikeBridgeError(f"{path} was written with settings {ckpt['settings']}, not {settings}; "
                               "resume with the same T schedule, epochs and optimiser settings")
    return ckpt


def _epoch(snn, data, T, optimizer, device, desc, progress) -> tuple[float, float]:
    """One pass over ``data`` at T steps: CE(mean-over-steps logits); returns (mean loss, accuracy)."""
    snn.train()
    loss_sum = correct = seen = 0.0
    bar = progress_bar(data, desc, enabled=progress)
    for x, y in bar:
        x, y = x.to(device), y.to(device)
        logits = snn.simulate(x, T, record=False).logits[-1]
        loss = F.cross_entropy(logits, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss_sum += float(loss.detach()) * len(y)
        correct += int((logits.detach().argmax(1) == y).sum())
        seen += len(y)
        bar.set_postfix(loss=f"{loss_sum / seen:.4f}", acc=f"{100 * correct / seen:.1f}%")
    if not seen:
        raise SpikeBridgeError("fine-tuning got no training data (the data iterable is empty)")
    return loss_sum / seen, correct / seen
