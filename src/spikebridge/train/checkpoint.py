"""ANN checkpoints: written atomically, read back safely, turned back into a model.

A checkpoint is a dict of plain types and tensors (so ``torch.load(weights_only=True)``
reads it and nothing in it can run code)::

    {"format": "spikebridge-ann", "version": 1,
     "model": {"name", "num_classes", "in_channels" or (text) "vocab_size", "max_len", **kwargs},  # models.create(**spec)
     "dataset": "fashion-mnist",
     "levels": {site: L} or None (plain ReLU ANN),
     "thresholds": {site: float or [float per channel]},
     "state_dict", "optimizer", "scheduler",
     "epoch": completed epochs, "args": training arguments (seed included), "metrics": [...]}

Training resumes exactly from the seed and epoch alone: data order and augmentation depend
only on (seed, epoch) and the global RNG is re-seeded from (seed, epoch, rank) every epoch.
"""
from __future__ import annotations

import glob
import os
import pickle
import tempfile
import warnings
import zipfile
from pathlib import Path

import torch
from torch import nn

from ..errors import CheckpointError, SpikeBridgeError

FORMAT = "spikebridge-ann"
VERSION = 1


def save_checkpoint(path, payload: dict) -> None:
    """Write ``payload`` to ``path`` atomically (see ``atomic_write``)."""
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            torch.save(payload, f)

    atomic_write(path, write)


def atomic_write(path, write) -> None:
    """``write(tmp)`` into a temporary file in the same directory, fsync it, rename it over
    ``path``. A crash leaves either the old file or the new one, never a partial file under
    ``path``; the temporary files such crashes leave (".<name>.*.tmp") are removed by the next
    write of ``path``. ``write`` gets a path ending in ".tmp": writers that infer a format from
    the extension must name it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for orphan in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        orphan.unlink(missing_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    """Make the rename itself durable (POSIX); a no-op where directories cannot be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def load_checkpoint(path) -> dict:
    """Read a spikebridge ANN checkpoint; a missing, unreadable or foreign file raises a
    one-line CheckpointError."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path} is a directory; pass a checkpoint file written by 'spikebridge train' "
                              "(e.g. its OUT/last.pt)")
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        with warnings.catch_warnings():  # torch warns about odd pickles before refusing them
            warnings.simplefilter("ignore", UserWarning)
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, zipfile.BadZipFile, RuntimeError, EOFError, ValueError, TypeError,
            AttributeError, ImportError, IndexError, KeyError, OSError) as exc:
        raise CheckpointError(f"{path} is not a readable spikebridge ANN checkpoint: {_why_unreadable(path, exc)}; "
                              "use a file written by 'spikebridge train'") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise CheckpointError(f"{path} is not a spikebridge ANN checkpoint (format: {found!r})")
    if payload.get("version") != VERSION:
        raise CheckpointError(f"{path} has checkpoint version {payload.get('version')!r}; this spikebridge reads {VERSION}")
    return payload


def _why_unreadable(path: Path, exc: Exception) -> str:
    """What is wrong with a file torch.load refused, in the user's terms (torch's own message
    names its internals: pickle opcodes, memo values, weights_only advice)."""
    if isinstance(exc, PermissionError):
        return "permission denied"
    if isinstance(exc, IsADirectoryError):
        return "it is a directory"
    if path.stat().st_size == 0:
        return "the file is empty"
    if not zipfile.is_zipfile(path):
        return "it is not a torch checkpoint (not a zip archive), or it is truncated"
    if isinstance(exc, pickle.UnpicklingError) and "weights_only" in str(exc):
        return "it holds objects other than tensors and plain data, which spikebridge does not load"
    return "the file is truncated or corrupt"


def thresholds_of(model: nn.Module) -> dict:
    """{site: θ} of a prepared model: a float, or a list for channel-wise thresholds."""
    from ..ann.prepare import sites

    return {name: m.threshold.detach().cpu().tolist() for name, m in sites(model).items()}


def model_from_checkpoint(ckpt_or_path) -> nn.Module:
    """Rebuild the trained model of a checkpoint (dict or path), in eval mode on the CPU:
    ``models.create(**spec)``, ``prepare(levels=...)`` for QCFS ANNs, then the weights."""
    from .. import models
    from ..ann.prepare import prepare

    ckpt = ckpt_or_path if isinstance(ckpt_or_path, dict) else load_checkpoint(ckpt_or_path)
    name = ckpt["model"]["name"]
    try:
        model = models.create(**ckpt["model"])
    except SpikeBridgeError as exc:
        raise CheckpointError(f"the model this checkpoint records cannot be built ({exc}): it was written for a "
                              "different model or by another spikebridge version") from None
    different = (f"this checkpoint is for a different model than {name!r} (its recorded model was changed, or "
                 "it was written by another spikebridge version); use the model it was trained as")
    if ckpt["levels"]:
        channel_wise = any(isinstance(t, list) for t in ckpt["thresholds"].values())
        try:
            model = prepare(model, levels=ckpt["levels"], channel_wise=channel_wise,
                            as_relu=(ckpt.get("args") or {}).get("as_relu", []))
        except SpikeBridgeError:  # its QCFS sites are not this model's
            raise CheckpointError(different) from None
    try:
        model.load_state_dict(ckpt["state_dict"])
    except RuntimeError:
        raise CheckpointError(different) from None
    model.spikebridge_spec = dict(ckpt["model"])
    return model.eval()


def load_ann(path) -> nn.Module:
    """The trained ANN (QCFS or ReLU) saved at ``path`` by ``spikebridge train``, in eval mode."""
    return model_from_checkpoint(path)
