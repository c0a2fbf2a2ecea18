"""How the number of balancing updates sets local threshold balancing's thresholds
(docs/methods.md §9): one suite model (BENCHMARKS.md §12), `local-balancing` calibrated on the
same 1024 training images in batches of 32 for 1, 8, 32 and 125 passes (32 … 4000 updates; the
paper's code uses 4000), accuracy after T = 1 … 32 steps on the whole test set.

    python benchmarks/ltb_updates.py --dataset digits --model vgg
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import machine, save  # noqa: E402
from suite_models import BY_KEY, RECIPES, suite_model  # noqa: E402

import spikebridge as sb  # noqa: E402
from spikebridge.analysis.evaluation import evaluate_snn  # noqa: E402
from spikebridge.pipeline import loader  # noqa: E402

TS = [1, 2, 4, 8, 16, 32]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="digits", choices=sorted(RECIPES))
    p.add_argument("--model", default="vgg", choices=sorted(BY_KEY))
    p.add_argument("--passes", default="1,8,32,125")
    p.add_argument("--runs", default="runs/suite")
    args = p.parse_args()
    ann, ckpt = suite_model(args.runs, args.dataset, args.model)
    name = ckpt["model"]["name"]
    calib = list(loader(args.dataset, name, "train", batch_size=32, limit=1024))
    test = loader(args.dataset, name, "test", batch_size=500)
    rows = {}
    results = {"machine": machine(), "command": " ".join(sys.argv), "model": args.model, "dataset": args.dataset,
               "updates_per_pass": len(calib), "accuracy": rows, "seconds": {}}
    for passes in map(int, args.passes.split(",")):
        start = time.perf_counter()
        snn = sb.convert(ann, "local-balancing", T=max(TS), calibration_data=calib, passes=passes)
        results["seconds"][passes * len(calib)] = time.perf_counter() - start
        rows[passes * len(calib)] = evaluate_snn(snn, test, TS, progress=False).accuracy
        print(f"{passes * len(calib)} updates: " + ", ".join(f"T={T} {100 * a:.2f}"
                                                           for T, a in rows[passes * len(calib)].items()), flush=True)
        save(f"ltb_updates_{args.dataset}_{args.model}", results)


if __name__ == "__main__":
    main()
