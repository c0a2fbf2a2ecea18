"""The op table: every operation spikebridge knows, declared once, as data (docs/architecture.md).

Each ``Op`` says what a graph node is to the pipeline:

- ``kind``: SYNAPTIC (weights; runs step by step with the coding's bias rule), STATELESS (the
  same linear function on every step of a train, so right under either coding), AFFINE (a sum of trains scaled by numbers
  plus a constant: y = Σ a_i·x_i + c, run with the coding's constant rule), MERGE (combines
  trains, which the coding aligns first), SHAPE (reads shapes, no train), DROPPED (identity at
  inference, removed before conversion), FOLDED (folded into the preceding synaptic layer),
  ACTIVATION (becomes a neuron at conversion), ANALOG (no spiking form: computed on the decoded
  values of its input trains and re-encoded, docs/methods.md §8), CONSTANT (a parameter or
  buffer the graph reads directly: a train of one step), REFUSED (no spiking meaning;
  ``advice`` says what to do).
- ``combine``: for MERGE ops, how the aligned trains are combined.
- ``affine``: for AFFINE ops, the call written as y = Σ a_i·x_i + c (see ``Affine``).
- ``macs`` / ``synaptic_ops``: for SYNAPTIC ops, the ANN's MACs for one output and the SNN's
  accumulates for a map of input events (docs/methods.md §6); for ANALOG ops, ``macs(args,
  kwargs, output)`` counts the MACs of one call on decoded values (the SNN does them as MACs).
- ``config``: constructor arguments of the module, read from its attributes (data-only files);
  ``config_extra`` for arguments that are no attribute (e.g. whether a bias exists).
- ``nir``: the name of the NIR exporter's rule for it, or None with ``nir_refusal`` saying why.
- ``selects``: for ANALOG ops, each output is one of its inputs (max pooling). Such an op is
  positively homogeneous, f(a·x) = a·f(x) for a > 0, so rate coding runs it on running sums and
  emits the increments, a spike train in giving a spike train out (``Coding.decode``); and it
  commutes with every nondecreasing function, so a ReLU site before it moves after it
  (``graph.pool_before_sites``; docs/methods.md §8).
- ``replacement``: for modules that prepare() swaps in a QCFS ANN (max pooling), the swap.
- ``site_form``: for ACTIVATION ops prepare() turns into sites, the ``SiteForm`` of a call:
  which f it means (``spikebridge.activations``), its negative levels and initial θ.
- ``applies``: for an entry that means only some calls of its modules, functions or methods
  (``clamp(x, 0, c)`` is a clipped ReLU, ``clamp(x, -1, 1)`` is not), which calls; the others
  fall to the key's general entry, one without ``applies`` (``F.pad`` with an infinite value:
  a refusal), or, where there is none, are not in the table (``op_for_node``).
- ``refused_by_prepare``: for REFUSED activations, prepare() refuses them too (a QCFS ANN
  trained with one could not be converted); convert() refuses every REFUSED entry.
- ``spike_average``: for STATELESS averages (average pooling), (d, n) of a call whose every
  output sums at most n inputs over one divisor d, else None: a train of spikes of value a comes
  out as multiples k·a/d with 0 ≤ k ≤ n, which the next synaptic layer can compute on as
  integers (``snn/integer_synapses.py``).

Arguments are trains or numbers. A call of a Python ``operator`` function whose arguments
hold no train is arithmetic on numbers (shapes, e.g. ``x.size(1) // 2``) and runs as Python;
an op of any other entry on trains follows its kind. Which arguments are trains is known at
conversion by following the graph from the input (``conversion.graph.train_nodes``) and at
run time by their type; the two agree.

Who reads it: prepare (activations, max-pool swap), the converter (supported set, refusals,
graph passes), the engine (dispatch by kind), analysis.energy (synaptic layers and their
counts), export (NIR rules, data-only files). Adding an op is one entry here (and an engine
rule only for a new kind).
"""
from __future__ import annotations

import enum
import math
import operator
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import fx, nn
from torchvision.models import swin_transformer
from torchvision.ops import StochasticDepth, stochastic_depth

from ..activations import ReLUSquared, parametric_name
from ..ann.assignment import assigned
from ..ann.qcfs import QCFS
from ..ann.selections import max_pool2d_padded
from .constant import Constant


@dataclass(frozen=True)
class SiteForm:
    """What prepare() puts at an activation call site (docs/methods.md §8): the quantized
    activation k = clip(floor(f(z)·L/θ + 1/2), k_min, L) of ``function`` (a name in
    ``spikebridge.activations.FUNCTIONS``; "relu" with k_min = 0 is a plain QCFS), starting at
    θ = ``threshold`` (None: prepare's ``threshold`` argument)."""
    function: str
    k_min: int = 0
    threshold: float | None = None


def fixed_form(function: str, k_min: int = 0, threshold: float | None = None):
    """The site_form of an activation whose calls all mean the same quantized f."""
    form = SiteForm(function, k_min, threshold)
    return lambda module, args, kwargs: form


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def arguments(names: tuple[str, ...], defaults: tuple):
    """The arguments ``names`` of a call: the module's attributes of those names, or the
    function's arguments after the input, positional or by keyword, with ``defaults``."""
    def read(module: nn.Module | None, args: tuple, kwargs: dict) -> tuple:
        if module is not None:
            return tuple(getattr(module, name) for name in names)
        values = dict(zip(names, defaults)) | dict(zip(names, args[1:]))
        return tuple(kwargs.get(name, values[name]) for name in names)
    return read


def parametric(function: str, read) -> dict:
    """``applies`` and ``site_form`` of an f of ``activations.PARAMETRIC`` whose parameters
    (``read`` from the call) are numbers: the site quantizes 'f(numbers)' with k_min = 0 (−L for
    the ``SYMMETRIC`` ones, which prepare() gives); a call whose parameters are computed (tensors)
    falls to the refusal of its form."""
    def applies(module, args, kwargs) -> bool:
        return all(_number(n) for n in read(module, args, kwargs))

    def form(module, args, kwargs) -> SiteForm:
        return SiteForm(parametric_name(function, *read(module, args, kwargs)))
    return {"applies": applies, "site_form": form}


def clipped_relu(bounds) -> dict:
    """``applies`` and ``site_form`` of a clip to [0, c] (c > 0) or [0, ∞): a ReLU clipped at
    θ = c, as ReLU6 is at 6 (docs/methods.md §8), or a plain ReLU."""
    def applies(module, args, kwargs) -> bool:
        low, high = bounds(module, args, kwargs)
        return _number(low) and low == 0 and (high is None or (_number(high) and high > 0))

    def form(module, args, kwargs) -> SiteForm:
        high = bounds(module, args, kwargs)[1]
        return SiteForm("relu", 0, None if high is None or math.isinf(high) else float(high))
    return {"applies": applies, "site_form": form}


