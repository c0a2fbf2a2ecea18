"""All steps of a whole train in one call against one call per step, measured to set
``engine.fold_budget`` (issue 13, BENCHMARKS.md §9).

A sum-coded network (PASC, bit-plane) gives each synaptic layer its whole input train. The
layer can convolve it a step at a time, copying each step's output into the output train, or
in one call over the steps folded into the batch, whose output is the train. One thread,
medians of ``--rounds`` interleaved rounds after a warm-up:

- layers: 3x3 convolutions (padding 1) of ResNet-20's and VGG-16's shapes on channels-last
  binary trains of 8 and 32 steps, the time of one call over the time per step, against the
  size of the output train;
- networks: ``simulate(x, record=False)`` of PASC (L = 8) and bit-plane (L = 15, 4 bits) of
  benchmarks/speed.py's random-weight models, with the engine's rule (fold up to
  ``fold_budget``) against no folding (a budget of 0), and whether the logits are the same.

    python benchmarks/fold_steps.py
    python benchmarks/fold_steps.py --name fold_steps_intel   # results/fold_steps_intel.json
"""
from __future__ import annotations

import statistics
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
from common import save, timing_run  # noqa: E402
from speed import build, timed  # noqa: E402

import spikebridge as sb  # noqa: E402
from spikebridge.snn import engine  # noqa: E402

LAYERS = [(16, 16, 32, 16), (16, 16, 32, 64), (32, 32, 16, 16), (32, 32, 16, 64), (64, 64, 8, 16), (64, 64, 8, 64),
          (64, 64, 32, 16), (128, 128, 16, 16), (256, 256, 8, 16), (512, 512, 4, 16), (512, 512, 2, 16)]  # C, O, H, B
NETWORKS = [("small_cnn", 64), ("resnet20", 16), ("resnet20", 64), ("vgg16", 16)]


def interleaved(runs: dict, rounds: int, warmups: int = 1) -> dict:
    for fn in runs.values():  # warm-up
        for _ in range(warmups):
            fn()
    times = {name: [] for name in runs}
    for _ in range(rounds):
        for name, fn in runs.items():
            times[name].append(timed(fn))
    return {name: statistics.median(t) * 1e3 for name, t in times.items()}


def versus(names: tuple[str, str], new, old, ann, steps: int, rounds: int) -> tuple[dict, str]:
    """An A/B measurement: medians of interleaved rounds of the runs ``new`` and ``old`` and of
    the ANN's forward ``ann`` (no autograd), as ``{a}_over_{b}``, ``{a}_over_limit`` and
    ``{b}_over_limit`` for ``names`` (a, b), the dense limit being ``steps`` × the ANN's time,
    and a line reporting them."""
    a, b = names
    with torch.no_grad():
        ms = interleaved({"ann": ann, a: new, b: old}, rounds)
    limit = steps * ms["ann"]
    row = {f"{a}_over_{b}": ms[a] / ms[b], f"{a}_over_limit": ms[a] / limit, f"{b}_over_limit": ms[b] / limit}
    return row, (f"{a} / {b} {row[f'{a}_over_{b}']:.3f}, over the limit {row[f'{b}_over_limit']:.2f} -> "
                 f"{row[f'{a}_over_limit']:.2f}")


def layer_row(c: int, o: int, h: int, batch: int, steps: int, rounds: int) -> dict:
    weight = (torch.randn(o, c, 3, 3) / (3 * c ** 0.5)).contiguous(memory_format=torch.channels_last)
    train = torch.empty(steps, batch, h, h, c).permute(0, 1, 4, 2, 3).bernoulli_(0.1)  # channels-last steps

    def per_step():
        out = torch.empty(steps, batch, h, h, o).permute(0, 1, 4, 2, 3)
        for t in range(steps):
            out[t] = F.conv2d(train[t], weight, None, 1, 1)
        return out

    ms = interleaved({"per step": per_step, "one call": lambda: F.conv2d(train.flatten(0, 1), weight, None, 1, 1)},
                     rounds)
    return {"channels": c, "out_channels": o, "size": h, "batch": batch, "steps": steps,
            "output_mib": steps * batch * o * h * h * 4 / 2 ** 20, "ms": ms, "one_call_over_per_step":
            ms["one call"] / ms["per step"]}


def network_row(name: str, batch: int, rounds: int) -> dict:
    relu = build(name, 32, "cpu")
    torch.manual_seed(0)
    x = torch.randn(batch, 3, 32, 32)
    nets = {"pasc": sb.convert(sb.prepare(relu, levels=8, threshold=1.0), "pasc"),
            "bitplane": sb.convert(sb.prepare(relu, levels=15, threshold=1.0), "bitplane")}
    rule, row = engine.fold_budget, {"model": name, "batch": batch}
    for method, snn in nets.items():
        def run(budget, snn=snn):
            engine.fold_budget = budget
            try:
                return snn.simulate(x, record=False).logits
            finally:
                engine.fold_budget = rule
        ms = interleaved({"rule": lambda: run(rule), "per step": lambda: run(lambda device, exact_sums=False: 0)}, rounds)
        row[method] = {"ms": ms, "rule_over_per_step": ms["rule"] / ms["per step"],
                       "same_logits": bool(torch.equal(run(rule), run(lambda device, exact_sums=False: 0)))}
    return row


def main() -> None:
    args, results = timing_run(__doc__, 5, "fold_steps", fold_bytes=engine.fold_budget(torch.device("cpu")),
                               layers=[], networks=[])
    with torch.no_grad():
        for c, o, h, batch in LAYERS:
            for steps in (8, 32):
                if c >= 256 and steps == 32:
                    continue
                row = layer_row(c, o, h, batch, steps, args.rounds)
                results["layers"].append(row)
                print(f"{c}->{o} {h}x{h} batch {batch}, {steps} steps, output {row['output_mib']:.0f} MiB: one call "
                      f"{row['one_call_over_per_step']:.2f}x the time per step", flush=True)
        for name, batch in NETWORKS:
            row = network_row(name, batch, args.rounds)
            results["networks"].append(row)
            print(name, batch, {m: (round(row[m]["rule_over_per_step"], 3), row[m]["same_logits"])
                                for m in ("pasc", "bitplane")}, flush=True)
    print(f"results: {save(args.name, results)}")


if __name__ == "__main__":
    main()
