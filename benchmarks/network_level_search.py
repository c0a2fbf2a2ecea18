"""network-level with more search images: does the size of the search sample matter? (issue 12)

The default search measures the output error on min(512, 4096/T) calibration images (at
least 128; docs/methods.md §10). This script converts the suite's digits models (BENCHMARKS.md
§12, reused under --runs) with ``search_images`` = all 1024 calibration images, at T = 1, 2, 4,
8, and compares the test accuracy with the suite's stored `network-level` rows (same weights,
calibration and test images) and with SpikingJelly's best mode at each T.

    python benchmarks/network_level_search.py --models vgg,vgg-nobn --seeds 0,1,2   # runs, saves
    python benchmarks/network_level_search.py --report                               # the table
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from statistics import mean

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import RESULTS, machine  # noqa: E402
from relu_suite import OUT as SUITE, SJ_PREFIX, at_T  # noqa: E402
from suite_models import suite_arguments, suite_model  # noqa: E402

import spikebridge as sb  # noqa: E402
from spikebridge.pipeline import loader  # noqa: E402

TS = [1, 2, 4, 8]
SEARCH = 1024
PATH = RESULTS / "network_level_search.json"


def stored(dataset: str, key: str, seed: int) -> dict:
    return json.loads((SUITE / f"{dataset}_{key}_s{seed}.json").read_text())


def run(args, results: dict, key: str, seed: int) -> None:
    ann, ckpt = suite_model(args.runs, args.dataset, key, seed)
    name = ckpt["model"]["name"]
    test = loader(args.dataset, name, "test", batch_size=500)
    calib = list(loader(args.dataset, name, "train", batch_size=128, limit=1024))
    row = results.setdefault(f"{args.dataset}/{key}/{seed}", {})
    for T in TS:
        if str(T) not in row:
            snn = sb.convert(ann, "network-level", T=T, calibration_data=calib, search_images=SEARCH)
            row[str(T)] = at_T(snn, test, T)
            PATH.write_text(json.dumps(results, indent=1))
        print(f"{key} s{seed} T={T}: stored {100 * stored(args.dataset, key, seed)['accuracy']['network-level'][str(T)]:.2f}"
              f", search {SEARCH} {100 * row[str(T)]:.2f}", flush=True)


def report(results: dict) -> str:
    """Per model (mean over its seeds run here) and T: stored → search-1024 accuracy, SpikingJelly's
    best mode, and the mean gap to the ANN of both over all cells."""
    models: dict[tuple[str, str], list[int]] = {}
    for name in results:
        if name.startswith("_"):
            continue
        dataset, key, seed = name.split("/")
        models.setdefault((dataset, key), []).append(int(seed))
    lines = ["| model (seeds) | " + " | ".join(f"T={T}: stored → search {SEARCH} (SJ best)" for T in TS) + " |",
             "|---|" + "---|" * len(TS)]
    gaps = {"stored": [], "search": []}
    for (dataset, key), seeds in sorted(models.items()):
        runs = [stored(dataset, key, s) for s in seeds]
        ann = mean(r["ann"] for r in runs)
        cells = []
        for T in map(str, TS):
            if not all(T in results[f"{dataset}/{key}/{s}"] for s in seeds):
                cells.append("—")
                continue
            old = mean(r["accuracy"]["network-level"][T] for r in runs)
            new = mean(results[f"{dataset}/{key}/{s}"][T] for s in seeds)
            sj = max(mean(r["accuracy"][m][T] for r in runs) for m in runs[0]["accuracy"] if m.startswith(SJ_PREFIX))
            gaps["stored"].append(ann - old)
            gaps["search"].append(ann - new)
            cells.append(f"{100 * old:.2f} → {100 * new:.2f} ({100 * sj:.2f})" + (" ✗" if new <= sj else ""))
        lines.append(f"| {dataset}/{key} ({', '.join(map(str, seeds))}) | " + " | ".join(cells) + " |")
    lines.append(f"\nMean gap to the ANN over the {len(gaps['stored'])} cells: stored {100 * mean(gaps['stored']):.2f}, "
                 f"search {SEARCH} {100 * mean(gaps['search']):.2f} points.")
    return "\n".join(lines)


def main() -> None:
    p = suite_arguments(__doc__, report="print the table of the saved results, run nothing")
    p.set_defaults(dataset="digits")
    args = p.parse_args()
    results = json.loads(PATH.read_text()) if PATH.exists() else {}
    if args.report:
        print(report(results))
        return
    torch.set_num_threads(1)
    results["_machine"], results["_command"] = machine(), " ".join(sys.argv)
    for key in args.models.split(","):
        for seed in map(int, args.seeds.split(",")):
            run(args, results, key, seed)


if __name__ == "__main__":
    main()
