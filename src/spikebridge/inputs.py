"""What a network takes as input, checked once for ``simulate``, ``verify`` and calibration.

A network takes floating-point batches [B, ...] of its own dtype. Where the input reaches a
conv or linear layer directly, its shape is known too: Conv3d [B, C_in, D, H, W], Conv2d [B, C_in, H, W], Conv1d
[B, C_in, L], Linear [B, ..., in_features]; a network whose input is looked up in an
embedding (a text model) takes int64 token ids [B, tokens]. Anything else (a tensor of another dtype, a
missing batch dimension, other channels, NaN or inf) is a one-line InputError that says what
was given and what the network takes, raised before any layer runs. Data given as a tensor
[N, ...] is split into batches; otherwise it is an iterable of x or (x, y) batches.
"""
from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import fx, nn

from .errors import InputError, first_line

RANKS = {nn.Conv1d: 3, nn.Conv2d: 4, nn.Conv3d: 5}


@dataclass(frozen=True)
class InputSpec:
    dtype: torch.dtype
    rank: int | None = None       # dimensions of a batch, where known
    channels: int | None = None   # size of dim 1 (conv) where known
    features: int | None = None   # size of the last dim (linear) where known
    vocabulary: int | None = None  # token ids are below it (an embedding reads the input)

    def describe(self) -> str:
        if self.vocabulary is not None:
            return f"[B, tokens] int64 token ids below {self.vocabulary}"
        if self.channels is not None:
            shape = f"[B, {self.channels}, {({3: 'L', 4: 'H, W', 5: 'D, H, W'})[self.rank]}]"
        elif self.features is not None:
            shape = f"[B, ..., {self.features}]"
        else:
            shape = "[B, ...]"
        return f"{shape} {str(self.dtype).removeprefix('torch.')} batches"

    def check(self, x, who: str) -> torch.Tensor:
        """``x`` if it fits, else an InputError naming ``who`` received what."""
        takes = f"the network takes {self.describe()}"
        if not isinstance(x, torch.Tensor):
            raise InputError(f"{who} got a value of type {type(x).__name__}, not a tensor; {takes}")
        given = f"input of shape {tuple(x.shape)} and dtype {str(x.dtype).removeprefix('torch.')}"
        if x.dtype != self.dtype:
            fix = "convert the input with x.to(" + str(self.dtype) + ")"
            raise InputError(f"{who} got {given}; {takes} ({fix})")
        if x.dim() < 2 or (self.rank is not None and x.dim() != self.rank):
            raise InputError(f"{who} got {given}; {takes} (a batch: x.unsqueeze(0) for one sample)")
        if x.shape[0] == 0:
            raise InputError(f"{who} got an empty batch ({given})")
        if (self.channels is not None and x.shape[1] != self.channels) or \
                (self.features is not None and x.shape[-1] != self.features):
            raise InputError(f"{who} got {given}; {takes} (another dataset or model?)")
        if self.vocabulary is not None and (x.min() < 0 or x.max() >= self.vocabulary):
            raise InputError(f"{who} got token ids outside 0..{self.vocabulary - 1} ({given})")
        if x.is_floating_point() and not torch.isfinite(x).all():
            raise InputError(f"{who} got {given} that contains NaN or inf")
        return x


def input_spec(gm: fx.GraphModule) -> InputSpec:
    """The InputSpec of a traced network: its dtype (that of its first floating-point parameter
    or buffer) and, where the input feeds a conv or linear layer directly, its shape."""
    dtype = next((t.dtype for t in itertools.chain(gm.parameters(), gm.buffers()) if t.is_floating_point()),
                 torch.get_default_dtype())
    placeholder = next((n for n in gm.graph.nodes if n.op == "placeholder"), None)
    users = [u for u in placeholder.users if u.op == "call_module"] if placeholder is not None else []
    layers = [gm.get_submodule(u.target) for u in users]
    for layer in layers:
        for kind, rank in RANKS.items():
            if type(layer) is kind:
                return InputSpec(dtype, rank, channels=layer.in_channels)
        if type(layer) is nn.Linear:
            return InputSpec(dtype, features=layer.in_features)
        if type(layer) is nn.Embedding:
            return InputSpec(torch.long, rank=2, vocabulary=layer.num_embeddings)
    return InputSpec(dtype)


def batches(data, batch_size: int, who: str) -> Iterator:
    """The x of each batch: a tensor [N, ...] split into batches of ``batch_size``, or the items
    of an iterable of x or (x, y) batches."""
    if data is None:
        raise InputError(f"{who} got no data: pass a tensor [N, ...] or an iterable of x or (x, y) batches")
    if isinstance(data, torch.Tensor):
        yield from data.split(batch_size)
        return
    try:
        items = iter(data)
    except TypeError:
        raise InputError(f"{who} got a value of type {type(data).__name__}: pass a tensor [N, ...] or an iterable of "
                         "x or (x, y) batches") from None
    for item in items:
        yield item[0] if isinstance(item, (tuple, list)) else item


def example_input(data=None, input_shape=None) -> torch.Tensor | None:
    """An input batch to trace a model whose forward pass reads its input's shape
    (``ann.tracing.trace``): the first x of ``data`` (not of a one-shot iterator, which it
    would consume), else zeros of ``input_shape`` (one sample's shape), else None."""
    if data is not None and not isinstance(data, Iterator):
        x = next(batches(data, 2, "calibration"), None)
        if isinstance(x, torch.Tensor):
            return x
    return None if input_shape is None else torch.zeros(1, *input_shape)


def run_on(model: nn.Module, x: torch.Tensor, spec: InputSpec, who: str = "calibration"):
    """``model(x)``, torch's error on a batch the model cannot take (a shape no layer accepts)
    becoming a one-line InputError that says what the model takes."""
    try:
        return model(x)
    except (RuntimeError, ValueError, IndexError) as exc:
        raise InputError(f"{who} batch of shape {tuple(x.shape)} does not fit the model ({first_line(exc)}); "
                         f"the model takes {spec.describe()}") from None
