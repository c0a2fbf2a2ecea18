"""Shared fixtures. Tests are grouped by pipeline stage (tests/<stage>/); ``helpers`` (small
real networks and data) lives beside this file and is importable from every stage."""
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

from spikebridge.device import keep_freed_memory  # noqa: E402

keep_freed_memory()  # as the command line does: freed CPU tensors are reused, not faulted in again


@pytest.fixture
def one_thread():
    """One torch thread: on a loaded 2-core machine two threads are several times slower."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)
