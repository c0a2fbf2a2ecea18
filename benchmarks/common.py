"""Shared by the benchmark scripts: train-or-reuse models, test loaders, machine description."""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

from spikebridge.device import keep_freed_memory
from spikebridge.pipeline import loader, train_or_reuse
from spikebridge.train.checkpoint import load_checkpoint
from spikebridge.train.loop import TrainConfig

RESULTS = Path(__file__).parent / "results"
ALLOCATOR_TUNED = keep_freed_memory()  # as the command line does (spikebridge.device)


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    return (f"{os.cpu_count()} CPU cores ({cpu}), torch {torch.__version__} "
            f"({torch.get_num_threads()} threads), python {platform.python_version()}"
            + (", glibc malloc keeps freed blocks (keep_freed_memory)" if ALLOCATOR_TUNED else ""))


def timing_run(doc: str, rounds: int, name: str | None = None, **header) -> tuple[argparse.Namespace, dict]:
    """The start of a script that times kernels (``doc`` its help): ``--rounds`` of interleaved
    medians (and ``--name`` of its results, default ``name``, where given), one torch thread,
    seed 0; returns the arguments and the results' header (machine, command and ``header``)."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=rounds)
    if name is not None:
        p.add_argument("--name", default=name, help="results file name (default: %(default)s)")
    args = p.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    return args, {"machine": machine(), "command": " ".join(sys.argv), **header}


def model_benchmark_parser(doc: str, name: str, rounds: int = 3, batches: str | None = None) -> argparse.ArgumentParser:
    """The options of a script timing the random-weight CIFAR-style models (benchmarks/speed.py
    ``build``): ``--models``, ``--rounds`` of interleaved medians and ``--name`` of its results
    (and ``--batches``, default ``batches``, where given: ``measure_models``)."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="small_cnn,resnet20,vgg16,resnet18")
    p.add_argument("--rounds", type=int, default=rounds)
    p.add_argument("--name", default=name, help="results file name (default: %(default)s)")
    if batches is not None:
        p.add_argument("--batches", default=batches)
    return p


def measure_models(args: argparse.Namespace, measure, **header) -> None:
    """The rows ``measure(model, batch)`` returns for each of ``--models`` and ``--batches`` in
    turn, one torch thread, saved under ``--name`` after each (with the machine, the command
    and ``header``)."""
    torch.set_num_threads(1)
    results = {"machine": machine(), "command": " ".join(sys.argv), **header, "rows": []}
    for name in args.models.split(","):
        for batch in [int(b) for b in args.batches.split(",")]:
            results["rows"] += measure(name, batch)
            save(args.name, results)
    print(f"results: {save(args.name, results)}")


def spikingjelly():
    """SpikingJelly 2.0's ann2snn and functional modules, installed on first use (without its
    dependencies, which would pull in torchaudio; it needs loguru, requests, tqdm, scipy)."""
    try:
        from spikingjelly.activation_based import ann2snn, functional
    except ImportError:
        pip = [sys.executable, "-m", "pip", "install", "-q"]
        subprocess.run(pip + ["--no-deps", "spikingjelly==2.0.0"], check=True)
        subprocess.run(pip + ["loguru", "requests", "tqdm", "scipy"], check=True)
        from spikingjelly.activation_based import ann2snn, functional
    return ann2snn, functional


def trained(out: str, **config) -> tuple[torch.nn.Module, dict]:
    """Train into ``out`` (resuming or reusing a finished run) and return (model, checkpoint)."""
    model, last, _ = train_or_reuse(TrainConfig(out=out, resume=True, **config), progress=False)
    return model, load_checkpoint(last)


MODEL = {"model": "small_cnn", "model_kwargs": {"width": 16}}


def relu_model(runs: str, epochs: int):
    """The benchmarks' ReLU small CNN (width 16), trained with the default recipe."""
    return trained(f"{runs}/relu", **MODEL, levels=None, epochs=epochs, seed=0)


def qcfs_model(runs: str, levels: int, epochs: int, relu_epochs: int):
    """QCFS at ``levels``, fine-tuned from the ReLU model (001 A.9; θ from the 99.9th
    percentile of each site's ReLU output)."""
    relu_model(runs, relu_epochs)
    return trained(f"{runs}/qcfs_L{levels}", init_from=f"{runs}/relu/last.pt", levels=levels, epochs=epochs, seed=0)


def test_loader(batch_size: int = 500, limit: int | None = None, split: str = "test"):
    return loader("fashion-mnist", None, split, batch_size=batch_size, limit=limit)


def timed(fn, repeat: int = 3) -> float:
    """Best-of-``repeat`` wall time of fn() in seconds (after one warm-up call)."""
    fn()
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def save(name: str, payload: dict) -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2, default=str))
    return path
