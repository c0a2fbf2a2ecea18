"""Multi-GPU / multi-node training through torchrun and DistributedDataParallel.

Launch any spikebridge training with ``torchrun --nproc_per_node N -m spikebridge train ...``
(or ``python -m torch.distributed.run``). torchrun sets WORLD_SIZE, RANK and LOCAL_RANK;
``init_from_env()`` then joins the process group (NCCL on CUDA, gloo on CPU). Each rank
trains on its shard of every epoch; only rank 0 writes checkpoints, logs and progress bars.
Without WORLD_SIZE > 1 every function here is a cheap single-process no-op.
Multi-node: ``--out`` must be on a filesystem every node sees, since ``--resume`` makes all
ranks read rank 0's checkpoint.
"""
from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import Dataset, Subset

from ..device import resolve_device


def init_from_env(device=None) -> torch.device:
    """Join the torchrun process group if WORLD_SIZE > 1; return this process's device:
    ``device`` if given ("cpu", "cuda", "auto"; plain "cuda" means cuda:LOCAL_RANK), by
    default cuda:LOCAL_RANK when CUDA is available, else the CPU."""
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", local_rank)
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.set_device(device)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    return device


def is_distributed() -> bool:
    """True inside an initialised process group of more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def is_main() -> bool:
    """True on rank 0 (the process that writes files and shows progress)."""
    return rank() == 0


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def wrap(model: nn.Module, device: torch.device) -> nn.Module:
    """DistributedDataParallel around ``model`` when distributed, else ``model`` itself.
    DDP broadcasts rank 0's weights and buffers (BatchNorm statistics) so all ranks agree."""
    if not is_distributed():
        return model
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module inside a DistributedDataParallel wrapper."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def all_reduce_sum(values, device: torch.device | str = "cpu") -> list[float]:
    """Sum a list of numbers over all ranks (float64; returns the list unchanged when single)."""
    values = [float(v) for v in values]
    if not is_distributed():
        return values
    if dist.get_backend() == "nccl":
        device = torch.device("cuda", torch.cuda.current_device())
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.tolist()


def shard(dataset: Dataset) -> Dataset:
    """This rank's every-world_size-th item (no padding or repeats, unlike DistributedSampler),
    for evaluation whose counts are then summed with ``all_reduce_sum``."""
    if not is_distributed():
        return dataset
    return Subset(dataset, range(rank(), len(dataset), world_size()))


def cleanup() -> None:
    """Leave the process group (call once at the end of a torchrun job)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
