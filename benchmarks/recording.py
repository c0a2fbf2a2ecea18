"""What recording spikes costs: ``simulate(x, record=True)`` over ``record=False`` (issue 13,
item 3; BENCHMARKS.md §9), with spike and event counts summed in the train's memory order
(``engine.nonzero_counts``) and, for comparison in the same process, summed in the logical
[steps, B, C, H, W] order (what it did before; channels-last trains read across memory).

For each model (random weights, CIFAR-style, as benchmarks/speed.py builds them), batch and
method (max-norm at T steps; PASC and bit-plane with L = 8), interleaved rounds after a
warm-up through the time-chunk tuning (``ChunkTuner``: nine runs of each, so that the rounds
time the chunk each setting keeps; record=True and False tune apart), medians: record=True
over record=False, both ways of counting, and whether both count the same. IF neurons
(max-norm) count their own spikes as they run (``IFNeuron.run(..., counts)``), so for max-norm
the two ways differ only where a layer's input is not a neuron's train (the analog input).

    python benchmarks/recording.py --models small_cnn,resnet20,vgg16,resnet18 --batches 16,64
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
from spikebridge.snn import engine  # noqa: E402
from spikebridge.snn.network import CHUNK_TIMINGS, CHUNK_TRIES  # noqa: E402

MEMORY_ORDER = engine.nonzero_counts


def logical_order(train: torch.Tensor) -> torch.Tensor:
    """The counts summed over [steps, B] in the train's logical dimension order."""
    flags = torch.ne(train, 0, out=torch.empty_like(train))
    return flags.sum((0, 1), dtype=torch.promote_types(train.dtype, torch.float32)).long()


def networks(relu, x: torch.Tensor, T: int) -> dict:
    qann = sb.prepare(copy.deepcopy(relu), levels=8, threshold=1.0)
    return {"max-norm": sb.convert(relu, "max-norm", T=T, calibration_data=[x[:16]]),
            "pasc": sb.convert(qann, "pasc"), "bitplane": sb.convert(qann, "bitplane")}


def measure(name: str, batch: int, T: int, rounds: int) -> list[dict]:
    relu = build(name, 32, "cpu")
    x = torch.randn(batch, 3, 32, 32)
    rows = []
    for method, snn in networks(relu, x, T).items():
        kinds = {"off": (False, MEMORY_ORDER), "memory order": (True, MEMORY_ORDER), "logical order": (True, logical_order)}
        spikes = {}

        def run(kind: str) -> None:
            record, count = kinds[kind]
            engine.nonzero_counts = count
            try:
                spikes[kind] = snn.simulate(x, record=record).spikes
            finally:
                engine.nonzero_counts = MEMORY_ORDER

        ms = interleaved({kind: (lambda kind=kind: run(kind)) for kind in kinds}, rounds,
                         warmups=1 + len(CHUNK_TRIES) * CHUNK_TIMINGS)  # through the chunk tuning
        off = ms["off"]
        row = {"model": name, "batch": batch, "T": T, "method": method, "off_s": off / 1e3,
               "over_off": {k: ms[k] / off for k in ("memory order", "logical order")},
               "same_counts": spikes["memory order"].keys() == spikes["logical order"].keys() and all(
                   torch.equal(v, spikes["logical order"][k]) for k, v in spikes["memory order"].items())}
        rows.append(row)
        print(name, f"batch {batch}, {method}: record=True / record=False",
              {k: round(v, 3) for k, v in row["over_off"].items()}, "same counts:", row["same_counts"], flush=True)
    return rows


def main() -> None:
    p = model_benchmark_parser(__doc__, "recording")
    p.add_argument("--batches", default="16,64")
    p.add_argument("--T", type=int, default=8, help="steps of max-norm")
    args = p.parse_args()
    torch.set_num_threads(1)
    results = {"machine": machine(), "command": " ".join(sys.argv), "rows": []}
    for name in args.models.split(","):
        for batch in [int(b) for b in args.batches.split(",")]:
            results["rows"] += measure(name, batch, args.T, args.rounds)
            save(args.name, results)
    print(f"results: {save(args.name, results)}")


if __name__ == "__main__":
    main()
