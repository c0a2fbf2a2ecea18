"""What several subcommands share: argument types and groups (the work itself is in spikebridge.pipeline).

Numbers are checked where they are parsed: counts (images, epochs, batch sizes, limits) are
integers >= 1 (``count``; worker processes may be 0), rates and thresholds are finite numbers
> 0 (``positive``) or >= 0 (``non_negative``). A bad value is a one-line usage error (exit 2)
before any data is loaded or any model trained.
"""
from __future__ import annotations

import argparse
import math

from ..errors import SpikeBridgeError


def count(text: str) -> int:
    """An integer >= 1 (images, epochs, batch sizes, limits)."""
    return _int(text, 1)


def count_or_zero(text: str) -> int:
    """An integer >= 0 (worker processes, optional image counts)."""
    return _int(text, 0)


def _int(text: str, minimum: int) -> int:
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or value < minimum:
        raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {text!r}")
    return value


def positive(text: str) -> float:
    """A finite number > 0 (learning rates, thresholds, step sizes)."""
    return _float(text, strict=True)


def non_negative(text: str) -> float:
    """A finite number >= 0 (momentum, weight decay, regulariser weights)."""
    return _float(text, strict=False)


def _float(text: str, strict: bool) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0 or (strict and value == 0):
        raise argparse.ArgumentTypeError(f"expected a finite number {'>' if strict else '>='} 0, got {text!r}")
    return value


def int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise SpikeBridgeError(f"expected positive integers separated by commas, e.g. 1,2,4,8; got {text!r}")
    return values


def add_data_arguments(p, images_help: str = "use only the first N test images") -> None:
    p.add_argument("--dataset", default=None, help="dataset (default: the one the checkpoint was trained on)")
    p.add_argument("--data-root", default=None, metavar="DIR", help="where the dataset files are")
    p.add_argument("--batch-size", type=count, default=256, help="images per simulated batch (default: %(default)s)")
    p.add_argument("--limit", type=count, default=None, metavar="N", help=images_help + " (default: all)")


def add_method_arguments(p, method_required: bool, method_help: str, single_T: bool = True) -> None:
    """--method, --T (one int; commands that report several T declare their own) and every
    method option (flags generated from the method records)."""
    from ..conversion.registry import add_option_arguments

    p.add_argument("--method", required=method_required, default=None, help=method_help)
    if single_T:
        p.add_argument("--T", type=count, default=None,
                       help="timesteps (each method's time policy says which it accepts; default: the method's)")
    add_option_arguments(p)


def method_options(args) -> dict:
    """The method options given on the command line, checked against --method's record."""
    from ..conversion.registry import get_method, options_from_arguments

    return options_from_arguments(args, get_method(args.method)) if args.method else {}


def add_device_argument(p) -> None:
    p.add_argument("--device", default="auto",
                   help="cpu, cuda or cuda:N (default: auto, CUDA when available, else the CPU)")
