"""The `spikebridge` command: one entry point, one module per subcommand.

Each subcommand module defines ``add_parser(subparsers)`` (which sets ``func``) and the
function it runs. A SpikeBridgeError, or a bad command line, ends the command with one line
on stderr and exit 2. Warnings print as one plain line on stderr, ``spikebridge COMMAND:
warning: MESSAGE`` (no file names or source lines: they are meant for the person running the
command).
"""
from __future__ import annotations

import argparse
import importlib
import sys
import warnings

from ..device import keep_freed_memory, resolve_device
from ..errors import SpikeBridgeError

# Subcommand modules, in the order of the pipeline.
COMMANDS = ["demo", "train", "al", "convert", "calibrate", "finetune", "evaluate", "verify", "report", "export"]


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line (argparse prints the usage first)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="spikebridge", description="ANN-to-SNN conversion with few timesteps.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"{__name__}.{name}").add_parser(sub)
    return parser


def warning_line(command: str, message) -> str:
    """A warning as the command line prints it: one line, the message only."""
    text = " ".join(str(message).split())
    return f"spikebridge {command}: warning: {text}"


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SpikeBridgeError as exc:  # raised by an argument type
        print(f"spikebridge: error: {exc}", file=sys.stderr)
        return 2
    except SystemExit as exc:  # --help, or a usage error already printed
        return exc.code if isinstance(exc.code, int) else 2
    keep_freed_memory()  # CPU tensors reuse freed blocks: no page fault per activation (device.py)
    shown: set[str] = set()

    def show(message, category, filename, lineno, file=None, line=None):
        text = warning_line(args.command, message)
        if text not in shown:  # the same message from several call sites prints once
            shown.add(text)
            print(text, file=sys.stderr, flush=True)

    try:
        if getattr(args, "device", None) is not None:  # checked before any file is read
            args.device = resolve_device(args.device)
        with warnings.catch_warnings():
            warnings.showwarning = show
            return args.func(args) or 0
    except SpikeBridgeError as exc:
        print(f"spikebridge {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"spikebridge {args.command}: interrupted", file=sys.stderr)
        return 130
