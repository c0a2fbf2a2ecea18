"""The neuron protocol and its neurons: rate-coded IF (docs/methods.md §1, §5), PASC (§2),
bit-plane (§3) and their signed forms for quantized activations of any f (§8).

Conventions (docs/architecture.md): a spike train is a tensor [T, B, C, ...] (time-major) and
a neuron's output holds postsynaptic values, 0 or the spike's value. Thresholds are buffers, a
scalar (0-dim) or one value per channel [C] (dim 2 of a train, dim 1 of one step).
"""
from __future__ import annotations

import dataclasses
import itertools
import math
from dataclasses import dataclass

import torch
from torch import nn

from ..activations import activation, quantized_level
from ..errors import OptionError, SpikeBridgeError, check_levels, check_T
from .codings import RATE, SUM, Coding


def channel_view(buf: torch.Tensor, ndim: int, time_major: bool = False) -> torch.Tensor:
    """A 0-dim or [C] buffer shaped to broadcast against a step [B, C, ...] of ``ndim``
    dimensions, or against a train [T, B, C, ...] of ``ndim`` dimensions if ``time_major``."""
    if buf.dim() == 0:
        return buf
    lead = 2 if time_major else 1
    return buf.view(*([1] * lead), -1, *([1] * (ndim - lead - 1)))


def _buffer(value) -> torch.Tensor:
    """A detached floating-point 0-dim or [C] tensor (a float tensor keeps its dtype; numbers
    use the default dtype)."""
    t = torch.as_tensor(value)
    t = t.detach().clone() if t.is_floating_point() else t.to(torch.get_default_dtype())
    if t.dim() > 1:
        raise OptionError(f"a threshold must be a scalar or per-channel [C], got shape {tuple(t.shape)}")
    return t


def _threshold(value) -> torch.Tensor:
    """``_buffer`` of a threshold, which must be finite and > 0 everywhere."""
    t = _buffer(value)
    if not (torch.isfinite(t).all() and (t > 0).all()):
        shown = t.tolist() if t.numel() <= 4 else f"{t.numel()} values, min {t.min().item()}"
        raise OptionError(f"a neuron's threshold must be finite and > 0, got {shown}")
    return t


def empty_train(step: torch.Tensor, steps: int, dtype: torch.dtype | None = None) -> torch.Tensor:
    """An uninitialised train [steps, *step.shape] (of ``step``'s dtype, or ``dtype``) whose
    every step has the strides of ``step`` (channels-last steps give channels-last steps), so
    that writing a step is a plain copy."""
    strides = torch.empty_like(step, device="meta").stride()  # step's layout, made dense
    return step.new_empty_strided((steps, *step.shape), (step.numel(), *strides), dtype=dtype)


BLOCK_STEP_BYTES = 256 << 10


