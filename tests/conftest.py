"""Shared fixtures. Tests are grouped by pipeline stage (tests/<stage>/); ``helpers`` (small
real networks and data) lives beside this file and is importable from every stage."""
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from spikebridge.device import keep_freed_memory, single_thread  # noqa: E402

keep_freed_memory()  # as the command line does: freed CPU tensors are reused, not faulted in again


@pytest.fixture
def one_thread():
    """One torch thread (spikebridge.device.single_thread)."""
    with single_thread():
        yield
