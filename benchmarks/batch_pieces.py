"""Batch pieces: the time of ``simulate(x, batch_chunk=n)`` against the whole batch in one
piece, to choose ``auto_batch_chunk``'s budget (sum coding) and ``auto_step_pieces``'s (rate
coding in time chunks) (issue 13, BENCHMARKS.md §9).

For each model (random weights, CIFAR-style, as benchmarks/speed.py builds them) and method
(PASC: L steps; bit-plane: its bits; max-norm: rate-coded, T steps in automatic time chunks),
in one process, medians of interleaved rounds after a warm-up: the time of
each piece size over the whole batch's, the automatic piece size, and whether the logits are
bit for bit the whole batch's.

    python benchmarks/batch_pieces.py --models small_cnn,resnet20,vgg16,resnet18 --levels 8
    python benchmarks/batch_pieces.py --methods max-norm --T 8 --batch 256 --pieces 128,64,32
"""
from __future__ import annotations

import copy
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import machine, model_benchmark_parser, save  # noqa: E402
from fold_steps import interleaved  # noqa: E402
from speed import build  # noqa: E402

import spikebridge as sb  # noqa: E402
from spikebridge.snn.network import _input_key, auto_batch_chunk, auto_step_pieces  # noqa: E402


def network(relu, x: torch.Tensor, method: str, levels: int, T: int):
    """The SNN, its steps and its automatic piece size (a rate-coded network's once it has run)."""
    if method == "max-norm":
        snn = sb.convert(relu, "max-norm", T=T, calibration_data=[x[:16]])
        snn.simulate(x[:1], record=False)  # learns its step size, as any earlier run would
        return snn, T, auto_step_pieces(x, snn._step_bytes[_input_key(x)])
    snn = sb.convert(sb.prepare(copy.deepcopy(relu), levels=levels, threshold=1.0), method)
    steps = max(n.steps_out(1) for n in snn.neurons().values())
    return snn, steps, auto_batch_chunk(x, steps)


def measure(name: str, batch: int, levels: int, T: int, methods: list[str], pieces: list[int],
            rounds: int) -> list[dict]:
    relu = build(name, 32, "cpu")
    x = torch.randn(batch, 3, 32, 32)
    rows = []
    for method in methods:
        snn, steps, auto = network(relu, x, method, levels, T)
        logits = {}

        def run(n: int) -> None:
            logits[n] = snn.simulate(x, record=False, batch_chunk=n).logits

        ms = interleaved({n: (lambda n=n: run(n)) for n in [batch, *pieces]}, rounds)
        whole = ms[batch]
        row = {"model": name, "batch": batch, "levels": levels, "method": method, "steps": steps,
               "auto_pieces": auto, "whole_s": whole / 1e3,
               "over_whole": {n: ms[n] / whole for n in pieces},
               "bit_identical": {n: torch.equal(logits[n], logits[batch]) for n in pieces}}
        rows.append(row)
        print(name, f"batch {batch}, L = {levels}, {method} ({steps} steps, auto {auto}):",
              {n: round(r, 3) for n, r in row["over_whole"].items()}, "bit-identical:", row["bit_identical"], flush=True)
    return rows


def main() -> None:
    p = model_benchmark_parser(__doc__, "batch_pieces")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--levels", default="8", help="levels L of PASC and bit-plane (comma-separated)")
    p.add_argument("--T", type=int, default=8, help="steps of max-norm")
    p.add_argument("--methods", default="pasc,bitplane", help="of pasc, bitplane, max-norm")
    p.add_argument("--pieces", default="32,16,8")
    args = p.parse_args()
    torch.set_num_threads(1)
    pieces = [int(n) for n in args.pieces.split(",")]
    results = {"machine": machine(), "command": " ".join(sys.argv), "rows": []}
    for name in args.models.split(","):
        for levels in [int(v) for v in args.levels.split(",")]:
            results["rows"] += measure(name, args.batch, levels, args.T, args.methods.split(","), pieces, args.rounds)
            save(args.name, results)
    print(f"results: {save(args.name, results)}")


if __name__ == "__main__":
    main()
