"""sb.save / sb.load for SpikingNetworks.

The file holds the whole network (its fx graph, neurons, buffers such as FTBC biases) so it
loads in a fresh process without the original model class. It is a pickle: load only
files you trust, as with any torch.save file that holds modules.
"""
from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import torch

from ..train.checkpoint import save_checkpoint
from ..errors import CheckpointError
from ..snn.network import SpikingNetwork

FORMAT = "spikebridge-snn"
VERSION = 1


def save(snn: SpikingNetwork, path) -> None:
    """Write ``snn`` to ``path`` atomically."""
    if not isinstance(snn, SpikingNetwork):
        raise TypeError(f"sb.save expects a SpikingNetwork, got {type(snn).__name__}")
    save_checkpoint(path, {"format": FORMAT, "version": VERSION, "network": snn})


def load(path, map_location="cpu") -> SpikingNetwork:
    """Read a network written by ``save``; anything else is a one-line CheckpointError."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"SNN file {path} does not exist")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=False)
    except (pickle.UnpicklingError, zipfile.BadZipFile, RuntimeError, EOFError, ValueError,
            AttributeError, ImportError, ModuleNotFoundError, OSError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise CheckpointError(f"{path} is not a readable spikebridge SNN file ({first[:200]})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a spikebridge SNN file (an ANN checkpoint? run "
                              "'spikebridge convert CKPT --method ... -o SNN' first)")
    return payload["network"].eval()