CLAMPS: dict[Callable | str, tuple[str, ...]] = {
    torch.clamp: ("min", "max"), torch.clip: ("min", "max"), torch.clamp_min: ("min",), torch.clamp_max: ("max",),
    **dict.fromkeys(("clamp", "clamp_", "clip", "clip_"), ("min", "max")),
    **dict.fromkeys(("clamp_min", "clamp_min_"), ("min",)), **dict.fromkeys(("clamp_max", "clamp_max_"), ("max",))}
"""Every clamp, function or method name, with the bounds it takes after its input, in order: the
entries ``clamp_relu`` and ``nonlinear_elementwise`` and ``graph.remove_unbounded_clamps`` read it."""


def clamps(*, lower: bool) -> dict:
    """``functions`` and ``methods`` of the clamps of ``CLAMPS`` (with ``lower``, only those that
    take a minimum: a clip to [0, c] or [0, ∞) is a ReLU site)."""
    chosen = [key for key, bounds in CLAMPS.items() if "min" in bounds or not lower]
    return {"functions": tuple(k for k in chosen if callable(k)),
            "methods": tuple(k for k in chosen if isinstance(k, str))}


_PAD_ARGUMENTS = arguments(("pad", "mode", "value"), (None, "constant", None))
_GELU_ARGUMENTS = arguments(("approximate",), ("none",))


def zero_padding(module: nn.Module | None, args: tuple, kwargs: dict) -> bool:
    """F.pad(x, pad, mode="constant", value=None): every mode but a constant pad with a nonzero
    value is linear and maps 0 to 0 (a STATELESS op)."""
    mode, value = _PAD_ARGUMENTS(None, args, kwargs)[1:]
    return mode != "constant" or value is None or (_number(value) and value == 0)


def finite_padding(module: nn.Module | None, args: tuple, kwargs: dict) -> bool:
    """F.pad(x, pad, value=c) with a finite number c ≠ 0: an offset where it pads (EfficientViT
    pads its values with ones for the normaliser of its linear attention), computed on decoded
    values (ANALOG); an infinite or nan c is no value a train can carry."""
    mode, value = _PAD_ARGUMENTS(None, args, kwargs)[1:]
    return mode == "constant" and _number(value) and value != 0 and math.isfinite(value)


def _written_dtypes(args: tuple, kwargs: dict) -> list[torch.dtype]:
    return [v for v in (*args[1:], *kwargs.values()) if isinstance(v, torch.dtype)]


def value_keeping_cast(module: nn.Module | None, args: tuple, kwargs: dict) -> bool:
    """x.to(...), x.type_as(y), x.double(): a move, a cast to float64, or a cast to another
    tensor's dtype (known only when it runs, as EVA's ``.to(dtype=v.dtype)``: the network's own)
    keeps a train's values, step by step as on the activation."""
    return all(d == torch.float64 for d in _written_dtypes(args, kwargs))


def narrowing_cast(module: nn.Module | None, args: tuple, kwargs: dict) -> bool:
    """x.float(), x.half(), x.bfloat16() (no argument: the method names its dtype) or x.to(d)
    with d a floating dtype narrower than float64 written in the call: on a float64 train it
    rounds, and the sum of each step's rounded value is not the rounded activation (PASC's logits
    were 1.2e-8 off with ``.to(torch.float32)`` and 2e-4 with float16 while STATELESS; 2e-16 on
    decoded values)."""
    dtypes = _written_dtypes(args, kwargs)
    if not dtypes:
        return not args[1:] and set(kwargs) <= {"memory_format"}
    return all(d.is_floating_point and d != torch.float64 for d in dtypes)


def gelu_form(module: nn.Module | None, args: tuple, kwargs: dict) -> SiteForm:
    """nn.GELU(approximate=...) or F.gelu(x, approximate=...): exact (erf) or tanh GELU, whose
    minimum −0.17 needs one negative level."""
    (approximate,) = _GELU_ARGUMENTS(module, args, kwargs)
    return SiteForm("gelu_tanh" if approximate == "tanh" else "gelu", k_min=-1)


_AVG_POOL_ARGUMENTS = arguments(("kernel_size", "stride", "padding", "ceil_mode", "count_include_pad",
                                 "divisor_override"), (None, None, 0, False, True, None))
_ADAPTIVE_POOL_ARGUMENTS = arguments(("output_size",), (None,))


def avg_pool_average(module: nn.Module | None, args: tuple, kwargs: dict) -> tuple[int, int] | None:
    """(d, n) of a 2-D average pooling whose every output sums at most n inputs over one divisor
    d (n = k_h·k_w; d = n or ``divisor_override``), so that a train of spikes of value a becomes a
    train of multiples of a/d (integer synapses); None where border windows are divided by fewer
    (padding without ``count_include_pad``, or ``ceil_mode``)."""
    kernel, _, padding, ceil_mode, include_pad, divisor = _AVG_POOL_ARGUMENTS(module, args, kwargs)
    if ceil_mode or (not include_pad and any(_pair(padding))):
        return None
    n = math.prod(_pair(kernel))
    return divisor or n, n


