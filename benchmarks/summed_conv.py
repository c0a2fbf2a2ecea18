"""Residual sums computed by the convolution they read (``TrainRunner.sum_into``: oneDNN's
convolution with a sum post-op writing into the other train) against the convolution and
then the add, in one process (issue 13).

For each model (random weights, as benchmarks/speed.py builds them), batch and method, the
same converted network simulated with the engine's ``sum_into`` and with it turned off, in
interleaved rounds with the ReLU ANN's forward (``fold_steps.versus``): summed ÷ plain, each
÷ the dense limit (steps × the ANN's time), whether logits and spike counts are the same bit
for bit, and how many sums were made in place per simulation.

    python benchmarks/summed_conv.py --models resnet20,resnet18,small_cnn,vgg16 --batches 64,256
"""
from __future__ import annotations

import copy
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import measure_models, model_benchmark_parser  # noqa: E402
from fold_steps import versus  # noqa: E402
from speed import build  # noqa: E402

import spikebridge as sb  # noqa: E402
from spikebridge.snn import engine  # noqa: E402

SUM_INTO = engine.TrainRunner.sum_into
METHODS = {"pasc": (8, 8), "bitplane": (15, 4), "max-norm": (None, 8)}  # levels, steps


def network(relu, method: str, x: torch.Tensor):
    levels, steps = METHODS[method]
    if levels is None:
        return sb.convert(copy.deepcopy(relu), method, T=steps, calibration_data=[x[:32]])
    return sb.convert(sb.prepare(copy.deepcopy(relu), levels=levels, threshold=1.0), method)


def measure(methods: list[str], name: str, batch: int, rounds: int) -> list[dict]:
    relu = build(name, 32, "cpu")
    x = torch.randn(batch, 3, 32, 32)
    rows = []
    for method in methods:
        snn = network(relu, method, x)
        made = []

        def counting(self, *args):
            out = SUM_INTO(self, *args)
            made.append(out is not None)
            return out

        def run(summed: bool, record: bool = False):
            engine.TrainRunner.sum_into = counting if summed else (lambda self, *args: None)
            return snn.simulate(x, record=record)

        try:
            with torch.no_grad():
                for tuning in range(5):  # max-norm's time chunks are tuned over its first runs (``ChunkTuner``)
                    run(True), run(False)
                made.clear()
                a, b = run(True, record=True), run(False, record=True)
            sums = sum(made)
            same = torch.equal(a.logits, b.logits) and all(torch.equal(a.spikes[k], b.spikes[k]) for k in a.spikes)
            ratios, line = versus(("summed", "plain"), lambda: run(True), lambda: run(False), lambda: relu(x),
                                  METHODS[method][1], rounds)
        finally:
            engine.TrainRunner.sum_into = SUM_INTO
        rows.append({"model": name, "batch": batch, "method": method, **ratios, "sums_in_place": sums,
                     "same_logits_and_counts": same})
        print(name, f"batch {batch}, {method}: {line}, {sums} sums in place, same {same}", flush=True)
    return rows


def main() -> None:
    p = model_benchmark_parser(__doc__, "summed_conv", rounds=7, batches="64,256")
    p.add_argument("--methods", default="pasc,bitplane,max-norm")
    args = p.parse_args()
    measure_models(args, lambda name, batch: measure(args.methods.split(","), name, batch, args.rounds))


if __name__ == "__main__":
    main()
