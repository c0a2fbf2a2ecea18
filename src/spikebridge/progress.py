"""Progress of long loops (training epochs, calibration, simulation over a test set, FTBC,
fine-tuning), the one place the package decides how progress is shown.

On a terminal (stdout and stderr both TTYs) a loop gets a tqdm bar that disappears when it
is done. Anywhere else, e.g. ``spikebridge demo > demo.log 2>&1``, a bar would be either
invisible or a stream of carriage returns, so the loop writes one plain line to stdout every
``SPIKEBRIDGE_PROGRESS_SECONDS`` seconds (default 30; 0: after every item), and a last line
when it ends, unless it ended within half that time of its previous line (or, having written
none, within that time):

    simulate qcfs: 3/4 batches (75%), 0:41 elapsed, ~0:14 left  loss=0.4187

``set_postfix`` works on both (the log line shows the values of the latest call).
"""
from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable, Iterator

ENV_SECONDS = "SPIKEBRIDGE_PROGRESS_SECONDS"
DEFAULT_SECONDS = 30.0


def interval() -> float:
    """Seconds between two log lines (``SPIKEBRIDGE_PROGRESS_SECONDS``, default 30)."""
    try:
        return max(0.0, float(os.environ.get(ENV_SECONDS, DEFAULT_SECONDS)))
    except ValueError:
        return DEFAULT_SECONDS


def on_terminal() -> bool:
    return sys.stdout.isatty() and sys.stderr.isatty()


def progress(iterable: Iterable, desc: str, enabled: bool = True, total: int | None = None, unit: str = "batches"):
    """``iterable`` wrapped to show its progress (a tqdm bar on a terminal, periodic lines in a
    log, nothing when not ``enabled``); iterate it as the original, call ``set_postfix``."""
    if not enabled:
        return _Silent(iterable)
    if on_terminal():
        from tqdm.auto import tqdm

        return tqdm(iterable, desc=desc, total=total, leave=False, dynamic_ncols=True)
    return LogProgress(iterable, desc, total, unit)


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"


class _Silent:
    def __init__(self, iterable):
        self.iterable = iterable

    def __iter__(self):
        return iter(self.iterable)

    def set_postfix(self, *args, **kwargs):
        pass

    def close(self):
        pass


class LogProgress:
    """Plain progress lines for a log file: at most one every ``interval()`` seconds."""

    def __init__(self, iterable: Iterable, desc: str, total: int | None = None, unit: str = "batches",
                 every: float | None = None, file=None):
        self.iterable, self.desc, self.unit = iterable, desc, unit
        if total is None:
            try:
                total = len(iterable)  # type: ignore[arg-type]
            except TypeError:
                total = None
        self.total = total
        self.every = interval() if every is None else every
        self.file = file
        self.postfix: dict = {}
        self.n = 0
        self.lines = 0

    def set_postfix(self, ordered_dict=None, **kwargs):
        self.postfix = {**(ordered_dict or {}), **kwargs}

    def close(self):
        pass

    def line(self, elapsed: float, done: bool = False) -> str:
        count = f"{self.n}/{self.total} {self.unit}" if self.total else f"{self.n} {self.unit}"
        text = f"{self.desc}: {count}"
        if self.total:
            text += f" ({100 * self.n / self.total:.0f}%)"
        text += f", {_clock(elapsed)} elapsed"
        if self.total and self.n and not done:
            text += f", ~{_clock(elapsed * (self.total - self.n) / self.n)} left"
        elif done:
            text += ", done"
        if self.postfix:
            text += "  " + " ".join(f"{k}={v}" for k, v in self.postfix.items())
        return text

    def _write(self, text: str) -> None:
        out = self.file or sys.stdout
        print(text, file=out, flush=True)
        self.lines += 1

    def __iter__(self) -> Iterator:
        start = last = time.perf_counter()
        for item in self.iterable:
            yield item
            self.n += 1
            now = time.perf_counter()
            if now - last >= self.every and (self.total is None or self.n < self.total):
                self._write(self.line(now - start))
                last = now
        now = time.perf_counter()
        if now - last >= (self.every / 2 if self.lines else self.every):  # not right after a line
            self._write(self.line(now - start, done=True))