def batch_blocks(x: torch.Tensor) -> list[slice]:
    """Slices of a train's batch (dim 1) that a sum-coded neuron runs one at a time, all its
    passes over a block before the next: on the CPU, as many images as keep one step of a
    block's float32 (or wider) state within ``BLOCK_STEP_BYTES`` (256 KiB), so that the
    block's potentials, counts, 1.0/0.0 comparisons and input step (~1 MiB together) stay in a
    core's 2 MiB cache through all the steps instead of crossing memory at each pass;
    elsewhere the whole batch. Every pass is element-wise, so the bits do not depend on the
    blocks. Measured, one thread, L = 8, random-weight CIFAR models
    (``benchmarks/neuron_blocks.py``, BENCHMARKS.md §9; whole simulations, time over the
    neurons' passes over the whole batch at once): PASC 0.80–0.96 (ResNet-20 0.93 / 0.87 /
    0.85 at batch 16 / 64 / 256), bit-plane 0.91–0.98; budgets of 128, 512 and 1024 KiB were
    from 0.02 faster to 0.08 slower than 256. Not measured on a GPU."""
    if x.device.type != "cpu" or x.dim() < 2:
        return [slice(None)]
    image = max(1, x[0, :1].numel() * max(x.element_size(), 4))
    size = max(1, BLOCK_STEP_BYTES // image)
    return [slice(b, b + size) for b in range(0, x.shape[1], size)]


class SpikingNeuron(nn.Module):
    """The neuron protocol. The engine, FTBC, the verifier, energy and export dispatch on it;
    a module that is neither a SpikingNeuron nor in the op table is refused by the engine.

    A neuron has a ``threshold`` buffer (0-dim or [C]), ``forward(train) -> train`` with all
    state local to one call (two calls on the same input give the same output), and declares:

    - ``coding``: the coding of the train it emits (``snn.codings``);
    - ``time_driven``: True if it runs ``T`` steps, which the network sets (``self.T``); False
      if its output length follows from its own parameters (PASC: its levels);
    - ``stepwise``: True if it also exposes ``init_state``, ``step(v, x_t, t)``, a per-step
      ``bias`` buffer [T_b, C'] (what FTBC calibrates and NIR exports) and
      ``run(x, v, t0, steps, counts=None) -> (train, v)``, which lets the engine simulate time
      in chunks and which writes each entry's spikes into ``counts`` (one step's shape) where
      given;
    - ``steps_out(t_in)``: the length of the train it emits for an input of ``t_in`` steps;
    - ``config()``: its constructor arguments besides ``threshold`` (data-only SNN files
      rebuild it as ``cls(threshold, **config)`` and then load its buffers).

    Subclasses are registered by class name in ``NEURONS``.
    """

    coding: Coding
    time_driven: bool
    stepwise: bool = False

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if NEURONS.setdefault(cls.__name__, cls) is not cls:
            raise TypeError(f"a neuron class named {cls.__name__} is already registered "
                            f"({NEURONS[cls.__name__].__module__}); give the new class another name")

    def steps_out(self, t_in: int) -> int:
        raise NotImplementedError

    def config(self) -> dict:
        raise NotImplementedError

    def spike_grid(self) -> tuple[torch.Tensor, int] | None:
        """(a, n) where every entry of its output is k·a with k an integer in 0..n (a 0-dim
        or [C]): the synaptic layers it feeds can then compute on the integers k
        (``integer_synapses``). None (the default): its outputs take other values."""
        return None


NEURONS: dict[str, type[SpikingNeuron]] = {}


class _Spike(torch.autograd.Function):
    @staticmethod
    def forward(ctx, v_minus_theta, width):
        ctx.save_for_backward(v_minus_theta, width)
        return (v_minus_theta >= 0).to(v_minus_theta.dtype)

    @staticmethod
    def backward(ctx, grad):
        v_minus_theta, width = ctx.saved_tensors
        return grad * (v_minus_theta.abs() < width).to(grad.dtype), None


def spike(v_minus_theta: torch.Tensor, width) -> torch.Tensor:
    """s = H(v − θ), with H(0) = 1. Backward: ds/dv = 1 where |v − θ| < width, else 0
    (rectangular surrogate, docs/methods.md §4 "SNN calibration"; IFNeuron uses width a = θ/T)."""
    width = torch.as_tensor(width, dtype=v_minus_theta.dtype, device=v_minus_theta.device)
    return _Spike.apply(v_minus_theta, width)


class IFNeuron(SpikingNeuron):
    """Rate-coded integrate-and-fire neuron with soft reset and FTBC biases (docs/methods.md §1, §5).

    Per step t (0-based): v ← v + x(t) − b(t); s = H(v − θ); v ← v − θ·s; out(t) = θ·s.
    v starts at ``v0`` (absolute potential; θ/2 for QCFS). ``bias`` is a buffer [T_b, C']
    (C' = C or 1, independent of the threshold's shape); steps t ≥ T_b have no bias, so the
    initial empty [0, C'] bias means "none". ``T`` is the number of steps; the network sets it.
    """

    coding = RATE
    time_driven = True
    stepwise = True

    def __init__(self, threshold, v0=0.0, T: int = 4):
        super().__init__()
        threshold = _threshold(threshold)
        v0 = _buffer(v0).to(threshold.dtype)
        if v0.dim() > threshold.dim():
            raise OptionError(f"v0 of shape {tuple(v0.shape)} does not match the threshold's {tuple(threshold.shape)}")
        self.register_buffer("threshold", threshold)
        self.register_buffer("v0", v0.expand_as(threshold).clone())
        self.register_buffer("bias", threshold.new_zeros(0, threshold.numel() if threshold.dim() else 1))
        self.T = check_T(T)

    def steps_out(self, t_in: int) -> int:
        return self.T

    def config(self) -> dict:
        return {"T": self.T}

    def spike_grid(self) -> tuple[torch.Tensor, int]:
        return self.threshold, 1  # out(t) = θ·s(t)

    def set_bias(self, bias: torch.Tensor) -> None:
        """Replace the FTBC bias: [T_b, C'] ([T_b] is read as [T_b, 1]); C' = 1 or C."""
        bias = torch.as_tensor(bias).detach().to(self.threshold)
        if bias.dim() == 1:
            bias = bias[:, None]
        if bias.dim() != 2 or (self.threshold.dim() and bias.shape[1] not in (1, self.threshold.numel())):
            raise OptionError(f"bias must be [T_b, C'] with C' = 1 or C = {self.threshold.numel()}, got {tuple(bias.shape)}")
        self.bias = bias.clone()

    def bias_at(self, t: int, ndim: int) -> torch.Tensor | None:
        """b(t) shaped for a step of ``ndim`` dimensions; None when t ≥ T_b."""
        if t >= self.bias.shape[0]:
            return None
        b = self.bias[t]
        return b[0] if b.numel() == 1 else channel_view(b, ndim)

    def init_state(self, x_t: torch.Tensor) -> torch.Tensor:
        """The initial potential v0 broadcast to the shape and layout of one input step, in the
        dtype of x_t + v0, in one pass: zeros then an add took two, and simulations 1.01–1.05x
        the time (ResNet-20, small_cnn, VGG-16, T = 4 and 8, max-norm, one thread, by hand)."""
        v0 = channel_view(self.v0, x_t.dim())
        return torch.empty_like(x_t, dtype=torch.result_type(x_t, v0)).copy_(v0.expand_as(x_t))

    def step(self, v: torch.Tensor, x_t: torch.Tensor, t: int) -> tuple[torch.Tensor, torch.Tensor]:
        """One step t (0-based) with bias b(t): returns (v_new, θ·s(t))."""
        theta = channel_view(self.threshold, x_t.dim())
        v = v + x_t
        b = self.bias_at(t, x_t.dim())
        if b is not None:
            v = v - b
        s = spike(v - theta, theta / self.T)
        return v - theta * s, theta * s

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [T_in, B, ...] with T_in = T, or T_in = 1 (a constant current every step)."""
        return self.run(x, None, 0, self.T)[0]

    def run(self, x: torch.Tensor, v: torch.Tensor | None, t0: int, steps: int,
            counts: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Steps t0 .. t0 + steps − 1 from potential ``v`` (None: v0), for time-chunked
        simulation: x is [steps, B, ...] or [1, B, ...] (a constant current). Returns
        (output train [steps, B, ...], potential after the last step). Where a gradient can flow
        (grad mode on and x or v requiring grad: surrogate-gradient training) it runs ``step``
        on autograd's path; otherwise in place (``_infer``), ``v`` updated in place. ``counts``
        (a float tensor of one step's shape [B, ...]) receives the spikes of each entry over
        these steps, counted while each step is at hand (``TrainRunner.record_site``)."""
        if x.shape[0] not in (1, steps):
            raise OptionError(f"IFNeuron runs T = {self.T} steps but got an input train of {x.shape[0]} steps "
                              f"(need 1 or {steps})")
        if torch.is_grad_enabled() and (x.requires_grad or (self.v0 if v is None else v).requires_grad):
            v = self.init_state(x[0]) if v is None else v  # surrogate-gradient training
            out = []
            for t in range(steps):
                v, o = self.step(v, x[0 if x.shape[0] == 1 else t], t0 + t)
                if counts is not None:  # θ > 0: a spike is a nonzero output
                    (counts.copy_ if t == 0 else counts.add_)(o.detach() != 0)
                out.append(o)
            return torch.stack(out), v
        return self._infer(x, v, t0, steps, counts)

    def _infer(self, x: torch.Tensor, v: torch.Tensor | None, t0: int, steps: int,
               counts: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``step`` repeated in place on ``v``, bit for bit the same (v − θ ≥ 0 ⇔ v ≥ θ in
        floats): inference without the autograd path's temporaries. The comparison writes
        1.0/0.0 straight into the output step, which is then scaled by θ in place (no bool
        tensor and no bool→float cast: 1.8x faster than ge-into-bool then mul, measured);
        ``counts`` takes that 1.0/0.0 step before the scaling (a copy at the first step, no
        zeroing pass). From v = None (a run's first window) the first step writes v0 + x(0)
        into a new potential in one pass, where ``init_state`` and then the add took two."""
        theta = channel_view(self.threshold, x.dim() - 1)
        out = None
        for t in range(steps):
            x_t = x[0 if x.shape[0] == 1 else t]
            if v is None:
                v0 = channel_view(self.v0, x_t.dim())
                v = torch.add(x_t, v0, out=torch.empty_like(x_t, dtype=torch.result_type(x_t, v0)))
            else:
                v.add_(x_t)
            if out is None:
                out = empty_train(v, steps)
            b = self.bias_at(t0 + t, v.dim())
            if b is not None:
                v.sub_(b)
            o = out[t]
            torch.ge(v, theta, out=o)
            if counts is not None:
                (counts.copy_ if t == 0 else counts.add_)(o)
            o.mul_(theta)
            v.sub_(o)
        return out, v

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # The bias length is a calibration result: take the saved shape.
        if prefix + "bias" in state_dict:
            self.bias = self.bias.new_empty(state_dict[prefix + "bias"].shape)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def extra_repr(self) -> str:
        kind = "channel-wise" if self.threshold.dim() else "layer-wise"
        return f"T={self.T}, {kind} threshold, bias steps={self.bias.shape[0]}"


@dataclass(frozen=True)
class Semantics:
    """An IF neuron's dynamics as a simulator implements them (the NIR importers differ).

    The neuron fires at θ_f = λ·θ (λ = ``threshold_scale``, a conversion choice) and its spikes
    are worth θ. Per step t: v ← β·v + x(t) (+ v0/T if ``v0_mode == "per-step"``); n spikes:
    n = [v ≥ θ_f], or [v > θ_f] if ``strict``, or ⌊v/θ_f⌋ for v > 0 if ``multi_spike``; reset:
    v ← v − n·θ_f ("subtract") or v ← 0 where n > 0 ("zero"); then v ← max(v, floor·θ_f) unless
    floor is None; out(t) = n·θ. v starts at v0 if ``v0_mode == "initial"``, else at 0 ("zero":
    v0 is dropped, "per-step": v0 is spread over the T steps as an input v0/T). spikebridge's own
    IFNeuron is ``Semantics()``: subtract, v ≥ θ, β = 1, one spike per step, no floor, v0 initial.
    """

    reset: str = "subtract"
    strict: bool = False
    leak: float = 1.0
    multi_spike: bool = False
    floor: float | None = None
    v0_mode: str = "initial"
    threshold_scale: float = 1.0

    def __post_init__(self):
        if self.reset not in ("subtract", "zero") or self.v0_mode not in ("initial", "zero", "per-step"):
            raise OptionError(f"unknown neuron semantics: reset={self.reset!r}, v0_mode={self.v0_mode!r}")
        if not self.threshold_scale > 0:
            raise OptionError(f"threshold_scale must be > 0, got {self.threshold_scale!r}")

    def describe(self) -> str:
        """One line, e.g. 'hard reset to 0, spike on v > θ, v0 = 0'."""
        parts = ["reset by subtraction" if self.reset == "subtract" else "hard reset to 0",
                 "spike on v > θ" if self.strict else "spike on v ≥ θ"]
        if self.threshold_scale != 1.0:
            parts.append(f"θ = {self.threshold_scale:g} × spikebridge's threshold (a spike is still worth the latter)")
        if self.multi_spike:
            parts.append("⌊v/θ⌋ spikes per step")
        if self.leak != 1.0:
            parts.append(f"leak β = {self.leak:g}")
        if self.floor is not None:
            parts.append(f"v clamped at {self.floor:g}·θ")
        parts.append({"initial": "v starts at v0", "zero": "v starts at 0 (v0 dropped)",
                      "per-step": "v starts at 0, v0/T added every step"}[self.v0_mode])
        return ", ".join(parts)


class EmulatedIFNeuron(SpikingNeuron):
    """A rate-coded IF neuron under another simulator's ``Semantics`` (what a NIR importer will
    compute), with spikebridge's threshold θ and v0; inference only (no surrogate gradient,
    no FTBC bias). ``Semantics()`` reproduces IFNeuron without bias bit for bit."""

    coding = RATE
    time_driven = True

    def __init__(self, threshold, v0=0.0, T: int = 4, **semantics):
        super().__init__()
        self.semantics = Semantics(**semantics)
        threshold = _buffer(threshold)
        self.register_buffer("threshold", threshold)
        self.register_buffer("v0", _buffer(v0).to(threshold.dtype).expand_as(threshold).clone())
        self.T = check_T(T)

    def steps_out(self, t_in: int) -> int:
        return self.T

    def config(self) -> dict:
        return {"T": self.T, **dataclasses.asdict(self.semantics)}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [T_in, B, ...] with T_in ∈ {1, T}; returns n·θ per step."""
        sem, value = self.semantics, channel_view(self.threshold, x.dim() - 1)
        theta = value * sem.threshold_scale
        v0 = channel_view(self.v0, x.dim() - 1)
        v = torch.zeros_like(x[0]) + (v0 if sem.v0_mode == "initial" else 0)
        out = empty_train(x[0], self.T)
        for t in range(self.T):
            v = v * sem.leak + x[0 if x.shape[0] == 1 else t]
            if sem.v0_mode == "per-step":
                v = v + v0 / self.T
            if sem.multi_spike:
                n = torch.where(v > 0, torch.div(v, theta, rounding_mode="trunc"), torch.zeros_like(v))
            else:
                n = (v > theta if sem.strict else v >= theta).to(v.dtype)
            v = v - n * theta if sem.reset == "subtract" else torch.where(n > 0, torch.zeros_like(v), v)
            if sem.floor is not None:
                v = torch.maximum(v, sem.floor * theta + torch.zeros_like(v))
            out[t] = n * value
        return out

    def extra_repr(self) -> str:
        return f"T={self.T}, {self.semantics.describe()}"


class PASCNeuron(SpikingNeuron):
    """PASC hidden neuron with inhibitory spikes (docs/methods.md §2; 000 Alg. 1–2).

    θ* = θ/L, v = θ*/2, integer count c = 0. (1) for each of the L_in input steps:
    v += x(t); if v ≥ θ*: c += 1, v −= θ*. (2) max(L_in, L) − 1 steps without input:
    if v ≥ θ*: c += 1, v −= θ*; elif v < 0: c −= 1, v += θ*. (3) emit k = min(max(c, 0), L)
    spikes of value θ* in the first k of L steps. Then k = clip(floor(Σx·L/θ + 1/2), 0, L)
    in exact arithmetic (000's theorem), so the train sums to QCFS(Σx). A 1-step input train
    (the input site) carries the analog pre-activation z, whose k is the QCFS ANN's level
    clip(floor(z·L/θ + 1/2), 0, L) by the ANN's formula (docs/methods.md §2). The loop is
    ``_loop_count`` (stage (2): ``_settle``); in float32 and wider the neuron counts in closed
    form where that is certified to give the loop's count bit for bit (``_closed_count``).
    """

    coding = SUM
    time_driven = False

    def __init__(self, threshold, levels: int):
        super().__init__()
        self.levels = check_levels(levels)
        self.register_buffer("threshold", _threshold(threshold))

    def steps_out(self, t_in: int) -> int:
        return self.levels

    def config(self) -> dict:
        return {"levels": self.levels}

    def spike_grid(self) -> tuple[torch.Tensor, int]:
        return self.threshold / self.levels, 1  # θ* = θ/L, as ``forward`` computes it

    def count(self, x: torch.Tensor) -> torch.Tensor:
        """The emitted spike count k (int64, shape of one step) for an input train x."""
        return self._count(x).clamp_(0, self.levels).long()

    def _count(self, x: torch.Tensor) -> torch.Tensor:
        """``count``'s k before its clip to 0..L (the output train's comparison with each step
        clips it), as floats. A 1-step train (the input layer) gets the QCFS level of its
        analog value by the ANN's own formula (docs/methods.md §2), so the input layer's levels
        are the ANN's bit for bit. Longer trains are counted a block of images
        (``batch_blocks``) at a time: in float32 and wider in closed form (``_closed_count``),
        then the neurons whose count that cannot certify as the loop's by the loop, alone
        (``_loop_count``; 0.001–0.04% of the hidden neurons of four CIFAR models); in narrower
        floats by the loop."""
        theta = channel_view(self.threshold, x.dim() - 1)
        if x.shape[0] == 1:
            exact = torch.promote_types(x.dtype, torch.float32)
            return torch.floor(x[0] * self.levels / theta + 0.5).clamp_(0, self.levels).to(exact)  # the ANN's dtypes
        unit = theta / self.levels
        dtype = torch.result_type(x, unit)  # the loop's: its v is x(0) + θ*/2
        if torch.finfo(dtype).eps > torch.finfo(torch.float32).eps:
            k = torch.empty_like(x[0], dtype=torch.promote_types(dtype, torch.float32))
            for rows in batch_blocks(x):
                k[rows] = _loop_count(x[:, rows], unit, self.levels)
            return k
        k, sure = torch.empty_like(x[0], dtype=dtype), torch.empty_like(x[0], dtype=torch.bool)
        unit_cast = unit.to(dtype)  # as the loop's comparisons and subtractions cast it
        band = closed_form_band(x.shape[0], self.levels, unit_cast)
        for rows in batch_blocks(x):
            _closed_count(x[:, rows], unit_cast, band, k[rows], sure[rows])
        where = false_entries(sure)
        if where[0].numel():  # as a batch of one image with a "channel" per neuron (θ* each)
            unit = (self.threshold[where[1]] / self.levels).view(1, -1) if unit.dim() else unit
            k[where] = _loop_count(x[(slice(None), *where)].unsqueeze(1), unit, self.levels)[0].to(dtype)
        return k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The train of ``_count``'s k, written a block of images (``batch_blocks``) at a time:
        θ* in steps t < k (so none for k ≤ 0, all L for k ≥ L)."""
        exact = torch.promote_types(x.dtype, torch.float32)  # floats: an int64 comparison over L steps was 8x slower
        steps = torch.arange(self.levels, dtype=exact, device=x.device).view(-1, *([1] * (x.dim() - 1)))
        unit = channel_view(self.threshold, x.dim(), time_major=True) / self.levels
        k = self._count(x)
        out = empty_train(x[0], self.levels, exact)
        for rows in batch_blocks(x):
            torch.lt(steps, k[rows], out=out[:, rows]).mul_(unit)
        return out

    def extra_repr(self) -> str:
        return f"levels={self.levels}"


def _loop_count(x: torch.Tensor, unit: torch.Tensor, levels: int) -> torch.Tensor:
    """PASC's stages (1) and (2) as 000 Alg. 1–2 write them, on a train x of ≥ 2 steps (θ*
    broadcasting to one step): the count c before its clip, as a float of at least 32 bits
    (exact integers: |c| ≤ L_in + max(L_in, L)). Stage (1) writes each comparison as 1.0/0.0
    into a float buffer (no bool tensor cast per step) and v − s·θ* is ``addcmul`` with
    s ∈ {0, 1}, the paper's rounding; its first step starts from v = x(0) + θ*/2, the float
    (0 + θ*/2) + x(0) gives, with c its comparison; stage (2) is ``_settle``."""
    v = torch.add(x[0], unit / 2)
    c = torch.ge(v, unit, out=torch.empty_like(v, dtype=torch.promote_types(x.dtype, torch.float32)))  # v's layout
    v.addcmul_(c, unit, value=-1)
    up = torch.empty_like(v)
    for x_t in x[1:]:
        v.add_(x_t)
        torch.ge(v, unit, out=up)
        c.add_(up)
        v.addcmul_(up, unit, value=-1)
    return _settle(v, c, unit, levels, max(x.shape[0], levels) - 1)


def closed_form_band(n: int, levels: int, unit: torch.Tensor) -> tuple[float, torch.Tensor]:
    """``_closed_count``'s band Δ = b_0 + b_1·√(Σx²) for trains of n steps into L levels, θ*
    ``unit`` (per channel or one) in the loop's float dtype of unit roundoff u, once per
    layer: (b_0, b_1) = (3·N'·u, 2·N'·u·√n/θ*), N' = 3n + max(n, L) + 1."""
    ops, u = 3 * n + max(n, levels) + 1, torch.finfo(unit.dtype).eps / 2
    return 3 * ops * u, 2 * ops * u * math.sqrt(n) / unit


