"""Integer (VNNI) synapses against the float32 convolution, measured before deciding whether
to build them (issue 13, BENCHMARKS.md §9).

A spiking convolution's input is a train of θ_c·s with s ∈ {0, 1}: with θ_c folded into the
weight, W·(θ·s) = (W·θ)·s, and s fits in uint8 exactly. oneDNN's int8 convolution (uint8
input, int8 weight, int32 accumulation, float32 output; ``torch.ops.onednn.qconv_pointwise``)
then computes (W·θ)·s with a quantised weight. One int8 weight holds 8 bits of each output
channel's weights; P pieces, W ≈ Σ_p q_p·s_p with s_p = s_0/254^p, hold about 8·P bits, and
since the integer sum is exact, P = 3 is as accurate as the float32 convolution (below). The
pieces run as one convolution with P·O output channels whose P slices are then added.

For every convolution with a spiking input of VGG-16 (batch 16) and ResNet-20 (batch 16 and
64) as benchmarks/speed.py builds them (the first layer's input is the image, computed once,
and is left out), one thread, medians of ``--rounds`` interleaved rounds: the float32
channels-last convolution (the engine's) against P = 1, 2, 3 pieces, the uint8 cast of the
step included, and each one's largest difference from a float64 convolution. Then, per model:
the convolutions' float32 time per step against the best of float32 and P = 3 per layer, and
the SNN's whole step (``simulate`` of "max-norm", T = 8, record=False, over 8): the share of
a step that exact int8 synapses could save.

    python benchmarks/int8_synapse.py
"""
from __future__ import annotations

import statistics
import sys
from collections import Counter
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
from common import save, timing_run  # noqa: E402
from speed import build, timed  # noqa: E402

import spikebridge as sb  # noqa: E402

SETTINGS = [("vgg16", 16), ("resnet20", 16), ("resnet20", 64)]
T = 8
RATE = 0.1  # spikes per neuron per step; dense kernels do not depend on it


def spiking_convolutions(model: nn.Module, batch: int) -> Counter:
    """(in, out, size, kernel, stride, padding) of every Conv2d but the first, with how many
    layers share it, read off one forward pass of the ANN."""
    shapes = []
    hooks = [m.register_forward_hook(lambda m, args, out: shapes.append(
        (m.in_channels, m.out_channels, args[0].shape[-1], m.kernel_size[0], m.stride[0], m.padding[0])))
        for m in model.modules() if isinstance(m, nn.Conv2d)]
    with torch.no_grad():
        model(torch.randn(batch, 3, 32, 32))
    for h in hooks:
        h.remove()
    return Counter(shapes[1:])


