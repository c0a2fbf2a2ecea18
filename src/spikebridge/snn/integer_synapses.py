"""Integer synapses: a synaptic layer whose input is a train of spikes, computed in integer
arithmetic on the CPU (docs/architecture.md "Integer synapses"; BENCHMARKS.md §9).

A train whose every entry is an integer k times a value ``a`` (one ``a_c`` per channel) is
x = a·k: spikes, k ∈ {0, 1}, of θ for rate-coded IF and θ/L for PASC, and bit t of bit-plane,
θ/L times k = 2^(n−1−t) (``SpikingNeuron.spike_grid``); after an average pooling of one divisor
d (``Op.spike_average``), a/d times a count. So W·x = (W·a)·k. Each output channel o of W' = W·a (the product
exact in float64) is written on the fixed-point grid g_o = 2^(E_o − 22), E_o the binary exponent
of max|W'_o| (max|W'_o| = f·2^E_o, f ∈ [½, 1)): m = round(W'/g_o), |m| ≤ 2^22, as three int8
digits m = d_0·2^16 + d_1·2^8 + d_2 (d_1, d_2 ∈ [−128, 127], |d_0| ≤ 64). oneDNN sums k·d_p in
int32, exactly; each sum times g_o·2^(8(2−p)), a power of two, is exact while the sum is below
2^24 (K·n < 2^17 inputs), and the three are added in float32 with the bias. So the result is the
exact sum over the grid's weights rounded at most three times, where a float32 kernel rounds at
each of its K additions; each weight is off W' by at most g_o/2 ≤ 2^−22·max|W'_o|, and a weight
on the grid (small integers, dyadic fractions) is exact. The integer sums, and so the bits, do
not depend on the batch size or the order of summation: a window's steps folded into the batch
give the bits of a call per step.

A Conv2d runs as oneDNN's int8 convolution, or, where its output has at most
``WINDOWS_PIXELS`` pixels per image or its kernel is 1x1, as an int8 matrix product over its
unfolded windows (the convolution's fixed cost per call dominates there). A Linear is an int8
matrix product.

``worthwhile`` (the "auto" rule): on a CPU with int8 matrix units (AMX), layers whose every
output sums K ≥ ``MIN_FAN_IN`` inputs into at least ``MIN_OUTPUTS`` channels. Measured per call
on 2 cores, one thread (``benchmarks/integer_synapses.py``, BENCHMARKS.md §9), integer time over
float32 time: 0.24–1.12 (median 0.37; above 1 only for 64 channels at 8x8 with one image) for
the 136 calls the rule takes, 0.78–10 (median 1.47) for the 88 it leaves in float32 (K = 288:
0.78–1.55; K ≤ 256 and 10-way classifiers: 0.92–10).
"""
from __future__ import annotations

import functools
import weakref

import torch
import torch.nn.functional as F
from torch import nn

GRID_BITS = 22        # m = W'/g, |m| ≤ 2^22: three int8 digits (the first within ±64)
MIN_FAN_IN = 512      # inputs summed per output (C_in/groups·k_h·k_w, or in_features)
MIN_OUTPUTS = 64      # output channels (features)
WINDOWS_PIXELS = 16   # a convolution with at most this many output pixels per image runs on unfolded windows
MAX_COUNT = 255       # inputs k·a with k in 0..MAX_COUNT (uint8)
PACKING_ELEMENTS = 1 << 18  # float64 weights worked on at once while packing
MODES = ("auto", "always", "never")  # SpikingNetwork.integer_synapses


def fixed_point_grid(weight: torch.Tensor) -> torch.Tensor | None:
    """The grid g [O] (float64) of W's rows (float64, output channels first): 2^(E − 22), E the
    binary exponent of the row's largest |weight|. None where a channel's smallest digit scale
    g would fall below float32's normal range (its largest weight below 2^−104)."""
    peak = weight.reshape(weight.shape[0], -1).abs().amax(1)
    grid = torch.ldexp(torch.ones_like(peak), torch.frexp(peak)[1] - GRID_BITS)
    return None if (grid[peak > 0] < 2.0 ** -126).any() else grid


def fixed_point_digits(weight: torch.Tensor, grid: torch.Tensor | None = None
                       ) -> tuple[list[torch.Tensor], torch.Tensor] | None:
    """W (float64, output channels first) as three int8 digit tensors of W's shape and the
    grid g [O] (``fixed_point_grid`` unless given): W ≈ g·(d_0·2^16 + d_1·2^8 + d_2), exact for
    every weight on the grid. None where W has no such grid."""
    grid = fixed_point_grid(weight) if grid is None else grid
    if grid is None:
        return None
    flat = weight.reshape(weight.shape[0], -1)
    m = torch.round(flat / grid[:, None])
    low = torch.remainder(m + 128, 256) - 128
    m = (m - low) / 256
    middle = torch.remainder(m + 128, 256) - 128
    high = (m - middle) / 256  # |high| ≤ 64
    return [d.to(torch.int8).reshape(weight.shape) for d in (high, middle, low)], grid


