"""Where a computation runs. Every function that moves data runs on the device of the network
it is given, or on ``device=`` when given (the network is moved there first); the CLI's
``--device`` defaults to CUDA when available, else the CPU."""
from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import itertools
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn

from .errors import OptionError, first_line


def resolve_device(device=None) -> torch.device:
    """None or "auto": CUDA when available, else the CPU; otherwise a torch device name
    ("cpu", "cuda", "cuda:1") or torch.device. CUDA where there is none is an OptionError."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise OptionError(f"unknown device {device!r} ({first_line(exc)}); use cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise OptionError(f"device {device} asked for, but CUDA is not available here; use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise OptionError(f"device {device} asked for, but this machine has {torch.cuda.device_count()} CUDA device(s)")
    return device


M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # glibc's mallopt parameters
TRIM_ABOVE = 1 << 30


@functools.cache  # process-wide: once per process is enough (the CLI's main may run many times)
def keep_freed_memory() -> bool:
    """CPU speed: have glibc's malloc serve every block from its heap and reuse what was freed,
    instead of mapping each large block afresh and unmapping it when freed; free heap is given
    back to the system only above 1 GiB.

    PyTorch's CPU tensors come from malloc. By default glibc maps every block above its
    dynamic threshold (128 KiB at first, 32 MiB at most) afresh and unmaps it when freed, so
    each new activation pays a page fault and a zeroed page per 4 KiB: a simulation or a
    forward pass allocates and frees its activations at every step. Measured, one thread:
    ResNet-20, batch 64, T = 8: 130 000 page faults per simulation, which ran in 0.49 s with
    glibc's defaults and 0.29 s with this setting (the ReLU ANN's 8 forward passes: 0.38 s and
    0.25 s; BENCHMARKS.md §9); three conv layers of 32–64 channels at batch 500 on 28x28
    images (activations of 50–100 MB, above any threshold; other work on the cores): 1.16
    million faults in 5 passes, 2.7 s against 0.85–0.88 s with no mapped blocks. The cost: the
    process keeps what it freed, so its resident memory stays at its peak, and that peak was
    19–28% higher (908–979 MiB against 765) on the second example. Process-wide, so the
    command line sets it; a Python program calls it itself. Returns False where malloc is not
    glibc's (nothing is changed); on CUDA it changes nothing that matters."""
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c")).mallopt
    except (OSError, AttributeError):  # no C library found, or one without mallopt
        return False
    return mallopt(M_MMAP_MAX, 0) == 1 and mallopt(M_TRIM_THRESHOLD, TRIM_ABOVE) == 1


CPU_CACHES = Path("/sys/devices/system/cpu/cpu0/cache")
SIZE_UNITS = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}


@functools.cache
def last_level_cache_bytes(caches: Path = CPU_CACHES) -> int:
    """The size of the largest-level data cache of CPU 0 as Linux reports it (sysfs; in a
    virtual machine, the host's, shared with its other guests), 0 where it is not reported."""
    sizes = {}
    for index in caches.glob("index*"):
        try:
            level, kind, size = ((index / f).read_text().strip() for f in ("level", "type", "size"))
            if kind != "Instruction":
                sizes[int(level)] = int(size[:-1]) * SIZE_UNITS[size[-1]] if size[-1] in SIZE_UNITS else int(size)
        except (OSError, ValueError):
            continue
    return sizes[max(sizes)] if sizes else 0


@contextlib.contextmanager
def single_thread() -> Iterator[None]:
    """torch's intra-op pool at one thread inside, restored after: for small tensor ops on a
    busy machine, where the pool costs more than it gains."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def module_device(module: nn.Module) -> torch.device:
    """The device of a module's first parameter or buffer (the CPU for an empty module)."""
    return next((t.device for t in itertools.chain(module.parameters(), module.buffers())), torch.device("cpu"))


def module_dtype(module: nn.Module, default: torch.dtype | None = None) -> torch.dtype | None:
    """The dtype of a module's first floating-point parameter (``default`` if it has none)."""
    return next((p.dtype for p in module.parameters() if p.is_floating_point()), default)


def place(module: nn.Module, device=None) -> torch.device:
    """Move ``module`` to ``device`` if given; return the device it is on."""
    if device is not None:
        module.to(resolve_device(device))
    return module_device(module)
