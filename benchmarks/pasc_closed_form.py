"""PASC's count in closed form where certified (``neurons._closed_count``) against the loop of
000 Alg. 1–2 on every neuron, as ``PASCNeuron`` counted before (issue 13, BENCHMARKS.md §9).

For each model (random weights, as benchmarks/speed.py builds them), batch and L, in one
process, medians of interleaved rounds after a warm-up: the PASC simulation's time with the
closed form over its time with the loop counting every neuron a block of images at a time (the
emission the same), each one's time over the dense limit (L × the ReLU ANN's forward), whether
the logits are the same bit for bit, and the share of hidden neurons the closed form left to
the loop.

    python benchmarks/pasc_closed_form.py --models resnet20,small_cnn,vgg16,resnet18 --batches 16,64
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
from spikebridge.snn import neurons  # noqa: E402
from spikebridge.snn.neurons import batch_blocks, channel_view, empty_train  # noqa: E402

CLOSED_FORWARD, CLOSED_COUNT = neurons.PASCNeuron.forward, neurons._closed_count


def loop_forward(self, x: torch.Tensor) -> torch.Tensor:
    """The baseline: each block counted by the loop (``_loop_count``) and emitted before the next."""
    exact = torch.promote_types(x.dtype, torch.float32)
    steps = torch.arange(self.levels, dtype=exact).view(-1, *([1] * (x.dim() - 1)))
    theta = channel_view(self.threshold, x.dim() - 1)
    unit = channel_view(self.threshold, x.dim(), time_major=True) / self.levels
    out = empty_train(x[0], self.levels, exact)
    for rows in batch_blocks(x):
        k = self._count(x[:, rows]) if x.shape[0] == 1 else neurons._loop_count(x[:, rows], theta / self.levels,
                                                                                 self.levels)
        torch.lt(steps, k, out=out[:, rows]).mul_(unit)
    return out


def unsure_share(snn, x: torch.Tensor) -> float:
    """The share of hidden neurons whose count the closed form left to the loop in one run."""
    seen = [0, 0]

    def counting(x, unit, levels, k, unsure):
        CLOSED_COUNT(x, unit, levels, k, unsure)
        seen[0], seen[1] = seen[0] + int(unsure.sum()), seen[1] + unsure.numel()

    neurons._closed_count = counting
    try:
        snn.simulate(x, record=False)
    finally:
        neurons._closed_count = CLOSED_COUNT
    return seen[0] / max(1, seen[1])


def measure(name: str, batch: int, levels_list: list[int], rounds: int) -> list[dict]:
    relu = build(name, 32, "cpu")
    x = torch.randn(batch, 3, 32, 32)
    rows = []
    for levels in levels_list:
        snn = sb.convert(sb.prepare(copy.deepcopy(relu), levels=levels, threshold=1.0), "pasc")
        logits = {}

        def run(closed: bool) -> None:
            neurons.PASCNeuron.forward = CLOSED_FORWARD if closed else loop_forward
            logits[closed] = snn.simulate(x, record=False).logits

        try:
            ratios, line = versus(("closed", "loop"), lambda: run(True), lambda: run(False), lambda: relu(x), levels,
                                  rounds)
        finally:
            neurons.PASCNeuron.forward = CLOSED_FORWARD
        with torch.no_grad():
            share = unsure_share(snn, x)
        row = {"model": name, "batch": batch, "levels": levels, **ratios,
               "same_logits": bool(torch.equal(logits[True], logits[False])), "left_to_loop": share}
        rows.append(row)
        print(name, f"batch {batch}, L = {levels}: {line}, same logits {row['same_logits']}, left to the loop "
              f"{share:.1e}", flush=True)
    return rows


def main() -> None:
    p = model_benchmark_parser(__doc__, "pasc_closed_form", rounds=5, batches="16,64")
    p.add_argument("--levels", default="8,32", help="levels L of the QCFS ANN")
    args = p.parse_args()
    measure_models(args, lambda name, batch: measure(name, batch, [int(v) for v in args.levels.split(",")],
                                                     args.rounds))


if __name__ == "__main__":
    main()
