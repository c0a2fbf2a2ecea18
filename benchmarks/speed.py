"""Simulation speed and memory against SpikingJelly 2.0 and the dense limit (issue 13).

For each model (CIFAR-style, 3x32x32 inputs, random weights and random BatchNorm statistics),
batch size and T, in one process with interleaved rounds (median of ``--rounds``), after a
warm-up run of each, and for our rate-coded networks as many more as their time-chunk tuning
takes (``ChunkTuner``: each of 1, 2, 4, 8 steps twice), so that the rounds time the chunk kept:

- ours: ``snn.simulate(x, T, record=False)`` of the "max-norm" conversion of the ReLU ANN
  (rate-coded IF, soft reset), and of "qcfs" on its prepared twin, with the default integer
  synapses ("auto": on a CPU with int8 matrix units, spike-fed layers of K ≥ 512 on int8 digits);
- SpikingJelly 2.0: ``RateCodingRecipe(mode="max")`` on the same ReLU weights and calibration
  batch, in multi-step mode (``functional.set_step_mode(snn, "m")``, input [T, B, ...]). Its IF
  update (``functional.if_multi_step``) picks its implementation by the input's device: a loop
  of torch operations on the CPU, its native CUDA/Triton kernels on a GPU, so ``--device cuda``
  measures those with no other switch;
- the dense limit: T × the plain ReLU ANN's forward time on the same batch (and, as a second
  limit, T × the same ANN with weights and input channels-last, its fastest layout on a CPU);
- PASC and bit-plane: their time against their own steps × the ANN's forward time.

Peak memory (``--memory``): in a fresh subprocess that builds the network, the peak resident
set size of one simulation above the memory held before it (the peak is reset just before the
run, after what building the network freed is handed back), for T = 8 and 32: max-norm
(chunked, and in one chunk), qcfs, PASC with L = T levels (in batch pieces, and in one piece),
bit-plane with T = 4 and 8 bits (L = 2^T − 1), SpikingJelly (``--memory-kinds`` picks some).
With freed memory kept (``keep_freed_memory``, as the command line runs) the figure includes
what malloc kept and reuses, and varies by up to ~30% from run to run; ``--live-memory`` has
malloc map every block of 64 KiB and more and unmap it when freed, so that the resident size
follows the live tensors (repeatable to 1%).

    python benchmarks/speed.py                       # the table in BENCHMARKS.md
    python benchmarks/speed.py --device cuda --models vgg16,resnet18 --image-size 224 --batches 16,64
"""
from __future__ import annotations

import argparse
import copy
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
from common import machine, save, spikingjelly  # noqa: E402

import spikebridge as sb  # noqa: E402
from spikebridge import models  # noqa: E402
from spikebridge.device import resolve_device  # noqa: E402
from spikebridge.snn.network import CHUNK_TIMINGS, CHUNK_TRIES  # noqa: E402

TUNED = ("ours max-norm", "ours qcfs")  # rate-coded: time chunks tuned per shape (``ChunkTuner``)


def build(name: str, image_size: int, device) -> nn.Module:
    """A model with random weights and random BatchNorm statistics, in eval mode."""
    torch.manual_seed(0)
    model = models.create(name, num_classes=10, in_channels=3)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    return model.eval().to(device)


def timed(fn) -> float:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    with torch.no_grad():
        fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start


def contenders(relu: nn.Module, x: torch.Tensor, T: int) -> dict:
    """name -> (callable running one simulation of T steps, steps it counts as)."""
    ann2snn, functional = spikingjelly()
    calib = [x]
    ours = sb.convert(relu, "max-norm", T=T, calibration_data=calib)
    qann = sb.prepare(copy.deepcopy(relu), levels=8, threshold=1.0).to(x.device)
    qcfs = sb.convert(qann, "qcfs", T=T)
    pasc, bitplane = sb.convert(qann, "pasc"), sb.convert(qann, "bitplane")
    sj = ann2snn.FXConverter(recipe=ann2snn.recipes.RateCodingRecipe(calib, mode="max")).convert(
        copy.deepcopy(relu)).eval()
    functional.set_step_mode(sj, "m")

    def run_sj():
        functional.reset_net(sj)
        return sj(x.unsqueeze(0).expand(T, *x.shape)).mean(0)

    return {
        "ours max-norm": (lambda: ours.simulate(x, record=False), T),
        "ours qcfs": (lambda: qcfs.simulate(x, record=False), T),
        "SpikingJelly max": (run_sj, T),
        "ours pasc": (lambda: pasc.simulate(x, record=False), pasc.info["T_eff"]),
        "ours bitplane": (lambda: bitplane.simulate(x, record=False), bitplane.T),
    }


def measure(name: str, batch: int, Ts: list[int], rounds: int, image_size: int, device) -> list[dict]:
    relu = build(name, image_size, device)
    x = torch.randn(batch, 3, image_size, image_size, device=device)
    rows = []
    for T in Ts:
        runs = contenders(relu, x, T)
        runs["ReLU ANN"] = (lambda: relu(x), 1)
        if x.dim() == 4:  # the ANN as fast as it goes here: weights and input channels-last
            relu_cl, x_cl = copy.deepcopy(relu).to(memory_format=torch.channels_last), x.contiguous(
                memory_format=torch.channels_last)
            runs["ReLU ANN, channels-last"] = (lambda: relu_cl(x_cl), 1)
        for k, (fn, _) in runs.items():  # warm-up; ours until its chunk tuning has tried every chunk
            for _ in range(1 + len(CHUNK_TRIES) * CHUNK_TIMINGS if k in TUNED else 1):
                timed(fn)
        times = {k: [] for k in runs}
        for _ in range(rounds):  # interleaved rounds
            for k, (fn, _) in runs.items():
                times[k].append(timed(fn))
        med = {k: statistics.median(v) for k, v in times.items()}
        ann, ann_cl = med.pop("ReLU ANN"), med.pop("ReLU ANN, channels-last", None)
        row = {"model": name, "batch": batch, "T": T, "threads": torch.get_num_threads(), "device": str(device),
               "ann_s": ann, "ann_channels_last_s": ann_cl, "seconds": med,
               "ours_over_sj": med["ours max-norm"] / med["SpikingJelly max"],
               "over_dense_limit": {k: med[k] / (runs[k][1] * ann) for k in med},
               "over_channels_last_limit": None if ann_cl is None else {k: med[k] / (runs[k][1] * ann_cl) for k in med}}
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


