"""Blocks of images in sum-coded neurons: the time of a PASC or bit-plane simulation whose
neurons run their passes a block of images at a time (``neurons.batch_blocks``, one step of a
block within ``BLOCK_STEP_BYTES``), against the same simulation with each neuron's passes over
the whole batch at once (issue 13, BENCHMARKS.md §9). The layers between the neurons run over
the whole batch either way, so the results are the same bit for bit (checked on each row).

For each model (random weights, as benchmarks/speed.py builds them: CIFAR-style at 32x32, or
``--image-size``; models with GELU or SiLU, such as vit_tiny and efficientnet_tiny, run the
quantized-activation neurons, with inhibitory spikes), batch and
method, in one process, medians of interleaved rounds after a warm-up: each budget's time over
the whole batch's, and each one's time over the dense limit (steps × the ANN's forward, with
its own activation).

    python benchmarks/neuron_blocks.py --models small_cnn,resnet20,vgg16,resnet18 --batches 16,64
    python benchmarks/neuron_blocks.py --models efficientnet_tiny,vit_tiny --image-size 28 --budgets 256
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from batch_pieces import network  # noqa: E402
from common import measure_models, model_benchmark_parser  # noqa: E402
from fold_steps import interleaved  # noqa: E402
from speed import build  # noqa: E402

from spikebridge.snn import neurons  # noqa: E402

WHOLE = 1 << 50  # a budget no batch reaches: one block


def measure(name: str, batch: int, levels: int, methods: list[str], budgets: list[int], rounds: int,
            image_size: int = 32) -> list[dict]:
    relu = build(name, image_size, "cpu")
    x = torch.randn(batch, 3, image_size, image_size)
    rows = []
    for method in methods:
        snn, steps, _ = network(relu, x, method, levels, T=0)
        logits = {}

        def run(budget: int) -> None:
            neurons.BLOCK_STEP_BYTES = budget
            logits[budget] = snn.simulate(x, record=False, batch_chunk=batch).logits

        with torch.no_grad():
            ms = interleaved({"ann": lambda: relu(x), **{b: (lambda b=b: run(b)) for b in [WHOLE, *budgets]}}, rounds)
        limit = steps * ms.pop("ann")
        row = {"model": name, "image_size": image_size, "batch": batch, "levels": levels, "method": method,
               "steps": steps, "whole_s": ms[WHOLE] / 1e3, "whole_over_limit": ms[WHOLE] / limit,
               "over_whole": {b >> 10: ms[b] / ms[WHOLE] for b in budgets},
               "over_limit": {b >> 10: ms[b] / limit for b in budgets},
               "bit_identical": all(torch.equal(logits[b], logits[WHOLE]) for b in budgets)}
        rows.append(row)
        print(name, f"batch {batch}, L = {levels}, {method}: whole batch {row['whole_over_limit']:.2f} of the limit;",
              "blocks of KiB / over whole / over limit:",
              {k: (round(row["over_whole"][k], 2), round(row["over_limit"][k], 2)) for k in row["over_whole"]},
              "bit-identical:", row["bit_identical"], flush=True)
    return rows


def main() -> None:
    p = model_benchmark_parser(__doc__, "neuron_blocks", rounds=5, batches="16,64")
    p.add_argument("--levels", type=int, default=8, help="levels L of PASC and bit-plane")
    p.add_argument("--methods", default="pasc,bitplane", help="of pasc, bitplane")
    p.add_argument("--budgets", default="128,256,512,1024", help="BLOCK_STEP_BYTES in KiB")
    p.add_argument("--image-size", type=int, default=32)
    args = p.parse_args()
    budgets = [int(k) << 10 for k in args.budgets.split(",")]
    measure_models(args, lambda name, batch: measure(name, batch, args.levels, args.methods.split(","), budgets,
                                                     args.rounds, args.image_size))


if __name__ == "__main__":
    main()