def pieces(weight: torch.Tensor, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """W ≈ Σ_p q_p·s_p per output channel, q_p int8, s_p = s_0/254^p (a residual of at most
    s_p/2 needs |q_(p+1)| ≤ 127): the pieces stacked on the output dimension, and their scales."""
    scale = weight.abs().amax(dim=(1, 2, 3)).double().clamp_min(1e-30) / 127
    rest, qs, scales = weight.double(), [], []
    for p in range(count):
        s = scale / 254 ** p
        q = torch.round(rest / s[:, None, None, None]).clamp_(-127, 127)
        rest = rest - q * s[:, None, None, None]
        qs.append(q.to(torch.int8))
        scales.append(s.float())
    return torch.cat(qs), torch.cat(scales)


def int8_convolution(weight: torch.Tensor, count: int, stride: int, padding: int):
    """A function of a 0/1 float step (channels-last) computing conv2d(step, weight) with
    ``count`` int8 pieces: the step cast to uint8, one oneDNN int8 convolution with float32
    output, its slices added."""
    out = weight.shape[0]
    q, scales = pieces(weight, count)
    zero = torch.zeros(q.shape[0], dtype=torch.int64)
    packed = torch.ops.onednn.qconv_prepack(q, scales, 1.0, 0, [stride] * 2, [padding] * 2, [1, 1], 1, None)

    def run(step: torch.Tensor) -> torch.Tensor:
        y = torch.ops.onednn.qconv_pointwise(torch.ne(step, 0).view(torch.uint8), 1.0, 0, packed, scales, zero, None,
                                             [stride] * 2, [padding] * 2, [1, 1], 1, 1.0, 0, torch.float32, "none", [],
                                             "")
        total = y[:, :out]
        for p in range(1, count):
            total = total + y[:, p * out:(p + 1) * out]
        return total
    return run


def time_layer(c, o, h, k, stride, padding, batch, rounds) -> dict:
    weight = torch.randn(o, c, k, k) / (k * c ** 0.5)
    step = (torch.rand(batch, c, h, h) < RATE).float().contiguous(memory_format=torch.channels_last)
    weight_cl = weight.contiguous(memory_format=torch.channels_last)
    runs = {"float32": lambda s: F.conv2d(s, weight_cl, None, stride, padding)}
    for count in (1, 2, 3):
        runs[f"int8 x{count}"] = int8_convolution(weight, count, stride, padding)
    exact = F.conv2d(step.double(), weight.double(), None, stride, padding)
    error = {name: float((fn(step).double() - exact).abs().max()) for name, fn in runs.items()}
    times = {name: [] for name in runs}
    for _ in range(rounds):  # interleaved rounds, after the warm-up above
        for name, fn in runs.items():
            times[name].append(timed(lambda: fn(step)))
    ms = {name: statistics.median(t) * 1e3 for name, t in times.items()}
    return {"channels": c, "out_channels": o, "size": h, "kernel": k, "stride": stride, "batch": batch, "ms": ms,
            "over_float32": {name: ms[name] / ms["float32"] for name in ms}, "max_abs_error": error}


def step_ms(name: str, batch: int, rounds: int) -> float:
    """One step of the max-norm SNN: ``simulate`` at T = 8, record off, over 8 (median)."""
    torch.manual_seed(0)
    x = torch.randn(batch, 3, 32, 32)
    snn = sb.convert(build(name, 32, "cpu"), "max-norm", T=T, calibration_data=[x])
    with torch.no_grad():
        snn.simulate(x, record=False)
        return statistics.median(timed(lambda: snn.simulate(x, record=False)) for _ in range(rounds)) * 1e3 / T


def main() -> None:
    args, results = timing_run(__doc__, 7, rows=[], models=[])
    for name, batch in SETTINGS:
        layers = spiking_convolutions(build(name, 32, "cpu"), batch)
        float_ms = best_ms = 0.0
        for (c, o, h, k, stride, padding), n in sorted(layers.items(), key=lambda kv: -kv[0][2]):
            row = time_layer(c, o, h, k, stride, padding, batch, args.rounds) | {"model": name, "layers": n}
            results["rows"].append(row)
            float_ms += n * row["ms"]["float32"]
            best_ms += n * min(row["ms"]["float32"], row["ms"]["int8 x3"])
            ratios = ", ".join(f"{k} {v:.2f}" for k, v in row["over_float32"].items() if k != "float32")
            errors = ", ".join(f"{k} {v:.1e}" for k, v in row["max_abs_error"].items())
            print(f"{name} b{batch} {n}x {c}->{o} {k}x{k}/{stride} at {h}x{h}: float32 {row['ms']['float32']:.2f} ms; "
                  f"{ratios}; max |error| {errors}", flush=True)
        step = step_ms(name, batch, args.rounds)
        summary = {"model": name, "batch": batch, "conv_float32_ms_per_step": float_ms,
                   "conv_best_ms_per_step": best_ms, "snn_step_ms": step, "step_saved": (float_ms - best_ms) / step}
        results["models"].append(summary)
        print(f"{name} b{batch}: convolutions {float_ms:.1f} ms per step in float32, {best_ms:.1f} with int8 x3 where "
              f"faster; the SNN's step {step:.1f} ms: {summary['step_saved']:.1%} of it saved at most", flush=True)
    print(f"results: {save('int8_synapse', results)}")


if __name__ == "__main__":
    main()
