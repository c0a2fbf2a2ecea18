"""Calibration cost of the default ReLU method, network-level (docs/methods.md §10), on the
paper-size CIFAR ResNet-20 (widths 16/32/64, stride-1 stem, 32x32 inputs: 41M MACs per
image) with 1024 calibration images from Fashion-MNIST (padded to 32x32), one torch thread.
The weights are freshly initialised: each pass of the search runs the same simulations whatever
the weights; which assignment wins, and so how many passes run (at most 3), differs.
Statistics are collected once (timed apart).

    python benchmarks/network_level_cost.py --T 1,4,32
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import machine, save  # noqa: E402

import spikebridge as sb  # noqa: E402
from spikebridge import models  # noqa: E402
from spikebridge.pipeline import loader  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--T", default="1,4,32")
    p.add_argument("--images", type=int, default=1024)
    p.add_argument("--name", default="network_level_cost", help="results file name under benchmarks/results/")
    args = p.parse_args()
    torch.manual_seed(0)
    ann = models.create("resnet20", num_classes=10, in_channels=1).eval()
    calib = list(loader("fashion-mnist", "resnet20", "train", batch_size=128, limit=args.images))
    results = {"machine": machine(), "command": " ".join(sys.argv), "images": args.images, "seconds": {}}
    start = time.perf_counter()
    stats = sb.calibration_statistics(ann, calib, channel_wise=True)
    results["statistics_seconds"] = time.perf_counter() - start
    for T in map(int, args.T.split(",")):
        start = time.perf_counter()
        snn = sb.convert(ann, "network-level", T=T, calibration_data=calib, statistics=stats)
        results["seconds"][T] = time.perf_counter() - start
        results.setdefault("search_images", {})[T] = max(128, min(512, 4096 // T))
        results.setdefault("passes", {})[T] = snn.info["passes"]
        print(f"T={T}: {results['seconds'][T]:.0f} s ({len(snn.neurons())} sites, {snn.info['passes']} passes)",
              flush=True)
        save(args.name, results)


if __name__ == "__main__":
    main()
