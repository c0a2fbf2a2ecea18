"""Integer synapses against float32 synapses, layer by layer and network by network: the
measurements behind ``integer_synapses.worthwhile`` (issue 13, BENCHMARKS.md §9).

For benchmarks/speed.py's random-weight CIFAR-style models converted with max-norm (T = 8),
every synaptic call whose input is a train of spikes (or of averaged spikes) is captured once,
as the engine makes it at each batch (a window of steps folded into the batch: 8, 32, 80 or 64
images at batches 1, 4, 16 and 64). Each is then timed, one thread, medians of ``--rounds``
interleaved rounds after a warm-up: the engine's float32 call (its step layout, its weight in
that layout) against the ``IntegerLayer`` call (the uint8 cast of the input included), with K
(inputs summed per output), output channels, the kernel the integer call takes, whether the
rule takes the layer, and each call's largest difference from float64 (with float32's own).

Then whole simulations, ``simulate(x, record=False)`` at T = 8 with ``integer_synapses`` "auto"
against "never", interleaved, and whether the predictions are the same.

    python benchmarks/integer_synapses.py
"""
from __future__ import annotations

import statistics
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
from common import save, timing_run  # noqa: E402
from fold_steps import interleaved  # noqa: E402
from speed import build  # noqa: E402

import spikebridge as sb  # noqa: E402
from spikebridge.snn import engine, integer_synapses  # noqa: E402
from spikebridge.snn.integer_synapses import IntegerLayer  # noqa: E402

MODELS = ("small_cnn", "resnet20", "vgg16", "resnet18")
BATCHES = (1, 4, 16, 64)
NETWORK_BATCHES = (16, 64)
T = 8


def captured_calls(snn, x) -> list[tuple]:
    """(layer, integer layer, input, bias) of each integer call of one simulation in "always"
    mode, the first of each layer."""
    calls, seen, call = [], set(), IntegerLayer.__call__

    def capture(self, inputs, bias):
        if id(self.layer) not in seen:
            seen.add(id(self.layer))
            calls.append((self.layer, self, inputs.clone(), bias))
        return call(self, inputs, bias)

    IntegerLayer.__call__ = capture
    snn.integer_synapses = "always"
    try:
        snn.simulate(x, record=False)
    finally:
        IntegerLayer.__call__ = call
        snn.integer_synapses = "auto"
    return calls


def kernel(integer: IntegerLayer, x: torch.Tensor) -> str:
    if isinstance(integer.layer, nn.Linear):
        return "matmul"
    return "windows" if integer.windows(integer.integers(x, torch.channels_last)) is not None else "convolution"


def layer_row(layer, integer, x, bias, rounds: int) -> dict:
    layout = engine.step_layout(layer, x.unsqueeze(0))
    weight = layer.weight.contiguous(memory_format=layout)
    floating = (lambda: F.linear(x, weight, bias)) if isinstance(layer, nn.Linear) else (
        lambda: layer._conv_forward(x.contiguous(memory_format=layout), weight, bias))
    ms = interleaved({"float32": floating, "integer": lambda: integer(x, bias)}, rounds)
    exact = (F.linear(x.double(), layer.weight.double(), None if bias is None else bias.double())
             if isinstance(layer, nn.Linear) else
             layer._conv_forward(x.double(), layer.weight.double(), None if bias is None else bias.double()))
    out = layer.out_features if isinstance(layer, nn.Linear) else layer.out_channels
    return {"input": list(x.shape), "fan_in": integer_synapses.fan_in(layer), "outputs": out,
            "kernel": kernel(integer, x), "count": integer.count, "ms": ms,
            "integer_over_float32": ms["integer"] / ms["float32"], "rule_takes_it": integer_synapses.worthwhile(layer),
            "max_abs_error": {"float32": float((floating().double() - exact).abs().max()),
                              "integer": float((integer(x, bias).double() - exact).abs().max())}}


def network_row(name: str, batch: int, rounds: int) -> dict:
    relu = build(name, 32, "cpu")
    x = torch.randn(batch, 3, 32, 32)
    snn = sb.convert(relu, "max-norm", T=T, calibration_data=[x])

    def run(mode):
        snn.integer_synapses = mode
        return snn.simulate(x, record=False).logits

    ms = interleaved({"auto": lambda: run("auto"), "never": lambda: run("never")}, rounds)
    auto, never = run("auto"), run("never")
    return {"model": name, "batch": batch, "T": T, "ms": ms, "auto_over_never": ms["auto"] / ms["never"],
            "same_predictions": bool(torch.equal(auto.argmax(-1), never.argmax(-1))),
            "max_logit_difference": float((auto - never).abs().max())}


def main() -> None:
    args, results = timing_run(__doc__, 5, matrix_units=integer_synapses.has_matrix_units(), layers=[], networks=[])
    with torch.no_grad():
        for name in MODELS:
            relu = build(name, 32, "cpu")
            for batch in BATCHES:
                x = torch.randn(batch, 3, 32, 32)
                snn = sb.convert(relu, "max-norm", T=T, calibration_data=[x])
                for layer, integer, inputs, bias in captured_calls(snn, x):
                    row = layer_row(layer, integer, inputs, bias, args.rounds) | {"model": name, "batch": batch}
                    results["layers"].append(row)
                    print(f"{name} b{batch} {tuple(inputs.shape)} K={row['fan_in']} O={row['outputs']} "
                          f"{row['kernel']}: float32 {row['ms']['float32']:.2f} ms, integer "
                          f"{row['integer_over_float32']:.2f}x (rule: {row['rule_takes_it']}); max |error| "
                          f"{row['max_abs_error']['float32']:.1e} / {row['max_abs_error']['integer']:.1e}", flush=True)
                save("integer_synapses", results)
        for name in MODELS:
            for batch in NETWORK_BATCHES:
                row = network_row(name, batch, args.rounds)
                results["networks"].append(row)
                print(f"{name} b{batch}: auto {row['ms']['auto']:.1f} ms, never {row['ms']['never']:.1f} ms, "
                      f"{row['auto_over_never']:.2f}x; same predictions {row['same_predictions']}", flush=True)
    summary = {}
    for row in results["layers"]:
        key = "taken" if row["rule_takes_it"] else "left in float32"
        summary.setdefault(key, []).append(row["integer_over_float32"])
    results["summary"] = {k: {"calls": len(v), "min": min(v), "median": statistics.median(v), "max": max(v)}
                          for k, v in summary.items()}
    print(results["summary"])
    print(f"results: {save('integer_synapses', results)}")


if __name__ == "__main__":
    main()