PROBE = """
import ctypes, ctypes.util, gc, json, sys, torch
sys.path.insert(0, {bench!r})
import speed
import spikebridge as sb
if {live}:  # blocks of 64 KiB and more mapped when allocated, unmapped when freed: RSS follows the live tensors
    mallopt = ctypes.CDLL(ctypes.util.find_library("c")).mallopt
    assert mallopt(-4, 1 << 20) == 1 and mallopt(-3, 64 << 10) == 1  # M_MMAP_MAX, M_MMAP_THRESHOLD
relu = speed.build({name!r}, {size}, "cpu")
x = torch.randn({batch}, 3, {size}, {size})
kind, T = {kind!r}, {T}
if kind == "spikingjelly":
    ann2snn, functional = speed.spikingjelly()
    sj = ann2snn.FXConverter(recipe=ann2snn.recipes.RateCodingRecipe([x[:8]], mode="max")).convert(relu).eval()
    functional.set_step_mode(sj, "m")
    run = lambda: sj(x.unsqueeze(0).expand(T, *x.shape))
elif kind in ("ours", "ours-unchunked"):
    snn = sb.convert(relu, "max-norm", T=T, calibration_data=[x[:8]], max_samples=10_000)
    unchunked = kind == "ours-unchunked"  # one window of T steps over the whole batch
    run = lambda: snn.simulate(x, record=False, chunk=T if unchunked else None, batch_chunk=len(x) if unchunked else None)
else:  # qcfs at T steps (L = 8); PASC with L = T levels (T steps), also in one piece; bit-plane with T bits
    method = kind.removesuffix("-one-piece")
    levels = {{"qcfs": 8, "pasc": T, "bitplane": 2 ** T - 1}}[method]
    snn = sb.convert(sb.prepare(relu, levels=levels, threshold=1.0), method, T=T if method == "qcfs" else None)
    run = lambda: snn.simulate(x, record=False, batch_chunk=len(x) if kind.endswith("-one-piece") else None)
gc.collect()
ctypes.CDLL(ctypes.util.find_library("c")).malloc_trim(0)  # hand back what building the network freed and kept
before = speed.status_kib("VmRSS")
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # resets the peak resident set size (VmHWM) to the current one
with torch.no_grad():
    run()
print(json.dumps(speed.status_kib("VmHWM") - before))
"""


def status_kib(field: str) -> int:
    """A memory figure of this process from /proc/self/status (Linux), KiB."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


def peak_kib(name: str, batch: int, size: int, kind: str, T: int, live: bool = False) -> int:
    """Peak resident memory of one simulation above the process's memory before it (KiB); with
    ``live``, of its live tensors (no freed block kept by malloc)."""
    code = PROBE.format(bench=str(Path(__file__).parent), name=name, size=size, batch=batch, kind=kind, T=T,
                        live=live)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


KINDS = ("ours", "ours-unchunked", "qcfs", "pasc", "pasc-one-piece", "bitplane", "spikingjelly")


def memory(name: str, batch: int, size: int, Ts: list[int], kinds=KINDS, live: bool = False) -> dict:
    """Peak RSS (MiB) of one simulation above the memory held before it (the converted network,
    the input), in a fresh process each: the peak is reset just before the run (Linux
    /proc/self/clear_refs)."""
    steps = {"bitplane": [4, 8]}  # bit-plane's steps are its bits: T = 32 would be L = 2^32 - 1 levels
    return {kind: {T: peak_kib(name, batch, size, kind, T, live) / 1024 for T in steps.get(kind, Ts)}
            for kind in kinds}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="small_cnn,resnet20,vgg16,resnet18")
    p.add_argument("--batches", default="16,64")
    p.add_argument("--Ts", default="4,8,32")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--device", default="cpu")
    p.add_argument("--memory", default="", help="models to measure peak memory for (batch 64, T = 8 and 32)")
    p.add_argument("--live-memory", action="store_true",
                   help="--memory counts live tensors: malloc maps every block of 64 KiB and more and unmaps it when freed")
    p.add_argument("--memory-kinds", default=",".join(KINDS), help="which simulations --memory measures")
    p.add_argument("--name", default="speed", help="results file name under benchmarks/results/")
    args = p.parse_args()
    device = resolve_device(args.device)
    results = {"machine": machine(), "command": " ".join(sys.argv), "rows": [], "memory": {}}
    for name in [m for m in args.models.split(",") if m]:
        for batch in [int(b) for b in args.batches.split(",")]:
            results["rows"] += measure(name, batch, [int(t) for t in args.Ts.split(",")], args.rounds,
                                       args.image_size, device)
            save(args.name, results)
    for name in [m for m in args.memory.split(",") if m]:
        results["memory"][name] = memory(name, 64, args.image_size, [8, 32], args.memory_kinds.split(","),
                                         args.live_memory)
        print(name, results["memory"][name], flush=True)
        save(args.name, results)
    print(f"results: {save(args.name, results)}")


if __name__ == "__main__":
    main()