@functools.cache
def has_matrix_units() -> bool:
    """Whether this CPU has int8 matrix units (AMX tiles) that oneDNN uses (asked once)."""
    probe = getattr(torch.cpu, "_is_amx_tile_supported", None)
    return bool(probe and probe())


@functools.cache
def has_int8_ops() -> bool:
    """Whether this build of torch has oneDNN's int8 convolution and matrix product (asked once)."""
    return all(hasattr(torch.ops.onednn, op) for op in ("qconv2d_pointwise", "qlinear_pointwise"))


def fan_in(layer: nn.Module) -> int:
    if isinstance(layer, nn.Linear):
        return layer.in_features
    return layer.in_channels // layer.groups * layer.kernel_size[0] * layer.kernel_size[1]


def worthwhile(layer: nn.Module) -> bool:
    """The "auto" rule (module docstring): int8 matrix units, K ≥ MIN_FAN_IN, ≥ MIN_OUTPUTS outputs."""
    outputs = layer.out_features if isinstance(layer, nn.Linear) else layer.out_channels
    return fan_in(layer) >= MIN_FAN_IN and outputs >= MIN_OUTPUTS and has_matrix_units()


def supported(layer: nn.Module, train: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether a call of ``layer`` on ``train`` can run on integers: a float32 CPU train and
    weight, no gradient to flow, a Conv2d with zero, integer padding on a 5-D train or a
    Linear, and oneDNN's int8 ops in this build of torch."""
    if train.device.type != "cpu" or train.dtype != torch.float32 or weight.dtype != torch.float32:
        return False
    if torch.is_grad_enabled() and (train.requires_grad or weight.requires_grad):
        return False
    if isinstance(layer, nn.Conv2d):
        shaped = train.dim() == 5 and layer.padding_mode == "zeros" and not isinstance(layer.padding, str)
    else:
        shaped = isinstance(layer, nn.Linear)
    return shaped and has_int8_ops()


class IntegerLayer:
    """A Conv2d or Linear with its weight times the spike value ``a`` (one per input channel,
    or one for all) as three int8 digit weights packed for oneDNN; ``__call__(x, bias)`` is
    layer(x) (bias added) for a float32 input [N, ...] whose entries are k·a with k an integer in
    0..``count`` (1: spikes; more: an average pooling of spikes, ``Op.spike_average``)."""

    def __init__(self, layer: nn.Module, weight: torch.Tensor, value: torch.Tensor, count: int = 1):
        self.layer, self.weight, self.value, self.count = layer, weight.detach(), value.detach(), count
        grids = [fixed_point_grid(rows) for rows in self.scaled_rows()]
        if any(grid is None for grid in grids):
            raise ValueError("weights too small for an exact fixed-point grid")
        self.grid = torch.cat(grids)
        self.scales = [(self.grid * 2.0 ** (8 * (2 - p))).float() for p in range(3)]
        self.zero = torch.zeros(self.weight.shape[0], dtype=torch.int64)
        self.unit = self.value.view(-1, 1, 1) if self.value.dim() and isinstance(layer, nn.Conv2d) else self.value
        self._packed: dict[str, list] = {}

    def scaled_rows(self):
        """W·a in float64, ``PACKING_ELEMENTS`` weights at a time (whole output channels), so
        that packing a 4096x4096 layer holds no float64 copy of it: the spike value of input
        channel c scales W[o, c mod C/groups] for every o of c's group."""
        w, a = self.weight, self.value.double()
        per_group = w.shape[0] // getattr(self.layer, "groups", 1)
        step = max(1, PACKING_ELEMENTS // max(1, w[0].numel()))
        for start in range(0, w.shape[0], step):
            rows = w[start:start + step].double()
            if a.dim():
                groups = torch.arange(start, start + rows.shape[0], device=a.device) // per_group
                scale = a.view(-1, rows.shape[1])[groups]
                rows = rows * scale.view(*scale.shape, *([1] * (rows.dim() - 2)))
            else:
                rows = rows * a
            yield rows

    def digits(self) -> list[torch.Tensor]:
        """The three int8 digit tensors of W·a (W's shape), computed anew (not kept: the packed
        forms are what the calls read)."""
        digits = [torch.empty(self.weight.shape, dtype=torch.int8) for _ in range(3)]
        start = 0
        for rows in self.scaled_rows():
            block, _ = fixed_point_digits(rows, self.grid[start:start + rows.shape[0]])
            for d, b in zip(digits, block):
                d[start:start + rows.shape[0]] = b
            start += rows.shape[0]
        return digits

    def integers(self, x: torch.Tensor, layout: torch.memory_format = torch.contiguous_format) -> torch.Tensor:
        """k = x/a as uint8 in ``layout``: x ≠ 0 for spikes, else x/a rounded (exact to k ± 1/2)."""
        if self.count == 1:
            spikes = torch.ne(x, 0, out=torch.empty(x.shape, dtype=torch.bool, memory_format=layout))
            return spikes.view(torch.uint8)
        return torch.empty(x.shape, dtype=torch.uint8, memory_format=layout).copy_(torch.div(x, self.unit).round_())

    def packed(self, kind: str) -> list:
        """The digits packed for oneDNN's "convolution" or "matmul" (for a Conv2d, the kernel
        unrolled in the unfolded windows' order: k_h, k_w, then channels), once."""
        if kind not in self._packed:
            if kind == "matmul":
                rows = [d.permute(0, 2, 3, 1).reshape(d.shape[0], -1) if d.dim() == 4 else d for d in self.digits()]
                self._packed[kind] = [torch.ops.onednn.qlinear_prepack(d.contiguous(), None) for d in rows]
            else:
                self._packed[kind] = [torch.ops.onednn.qconv_prepack(
                    d.contiguous(memory_format=torch.channels_last), s, 1.0, 0, *self.conv_args(), None)
                    for d, s in zip(self.digits(), self.scales)]
        return self._packed[kind]

    def conv_args(self) -> tuple:
        layer = self.layer
        return [*layer.stride], [*layer.padding], [*layer.dilation], layer.groups

    def __call__(self, x: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        if not isinstance(self.layer, nn.Conv2d):
            rows = self.integers(x).reshape(-1, x.shape[-1])
            return self.matmul(rows, bias).reshape(*x.shape[:-1], -1)
        spikes = self.integers(x, torch.channels_last)  # oneDNN's int8 kernels read NHWC
        windows = self.windows(spikes)
        if windows is not None:
            rows, shape = windows
            return self.matmul(rows, bias).view(*shape, -1).permute(0, 3, 1, 2)
        y = None
        for packed, scale in zip(self.packed("convolution"), self.scales):
            if y is None:
                y = torch.ops.onednn.qconv_pointwise(spikes, 1.0, 0, packed, scale, self.zero, bias, *self.conv_args(),
                                                     1.0, 0, torch.float32, "none", [], "")
            else:  # y += scale·(conv of the digit), oneDNN's sum post-op
                y = torch.ops.onednn.qconv2d_pointwise.binary(spikes, 1.0, 0, packed, scale, self.zero, y, None,
                                                              *self.conv_args(), 1.0, 0, torch.float32, 1.0, 0, "sum",
                                                              1.0, "none", [], "")
        return y

    def windows(self, spikes: torch.Tensor) -> tuple[torch.Tensor, tuple] | None:
        """The spikes [N, C, H, W] (channels-last) as rows of unfolded windows [N·H_o·W_o,
        k_h·k_w·C] and (N, H_o, W_o), where the convolution runs as a matrix product: one
        group, no dilation, and at most WINDOWS_PIXELS output pixels or a 1x1 kernel."""
        layer = self.layer
        (kh, kw), (sh, sw), (ph, pw) = layer.kernel_size, layer.stride, layer.padding
        n, _, h, w = spikes.shape
        ho, wo = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
        if layer.groups != 1 or layer.dilation != (1, 1) or (ho * wo > WINDOWS_PIXELS and (kh, kw) != (1, 1)):
            return None
        pixels = F.pad(spikes.permute(0, 2, 3, 1), (0, 0, pw, pw, ph, ph))  # NHWC
        win = pixels.unfold(1, kh, sh).unfold(2, kw, sw)  # [N, H_o, W_o, C, k_h, k_w]
        return win.permute(0, 1, 2, 4, 5, 3).reshape(n * ho * wo, -1), (n, ho, wo)

    def matmul(self, rows: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        y = None
        for packed, scale in zip(self.packed("matmul"), self.scales):
            if y is None:
                y = torch.ops.onednn.qlinear_pointwise(rows, 1.0, 0, packed, scale, self.zero, bias, 1.0, 0,
                                                       torch.float32, "none", [], "")
            else:
                y = torch.ops.onednn.qlinear_pointwise.binary(rows, 1.0, 0, packed, scale, self.zero, y, None, 1.0, 0,
                                                              torch.float32, 1.0, 0, "sum", 1.0, "none", [], "")
        return y


class IntegerLayers:
    """The ``IntegerLayer`` of each layer (weakly held) for its current weight (by storage and
    version: an optimizer's in-place step or ``load_state_dict`` repacks it) and spike value."""

    def __init__(self):
        self._layers: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def get(self, layer: nn.Module, weight: torch.Tensor, value: torch.Tensor, count: int = 1) -> IntegerLayer | None:
        """The packed layer; None where the weight has no exact grid."""
        key = (weight.data_ptr(), weight._version, tuple(weight.shape), value.dtype, tuple(value.shape), count)
        known = self._layers.get(layer)
        if known is None or known[0] != key or not torch.equal(known[1], value):
            try:
                built = IntegerLayer(layer, weight, value, count)
            except ValueError:
                built = None
            known = self._layers[layer] = (key, value.detach().clone(), built)
        return known[2]
