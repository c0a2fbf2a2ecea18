"""Convolutions over one pixel run as their one tap (``engine.one_tap``) against the layer's own
call (issue 13, BENCHMARKS.md §9).

Models built for larger images end in 1x1 maps on 28x28 or 32x32 inputs (torchvision's
MobileNetV3 and EfficientNet: 5x5 and 3x3 depthwise convolutions over one pixel), where oneDNN's
k x k call is slow. For each model (random weights, as benchmarks/speed.py builds them), batch
and method, in one process, medians of interleaved rounds after a warm-up: the simulation's time
with ``one_tap`` over its time with every convolution called as the layer is, each one's time
over the dense limit (steps × the ANN's forward), how many synaptic calls ran as a tap, and the
largest difference of the logits.

    python benchmarks/one_tap.py --models tv:mobilenet_v3_small,tv:efficientnet_b0 --image-size 32
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from batch_pieces import network  # noqa: E402
from common import measure_models, model_benchmark_parser  # noqa: E402
from fold_steps import versus  # noqa: E402
from speed import build  # noqa: E402

from spikebridge.snn import engine  # noqa: E402

FOUND = engine.one_tap


def measure(name: str, batch: int, levels: int, methods: list[str], rounds: int, image_size: int) -> list[dict]:
    model = build(name, image_size, "cpu")
    x = torch.randn(batch, 3, image_size, image_size)
    rows = []
    for method in methods:
        snn, steps, _ = network(model, x, method, levels, T=0)
        logits, taps = {}, []

        def run(tap: bool) -> None:
            engine.one_tap = (lambda layer, train: taps.append(FOUND(layer, train)) or taps[-1]) if tap else \
                (lambda layer, train: None)
            logits[tap] = snn.simulate(x, record=False).logits

        ratios, line = versus(("tap", "layer"), lambda: run(True), lambda: run(False), lambda: model(x), steps, rounds)
        engine.one_tap = FOUND
        row = {"model": name, "image_size": image_size, "batch": batch, "levels": levels, "method": method,
               "steps": steps, **ratios, "calls_as_tap": sum(t is not None for t in taps) / max(1, len(taps)),
               "max_logit_diff": (logits[True] - logits[False]).abs().max().item()}
        rows.append(row)
        print(name, f"batch {batch}, {method}: {line}, calls as a tap {row['calls_as_tap']:.2f}, "
              f"logits within {row['max_logit_diff']:.1e}", flush=True)
    return rows


def main() -> None:
    p = model_benchmark_parser(__doc__, "one_tap", rounds=5, batches="16,64")
    p.set_defaults(models="tv:mobilenet_v3_small,tv:efficientnet_b0")
    p.add_argument("--levels", type=int, default=8, help="levels L of PASC and bit-plane")
    p.add_argument("--methods", default="pasc,bitplane", help="of pasc, bitplane")
    p.add_argument("--image-size", type=int, default=32)
    args = p.parse_args()
    measure_models(args, lambda name, batch: measure(name, batch, args.levels, args.methods.split(","), args.rounds,
                                                     args.image_size))


if __name__ == "__main__":
    main()
