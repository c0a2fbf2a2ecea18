"""Random-graph sweep (issue #15): draw random networks from the op table for a bounded time,
convert each with PASC and bit-plane in float64, and count how many converted exactly and how
many were refused, by reason. Any other outcome (an inexact conversion, a crash, a refusal of
a network that should convert) is counted as a failure and printed.

    OMP_NUM_THREADS=1 python benchmarks/random_graphs.py --seconds 300 [--seed 0] [--max-blocks 8]

The generator is the property test's (tests/random_graphs.py), seeded with random.Random.
Writes benchmarks/results/random_graphs.json.
"""
from __future__ import annotations

import argparse
import collections
import json
import random
import sys
import time
import traceback
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent.parent / "tests"))
from common import RESULTS, machine  # noqa: E402
from random_graphs import Draw, check, draw_spec  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-blocks", type=int, default=8)
    args = parser.parse_args()
    warnings.simplefilter("ignore")  # prepare() warns about every max-pool swap; not here
    rng = random.Random(args.seed)
    outcomes: collections.Counter = collections.Counter()
    failures = []
    blocks = 0
    start = time.perf_counter()
    while time.perf_counter() - start < args.seconds:
        spec = draw_spec(Draw(rng=rng), args.max_blocks)
        blocks += len(spec.blocks)
        try:
            outcomes[check(spec)] += 1
        except Exception as exc:  # noqa: BLE001  (every failure is counted and shown)
            outcomes["failed"] += 1
            failures.append(f"{type(exc).__name__}: {str(exc)[:400]}")
            traceback.print_exc()
    elapsed = time.perf_counter() - start
    tried = sum(outcomes.values())
    result = {"seconds": round(elapsed, 1), "seed": args.seed, "max_blocks": args.max_blocks, "graphs": tried,
              "mean_blocks": round(blocks / max(tried, 1), 2), "outcomes": dict(outcomes.most_common()),
              "failures": failures[:20], "machine": machine()}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "random_graphs.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"{tried} random graphs in {elapsed:.0f} s (mean {result['mean_blocks']} blocks), PASC and bit-plane, float64")
    for outcome, n in outcomes.most_common():
        print(f"  {outcome:<45} {n:6d}  ({100 * n / tried:.1f}%)")


if __name__ == "__main__":
    main()
