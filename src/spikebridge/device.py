"""Where a computation runs. Every function that moves data runs on the device of the network
it is given, or on ``device=`` when given (the network is moved there first); the CLI's
``--device`` defaults to CUDA when available, else the CPU."""
from __future__ import annotations

import torch
from torch import nn

from .errors import OptionError


def resolve_device(device=None) -> torch.device:
    """None or "auto": CUDA when available, else the CPU; otherwise a torch device name
    ("cpu", "cuda", "cuda:1") or torch.device. CUDA where there is none is an OptionError."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise OptionError(f"unknown device {device!r} ({str(exc).splitlines()[0]}); use cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise OptionError(f"device {device} asked for, but CUDA is not available here; use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise OptionError(f"device {device} asked for, but this machine has {torch.cuda.device_count()} CUDA device(s)")
    return device


def module_device(module: nn.Module) -> torch.device:
    """The device of a module's first parameter or buffer (the CPU for an empty module)."""
    return next((t.device for t in (*module.parameters(), *module.buffers())), torch.device("cpu"))


def place(module: nn.Module, device=None) -> torch.device:
    """Move ``module`` to ``device`` if given; return the device it is on."""
    if device is not None:
        module.to(resolve_device(device))
    return module_device(module)
