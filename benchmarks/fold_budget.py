"""The fold budget: whole simulations with ``engine.fold_budget`` (half the CPU's last-level
cache for float calls) against the fixed 16 MiB it replaced (``engine.FOLD_BYTES``), to
keep it or not (issue 13, BENCHMARKS.md §9).

For each model (random weights, CIFAR-style, as benchmarks/speed.py builds them), batch and
method — max-norm at T steps (rate-coded, time chunks tuned per network: each budget has a
network of its own, warmed up through its tuning), PASC (L = 8) and bit-plane (L = 8, 4
bits) — in one process, medians of interleaved rounds: the time with the cache's budget over
the time with 16 MiB, each over the dense limit (steps × the ReLU ANN's forward), and whether
the logits are the same bit for bit.

    python benchmarks/fold_budget.py --models small_cnn,resnet20,vgg16,resnet18 --batches 16,64
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

from spikebridge.device import last_level_cache_bytes  # noqa: E402
from spikebridge.snn import engine  # noqa: E402
from spikebridge.snn.network import CHUNK_TIMINGS, CHUNK_TRIES  # noqa: E402

CACHES = {"16 MiB": lambda: 0, "cache": last_level_cache_bytes}  # what engine.fold_budget reads


def measure(name: str, batch: int, T: int, methods: list[str], rounds: int) -> list[dict]:
    relu = build(name, 32, "cpu")
    x = torch.randn(batch, 3, 32, 32)
    with torch.no_grad():
        ann = interleaved({"ann": lambda: relu(x)}, rounds)["ann"]
    rows = []
    for method in methods:
        nets = {k: network(relu, x, method, 8, T) for k in CACHES}
        logits = {}

        def run(k: str) -> None:
            engine.last_level_cache_bytes = CACHES[k]
            logits[k] = nets[k][0].simulate(x, record=False).logits

        with torch.no_grad():
            ms = interleaved({k: (lambda k=k: run(k)) for k in CACHES}, rounds,
                             warmups=1 + len(CHUNK_TRIES) * CHUNK_TIMINGS)
        engine.last_level_cache_bytes = last_level_cache_bytes
        steps = nets["cache"][1]
        row = {"model": name, "batch": batch, "method": method, "steps": steps, "ms": ms,
               "cache_over_16mib": ms["cache"] / ms["16 MiB"],
               "over_limit": {k: v / (steps * ann) for k, v in ms.items()},
               "bit_identical": bool(torch.equal(logits["cache"], logits["16 MiB"]))}
        rows.append(row)
        print(name, f"batch {batch}, {method} ({steps} steps): cache's budget / 16 MiB {row['cache_over_16mib']:.3f};",
              "over the limit", {k: round(v, 3) for k, v in row["over_limit"].items()},
              "bit-identical:", row["bit_identical"], flush=True)
    return rows


def main() -> None:
    p = model_benchmark_parser(__doc__, "fold_budget", rounds=5, batches="16,64")
    p.add_argument("--T", type=int, default=8, help="steps of max-norm")
    p.add_argument("--methods", default="max-norm,pasc,bitplane")
    args = p.parse_args()
    measure_models(args, lambda name, batch: measure(name, batch, args.T, args.methods.split(","), args.rounds),
                   last_level_cache_bytes=last_level_cache_bytes())


if __name__ == "__main__":
    main()
