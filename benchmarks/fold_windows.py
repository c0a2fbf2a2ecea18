"""Rate-coded windows in one call where that keeps every bit (``engine.folding_keeps_bits``),
against a call per step (issue 13, BENCHMARKS.md §9).

A rate-coded network runs in time chunks (windows of ``auto_chunk`` steps: 5 at batch 16 of
CIFAR images, 8 at batch 4, 1 from batch 64). A synaptic layer folds a window's steps into
the batch when its output is at most ``engine.fold_budget`` and a probe on random values gave the bits
of a call per step. For each model and batch, ``simulate(x, record=False)`` of the max-norm
conversion at T = 8 with the engine's rule against no rate-coded folding (the probe answering
no), medians of ``--rounds`` interleaved rounds after a warm-up, one thread; whether the logits
equal those of the run without folding and of a run one step per window (``chunk=1``); how many
layer shapes were probed and how many fold.

    python benchmarks/fold_windows.py
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import save, timing_run  # noqa: E402
from fold_steps import interleaved  # noqa: E402
from speed import build  # noqa: E402

import spikebridge as sb  # noqa: E402
from spikebridge.snn import engine  # noqa: E402
from spikebridge.snn.network import auto_chunk  # noqa: E402

NETWORKS = [("small_cnn", 16), ("resnet20", 16), ("vgg16", 16), ("resnet18", 16), ("resnet20", 4), ("vgg16", 4)]


def network_row(name: str, batch: int, rounds: int) -> dict:
    relu = build(name, 32, "cpu")
    torch.manual_seed(0)
    x = torch.randn(batch, 3, 32, 32)
    snn = sb.convert(relu, "max-norm", T=8, calibration_data=[x])
    probe = engine.folding_keeps_bits

    def run(fold: bool, chunk=None):
        engine.folding_keeps_bits = probe if fold else (lambda *args: False)
        try:
            return snn.simulate(x, record=False, chunk=chunk).logits
        finally:
            engine.folding_keeps_bits = probe

    engine._calls.clear()
    ms = interleaved({"rule": lambda: run(True), "per step": lambda: run(False)}, rounds)
    folded = run(True)
    probed = [known["same_bits"] for known in engine._calls.values() if "same_bits" in known]
    return {"model": name, "batch": batch, "T": 8, "window": auto_chunk(x), "ms": ms,
            "rule_over_per_step": ms["rule"] / ms["per step"], "shapes_probed": len(probed),
            "shapes_folding": sum(probed),
            "same_logits_as_per_step": bool(torch.equal(folded, run(False))),
            "same_logits_as_chunk_1": bool(torch.equal(folded, run(True, chunk=1)))}


def main() -> None:
    args, results = timing_run(__doc__, 5, fold_bytes=engine.fold_budget(torch.device("cpu")), networks=[])
    with torch.no_grad():
        for name, batch in NETWORKS:
            row = network_row(name, batch, args.rounds)
            results["networks"].append(row)
            print(name, batch, f"window {row['window']}: rule {row['rule_over_per_step']:.3f}x per step, "
                  f"{row['shapes_folding']}/{row['shapes_probed']} shapes fold, same logits "
                  f"{row['same_logits_as_per_step']}/{row['same_logits_as_chunk_1']}", flush=True)
    print(f"results: {save('fold_windows', results)}")


if __name__ == "__main__":
    main()
