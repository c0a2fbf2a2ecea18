"""What glibc's malloc costs a CPU simulation, and what ``keep_freed_memory`` saves (issue 13).

Runs, in two fresh processes (glibc's defaults; after ``spikebridge.keep_freed_memory()``),
the same rounds on a CIFAR-style model with random weights: ``simulate(x, T, record=False)``
of its max-norm conversion and T forward passes of the ReLU ANN, with the page faults of each
(``getrusage`` minor faults). Median of ``--rounds``.

    OMP_NUM_THREADS=1 python benchmarks/allocator.py --model resnet20 --batch 64 --T 8
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROUNDS = """
import json, resource, statistics, sys, time, torch
sys.path.insert(0, {bench!r})
import spikebridge as sb
import spikebridge.device
if not {keep!r}:  # the benchmarks' common module would call it on import
    spikebridge.device.keep_freed_memory = lambda: False
tuned = spikebridge.device.keep_freed_memory()
from speed import build
torch.set_num_threads({threads})
relu = build({model!r}, 32, "cpu")
x = torch.randn({batch}, 3, 32, 32)
snn = sb.convert(relu, "max-norm", T={T}, calibration_data=[x[:8]])

def ann():
    for _ in range({T}):
        relu(x)

def measure(fn):
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults

runs = {{"simulate": lambda: snn.simulate(x, record=False), "ReLU ANN x T": ann}}
with torch.no_grad():
    for fn in runs.values():
        fn()
    rows = {{k: [] for k in runs}}
    for _ in range({rounds}):
        for k, fn in runs.items():
            rows[k].append(measure(fn))
print(json.dumps({{"tuned": tuned, **{{k: {{"seconds": statistics.median(s for s, _ in v),
                                          "page_faults": statistics.median(f for _, f in v)}} for k, v in rows.items()}}}}))
"""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="resnet20")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--T", type=int, default=8)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    out = {}
    for keep in (False, True):
        code = ROUNDS.format(bench=str(Path(__file__).parent), keep=keep, threads=args.threads, model=args.model,
                             batch=args.batch, T=args.T, rounds=args.rounds)
        run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        out["keep_freed_memory" if keep else "glibc defaults"] = json.loads(run.stdout.strip().splitlines()[-1])
    print(json.dumps({"command": " ".join(sys.argv), **vars(args), "results": out}, indent=1))


if __name__ == "__main__":
    main()