def _closed_count(x: torch.Tensor, unit: torch.Tensor, band: tuple[float, torch.Tensor], k: torch.Tensor,
                  sure: torch.Tensor) -> None:
    """PASC's count in closed form on a train x of n ≥ 2 steps: writes k = floor(q), with
    q = (Σ_t x(t) + θ*/2)/θ* in k's float dtype (the loop's, of unit roundoff u; ``unit`` θ*
    given in it), and ``sure`` = [|q − round(q)| > Δ] (false where q is NaN): where k is
    certainly the loop's count. Δ = 2·(3n + max(n, L) + 1)·u·(√(n·Σx²)/θ* + 1.5), computed as
    b_0 + b_1·√(Σx²) from ``band`` (b_0, b_1) of ``closed_form_band``.

    Why k is the loop's count where sure (docs/methods.md §2). Let E = θ*/2 + Σ_t x(t) exactly.
    Each of the loop's N = 2n + max(n, L) − 1 rounded operations errs by at most u·|v|, and
    |v| ≤ 1.5θ* + Σ_t |x(t)| throughout (a spike fires only from v ≥ θ* and leaves v ≥ 0;
    inhibitory spikes bring v < 0 up to at most θ*), so v + c·θ* = E + e with
    |e| ≤ N·u·(1.5θ* + Σ|x|). The loop ends settled (0 ≤ v < θ*) or clipped: a neuron with
    v ≥ θ* after stage (1) fired at its last step (c ≥ 1, and max(n, L) − 1 more steps reach
    L), one with v < 0 did not (c ≤ n − 1 steps from 0); or, where its last inhibitory spike
    rounds v + θ* up to θ*, at v = θ*. Settled, c = floor((E + e)/θ*); clipped,
    (E + e)/θ* ≥ L + 1 or < 0; at v = θ*, (E + e)/θ* is an integer. So its clipped count is
    clip(floor(E/θ*), 0, L) unless E/θ* lies within |e|/θ* of an integer. q errs from E/θ* by
    at most (n + 1)·u·(Σ|x|/θ* + 1) (recursive summation, one addition, one division;
    q − round(q) is exact). Hence Δ: twice the two bounds, with Σ|x| ≤ √(n·Σx²)
    (Cauchy–Schwarz: one fused pass per step instead of two; 0.95–1.00x the time), for the
    (1 + u)^N terms and for Δ computed in floats (x² loses nothing that matters above
    |x| = 2^−75 in float32). With u = 2^−24 that is ~4e−6·(√(n·Σx²)/θ* + 1.5) for L = n = 8:
    ResNet-20's hidden neurons fall in it one in ~30 000 at L = 8, one in ~2 500 at L = 32
    (random weights, batches 16–256; ``benchmarks/pasc_closed_form.py``). √n and 1/θ* are in
    b_1, once per layer; ``addcmul`` and ``addcdiv`` with b_0 and θ*/2 took 1.02–1.03x the
    time of the separate passes (ResNet-20 and small_cnn, batch 64, L = 8, one thread)."""
    total = x[0].to(k.dtype, copy=True)
    squares = torch.mul(total, total)
    for x_t in x[1:]:
        total.add_(x_t)
        squares.addcmul_(x_t, x_t)
    q = total.add_(unit / 2).div_(unit)
    torch.floor(q, out=k)
    torch.gt(torch.round(q).sub_(q).abs_(), squares.sqrt_().mul_(band[1]).add_(band[0]), out=sure)


