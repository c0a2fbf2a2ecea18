"""The `spikebridge` command: one entry point, one module per subcommand.

Each subcommand module defines ``add_parser(subparsers)`` (which sets ``func``) and the
function it runs. A SpikeBridgeError ends the command with its one-line message, exit 2.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from ..device import resolve_device
from ..errors import SpikeBridgeError

# Subcommand modules, in the order of the pipeline.
COMMANDS = ["demo", "train", "al", "convert", "calibrate", "finetune", "evaluate", "verify", "report", "export"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="spikebridge", description="ANN-to-SNN conversion with few timesteps.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"{__name__}.{name}").add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if getattr(args, "device", None) is not None:  # checked before any file is read
            args.device = resolve_device(args.device)
        return args.func(args) or 0
    except SpikeBridgeError as exc:
        print(f"spikebridge {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"spikebridge {args.command}: interrupted", file=sys.stderr)
        return 130
