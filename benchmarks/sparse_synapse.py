"""Event-driven (sparse) synapses against the dense convolution, measured before deciding
whether to build them (issue 13, BENCHMARKS.md §9).

Half of SpikingJelly's time on VGG-16 at batch 16 is below the dense limit, so reaching it
needs work skipped: only the spikes' synapses computed. A 3x3 convolution (padding 1) of a
binary step s [B, C, H, W] is Σ_(dy,dx) shift_(dy,dx)(S · W_(dy,dx)) with S the step as a
[B·H·W, C] matrix: one sparse (CSR) x dense product S · [W_(0,0) … W_(2,2)] ([C, 9·O], cost
nnz(S)·9·O multiply-adds) and nine shifted adds. This script times it (``to_sparse_csr``
included) against oneDNN's dense channels-last convolution of the same step, on VGG-16's
layer shapes (CIFAR input), for spike rates from 2% to 20%, one thread, medians of
``--rounds`` interleaved rounds, and checks that both give the same values up to float
rounding. It also records the spike rate at each site of the VGG-16 that benchmarks/speed.py
times (max-norm, random weights, batch 16, T = 8): the rates its layers would see.

    python benchmarks/sparse_synapse.py
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
from common import machine, save  # noqa: E402
from speed import build, timed  # noqa: E402

import spikebridge as sb  # noqa: E402

SHAPES = [(64, 64, 32), (128, 128, 16), (256, 256, 8), (512, 512, 4), (512, 512, 2)]  # (C, O, H=W) of VGG-16


def sparse_conv3x3(step: torch.Tensor, weights: torch.Tensor, out_channels: int) -> torch.Tensor:
    """conv2d(step, W, padding=1) from the spikes only: S · [W_(dy,dx)] then nine shifted adds
    (``weights``: W as [C, 9·O]); returns NHWC."""
    b, c, h, w = step.shape
    rows = step.permute(0, 2, 3, 1).reshape(-1, c).to_sparse_csr()
    taps = (rows @ weights).view(b, h, w, 3, 3, out_channels)
    out = step.new_zeros(b, h + 2, w + 2, out_channels)
    for dy in range(3):
        for dx in range(3):
            out[:, 2 - dy:2 - dy + h, 2 - dx:2 - dx + w] += taps[:, :, :, dy, dx]
    return out[:, 1:h + 1, 1:w + 1]


def vgg16_spike_rates(batch: int, T: int) -> dict[str, float]:
    """Spikes per neuron per step at each site of benchmarks/speed.py's VGG-16 (max-norm)."""
    torch.manual_seed(0)
    x = torch.randn(batch, 3, 32, 32)
    snn = sb.convert(build("vgg16", 32, "cpu"), "max-norm", T=T, calibration_data=[x])
    with torch.no_grad():
        result = snn.simulate(x)
    return {site: float(count.sum()) / (count.numel() * batch * T) for site, count in result.spikes.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--rates", default="0.02,0.05,0.1,0.2")
    p.add_argument("--rounds", type=int, default=7)
    args = p.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    results = {"machine": machine(), "command": " ".join(sys.argv), "rows": []}
    for c, o, h in SHAPES:
        weight = torch.randn(o, c, 3, 3) / (3 * c ** 0.5)
        weight_cl = weight.contiguous(memory_format=torch.channels_last)
        taps = weight.permute(1, 2, 3, 0).reshape(c, 9 * o).contiguous()
        for rate in [float(r) for r in args.rates.split(",")]:
            step = (torch.rand(args.batch, c, h, h) < rate).float()
            step_cl = step.contiguous(memory_format=torch.channels_last)
            runs = {"dense": lambda: F.conv2d(step_cl, weight_cl, padding=1),
                    "sparse": lambda: sparse_conv3x3(step, taps, o)}
            for fn in runs.values():  # warm-up
                fn()
            times = {k: [] for k in runs}
            for _ in range(args.rounds):  # interleaved rounds
                for k, fn in runs.items():
                    times[k].append(timed(fn))
            dense, sparse = (statistics.median(times[k]) for k in ("dense", "sparse"))
            error = (sparse_conv3x3(step, taps, o) - F.conv2d(step, weight, padding=1).permute(0, 2, 3, 1)).abs().max()
            row = {"channels": c, "out_channels": o, "size": h, "batch": args.batch, "rate": rate,
                   "dense_ms": dense * 1e3, "sparse_ms": sparse * 1e3, "sparse_over_dense": sparse / dense,
                   "max_abs_difference": float(error)}
            results["rows"].append(row)
            print(f"{c:>3}->{o:<3} {h:>2}x{h:<2} rate {rate:.2f}: dense {dense * 1e3:6.2f} ms, sparse "
                  f"{sparse * 1e3:6.2f} ms ({sparse / dense:.2f}x), max |difference| {error:.1e}", flush=True)
    results["vgg16_spike_rates"] = vgg16_spike_rates(args.batch, 8)
    print("VGG-16 (max-norm, T = 8) spike rates:", {k: round(v, 4) for k, v in results["vgg16_spike_rates"].items()})
    print(f"results: {save('sparse_synapse', results)}")


if __name__ == "__main__":
    main()