ALL_TRUE = int.from_bytes(bytes([1] * 8), "little")  # eight bools True, read as one int64


def false_entries(mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The indices of ``mask``'s False entries, one tensor per dim as ``nonzero(as_tuple=True)``
    gives them (in memory order). Where the mask is dense and its entries are a multiple of 8,
    its bytes are read in memory order as int64 words: the words that are not eight Trues,
    then the False bytes of those. Where few are False (PASC's ``_closed_count``) that reads
    an eighth of the entries twice instead of all of them in ``nonzero``: 0.24 against 1.4 ms
    on a channels-last [64, 16, 32, 32] mask with 41 False, 0.84 against 5.9 ms on
    [256, 16, 32, 32] with 138 (one thread)."""
    order = sorted(range(mask.dim()), key=lambda d: -mask.stride(d))
    dense = mask.permute(order)
    if not dense.is_contiguous() or dense.numel() % 8 or dense.storage_offset() % 8:
        return mask.logical_not().nonzero(as_tuple=True)
    flat = dense.reshape(-1)
    words = torch.ne(flat.view(torch.int64), ALL_TRUE).nonzero().squeeze(1)
    rows, columns = flat.view(-1, 8)[words].logical_not_().nonzero(as_tuple=True)
    found = torch.unravel_index(words[rows] * 8 + columns, dense.shape)
    return tuple(found[order.index(d)] for d in range(mask.dim()))


def _settle(v: torch.Tensor, c: torch.Tensor, unit: torch.Tensor, levels: int, steps: int) -> torch.Tensor:
    """PASC stage (2) in place on potentials v and float counts c ≥ 0 (one step's shape;
    ``unit`` θ* broadcasts to it): ``steps`` steps of: if v ≥ θ* and c < L: c += 1, v −= θ*;
    elif v < 0 and c > 0: c −= 1, v += θ*. Returns c, the same after a clip to 0..L.

    The clip freezes a neuron at c ≥ L going up or c ≤ 0 going down: it keeps its clipped k,
    so the counts are the unbounded loop's after clipping, and the loop stops once none moves.
    The first step runs without the clip (5 passes instead of 9): a neuron it moves past the
    clip stays there. Up from c ≥ L leaves v ≥ 0 (v ≥ θ* rounds v − θ* to ≥ 0), so it never
    comes down: c > L, clipped to L. Down from c = 0 gives c = −1 and v + θ* ≤ θ*; only at
    v + θ* = θ* (rounded) does it move again, up to c = 0, v = 0: clipped to 0 either way.
    After the first step, typically 0.01–0.2% of a hidden layer's neurons still move
    (ResNet-20, small CNN, L = 8), so from the second step on the movers run alone
    (``_settle_few``): stage (2) over ResNet-20's hidden layers at batch 64 in 0.08 s instead
    of 0.10–0.11 s (and 0.09 s gathering the first step's 2–15% instead)."""
    if steps == 0:
        return c
    up, down, room = torch.empty_like(v), torch.empty_like(v), torch.empty_like(v)
    move = torch.ge(v, unit, out=up).sub_(torch.lt(v, 0, out=down))  # +1 up, −1 down, 0 still
    c.add_(move)
    v.addcmul_(move, unit, value=-1)
    if steps == 1:
        return c
    torch.ge(v, unit, out=up).mul_(torch.lt(c, levels, out=room))  # 1.0 where it moves up next
    torch.lt(v, 0, out=down).mul_(torch.gt(c, 0, out=room))
    if not up.sum() + down.sum():  # sums of 0/1 floats: 10x faster than any()
        return c
    return _settle_few(v, c, unit, levels, steps - 1, up.sub_(down))


def _settle_few(v: torch.Tensor, c: torch.Tensor, unit: torch.Tensor, levels: int, steps: int,
                move: torch.Tensor) -> torch.Tensor:
    """``_settle``'s last ``steps`` steps, the first of them ``move``, on the neurons it moves
    alone: a neuron that stays still never moves again (its state decided that and is
    unchanged). They are gathered into vectors in memory order (v, c and move share a layout),
    with the same float operation v − move·θ*, and their counts written back into c."""
    order = sorted(range(v.dim()), key=lambda d: -v.stride(d))
    flat_v, flat_c, flat_move = (t.permute(order).view(-1) for t in (v, c, move))
    movers = flat_move.nonzero().squeeze(1)
    vv, cc, move = flat_v[movers], flat_c[movers], flat_move[movers]
    if unit.numel() > 1:  # one θ* per channel (dim 1): the channel of each mover's flat index
        inner = math.prod(v.shape[d] for d in order[order.index(1) + 1:])
        unit = unit.flatten()[movers.div(inner, rounding_mode="floor") % v.shape[1]]
    else:
        unit = unit.reshape(())
    for step in range(steps):
        if step:
            move = (vv >= unit).logical_and_(cc < levels).to(cc.dtype) - (vv < 0).logical_and_(cc > 0).to(cc.dtype)
            if not move.any():
                break
        cc.add_(move)
        vv.addcmul_(move.to(vv.dtype), unit, value=-1)
    flat_c.index_copy_(0, movers, cc)
    return c


def _sum_steps(x: torch.Tensor) -> torch.Tensor:
    """Σ_t x(t) in step order, as one new tensor in x's layout (x.sum(0) gives NCHW)."""
    total = x[0].clone()
    for x_t in x[1:]:
        total.add_(x_t)
    return total


def bits_needed(levels: int) -> int:
    """ceil(log2(L + 1)): the bits that code every level 0..L (docs/methods.md §3 errata)."""
    return check_levels(levels).bit_length()


def bitplane_code(levels: int, T: int) -> tuple[int, int, int]:
    """(n, bits, lsb) of the T-step bit-plane code for L levels, all in units of θ/L.

    Bit t = 1..bits (MSB first) weighs w_t = θ·2^(n−t)/L; the code rounds at its LSB
    (lsb = 2^(n−bits)) and saturates at lsb·(2^bits − 1). n = bits_needed(L), except when
    T < bits_needed(L) and L is a power of two: then n = log2 L, because the MSB of a
    power-of-two L codes only the top level, and dropping it loses that level only (001's
    L = 16, T = 4) where keeping it would halve the resolution. bits = min(T, n); steps
    beyond ``bits`` are empty.
    """
    n = bits_needed(levels)
    if T < n and levels & (levels - 1) == 0:
        n -= 1
    bits = min(T, n)
    return n, bits, 2 ** (n - bits)


class BitplaneNeuron(SpikingNeuron):
    """Bit-plane neuron, most significant bit first (docs/methods.md §3; 001 Sec. 5).

    Modified IF (default): u = Σ_t x(t) over the whole input train; u = min(u, θ);
    u += lsb·θ/(2L) (half an LSB: rounds like QCFS's +1/2); for t = 1..bits:
    s(t) = H(u − w_t), u −= s(t)·w_t; out(t) = s(t)·w_t (see ``bitplane_code``).
    The potential is kept in units of θ/L (u·L/θ, computed as QCFS computes z·L/θ), so the
    bit weights are exact powers of two and the emitted level equals ``bitplane_level``
    bit for bit; for T ≥ bits_needed(L) that is the QCFS level, clip(floor(u·L/θ+1/2), 0, L).
    With T < bits_needed(L) the level is the saturated value rounded at the coarser LSB,
    which can also round up past L (L = 9, T = 3 codes level 9 as 10).

    ``standard_if=True`` (001 Table 4 ablation): the same weights, but a standard IF neuron
    that cannot wait for its input: v = half an LSB; each step t = 1..T: v += x(t) (input
    steps after T are ignored), then fires bit t as above if t ≤ bits; no saturation at θ.
    """

    coding = SUM
    time_driven = True

    def __init__(self, threshold, levels: int, T: int | None = None, standard_if: bool = False):
        super().__init__()
        self.levels = check_levels(levels)
        self.T = bits_needed(levels) if T is None else check_T(T)
        self.standard_if = standard_if
        self.register_buffer("threshold", _threshold(threshold))

    def steps_out(self, t_in: int) -> int:
        return self.T

    def config(self) -> dict:
        return {"levels": self.levels, "T": self.T, "standard_if": self.standard_if}

    def saturates(self) -> bool:
        """True when the top level L has no code in T steps (inputs ≥ θ emit less than θ)."""
        _, bits, lsb = bitplane_code(self.levels, self.T)
        return lsb * (2 ** bits - 1) < self.levels

    def spike_grid(self) -> tuple[torch.Tensor, int] | None:
        """Bit t emits θ/L·2^(n−1−t) (a power of two times θ/L, exact): k ≤ 2^(n−1), which
        integer synapses take for n ≤ 8 bits (``integer_synapses.MAX_COUNT``)."""
        n = bitplane_code(self.levels, self.T)[0]
        return (self.threshold / self.levels, 2 ** (n - 1)) if n <= 8 else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Each block of images (``batch_blocks``) integrated and emitted before the next, each
        bit's spike value θ·w_t/L computed once for all blocks (computed per block and bit, its
        two small operations each time: 0.98–1.02x, median 1.02x the time; ResNet-20 and
        small_cnn, batches 64 and 256, T = 4 and 8, one thread)."""
        theta = channel_view(self.threshold, x.dim() - 1)
        out = empty_train(x[0], self.T, x.dtype if self.standard_if else torch.result_type(x, theta))
        n, bits, _ = bitplane_code(self.levels, self.T)
        values = [theta / self.levels * 2 ** (n - 1 - t) for t in range(bits)]
        for rows in batch_blocks(x):
            self._emit(x[:, rows], theta, values, out[:, rows])
        return out

    def _emit(self, x: torch.Tensor, theta: torch.Tensor, values: list[torch.Tensor], out: torch.Tensor) -> None:
        """``forward`` on one block: writes the train into ``out`` (each step in place:
        stacking a list was 40% of a simulation); ``values``: bit t's spike value θ·w_t/L."""
        n, bits, lsb = bitplane_code(self.levels, self.T)
        L = self.levels
        if self.standard_if:
            u = torch.zeros_like(x[0]) + lsb / 2
        else:
            u = (_sum_steps(x).mul_(L) / theta).clamp_(max=L).add_(lsb / 2)  # x's layout
        for t in range(self.T):
            if self.standard_if and t < x.shape[0]:
                u = u + x[t] * L / theta
            if t < bits:  # s(t) = H(u − w_t) as 1.0/0.0 straight into the step; u −= w_t·s(t); out = s·θ·w_t/L
                w = 2 ** (n - 1 - t)
                s = torch.ge(u, w, out=out[t])
                if t < bits - 1:  # the last bit's u is read no more
                    u.sub_(s, alpha=w)
                s.mul_(values[t])
            else:
                out[t].zero_()

    def extra_repr(self) -> str:
        return f"levels={self.levels}, T={self.T}, standard_if={self.standard_if}"


def _check_function(function: str, k_min: int, levels: int) -> tuple[str, int]:
    try:
        activation(function)
    except SpikeBridgeError as exc:
        raise OptionError(str(exc)) from None
    if isinstance(k_min, bool) or not isinstance(k_min, int) or not -levels <= k_min <= 0:
        raise OptionError(f"k_min must be an integer in [-{levels}, 0], got {k_min!r}")
    return function, k_min


class QuantizedPASCNeuron(SpikingNeuron):
    """PASC for a quantized activation of any f (docs/methods.md §8): the neuron integrates its
    whole input train, z = Σ_t x(t), then emits the level k = clip(floor(f(z)·L/θ + 1/2),
    k_min, L) as |k| spikes of value sign(k)·θ/L in the first |k| of max(L, −k_min) steps
    (inhibitory spikes for k < 0). The train sums to s·k with s = θ/L, the
    ``QuantizedActivation``'s output, exactly as PASCNeuron's sums to QCFS(z).
    """

    coding = SUM
    time_driven = False

    def __init__(self, threshold, levels: int, function: str, k_min: int):
        super().__init__()
        self.levels = check_levels(levels)
        self.function, self.k_min = _check_function(function, k_min, self.levels)
        self.register_buffer("threshold", _threshold(threshold))

    def steps_out(self, t_in: int) -> int:
        return max(self.levels, -self.k_min)

    def config(self) -> dict:
        return {"levels": self.levels, "function": self.function, "k_min": self.k_min}

    def level(self, x: torch.Tensor) -> torch.Tensor:
        """The emitted level k (int64, shape of one step) for an input train x."""
        return _integrated_level(self, x, torch.int64)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Each block of images (``batch_blocks``) integrated and emitted before the next: 1.0
        in steps t < |k| (written in place), times sign(k)·θ/L."""
        steps = torch.arange(self.steps_out(x.shape[0]), device=x.device).view(-1, *([1] * (x.dim() - 1)))
        unit = channel_view(self.threshold, x.dim() - 1) / self.levels
        out = empty_train(x[0], steps.shape[0], torch.result_type(x, unit))
        for rows in batch_blocks(x):
            k = _integrated_level(self, x[:, rows])
            torch.lt(steps, k.abs(), out=out[:, rows]).mul_(k.sign_().mul_(unit))
        return out

    def extra_repr(self) -> str:
        return f"{self.function}, levels={self.k_min}..{self.levels}"


class QuantizedBitplaneNeuron(SpikingNeuron):
    """Bit-plane for a quantized activation of any f (docs/methods.md §8), sign-magnitude with
    the sign on the spikes: the neuron integrates z = Σ_t x(t), takes the level
    k = clip(floor(f(z)·L/θ + 1/2), k_min, L) and emits the bits of |k|, most significant
    first, bit t (0-based) as a spike of value sign(k)·2^(T−1−t)·θ/L (inhibitory for k < 0).
    T defaults to bits_needed(max(L, −k_min)) = ceil(log2(max(L, −k_min) + 1)), which codes
    every level of k_min..L; a smaller T saturates |k| at 2^T − 1 (``saturates``), a larger one
    adds leading zero bits. The train sums to s·k with s = θ/L.
    """

    coding = SUM
    time_driven = True

    def __init__(self, threshold, levels: int, function: str, k_min: int, T: int | None = None):
        super().__init__()
        self.levels = check_levels(levels)
        self.function, self.k_min = _check_function(function, k_min, self.levels)
        self.T = bits_needed(max(self.levels, -self.k_min)) if T is None else check_T(T)
        self.register_buffer("threshold", _threshold(threshold))

    def steps_out(self, t_in: int) -> int:
        return self.T

    def config(self) -> dict:
        return {"levels": self.levels, "function": self.function, "k_min": self.k_min, "T": self.T}

    def saturates(self) -> bool:
        """True when some level of k_min..L has no T-bit magnitude."""
        return 2 ** self.T - 1 < max(self.levels, -self.k_min)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Each block of images (``batch_blocks``) integrated in step order, z = ((x(0) +
        x(1)) + ...), and emitted before the next: with m = min(|k|, 2^T − 1), bit t of
        weight w = 2^(T−1−t) is s = [m ≥ w] (m −= s·w: exact integers), written in place as
        1.0/0.0 and scaled by sign(k)·θ/L·w (a power of two times θ/L, exact)."""
        unit = channel_view(self.threshold, x.dim() - 1) / self.levels
        out = empty_train(x[0], self.T, torch.result_type(x, unit))
        for rows in batch_blocks(x):
            k = _integrated_level(self, x[:, rows])
            m = k.abs().clamp_(max=2 ** self.T - 1)
            value = k.sign_().mul_(unit)
            for t in range(self.T):
                w = 2 ** (self.T - 1 - t)
                s = torch.ge(m, w, out=out[t, rows])
                if t < self.T - 1:
                    m.sub_(s, alpha=w)
                s.mul_(value).mul_(w)
        return out

    def extra_repr(self) -> str:
        return f"{self.function}, levels={self.k_min}..{self.levels}, T={self.T}"


def _integrated_level(neuron: QuantizedPASCNeuron | QuantizedBitplaneNeuron, x: torch.Tensor,
                      dtype: torch.dtype | None = None) -> torch.Tensor:
    """The level k a quantized-activation neuron emits for an input train x, integrated in step
    order, z = ((x(0) + x(1)) + ...): ``quantized_level`` of z, as ``dtype`` (None: the float
    it is computed in)."""
    z = _sum_steps(x)
    return quantized_level(neuron.function, z, channel_view(neuron.threshold, z.dim()), neuron.levels,
                           neuron.k_min, dtype)


def pasc_count(total: torch.Tensor, threshold, levels: int) -> torch.Tensor:
    """clip(floor(total·L/θ + 1/2), 0, L) as int64 (θ: 0-dim or [C], channel = dim 1)."""
    theta = channel_view(torch.as_tensor(threshold), total.dim())
    return torch.floor(total * levels / theta + 0.5).clamp(0, levels).to(torch.int64)


def bitplane_level(total: torch.Tensor, threshold, levels: int, T: int) -> torch.Tensor:
    """The level (units of θ/L, int64) a bit-plane neuron emits for input sum ``total``:
    lsb·clip(floor((min(total·L/θ, L) + lsb/2)/lsb), 0, 2^bits − 1) (see ``bitplane_code``)."""
    _, bits, lsb = bitplane_code(levels, T)
    theta = channel_view(torch.as_tensor(threshold), total.dim())
    a = torch.clamp(total * levels / theta, max=levels)
    return (torch.floor((a + lsb / 2) / lsb).clamp(0, 2 ** bits - 1) * lsb).to(torch.int64)


def if_reference(x: torch.Tensor, threshold, v0, T: int, bias=None) -> torch.Tensor:
    """Plain-Python IF (docs/methods.md §1, §5), element by element, for tests: v ← v + x(t) − b(t);
    if v ≥ θ: v ← v − θ, out = θ. x: [T_in, B, C, ...] with T_in ∈ {1, T}; bias [T_b, C']."""
    th = torch.as_tensor(threshold, dtype=torch.float64)
    v0 = torch.as_tensor(v0, dtype=torch.float64)
    bias = torch.zeros(0, 1, dtype=torch.float64) if bias is None else torch.as_tensor(bias, dtype=torch.float64)
    out = torch.zeros((T, *x.shape[1:]), dtype=torch.float64)
    for idx in itertools.product(*map(range, x.shape[1:])):
        c = idx[1] if len(idx) > 1 else 0
        theta = th.item() if th.dim() == 0 else th[c].item()
        v = v0.item() if v0.dim() == 0 else v0[c].item()
        for t in range(T):
            v += x[0 if x.shape[0] == 1 else t][idx].item()
            if t < bias.shape[0]:
                v -= bias[t, c if bias.shape[1] > 1 else 0].item()
            if v >= theta:
                v -= theta
                out[t][idx] = theta
    return out
