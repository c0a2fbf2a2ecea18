"""A fused one-pass IF update, measured before deciding whether to keep it (issue 13, BENCHMARKS.md §9).

spikebridge's IF inference update (``IFNeuron._infer``) makes four passes per step over the
potential: v += x; o = [v ≥ θ]; o *= θ; v −= o. This script compiles the same update as one
loop with numba (per (image, channel), every step: u = v + x; o = θ if u ≥ θ else 0; v = u − o;
bit for bit the same floats) and measures, in one process with interleaved rounds (medians):

- the update alone on activation shapes of ResNet-20 and VGG-16, T = 8;
- ``snn.simulate(x, record=False)`` of the "max-norm" conversion of a random-weight model with
  either update, against the dense limit T × the ReLU ANN's forward time (as benchmarks/speed.py).

numba is not a dependency of spikebridge; the script installs it on first use.

    python benchmarks/fused_if.py
"""
from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import machine, save  # noqa: E402
from speed import build  # noqa: E402

import spikebridge as sb  # noqa: E402
from spikebridge.snn.neurons import IFNeuron  # noqa: E402

try:
    import numba
except ImportError:
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "numba"], check=True)
    import numba
import numpy as np  # noqa: E402

ROUNDS = 7


@numba.njit(parallel=True, cache=True)
def _if_steps(v, x, theta, out):
    """v [B, C, S] (updated in place), x [steps or 1, B, C, S], theta [C], out [steps, B, C, S]."""
    steps, (n_images, channels, size) = out.shape[0], v.shape
    for plane in numba.prange(n_images * channels):
        b, c = plane // channels, plane % channels
        th = theta[c]
        for t in range(steps):
            xt, o, vv = x[0 if x.shape[0] == 1 else t, b, c], out[t, b, c], v[b, c]
            for i in range(size):
                u = vv[i] + xt[i]
                f = th if u >= th else np.float32(0.0)
                o[i] = f
                vv[i] = u - f


def fused(v: torch.Tensor, x: torch.Tensor, theta: torch.Tensor, steps: int) -> torch.Tensor:
    n_images, channels = v.shape[:2]
    x = x.contiguous()
    out = x.new_empty((steps, *x.shape[1:]))
    _if_steps(v.view(n_images, channels, -1).numpy(), x.view(x.shape[0], n_images, channels, -1).numpy(),
              theta.expand(channels).contiguous().numpy(), out.view(steps, n_images, channels, -1).numpy())
    return out


TORCH_INFER = IFNeuron._infer


def fused_infer(self, x, v, t0, steps):
    if self.bias_at(t0, v.dim()) is not None or v.dim() < 2:  # FTBC biases or no channels: the torch update
        return TORCH_INFER(self, x, v, t0, steps)
    return fused(v, x, self.threshold, steps), v


def elapsed_ms(fn) -> float:
    start = time.perf_counter()
    with torch.no_grad():
        fn()
    return 1e3 * (time.perf_counter() - start)


def update_alone(shape: tuple, T: int = 8) -> dict:
    torch.manual_seed(0)
    x, theta = 0.5 * torch.randn(T, *shape), torch.rand(shape[1]) + 0.5
    rows = {"torch": [], "fused": []}
    neuron = IFNeuron(theta, T=T)
    for _ in range(ROUNDS):
        for name, update in (("torch", lambda v: TORCH_INFER(neuron, x, v, 0, T)),
                             ("fused", lambda v: (fused(v, x, theta, T), v))):
            v = torch.zeros(shape)
            rows[name].append(elapsed_ms(lambda: update(v)))
    torch_ms, fused_ms = (statistics.median(rows[k]) for k in ("torch", "fused"))
    a, b = TORCH_INFER(neuron, x, torch.zeros(shape), 0, T), fused(torch.zeros(shape), x, theta, T)
    return {"shape": list(shape), "T": T, "torch_ms": torch_ms, "fused_ms": fused_ms, "ratio": fused_ms / torch_ms,
            "identical": bool(torch.equal(a[0], b))}


def whole(name: str, batch: int, T: int) -> dict:
    relu = build(name, 32, "cpu")
    x = torch.randn(batch, 3, 32, 32)
    snn = sb.convert(relu, "max-norm", T=T, calibration_data=[x])
    with torch.no_grad():
        IFNeuron._infer = TORCH_INFER
        a = snn.simulate(x, record=False).logits
        IFNeuron._infer = fused_infer
        b = snn.simulate(x, record=False).logits
    rows = {"torch": [], "fused": [], "limit": []}
    for _ in range(ROUNDS):
        IFNeuron._infer = TORCH_INFER
        rows["torch"].append(elapsed_ms(lambda: snn.simulate(x, record=False)))
        IFNeuron._infer = fused_infer
        rows["fused"].append(elapsed_ms(lambda: snn.simulate(x, record=False)))
        rows["limit"].append(elapsed_ms(lambda: [relu(x) for _ in range(T)]))
    IFNeuron._infer = TORCH_INFER
    m = {k: statistics.median(v) for k, v in rows.items()}
    return {"model": name, "batch": batch, "T": T, **{f"{k}_ms": v for k, v in m.items()},
            "torch_over_limit": m["torch"] / m["limit"], "fused_over_limit": m["fused"] / m["limit"],
            "identical_logits": bool(torch.equal(a, b))}


def main() -> None:
    torch.set_num_threads(1)
    numba.set_num_threads(1)
    alone = [update_alone(s) for s in [(64, 16, 32, 32), (64, 64, 8, 8), (16, 64, 8, 8), (16, 512, 4, 4)]]
    for row in alone:
        print(row, flush=True)
    sims = [whole("resnet20", batch, 8) for batch in (16, 64)]
    for row in sims:
        print(row, flush=True)
    path = save("fused_if", {"machine": machine(), "threads": 1, "rounds": ROUNDS,
                             "command": "python benchmarks/fused_if.py", "update_alone": alone, "simulation": sims})
    print(path)


if __name__ == "__main__":
    main()
