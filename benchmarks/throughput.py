"""Simulation throughput of the trained benchmark models (issue 3): images/s of simulate()
for qcfs (T = 8), pasc and bitplane against the dense limit, steps × the ANN's forward time
on the same batch. Uses the models benchmarks/conversion.py trained.

    python benchmarks/throughput.py --levels 3,7,8
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


sys.path.insert(0, str(Path(__file__).parent))
from common import machine, save, test_loader  # noqa: E402
from conversion import throughput  # noqa: E402

import spikebridge as sb  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--levels", default="3,7,8")
    p.add_argument("--runs", default="runs/bench")
    p.add_argument("--batch", type=int, default=500)
    args = p.parse_args()
    x = next(iter(test_loader(batch_size=args.batch)))[0]
    rows = {}
    for L in [int(v) for v in args.levels.split(",")]:
        ann = sb.load_ann(f"{args.runs}/qcfs_L{L}/last.pt")
        rows[f"L={L}"] = throughput(ann, {"qcfs": (sb.convert(ann, "qcfs", T=8), 8),
                                          "pasc": (sb.convert(ann, "pasc"), None),
                                          "bitplane": (sb.convert(ann, "bitplane"), None)}, x)
        print(f"L={L}: {rows[f'L={L}']}", flush=True)
    print(f"results: {save('throughput', {'machine': machine(), 'command': ' '.join(sys.argv), 'models': rows})}")
    print("| model | ANN img/s | method | steps | img/s | dense limit img/s | time / limit |\n|---|---|---|---|---|---|---|")
    for name, tp in rows.items():
        for m, row in tp["methods"].items():
            print(f"| {name} | {tp['ann_images_per_s']:.0f} | {m} | {row['steps']:g} | {row['images_per_s']:.0f} | "
                  f"{row['dense_limit_images_per_s']:.0f} | {row['time_over_limit']:.2f} |")


if __name__ == "__main__":
    main()