def adaptive_avg_pool_average(module: nn.Module | None, args: tuple, kwargs: dict) -> tuple[int, int] | None:
    """(n, n) of an adaptive 2-D average pooling whose windows all have n inputs: each output
    size divides the input's; None otherwise (windows of different sizes)."""
    (size,) = _ADAPTIVE_POOL_ARGUMENTS(module, args, kwargs)
    h, w = args[0].shape[-2:]
    oh, ow = (s if s is not None else d for s, d in zip(_pair(size), (h, w)))
    return None if h % oh or w % ow else ((h // oh) * (w // ow),) * 2


class Kind(enum.Enum):
    SYNAPTIC = "synaptic"
    STATELESS = "stateless"
    AFFINE = "affine"
    MERGE = "merge"
    SHAPE = "shape"
    DROPPED = "dropped"
    FOLDED = "folded"
    ACTIVATION = "activation"
    ANALOG = "analog"
    CONSTANT = "constant"
    REFUSED = "refused"


@dataclass(frozen=True)
class Op:
    name: str
    kind: Kind
    modules: tuple[type[nn.Module], ...] = ()
    functions: tuple[Callable, ...] = ()
    methods: tuple[str, ...] = ()
    combine: Callable | None = None
    affine: Callable | None = None
    macs: Callable[[nn.Module, torch.Tensor], int] | None = None
    synaptic_ops: Callable[[nn.Module, torch.Tensor], int] | None = None
    config: tuple[str, ...] = ()
    config_extra: tuple[tuple[str, Callable[[nn.Module], object]], ...] = ()
    analog_macs: Callable[[object, tuple, dict, object], int] | None = None
    nir: str | None = None
    nir_refusal: str = "NIR has no equivalent of this operation"
    advice: str = ""
    selects: bool = False
    replacement: Callable[[nn.Module], nn.Module] | None = None
    site_form: Callable[[nn.Module | None, tuple, dict], SiteForm] | None = None
    applies: Callable[[nn.Module | None, tuple, dict], bool] | None = None
    refused_by_prepare: bool = False
    contiguous: bool = False  # reads strides (``view``): the engine makes its trains contiguous first
    spike_average: Callable[[nn.Module | None, tuple, dict], tuple[int, int] | None] | None = None

    def module_config(self, module: nn.Module) -> dict:
        """The constructor arguments that rebuild ``module`` (without its tensors)."""
        config = {a: _jsonable(getattr(module, a)) if a != "bias" else module.bias is not None for a in self.config}
        return {**config, **{key: read(module) for key, read in self.config_extra}}

    @property
    def config_keys(self) -> tuple[str, ...]:
        return (*self.config, *(key for key, _ in self.config_extra))


def _jsonable(value):
    return list(value) if isinstance(value, tuple) else value


# -- the rules that are part of an op's meaning ----------------------------------------------

def conv_macs(conv: nn.Module, output: torch.Tensor) -> int:
    """MACs of a conv: output elements · (C_in / groups) · prod(kernel) (000 A.4)."""
    return output.numel() * (conv.in_channels // conv.groups) * math.prod(conv.kernel_size)


def conv_transpose_macs(conv: nn.Module, output: torch.Tensor) -> int:
    """MACs of a transposed conv: input elements · (C_out / groups) · prod(kernel), every input
    scattered over its kernel (the input's size from the output's: (out − 1 − output_padding +
    2·padding − dilation·(k − 1)) / stride + 1 per dim)."""
    spatial = [(o - 1 - op + 2 * p - d * (k - 1)) // s + 1 for o, op, p, d, k, s in zip(
        output.shape[2:], conv.output_padding, conv.padding, conv.dilation, conv.kernel_size, conv.stride)]
    inputs = output.shape[0] * conv.in_channels * math.prod(spatial)
    return inputs * (conv.out_channels // conv.groups) * math.prod(conv.kernel_size)


def linear_macs(linear: nn.Linear, output: torch.Tensor) -> int:
    """MACs of a linear layer: output elements · in_features."""
    return output.numel() * linear.in_features


def layer_call(layer: nn.Module, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """A synaptic layer's function of ``x`` with the given weight and bias (a transposed conv
    without an output_size, which a traced call does not pass)."""
    if isinstance(layer, nn.Linear):
        return F.linear(x, weight, bias)
    if isinstance(layer, (nn.ConvTranspose1d, nn.ConvTranspose2d)):
        fn = F.conv_transpose1d if isinstance(layer, nn.ConvTranspose1d) else F.conv_transpose2d
        return fn(x, weight, bias, layer.stride, layer.padding, layer.output_padding, layer.groups, layer.dilation)
    return layer._conv_forward(x, weight, bias)


def conv_synaptic_ops(conv: nn.Module, events: torch.Tensor) -> int:
    """Accumulates caused by an event map (no batch dim): Σ_in e_in · fanout(in), which equals
    the layer's own convolution (or transposed convolution: the outputs inside the cropped map
    that each input reaches) of the events with an all-ones kernel, summed (docs §6)."""
    ones = torch.ones(conv.weight.shape, dtype=torch.float64, device=events.device)
    return int(round(layer_call(conv, events.to(torch.float64)[None], ones, None).sum().item()))


def linear_synaptic_ops(linear: nn.Linear, events: torch.Tensor) -> int:
    """Every input event reaches out_features synapses."""
    return int(events.sum().item()) * linear.out_features


def _tensor_numel(value) -> int:
    found = []
    fx.node.map_aggregate(value, lambda v: found.append(v.numel()) if isinstance(v, torch.Tensor) else None)
    return sum(found)


def per_element(n: int):
    """analog_macs of an elementwise op doing ``n`` MACs per output element (docs §6, §8:
    a product 1; softmax 2, exp and normalise; layer norm 4, mean, variance, normalise, affine)."""
    return lambda fn, args, kwargs, output: n * _tensor_numel(output)


def per_input_element(n: int):
    """analog_macs of a reduction doing ``n`` MACs per element of its first input (a norm: a
    square and a sum each)."""
    return lambda fn, args, kwargs, output: n * _tensor_numel(args[0])


def matmul_macs(fn, args, kwargs, output) -> int:
    """a @ b: output elements · the contracted length."""
    return output.numel() * args[0].shape[-1]


def einsum_macs(fn, args, kwargs, output) -> int:
    """torch.einsum(equation, *operands): one MAC per combination of every index's values
    (the product of all index sizes; a plain ``...`` prefix counts with its size)."""
    equation, operands = args[0], args[1:]
    if len(operands) == 1 and isinstance(operands[0], (list, tuple)):
        operands = operands[0]
    sizes: dict[str, int] = {}
    for term, x in zip(equation.split("->")[0].split(","), operands):
        term = term.strip()
        if "..." in term:
            head, tail = term.split("...")
            sizes["..."] = math.prod(x.shape[len(head):x.dim() - len(tail)])
            term = head + tail
            dims = [*x.shape[:len(head)], *x.shape[x.dim() - len(tail):]]
        else:
            dims = list(x.shape)
        sizes.update(zip(term, dims))
    return math.prod(sizes.values())


def attention_macs(fn, args, kwargs, output) -> int:
    """F.scaled_dot_product_attention(q, k, v): q·kᵀ and the weighted sum of v (Nq·Nk·(d + d_v)
    per head and sample) plus the softmax (2 per score)."""
    q, k, v = args[:3]
    heads = q.numel() // (q.shape[-2] * q.shape[-1])
    return heads * q.shape[-2] * k.shape[-2] * (q.shape[-1] + v.shape[-1] + 2)


def multihead_attention_macs(mha: nn.MultiheadAttention, args, kwargs, output) -> int:
    """nn.MultiheadAttention(q, k, v) on B samples of Nq queries and Nk keys: the input
    projections (Nq·E² + Nk·E·(kdim + vdim)), every head's attention (Nq·Nk·2E, plus 2 per
    score for the softmax) and the output projection (Nq·E²)."""
    def samples_tokens(x):
        if x.dim() == 2:
            return 1, x.shape[0]
        return (x.shape[0], x.shape[1]) if mha.batch_first else (x.shape[1], x.shape[0])
    (B, Nq), (_, Nk), E = samples_tokens(args[0]), samples_tokens(args[1]), mha.embed_dim
    return B * (2 * Nq * E * E + Nk * E * (mha.kdim + mha.vdim) + Nq * Nk * (2 * E + 2 * mha.num_heads))


def recurrent_macs(rnn: nn.RNNBase, args, kwargs, output) -> int:
    """nn.LSTM / nn.GRU / nn.RNN on B sequences of N steps: per step, layer and direction,
    g·H·(I_l + R) MACs for the gates (g = 4, 3, 1; I_l the layer's input width: the input's,
    then the previous layer's output; R the recurrent width: H, or the LSTM's projection P, which
    adds P·H)."""
    x = args[0]
    steps = math.prod(x.shape[:-1])  # [B, N, I] or [N, B, I] or one sequence [N, I]: every (sample, step)
    gates = {"LSTM": 4, "GRU": 3}.get(rnn.mode, 1)
    H, P, directions = rnn.hidden_size, rnn.proj_size, 2 if rnn.bidirectional else 1
    R = P or H
    total = 0
    for layer in range(rnn.num_layers):
        width = rnn.input_size if layer == 0 else R * directions
        total += gates * H * (width + R) + P * H
    return steps * directions * total


def shifted_window_attention_macs(fn, args, kwargs, output) -> int:
    """torchvision's Swin window attention on x [B, H, W, C]: qkv and output projections (4C²
    per token) and the attention within each window (2·A·C per token, A the window's area)."""
    x, window = args[0], args[4]
    tokens, C = x.numel() // x.shape[-1], x.shape[-1]
    return tokens * (4 * C * C + 2 * math.prod(window) * C)


class NotAffine(Exception):
    """A call that is not y = Σ a_i·x_i + c in its trains x_i; the message says why."""


class TrainProduct(NotAffine):
    """A product or quotient of two trains: no spiking form, but computed exactly on their
    decoded values (the call runs as an ANALOG op, docs/methods.md §8)."""


@dataclass(frozen=True)
class Affine:
    """y = Σ a_i·x_i + c: ``terms`` are (a_i, train x_i) with numbers a_i, ``constant`` is c.

    On a train the terms run step by step (a scaled sum of aligned trains is the scaled sum of
    their values under either coding); the constant is the ANN's c, which the coding spreads
    over the steps (``Coding.constant_per_step``: every step for rate coding, c/T_in per step for sum
    coding, docs/methods.md §8).
    """
    terms: tuple[tuple[float, object], ...]
    constant: float = 0.0


def _affine(is_train, *pairs) -> Affine:
    """Σ coef·v over (coef, v) pairs: trains become terms, numbers add to the constant."""
    terms, constant = [], 0.0
    for coef, value in pairs:
        if is_train(coef):
            raise NotAffine("scales by a spike train")
        if is_train(value):
            terms.append((coef, value))
        else:
            constant = constant + coef * value
    return Affine(tuple(terms), constant)


def add_form(is_train, input, other, alpha=1) -> Affine:
    """torch.add / operator.add: input + alpha·other."""
    return _affine(is_train, (1, input), (alpha, other))


def sub_form(is_train, input, other, alpha=1) -> Affine:
    """torch.sub / operator.sub: input − alpha·other."""
    return _affine(is_train, (1, input), (-alpha, other))


def rsub_form(is_train, input, other, alpha=1) -> Affine:
    """torch.rsub: other − alpha·input."""
    return _affine(is_train, (-alpha, input), (1, other))


def mul_form(is_train, input, other) -> Affine:
    """torch.mul / operator.mul: a train times a number (a product of trains is not affine)."""
    if is_train(input) and is_train(other):
        raise TrainProduct("multiplies two spike trains")
    train, number = (input, other) if is_train(input) else (other, input)
    return _affine(is_train, (number, train))


def div_form(is_train, input, other, rounding_mode=None) -> Affine:
    """torch.div / operator.truediv: a train divided by a number, without rounding."""
    if rounding_mode is not None:
        raise NotAffine(f"rounds its result (rounding_mode={rounding_mode!r})")
    if is_train(other):
        raise TrainProduct("divides by a spike train")
    if other == 0:
        raise NotAffine("divides by zero")
    return _affine(is_train, (1 / other, input))


def addcmul_form(is_train, input, tensor1, tensor2, value=1) -> Affine:
    """torch.addcmul: input + value·tensor1·tensor2 (ResMLP's and ConvNeXt-V2's affine
    layers); a product of two trains runs on their values, as ``mul``."""
    if is_train(tensor1) and is_train(tensor2):
        raise TrainProduct("multiplies two spike trains")
    train, number = (tensor1, tensor2) if is_train(tensor1) else (tensor2, tensor1)
    return _affine(is_train, (1, input), (value * number, train))


def neg_form(is_train, input) -> Affine:
    """torch.neg / operator.neg: −input."""
    return _affine(is_train, (-1, input))


def on_numbers(fn) -> bool:
    """A Python ``operator`` function: on arguments that hold no train it is arithmetic on
    numbers (shapes) and runs as Python, whatever its entry."""
    return getattr(fn, "__module__", None) in ("_operator", "operator")


def cat_trains(trains: list[torch.Tensor], args, kwargs) -> torch.Tensor:
    """torch.cat of per-sample dim d is dim d + 1 of a train [T, B, ...]."""
    dim = kwargs.get("dim", args[1] if len(args) > 1 else 0)
    return torch.cat(trains, dim=dim + 1 if dim >= 0 else dim)


def stack_trains(trains: list[torch.Tensor], args, kwargs) -> torch.Tensor:
    """torch.stack along per-sample dim d is along dim d + 1 of trains [T, B, ...] (d < 0 counts
    from the end of the stacked result, which has one dim more than each train)."""
    dim = kwargs.get("dim", args[1] if len(args) > 1 else 0)
    return torch.stack(trains, dim=dim + 1 if dim >= 0 else dim)


def assign_trains(trains: list[torch.Tensor], args, kwargs) -> torch.Tensor:
    """``assigned(x, v, index)`` (``ann.assignment``) of a per-sample index is x[:, *index] = v
    on trains [T, ...]: every entry of the result is one of x's or of v's, step by step, so
    it is right under either coding (v broadcast as in the ANN, time first)."""
    x, value = trains
    index = args[2]
    index = (slice(None), *(index if isinstance(index, tuple) else (index,)))
    rank = x[index].dim()
    out = x.clone()
    out[index] = value.reshape(value.shape[0], *([1] * (rank - value.dim())), *value.shape[1:])
    return out


def slice_assignment(module: nn.Module | None, args: tuple, kwargs: dict) -> bool:
    """``assigned(x, v, index)`` with an index of slices, ints and ``...`` (no tensor, no new
    axis) and a value that is a tensor or 0 (a nonzero number would be added at every step)."""
    value, index = args[1], args[2]
    parts = index if isinstance(index, tuple) else (index,)
    return (all(isinstance(p, slice) or p is Ellipsis or isinstance(p, int) and not isinstance(p, bool)
                for p in parts)
            and (isinstance(value, fx.Node) or _number(value) and value == 0))


class NoReplacement(Exception):
    """A module that declares a replacement cannot be replaced exactly; the message says why."""


def avg_pool_for_max_pool(pool: nn.MaxPool2d) -> nn.AvgPool2d:
    """Average pooling over exactly the windows of a max pooling (prepare's swap, docs §0): the
    same kernel, stride, padding and ceil_mode give the same output shape, and the padding is
    left out of each average (count_include_pad=False) as max pooling ignores it. Dilated
    windows (average pooling has none) and returned indices have no such replacement."""
    if _pair(pool.dilation) != (1, 1):
        raise NoReplacement(f"its dilation {pool.dilation} has no average-pooling equivalent (average pooling "
                            "windows are dense)")
    if pool.return_indices:
        raise NoReplacement("it returns indices, which average pooling has not")
    return nn.AvgPool2d(pool.kernel_size, pool.stride, pool.padding, pool.ceil_mode, count_include_pad=False)


def _pair(value) -> tuple:
    return tuple(value) if isinstance(value, (tuple, list)) else (value, value)


_CONV_CONFIG = ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation", "groups", "bias",
                "padding_mode")
_POOL_CONFIG = ("kernel_size", "stride", "padding", "ceil_mode", "count_include_pad")
_MAX_POOL_CONFIG = ("kernel_size", "stride", "padding", "dilation", "return_indices", "ceil_mode")

_RECURRENT_CONFIG = ("input_size", "hidden_size", "num_layers", "batch_first", "dropout", "bidirectional")
_RECURRENT_BIAS = (("bias", lambda m: bool(m.bias)),)  # a flag of the module, not a tensor
_ANALOG_NIR = ("NIR has no analog islands: this op is computed on decoded values (docs/methods.md §8), "
               "outside any spiking primitive")

RELU_FUNCTIONS = (F.relu, torch.relu, torch.relu_)  # F.relu_ is torch.relu_

OPS: tuple[Op, ...] = (
    # synaptic layers
    Op("conv", Kind.SYNAPTIC, modules=(nn.Conv1d, nn.Conv2d, nn.Conv3d), config=_CONV_CONFIG, macs=conv_macs,
       synaptic_ops=conv_synaptic_ops, nir="conv"),
    Op("conv_transpose", Kind.SYNAPTIC, modules=(nn.ConvTranspose1d, nn.ConvTranspose2d),
       config=(*_CONV_CONFIG, "output_padding"), macs=conv_transpose_macs, synaptic_ops=conv_synaptic_ops,
       nir_refusal="NIR has no transposed convolution"),  # LowFormer's upsampling
    Op("linear", Kind.SYNAPTIC, modules=(nn.Linear,), config=("in_features", "out_features", "bias"),
       macs=linear_macs, synaptic_ops=linear_synaptic_ops, nir="linear"),
    # per-step stateless ops
    Op("avg_pool1d", Kind.STATELESS, modules=(nn.AvgPool1d,), functions=(F.avg_pool1d,), config=_POOL_CONFIG,
       nir_refusal="NIR has no 1-d average pooling"),
    Op("avg_pool2d", Kind.STATELESS, modules=(nn.AvgPool2d,), functions=(F.avg_pool2d,),
       config=(*_POOL_CONFIG, "divisor_override"), nir="avg_pool", spike_average=avg_pool_average),
    Op("adaptive_avg_pool1d", Kind.STATELESS, modules=(nn.AdaptiveAvgPool1d,), functions=(F.adaptive_avg_pool1d,),
       config=("output_size",), nir_refusal="NIR has no 1-d average pooling"),
    Op("adaptive_avg_pool2d", Kind.STATELESS, modules=(nn.AdaptiveAvgPool2d,), functions=(F.adaptive_avg_pool2d,),
       config=("output_size",), nir="adaptive_pool", spike_average=adaptive_avg_pool_average),
    Op("upsample", Kind.STATELESS, modules=(nn.Upsample,), functions=(F.interpolate,),
       config=("size", "scale_factor", "mode", "align_corners", "recompute_scale_factor"),
       nir_refusal="NIR has no upsampling"),  # every mode is linear in its input and maps 0 to 0
    # padding: linear and 0 → 0, except a constant pad with a nonzero value (an offset: ANALOG, below)
    Op("pad", Kind.STATELESS, functions=(F.pad,), applies=zero_padding),
    Op("zero_pad", Kind.STATELESS, modules=(nn.ZeroPad1d, nn.ZeroPad2d), config=("padding",)),
    Op("edge_pad", Kind.STATELESS, modules=(nn.ReflectionPad1d, nn.ReflectionPad2d, nn.ReplicationPad1d,
                                            nn.ReplicationPad2d), config=("padding",)),
    Op("flatten", Kind.STATELESS, modules=(nn.Flatten,), functions=(torch.flatten,), methods=("flatten",),
       config=("start_dim", "end_dim"), nir="reshape"),
    Op("unflatten", Kind.STATELESS, modules=(nn.Unflatten,), config=("dim", "unflattened_size"), nir="reshape"),
    Op("reshape", Kind.STATELESS, functions=(torch.reshape,), methods=("view", "reshape", "view_as", "reshape_as"),
       nir="reshape",
       contiguous=True),  # a step may be channels-last (engine.step_layout), which ``view`` cannot take
    Op("identity", Kind.STATELESS, modules=(nn.Identity,), methods=("contiguous", "clone"), nir="identity"),
    Op("cast", Kind.STATELESS, methods=("to", "type_as", "double"), applies=value_keeping_cast, nir="identity"),
    Op("mean", Kind.STATELESS, functions=(torch.mean,), methods=("mean",), nir="mean"),
    Op("sum", Kind.STATELESS, functions=(torch.sum,), methods=("sum",), nir_refusal="NIR has no sum over dimensions"),
    # sums of trains scaled by numbers, plus constants (fx traces x += c as operator.add)
    Op("add", Kind.AFFINE, functions=(operator.add, torch.add), methods=("add", "add_"), affine=add_form, nir="add"),
    Op("sub", Kind.AFFINE, functions=(operator.sub, torch.sub, torch.subtract), methods=("sub", "sub_", "subtract"),
       affine=sub_form, nir_refusal="NIR has no subtraction"),
    Op("rsub", Kind.AFFINE, functions=(torch.rsub,), affine=rsub_form, nir_refusal="NIR has no subtraction"),
    Op("mul", Kind.AFFINE, functions=(operator.mul, torch.mul, torch.multiply), methods=("mul", "mul_", "multiply"),
       affine=mul_form, nir_refusal="NIR has no scaling by a number outside a layer"),
    Op("div", Kind.AFFINE, functions=(operator.truediv, torch.div, torch.divide, torch.true_divide),
       methods=("div", "div_", "divide", "true_divide"), affine=div_form,
       nir_refusal="NIR has no scaling by a number outside a layer"),
    Op("addcmul", Kind.AFFINE, functions=(torch.addcmul,), methods=("addcmul",), affine=addcmul_form,
       nir_refusal="NIR has no product outside a layer"),
    Op("neg", Kind.AFFINE, functions=(operator.neg, torch.neg, torch.negative), methods=("neg", "neg_", "negative"),
       affine=neg_form, nir_refusal="NIR has no negation outside a layer"),
    Op("permute", Kind.STATELESS, functions=(torch.permute,), methods=("permute",),
       nir_refusal="NIR has no permutation of dimensions"),
    Op("transpose", Kind.STATELESS, functions=(torch.transpose, torch.swapaxes, torch.swapdims),
       methods=("transpose", "swapaxes", "swapdims"),
       nir_refusal="NIR has no permutation of dimensions"),
    Op("expand", Kind.STATELESS, methods=("expand", "expand_as"), nir_refusal="NIR has no broadcast"),
    Op("unsqueeze", Kind.STATELESS, functions=(torch.unsqueeze, torch.squeeze, torch.atleast_3d),
       methods=("unsqueeze", "squeeze"), nir="reshape"),
    Op("split", Kind.STATELESS, functions=(torch.chunk, torch.split, torch.unbind), methods=("chunk", "split", "unbind"),
       nir_refusal="NIR has no split of a tensor into several"),
    Op("rearrange", Kind.STATELESS, modules=(nn.Unfold,), config=("kernel_size", "dilation", "padding", "stride"),
       functions=(torch.tile, torch.repeat_interleave, torch.roll, torch.flip, F.unfold),
       methods=("unfold", "repeat", "tile", "repeat_interleave", "roll", "flip"),
       nir_refusal="NIR has no rearrangement of elements"),  # copies elements: linear, 0 → 0
    Op("fold", Kind.STATELESS, modules=(nn.Fold,), functions=(F.fold,),
       config=("output_size", "kernel_size", "dilation", "padding", "stride"),
       nir_refusal="NIR has no fold of patches"),  # unfold's adjoint (VOLO): sums overlapping patches, linear, 0 → 0
    Op("patch_merging_pad", Kind.STATELESS, functions=(swin_transformer._patch_merging_pad,),
       nir_refusal="NIR has no patch merging"),
    # merges of trains
    Op("cat", Kind.MERGE, functions=(torch.cat,), combine=cat_trains, nir_refusal="NIR has no concatenation"),
    Op("stack", Kind.MERGE, functions=(torch.stack,), combine=stack_trains, nir_refusal="NIR has no stacking"),
    # x[index] = v as traced (ann.assignment): MViTv2's relative position bias added into a slice of its attention
    Op("assigned", Kind.MERGE, functions=(assigned,), combine=assign_trains, applies=slice_assignment,
       nir_refusal="NIR has no assignment into part of a tensor"),
    # no spiking form: computed on the decoded values of the incoming trains, re-encoded (docs/methods.md §8)
    Op("layer_norm", Kind.ANALOG, modules=(nn.LayerNorm,), functions=(F.layer_norm,),
       config=("normalized_shape", "eps", "elementwise_affine", "bias"), analog_macs=per_element(4),
       nir_refusal=_ANALOG_NIR),
    Op("rms_norm", Kind.ANALOG, modules=(nn.RMSNorm,), functions=(F.rms_norm,),
       config=("normalized_shape", "eps", "elementwise_affine"), analog_macs=per_element(3),
       nir_refusal=_ANALOG_NIR),  # x / sqrt(mean(x²) + eps) · w: DeepSeek's ViT
    Op("group_norm", Kind.ANALOG, modules=(nn.GroupNorm,), functions=(F.group_norm,),
       config=("num_groups", "num_channels", "eps", "affine"), analog_macs=per_element(4),
       nir_refusal=_ANALOG_NIR),  # PoolFormer, SHViT: layer norm over groups of channels
    Op("normalize", Kind.ANALOG, functions=(F.normalize,), analog_macs=per_element(3),
       nir_refusal=_ANALOG_NIR),  # x / max(‖x‖_p, eps): SwinV2's cosine attention, SwiftFormer
    Op("norm", Kind.ANALOG, functions=(torch.norm, torch.linalg.vector_norm), methods=("norm",),
       analog_macs=per_input_element(2), nir_refusal=_ANALOG_NIR),  # ConvNeXt-V2's global response norm
    Op("softmax", Kind.ANALOG, modules=(nn.Softmax,), functions=(F.softmax, torch.softmax), methods=("softmax",),
       config=("dim",), analog_macs=per_element(2), nir_refusal=_ANALOG_NIR),
    Op("matmul", Kind.ANALOG, functions=(operator.matmul, torch.matmul, torch.bmm), methods=("matmul", "bmm"),
       analog_macs=matmul_macs, nir_refusal=_ANALOG_NIR),
    Op("einsum", Kind.ANALOG, functions=(torch.einsum,), analog_macs=einsum_macs, nir_refusal=_ANALOG_NIR),
    Op("attention", Kind.ANALOG, functions=(F.scaled_dot_product_attention,), analog_macs=attention_macs,
       nir_refusal=_ANALOG_NIR),
    Op("multihead_attention", Kind.ANALOG, modules=(nn.MultiheadAttention,),
       config=("embed_dim", "num_heads", "dropout", "add_zero_attn", "kdim", "vdim", "batch_first"),
       config_extra=(("bias", lambda m: m.in_proj_bias is not None), ("add_bias_kv", lambda m: m.bias_k is not None)),
       analog_macs=multihead_attention_macs, nir_refusal=_ANALOG_NIR),
    # recurrent layers: a state carried along a sequence, run on the decoded sequence (Sequencer's LSTMs)
    Op("lstm", Kind.ANALOG, modules=(nn.LSTM,), config=(*_RECURRENT_CONFIG, "proj_size"),
       config_extra=_RECURRENT_BIAS, analog_macs=recurrent_macs, nir_refusal=_ANALOG_NIR),
    Op("gru", Kind.ANALOG, modules=(nn.GRU,), config=_RECURRENT_CONFIG, config_extra=_RECURRENT_BIAS,
       analog_macs=recurrent_macs, nir_refusal=_ANALOG_NIR),
    Op("rnn", Kind.ANALOG, modules=(nn.RNN,), config=(*_RECURRENT_CONFIG, "nonlinearity"),
       config_extra=_RECURRENT_BIAS, analog_macs=recurrent_macs, nir_refusal=_ANALOG_NIR),
    Op("window_attention", Kind.ANALOG, functions=(swin_transformer.shifted_window_attention,),
       analog_macs=shifted_window_attention_macs, nir_refusal=_ANALOG_NIR),
    Op("embedding", Kind.ANALOG, modules=(nn.Embedding,), config=("num_embeddings", "embedding_dim", "padding_idx"),
       analog_macs=per_element(0), nir_refusal=_ANALOG_NIR),  # a lookup of token ids: no arithmetic
    Op("gather", Kind.ANALOG, functions=(torch.gather,), analog_macs=per_element(0), nir_refusal=_ANALOG_NIR),
    Op("relative_position_bias", Kind.ANALOG, functions=(swin_transformer._get_relative_position_bias,),
       analog_macs=per_element(0), nir_refusal=_ANALOG_NIR),  # a gather from a table: no arithmetic
    # max pooling: the max of running sums (docs/methods.md §8, "Max pooling"); prepare() swaps it for average
    # pooling over the same windows in a QCFS ANN (``replacement``), where it has one
    Op("max_pool2d", Kind.ANALOG, modules=(nn.MaxPool2d,), functions=(F.max_pool2d,), config=_MAX_POOL_CONFIG,
       analog_macs=per_element(0), selects=True, replacement=avg_pool_for_max_pool,
       nir_refusal="NIR has no max pooling"),
    Op("max_pool1d", Kind.ANALOG, modules=(nn.MaxPool1d,), functions=(F.max_pool1d,), config=_MAX_POOL_CONFIG,
       analog_macs=per_element(0), selects=True, nir_refusal="NIR has no max pooling"),
    Op("adaptive_max_pool", Kind.ANALOG, modules=(nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d),
       functions=(F.adaptive_max_pool1d, F.adaptive_max_pool2d), config=("output_size", "return_indices"),
       analog_macs=per_element(0), selects=True, nir_refusal="NIR has no max pooling"),
    # x.float(), x.half() (EfficientViT's attention in float32), x.to(torch.float32) narrow a float64 train: on
    # decoded values, the sum is rounded once, as the ANN rounds it, where a cast step by step would round every step
    Op("narrowing_cast", Kind.ANALOG, methods=("float", "half", "bfloat16", "to"), applies=narrowing_cast,
       analog_macs=per_element(0), nir_refusal=_ANALOG_NIR),
    Op("constant_pad", Kind.ANALOG, functions=(F.pad,), applies=finite_padding, analog_macs=per_element(0),
       nir_refusal=_ANALOG_NIR),
    # timm's MaxPool2dSame: a −inf pad and max pooling, one call as traced (ann.selections)
    Op("max_pool2d_padded", Kind.ANALOG, functions=(max_pool2d_padded,), analog_macs=per_element(0), selects=True,
       nir_refusal="NIR has no max pooling"),
    # CBAM-style spatial attention: max over channels; VOLO's x.max(1)[0] as traced (ann.selections)
    Op("amax", Kind.ANALOG, functions=(torch.amax,), methods=("amax",), analog_macs=per_element(0), selects=True,
       nir_refusal="NIR has no max over dimensions"),
    Op("amin", Kind.ANALOG, functions=(torch.amin,), methods=("amin",), analog_macs=per_element(0), selects=True,
       nir_refusal="NIR has no min over dimensions"),
    # tensors the graph reads directly (get_attr, made modules at conversion)
    Op("constant", Kind.CONSTANT, modules=(Constant,), config=("shape",),
       nir_refusal="NIR has no constant input; fold the tensor into a layer's bias"),
    # shapes
    Op("shape", Kind.SHAPE, functions=(getattr, operator.getitem, torch._assert), methods=("size", "dim"),
       nir="shape"),
    # numbers computed from shapes where a model wraps math for torch.fx (MixNet's "same" padding)
    Op("shape_math", Kind.SHAPE, functions=(math.ceil, math.floor, math.trunc, math.sqrt)),
    # removed or folded before conversion
    Op("dropout", Kind.DROPPED, modules=(nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.AlphaDropout, StochasticDepth),
       functions=(F.dropout, F.dropout1d, F.dropout2d, F.alpha_dropout, stochastic_depth)),
    Op("batch_norm", Kind.FOLDED, modules=(nn.BatchNorm1d, nn.BatchNorm2d)),
    # activation sites
    Op("qcfs", Kind.ACTIVATION, modules=(QCFS,)),
    Op("relu", Kind.ACTIVATION, modules=(nn.ReLU,), functions=RELU_FUNCTIONS, methods=("relu", "relu_"),
       site_form=fixed_form("relu")),
    # activations prepare() quantizes (docs/methods.md §8); only sum-coded methods convert those with f != ReLU
    Op("relu6", Kind.ACTIVATION, modules=(nn.ReLU6,), functions=(F.relu6,), site_form=fixed_form("relu", 0, 6.0)),
    # a ReLU squared by its only reader, as prepare() writes it (StarReLU): one site of f = ReLU²
    Op("relu_squared", Kind.ACTIVATION, modules=(ReLUSquared,), site_form=fixed_form("relu_squared")),
    # clips to [0, c] or [0, ∞), which are ReLU sites; other bounds fall to the refusals below
    Op("clamp_relu", Kind.ACTIVATION, **clamps(lower=True), **clipped_relu(arguments(("min", "max"), (None, None)))),
    Op("hardtanh_relu", Kind.ACTIVATION, modules=(nn.Hardtanh,), functions=(F.hardtanh,),
       **clipped_relu(arguments(("min_val", "max_val"), (-1.0, 1.0)))),
    Op("gelu", Kind.ACTIVATION, modules=(nn.GELU,), functions=(F.gelu,), site_form=gelu_form),
    Op("silu", Kind.ACTIVATION, modules=(nn.SiLU,), functions=(F.silu,), site_form=fixed_form("silu", -1)),
    Op("hardswish", Kind.ACTIVATION, modules=(nn.Hardswish,), functions=(F.hardswish,),
       site_form=fixed_form("hardswish", -1)),
    Op("sigmoid", Kind.ACTIVATION, modules=(nn.Sigmoid,), functions=(F.sigmoid, torch.sigmoid),
       methods=("sigmoid", "sigmoid_"), site_form=fixed_form("sigmoid", 0, 1.0)),
    Op("hardsigmoid", Kind.ACTIVATION, modules=(nn.Hardsigmoid,), functions=(F.hardsigmoid,),
       site_form=fixed_form("hardsigmoid", 0, 1.0)),
    Op("tanh", Kind.ACTIVATION, modules=(nn.Tanh,), functions=(F.tanh, torch.tanh), methods=("tanh", "tanh_"),
       site_form=fixed_form("tanh", 0, 1.0)),  # k_min = −L (activations.SYMMETRIC)
    Op("mish", Kind.ACTIVATION, modules=(nn.Mish,), functions=(F.mish,), site_form=fixed_form("mish", -1)),
    Op("selu", Kind.ACTIVATION, modules=(nn.SELU,), functions=(F.selu, torch.selu), site_form=fixed_form("selu")),
    # activations with numbers (slope, alpha, beta): k_min = −L for LeakyReLU, ELU, CELU, SELU (SYMMETRIC)
    Op("leaky_relu", Kind.ACTIVATION, modules=(nn.LeakyReLU,), functions=(F.leaky_relu,),
       **parametric("leaky_relu", arguments(("negative_slope",), (0.01,)))),
    Op("elu", Kind.ACTIVATION, modules=(nn.ELU,), functions=(F.elu,),
       **parametric("elu", arguments(("alpha",), (1.0,)))),
    Op("celu", Kind.ACTIVATION, modules=(nn.CELU,), functions=(F.celu,),
       **parametric("celu", arguments(("alpha",), (1.0,)))),
    Op("softplus", Kind.ACTIVATION, modules=(nn.Softplus,), functions=(F.softplus,),
       **parametric("softplus", arguments(("beta", "threshold"), (1.0, 20.0)))),
    # refused, with what to do instead
    Op("other_activation", Kind.REFUSED, refused_by_prepare=True,
       modules=(nn.LeakyReLU, nn.ELU, nn.CELU, nn.Hardtanh, nn.Softplus, nn.PReLU, nn.RReLU, nn.GLU, nn.Softsign,
                nn.Tanhshrink, nn.LogSigmoid),
       functions=(F.leaky_relu, F.elu, F.celu, F.hardtanh, F.softplus, F.prelu, F.rrelu, F.glu, F.softsign,
                  F.logsigmoid),
       advice="only ReLU, ReLU6, clips to [0, c] (Hardtanh(0, c), clamp(x, 0, c)), GELU, SiLU, Hardswish, sigmoid, "
              "Hardsigmoid, tanh, Mish, SELU, and LeakyReLU, ELU, CELU and Softplus with numbers for their "
              "parameters (module, function or method) become quantized sites: this one has no entry in "
              "spikebridge.activations (PReLU and RReLU learn or draw their slope, GLU multiplies two halves, the "
              "others are not quantized yet) or its parameters are computed; replace it with one of those and "
              "retrain or fine-tune"),
    Op("comparison", Kind.REFUSED,
       functions=(operator.eq, operator.ne, operator.lt, operator.le, operator.gt, operator.ge, operator.not_,
                  operator.and_, operator.or_),
       advice="a comparison of spike trains is a threshold, not an operation on their values; compare shapes "
              "(numbers) only"),
    Op("integer_cast", Kind.REFUSED, methods=("to",),
       advice="a cast to an integer or bool dtype rounds each step's value of a spike train, not the activation; "
              "cast shapes (numbers) only, or remove it from the model"),
    Op("infinite_pad", Kind.REFUSED, functions=(F.pad,),
       advice="a pad with an infinite or nan value is no value a spike train can carry; a −inf pad read only by "
              "max pooling (TensorFlow's \"same\" max pooling, timm's MaxPool2dSame) converts as one padded "
              "max pooling"),
    Op("nonlinear_elementwise", Kind.REFUSED,
       functions=(*clamps(lower=False)["functions"], torch.abs, operator.abs, torch.pow, operator.pow, torch.square,
                  torch.sqrt, torch.rsqrt, torch.exp, torch.log, torch.sign, torch.floor, torch.ceil, torch.round,
                  torch.trunc, torch.reciprocal, torch.maximum, torch.minimum, torch.max, torch.min, torch.fmod,
                  torch.remainder, torch.floor_divide, operator.floordiv, operator.mod),
       methods=(*clamps(lower=False)["methods"], "abs", "abs_", "pow", "pow_", "square", "sqrt", "rsqrt", "exp", "log",
                "sign", "floor", "ceil", "round", "trunc", "reciprocal", "maximum", "minimum", "max", "min", "fmod",
                "remainder", "floor_divide"),
       advice="a nonlinear op has no step-by-step meaning on spike trains: its value on a train is not its value on "
              "the activation (docs/methods.md §8); remove it, or express it with ReLU sites (a clip to [0, c] "
              "is one, with threshold c), and retrain or fine-tune"),
)


def _index() -> tuple[tuple[dict, dict, dict], dict]:
    """Module type, function and method name -> its general entry: the one without ``applies``
    (declared once), or the only entry of the key; and key -> its other entries (with
    ``applies``), in table order."""
    indexes: tuple[dict, dict, dict] = ({}, {}, {})
    conditional: dict = {}
    for general in (True, False):
        for op in OPS:
            if (op.applies is None) != general:
                continue
            for index, keys in zip(indexes, (op.modules, op.functions, op.methods)):
                for key in keys:
                    assert not general or key not in index, f"{key} is declared twice in the op table"
                    if key in index:
                        conditional.setdefault(key, []).append(op)
                    else:
                        index[key] = op
    return indexes, conditional


(BY_MODULE, BY_FUNCTION, BY_METHOD), CONDITIONAL = _index()


def op_for_module(module: nn.Module) -> Op | None:
    """The entry of a module (by exact type, then by base class), or None."""
    op = BY_MODULE.get(type(module))
    if op is None:
        op = next((o for t, o in BY_MODULE.items() if isinstance(module, t)), None)
    return op


def op_for_node(node: fx.Node, gm: fx.GraphModule) -> Op | None:
    """The entry of a call node: the first entry with ``applies`` that means this call, else the
    general entry of its module, function or method, or None when the table does not know it."""
    module = gm.get_submodule(node.target) if node.op == "call_module" else None
    key = type(module) if module is not None else node.target
    for op in CONDITIONAL.get(key, ()) if node.op.startswith("call_") else ():
        if op.applies(module, node.args, node.kwargs):
            return op
    if node.op == "call_module":
        op = op_for_module(module)
    elif node.op == "call_function":
        op = BY_FUNCTION.get(node.target)
    else:
        op = BY_METHOD.get(node.target) if node.op == "call_method" else None
    return op if op is None or op.applies is None or op.applies(module, node.args, node.kwargs) else None


def supported_ops() -> str:
    """One line naming what a spiking network can hold, for refusal messages."""
    names = [op.name for op in OPS if op.kind not in (Kind.REFUSED, Kind.SHAPE)]
    return ", ".join(names)


def function_name(fn: Callable) -> str:
    """A function's stable name in data-only files: its module and name, e.g. 'torch.flatten'."""
    return f"{fn.__module__}.{fn.__name__}"


FUNCTIONS_BY_NAME = {function_name(f): f for f in BY_FUNCTION}
assert len(FUNCTIONS_BY_NAME) == len(BY_FUNCTION), "two functions of the op table share a name"
