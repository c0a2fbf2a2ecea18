"""Randomness seeded for one computation, leaving the caller's random state as it was."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def cpu_seeded(seed: int) -> Iterator[None]:
    """Run the body with torch's CPU generator seeded to ``seed``; its state is restored after.
    Only the CPU generator: ``torch.manual_seed`` also seeds every CUDA generator (before CUDA
    starts, it queues that seed for when it does, in place of the caller's own), which
    ``fork_rng(devices=[])`` does not restore."""
    with torch.random.fork_rng(devices=[]):
        torch.random.default_generator.manual_seed(seed)
        yield
