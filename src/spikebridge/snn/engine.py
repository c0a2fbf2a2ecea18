"""The execution engine: runs a SpikingNetwork's graph on spike trains, node by node, in
topological order (docs/architecture.md "snn").

Dispatch: a neuron (``SpikingNeuron``) runs its own dynamics on the whole input train; every
other node is looked up in the op table (``conversion.ops``) and run by the rule of its kind:

- SYNAPTIC: W·x(t) plus the coding's bias per step, a step per call, or a small train in
  one call (``synapse``, ``folds``);
- STATELESS and SHAPE: the same function on every step (``per_step``): each step is a batch
  [B, ...] as in the ANN, so shapes read off a train (``x.size(0)``) are the ANN's;
- AFFINE: y = Σ a_i·x_i + c on aligned trains, the constant c spread over the steps by the
  coding (``affine``; docs/methods.md §8);
- MERGE: the trains are aligned by the coding, then combined by the op's ``combine``;
- ANALOG (and a product or quotient of two trains): computed on the decoded values of the
  trains and re-encoded, by the coding's ``decode``/``encode`` (docs/methods.md §8); each such
  node and its MACs are recorded in the SimulationResult;
- CONSTANT: the module's tensor, as a train of one step.
A Python ``operator`` function on numbers alone (shape arithmetic) runs as Python.

A module or function that is neither is refused: it is never run as if it were stateless.
"""
from __future__ import annotations

import weakref

import torch
import torch.nn.functional as F
from torch import fx, nn

from ..conversion.ops import Kind, NotAffine, Op, TrainProduct, layer_call, on_numbers, per_element
from ..device import last_level_cache_bytes
from ..errors import ConversionError, InputError, OptionError, SpikeBridgeError, first_line
from .integer_synapses import MAX_COUNT, MODES, IntegerLayer, IntegerLayers, supported, worthwhile
from .neurons import SpikingNeuron, empty_train


CHANNELS_LAST_PIXELS = 64  # a 2-D convolution over at least 8x8 pixels runs channels-last on the CPU
CHANNELS_LAST_DTYPES = (torch.float32, torch.bfloat16, torch.float16)  # oneDNN's; float64 convolves natively


def step_layout(layer: nn.Module, train: torch.Tensor) -> torch.memory_format:
    """The memory format a synaptic layer's steps run in: channels-last (NHWC) for a Conv2d on
    the CPU whose input has at least ``CHANNELS_LAST_PIXELS`` pixels and a oneDNN dtype, else
    contiguous (NCHW). oneDNN convolves NHWC natively and reorders NCHW at every call: measured
    on 2 cores, one thread, float32, NHWC took 0.35–0.93x the time of NCHW from 8x8 up (3x3, 1x1
    and depthwise, 3 to 256 channels) and 1.0–1.4x at 4x4 and 2x2 with 256–512 channels; float64
    1.38x at 32x32 (BENCHMARKS.md §9). Not measured on a GPU: other devices keep NCHW."""
    if (isinstance(layer, nn.Conv2d) and train.device.type == "cpu" and train.dtype in CHANNELS_LAST_DTYPES
            and train.dim() == 5 and train.shape[-2] * train.shape[-1] >= CHANNELS_LAST_PIXELS):
        return torch.channels_last
    return torch.contiguous_format


def weight_in(layer: nn.Module, layout: torch.memory_format) -> torch.Tensor:
    """The layer's weight, stored in the layout its steps run in (``step_layout``) from the
    first call on, its values and gradients unchanged: converted at every run instead, it cost
    a copy of the weight per layer per run (ResNet-20 at batch 16, T = 4: 30 copies, ~0.75 ms
    of ~56, measured)."""
    weight = layer.weight
    if not weight.is_contiguous(memory_format=layout):
        weight.data = weight.data.contiguous(memory_format=layout)
    return weight


def one_tap(layer: nn.Module, train: torch.Tensor) -> tuple[int, int] | None:
    """The kernel tap (i, j) that every output of a Conv2d reads real input through, where its
    input steps have one pixel and its one output pixel reads it through tap i = p/d in each
    dimension (zero padding p, dilation d); None otherwise. Every other tap multiplies padding,
    so the call is that tap's 1x1 convolution, same bias and groups: the same products, summed
    in another order where an output sums several (up to rounding; a depthwise layer in float64
    gives the same bits). oneDNN took 42–53 ms for a 5x5 depthwise convolution of
    [256, 576, 1, 1] (torchvision's MobileNetV3 at 28x28 or 32x32) and 0.39 ms for its centre
    tap's (float32: 1 ulp apart, from how the bias is added), 42 ms for a dense 5x5 one with
    256 channels and 1.0 ms for its tap (BENCHMARKS.md §9)."""
    if not isinstance(layer, nn.Conv2d) or tuple(train.shape[-2:]) != (1, 1) or layer.padding_mode != "zeros" \
            or isinstance(layer.padding, str):
        return None
    taps = []
    for k, s, p, d in zip(layer.kernel_size, layer.stride, layer.padding, layer.dilation):
        if (2 * p - d * (k - 1)) // s + 1 != 1 or p % d or p // d >= k:
            return None
        taps.append(p // d)
    return taps[0], taps[1]


FOLD_BYTES = 16 * 2**20  # a train's steps run in one call when its output is at most this (or ``fold_budget``)
CALLS_KEPT = 1024         # synaptic calls whose output size and probe result are remembered


def folds(layer: nn.Module, train: torch.Tensor, coding, forward=None,
          layout: torch.memory_format = torch.contiguous_format, exact_sums: bool = False) -> bool:
    """Whether ``synapse`` runs all steps of ``train`` in one call, the steps folded into the
    batch: when the output train takes at most ``fold_budget`` (its shape found on the meta
    device, once per call shape) and, for a coding whose windows vary (``Coding.whole_trains``
    False: rate-coded time chunks), when ``forward`` (the layer's call, its steps in ``layout``)
    folded gives the bits of a call per step (``folding_keeps_bits``; always, for a call whose
    sums are ``exact_sums``: integer synapses), so that a run in time chunks computes bit for
    bit what one window computes. Measured on 2 cores, one thread, with a 16 MiB budget: PASC
    and bit-plane networks 0.86–1.00x the time of a call per step, max-norm ones 0.85–0.94x at
    batch 16 and 0.65–0.81x at batch 4 (benchmarks/fold_steps.py, fold_windows.py), the same
    logits bit for bit, the same live memory (BENCHMARKS.md §9)."""
    known = _remembered(layer, train, layout)
    if "bytes" not in known:
        step = torch.empty(train.shape[1:], dtype=train.dtype, device="meta")
        weight = layer.weight.to("meta")
        out = layer_call(layer, step, weight, None)
        known["bytes"] = train.shape[0] * out.numel() * out.element_size()
        known["shape"] = (train.shape[0], *out.shape)
    if known["bytes"] > fold_budget(train.device, exact_sums):
        return False
    if coding.whole_trains or exact_sums:
        return True
    return forward is not None and folding_keeps_bits(layer, train, forward, layout)


def fold_budget(device: torch.device, exact_sums: bool = False) -> int:
    """The largest output train ``folds`` runs in one call: for a float call on the CPU half
    its last-level cache (``device.last_level_cache_bytes``) where that is more than
    ``FOLD_BYTES``; elsewhere, and for integer synapses (``exact_sums``), which pass over
    their output once per digit, ``FOLD_BYTES`` (VGG-16 and ResNet-18 took up to 1.13x the
    time with half the cache for integer synapses too). Where the output outgrows the cache, the folded call writes it to memory
    while a call per step writes a step that its copy then reads from cache. Measured, one
    thread, 3x3 convolutions on channels-last binary trains (``benchmarks/fold_steps.py``; one
    call over a call per step with its copy): with 32 MiB of L3 (AMD EPYC) 0.76–1.00 up to 16 MiB
    of output, 0.96–1.06 at 32 MiB, 0.98–1.16 at 64–128 MiB; with 480 MiB (Intel Xeon, shared
    with the host's other guests) 0.75–0.93 at every size from 1 to 128 MiB. Whole simulations
    there with this budget took 0.88–1.02x the time with 16 MiB (``benchmarks/fold_budget.py``;
    PASC 0.91–0.93 on small_cnn and ResNet-20 from batch 64, bit-plane 0.88–0.94 where its
    trains outgrow 16 MiB, max-norm 0.98–1.02), the same logits bit for bit (BENCHMARKS.md §9)."""
    if exact_sums or device.type != "cpu":
        return FOLD_BYTES
    return max(FOLD_BYTES, last_level_cache_bytes() // 2)


_calls: dict[tuple, dict] = {}


def _remembered(layer: nn.Module, train: torch.Tensor, layout: torch.memory_format) -> dict:
    """What is known of a synaptic call (its output's "bytes", whether folding keeps its bits,
    "same_bits"), by what both depend on: the layer's shape and settings, the step layout, the
    train's shape, dtype and device, and the thread count."""
    config = tuple(getattr(layer, k, None) for k in ("stride", "padding", "dilation", "groups", "padding_mode"))
    key = (type(layer), tuple(layer.weight.shape), layer.bias is not None, config, layout, tuple(train.shape),
           train.dtype, train.device, torch.get_num_threads())
    if key not in _calls:
        if len(_calls) >= CALLS_KEPT:
            _calls.clear()
        _calls[key] = {}
    return _calls[key]


def folding_keeps_bits(layer: nn.Module, train: torch.Tensor, forward,
                       layout: torch.memory_format = torch.contiguous_format) -> bool:
    """Whether ``forward`` over the steps of a train like ``train`` folded into the batch gives
    the same bits as ``forward`` on each step: tried once on random values per call shape
    (``_remembered``) and remembered. A kernel's order of sums does not depend on the values,
    so random ones show whether the batch's size changed it: on the CPU (one thread) oneDNN and
    MKL kept it for every layer of the benchmark models at batches 4 and 16, and changed it for
    some shapes with one image (matrix-vector paths) and for an NCHW 1x1 convolution at batch 4."""
    known = _remembered(layer, train, layout)
    if "same_bits" not in known:
        with torch.no_grad():  # its own generator: a simulation leaves the global random state alone
            generator = torch.Generator().manual_seed(0)  # on the CPU: every device takes its values
            x = torch.randn(train.shape, dtype=train.dtype, generator=generator).to(train.device)
            known["same_bits"] = torch.equal(forward(x.flatten(0, 1)), torch.cat([forward(x_t) for x_t in x]))
    return known["same_bits"]


def conv_sum_keeps_bits(layer: nn.Module, train: torch.Tensor, layout: torch.memory_format, weight: torch.Tensor,
                        bias: torch.Tensor | None) -> bool:
    """Whether oneDNN's convolution with a sum post-op (``summed_conv``) gives the bits of the
    convolution and then the add, for a folded call like ``train`` (steps into the batch) in
    ``layout``: tried once on random values per call shape (``_remembered``), as
    ``folding_keeps_bits`` is."""
    known = _remembered(layer, train, layout)
    if "sum_same_bits" not in known:
        with torch.no_grad():
            generator = torch.Generator().manual_seed(0)
            x = torch.randn(train.flatten(0, 1).shape, dtype=train.dtype, generator=generator)
            plain = layer._conv_forward(x.contiguous(memory_format=layout), weight, bias)
            other = torch.randn(plain.shape, dtype=plain.dtype, generator=generator).contiguous(memory_format=layout)
            summed = summed_conv(layer, x.contiguous(memory_format=layout), weight, bias, other.clone())
            known["sum_same_bits"] = torch.equal(plain + other, summed)
    return known["sum_same_bits"]


def summed_conv(layer: nn.Conv2d, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                other: torch.Tensor) -> torch.Tensor:
    """other += conv(x) + bias in one oneDNN call (its sum post-op), ``other`` in the output's
    layout: the convolution's result is never written on its own."""
    return torch.ops.mkldnn._convolution_pointwise_.binary(
        other, x, weight, bias, list(layer.padding), list(layer.stride), list(layer.dilation), layer.groups, "add",
        None, None, [], None)


def synapse(layer: nn.Module, train: torch.Tensor, coding, layout: torch.memory_format = torch.contiguous_format,
            weight: torch.Tensor | None = None, integer: IntegerLayer | None = None) -> torch.Tensor:
    """W·x(t) + the coding's bias for a train of ``train.shape[0]`` steps (docs §1–3), with the
    bias inside the conv/linear call, each step in ``layout`` and ``weight`` the layer's weight
    in that layout (``step_layout``; default: the layer's): one step per call, or all steps in
    one call where ``folds`` says so, whose result is the train with no copy. The output
    train's steps have the layout the layer gives them. ``integer``: the layer in integer
    arithmetic (``integer_synapses``; ``train`` is then a spike train), run in its place. A
    Conv2d whose one-pixel input only one tap reads runs as that tap (``one_tap``)."""
    steps = train.shape[0]
    weight = layer.weight if weight is None else weight
    bias = None if layer.bias is None else coding.constant_per_step(layer.bias, steps)
    if integer is not None:
        forward = (lambda x: integer(x, bias))
    elif (tap := one_tap(layer, train)) is not None:
        tap_weight = weight[:, :, tap[0]:tap[0] + 1, tap[1]:tap[1] + 1]
        forward = (lambda x: F.conv2d(x.contiguous(memory_format=layout), tap_weight, bias, groups=layer.groups))
    elif isinstance(layer, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
        forward = (lambda x: layer._conv_forward(x.contiguous(memory_format=layout), weight, bias))
    else:  # linear, transposed conv: steps in their own layout
        forward = (lambda x: layer_call(layer, x, weight, bias))
    if steps == 1 or folds(layer, train, coding, forward, layout, exact_sums=integer is not None):
        return forward(train.flatten(0, 1)).unflatten(0, (steps, train.shape[1]))
    y = None
    for t in range(steps):
        y_t = forward(train[t])
        if y is None:
            y = empty_train(y_t, steps)
        y[t] = y_t
    return y


INTEGER_LAYERS = IntegerLayers()  # each synaptic layer's packed integer form (weakly held)

RUNNABLE = (Kind.SYNAPTIC, Kind.STATELESS, Kind.SHAPE, Kind.MERGE, Kind.AFFINE, Kind.ANALOG, Kind.CONSTANT)
PRODUCT_MACS = per_element(1)  # a product or quotient of two trains, on their values


class TrainNotes:
    """Something known of each train of a window, by identity: an id can be reused once its
    tensor is freed, so each note keeps a weak reference and answers only for that tensor."""

    def __init__(self):
        self._notes: dict[int, tuple] = {}

    def put(self, train: torch.Tensor, note) -> None:
        self._notes[id(train)] = (weakref.ref(train), note)

    def get(self, train: torch.Tensor, default=None):
        ref, note = self._notes.get(id(train), (None, default))
        return note if ref is not None and ref() is train else default


class TrainRunner(fx.Interpreter):
    """Executes the SNN graph on spike trains (see the module docstring).

    ``run(x)`` runs the whole simulation in one piece. ``run_window(x, (t0, steps))`` runs
    steps t0 .. t0 + steps − 1 only: each neuron continues from the potential it ended the
    previous window with, and nodes with no neuron upstream (``constant_nodes``: the same
    value at every step) are computed in the first window and reused. Counts (spikes,
    events) and site values accumulate over the windows of one runner.
    """

    def __init__(self, snn, result=None, values: bool = False):
        super().__init__(snn.graph)
        self.extra_traceback = False  # errors stay one line (fx would append the node's code)
        self.snn = snn
        self.coding = snn.coding
        self.result = result
        self.values = values
        plan = snn.plan()
        self.constant, self.analog, self.calls = plan.constant, plan.analog, plan.calls
        self.modules = plan.modules  # target -> (module, its op; None for a neuron)
        self.ops = plan.ops  # function and method call node -> its op
        self.analog_state: dict[str, dict] = {}
        self.node: fx.Node | None = None
        self.window: tuple[int, int] | None = None
        self.potentials: dict[str, torch.Tensor] = {}
        self.cache: dict[fx.Node, object] = {}
        self.totals: dict[str, torch.Tensor] = {}
        self.steps: dict[str, int] = {}
        self.counted = TrainNotes()  # site output -> its counts
        self.grids = TrainNotes()  # train -> (a, n): its entries are k·a, k ≤ n
        self.integer = snn.integer_synapses
        if self.integer not in MODES:
            raise OptionError(f"integer_synapses must be one of {', '.join(MODES)}; got {self.integer!r}")
        self.step_bytes = 0  # the largest synaptic output of one step of one image
        self.summed: dict[fx.Node, torch.Tensor] = {}  # a sum computed by the convolution it reads (``sum_into``)

    def run_window(self, x: torch.Tensor, window: tuple[int, int] | None):
        """Steps t0 .. t0 + steps − 1 of the simulation (None: all of them, in one piece)."""
        self.window, self.counted, self.grids = window, TrainNotes(), TrainNotes()
        return self.run(x)

    def snapshot(self) -> dict:
        """What a later window continues from: each neuron's potential and each ANALOG op's
        decoding and encoding state (step count, running sums, last values). ``restore`` puts
        it back, so that a caller can try several continuations of one run from the same point."""
        return _copied({"potentials": self.potentials, "analog": self.analog_state})

    def restore(self, snapshot: dict) -> None:
        copied = _copied(snapshot)
        self.potentials, self.analog_state = copied["potentials"], copied["analog"]

    def run_node(self, n: fx.Node):
        """One node (a constant node's value from the first window when windowed); torch's
        error on an input that reaches a layer in a shape it cannot take becomes a one-line
        InputError naming the node."""
        if n in self.cache:
            return self.cache[n]
        if n in self.summed:
            return self.summed.pop(n)
        self.node = n
        try:  # fx's run_node without its traceback context (two context managers per node)
            args, kwargs = self.fetch_args_kwargs_from_env(n)
            out = getattr(self, n.op)(n.target, args, kwargs)
        except (SpikeBridgeError, torch.OutOfMemoryError):
            raise
        except (RuntimeError, ValueError, IndexError, TypeError) as exc:
            raise InputError(f"the input does not fit node {n.name!r} ({first_line(exc)}); the network takes "
                             f"{self.snn.input_spec().describe()}") from None
        if self.window is not None and n in self.constant:
            self.cache[n] = out
        return out

    def placeholder(self, target, args, kwargs):
        x = super().placeholder(target, args, kwargs)  # an optional input left out has its default (None)
        return x.unsqueeze(0) if isinstance(x, torch.Tensor) else x

    def call_module(self, target, args, kwargs):
        module, op = self.modules[target]
        if op is None and isinstance(module, SpikingNeuron):
            tally = None
            if module.stepwise:  # counts its spikes as it runs, where they are recorded
                if self.result is not None:
                    tally = torch.empty_like(args[0][0], dtype=torch.promote_types(args[0].dtype, torch.float32))
                if self.window is None:  # all steps, from v0
                    out = module.run(args[0], None, 0, module.T, tally)[0]
                else:
                    t0, steps = self.window
                    out, self.potentials[target] = module.run(args[0], self.potentials.get(target), t0, steps, tally)
            else:
                out = module(args[0])
            self.record_site(target, out, tally)
            self.tag_grid(out, *(module.spike_grid() or (None, 0)))
            return out
        if op is None or op.kind not in RUNNABLE:
            raise ConversionError(f"the engine cannot run module {target!r} ({type(module).__name__}): it is neither "
                                  "a spiking neuron nor an op of the op table that a spiking network can hold")
        if op.kind is Kind.SYNAPTIC:
            self.record_events(self.calls[self.node], args[0])
            layout = step_layout(module, args[0])
            weight = weight_in(module, layout)  # first: the integer form is keyed on the weight's storage
            integer = self.integer_layer(module, args[0])
            out = None if integer is not None else self.sum_into(module, args[0], layout, weight)
            if out is None:
                out = synapse(module, args[0], self.coding, layout, weight, integer)
            self.step_bytes = max(self.step_bytes, out.numel() // max(1, out.shape[0] * out.shape[1]) * out.element_size())
            return out
        if op.kind is Kind.CONSTANT:
            return module().unsqueeze(0)
        return self.run_op(op, module, args, kwargs)

    def sum_into(self, layer: nn.Module, train: torch.Tensor, layout: torch.memory_format,
                 weight: torch.Tensor) -> torch.Tensor | None:
        """A convolution whose only reader is a sum of two trains, 1·(its output) + 1·other
        (the op table's affine form of that node, no constant), where the other train is at
        its last use and owns its memory: other += W·x + the coding's bias in one oneDNN call
        (``summed_conv``), so that the convolution's output is never written on its own nor
        read back; the sum is kept for the add node (``run_node``) and returned. None where
        that does not apply: a CPU float32 convolution folded into one call (``folds``), not
        on autograd's path, whose sum post-op keeps the bits of the convolution and then the
        add (``conv_sum_keeps_bits``); the other train a neuron's or synaptic layer's output
        (a fresh tensor, not the caller's input), computed in this window, no other live node
        sharing its memory. Measured on a ResNet-20 block's trains, batch 64, L = 8, one thread:
        19.3 against 25.9 ms (conv, then add) with 16 channels at 32x32, 15.7 against 18.5 with 32
        at 16x16; the same bits."""
        node = self.node
        if (not isinstance(layer, nn.Conv2d) or layer.padding_mode != "zeros" or isinstance(layer.padding, str)
                or train.device.type != "cpu" or train.dtype != torch.float32 or weight.dtype != torch.float32
                or not torch.backends.mkldnn.is_available() or len(node.users) != 1 or node in self.constant
                or torch.is_grad_enabled() and any(t is not None and t.requires_grad
                                                   for t in (train, weight, layer.bias))):
            return None
        (add,) = node.users
        partner = self.sum_partner(add, node)
        if partner is None:
            return None
        other = self.env[partner]
        bias = None if layer.bias is None else self.coding.constant_per_step(layer.bias, train.shape[0])
        forward = (lambda x: layer._conv_forward(x.contiguous(memory_format=layout), weight, bias))
        if (one_tap(layer, train) is not None or not folds(layer, train, self.coding, forward, layout)
                or other.shape != _remembered(layer, train, layout)["shape"] or other.dtype != torch.float32
                or other.device != train.device or other.requires_grad):
            return None
        flat = other.flatten(0, 1)
        if (flat.data_ptr() != other.data_ptr() or not flat.is_contiguous(memory_format=layout)
                or other.untyped_storage().nbytes() != other.numel() * other.element_size()
                or self.shares_memory(partner, other)
                or not conv_sum_keeps_bits(layer, train, layout, weight, bias)):
            return None
        summed_conv(layer, train.flatten(0, 1).contiguous(memory_format=layout), weight, bias, flat)
        self.summed[add] = out = other.view(other.shape)  # a new tensor: no note of ``other`` applies to it
        return out

    def sum_partner(self, add: fx.Node, node: fx.Node) -> fx.Node | None:
        """The other train's node of ``add`` where ``add`` is 1·node + 1·other by its op's
        affine form, and other is a neuron's or synaptic layer's output of this window whose
        last reader is ``add``; None otherwise."""
        op = self.ops.get(add)  # None for a module call: no module entry is AFFINE
        if op is None or op.kind is not Kind.AFFINE:
            return None
        try:
            form = op.affine(lambda v: isinstance(v, fx.Node), *add.args, **add.kwargs)
        except NotAffine:
            return None
        nodes = [v for _, v in form.terms]
        if form.constant != 0 or len(nodes) != 2 or any(a != 1 for a, _ in form.terms) or nodes.count(node) != 1:
            return None
        other = nodes[1] if nodes[0] is node else nodes[0]
        module = self.modules.get(other.target, (None, None)) if other.op == "call_module" else (None, None)
        producer = isinstance(module[0], SpikingNeuron) or (module[1] is not None and module[1].kind is Kind.SYNAPTIC)
        if (not producer or other not in self.env or other in self.constant
                or other not in self.user_to_last_uses.get(add, ())):  # fx's table of last uses
            return None
        return other

    def shares_memory(self, node: fx.Node, value: torch.Tensor) -> bool:
        """Whether a live value of another node shares ``value``'s memory."""
        storage = value.untyped_storage().data_ptr()
        return any(t.untyped_storage().data_ptr() == storage
                   for n, v in self.env.items() if n is not node for t in _tensors(v))

    def call_function(self, target, args, kwargs):
        if on_numbers(target) and not _tensors((args, kwargs)):
            return target(*args, **kwargs)  # arithmetic on numbers (shapes)
        return self.run_op(self.lookup(self.ops.get(self.node), target), target, args, kwargs)

    def call_method(self, target, args, kwargs):
        op = self.lookup(self.ops.get(self.node), target)
        return self.run_op(op, lambda obj, *a, **k: getattr(obj, target)(*a, **k), args, kwargs)

    def lookup(self, op: Op | None, target) -> Op:
        if op is None or op.kind not in RUNNABLE:
            name = target if isinstance(target, str) else getattr(target, "__name__", target)
            raise ConversionError(f"the engine cannot run {name!r}: it is not an op of the op table")
        return op

    def run_op(self, op: Op, fn, args, kwargs):
        if op.kind is Kind.ANALOG:
            return self.analog_op(op.name, op.analog_macs, fn, args, kwargs, op.selects)
        if op.kind is Kind.AFFINE and _tensors((args, kwargs)):
            try:
                form = op.affine(_is_train, *args, **kwargs)
            except TrainProduct:
                return self.analog_op(op.name, PRODUCT_MACS, fn, args, kwargs)
            except NotAffine as exc:  # convert() refuses these; a graph edited afterwards can still hold one
                raise ConversionError(f"the engine cannot run {op.name!r} on spike trains: it {exc}") from None
            return self.affine(form)
        if op.kind is Kind.MERGE:
            trains = args[0] if isinstance(args[0], (list, tuple)) else args[:2]
            if all(isinstance(t, torch.Tensor) for t in trains):
                return op.combine(self.coding.align(list(trains)), args, kwargs)
        if op.contiguous:
            args, kwargs = fx.node.map_aggregate((args, kwargs), lambda v: v.contiguous() if isinstance(v, torch.Tensor) else v)
        out = self.per_step(fn, args, kwargs)
        if op.spike_average is not None:
            self.tag_average(op, fn, args, kwargs, out)
        return out

    def affine(self, form) -> torch.Tensor:
        """y = Σ a_i·x_i + c (``ops.Affine``): the trains aligned by the coding, scaled and summed
        step by step, and the ANN's constant c added as the coding spreads it over the steps
        (rate: c every step; sum: c/T_in per step, so that the train carries c once; docs/methods.md §8).
        Steps broadcast against each other as the ANN's tensors do (time stays the first dim)."""
        out = None
        rank = max(x.dim() for _, x in form.terms)
        for (a, _), x in zip(form.terms, self.coding.align([x for _, x in form.terms])):
            x = x.reshape(x.shape[0], *([1] * (rank - x.dim())), *x.shape[1:])  # steps broadcast as in the ANN
            term = x if a == 1 else a * x
            out = term if out is None else out + term
        if form.constant != 0:
            out = out + self.coding.constant_per_step(form.constant, out.shape[0])
        return out

    def analog_op(self, name: str, macs, fn, args, kwargs, homogeneous: bool = False):
        """An op with no spiking form, on the decoded values of its trains (``Coding.decode``),
        step by step, its result re-encoded (``Coding.encode``); the node and its MACs are
        recorded (docs/methods.md §6, §8). The state of the decoding and encoding carries over
        from one window of a run to the next."""
        trains = _tensors((args, kwargs))
        state = self.analog_state.setdefault(self.node.name, {})
        values = dict(zip(map(id, trains), self.coding.decode(self.coding.align(trains), state, homogeneous)))
        args, kwargs = fx.node.map_aggregate((args, kwargs), lambda v: values[id(v)] if isinstance(v, torch.Tensor) else v)
        out = self.per_step(fn, args, kwargs)
        outputs = []
        fx.node.map_aggregate(out, lambda v: outputs.append(v) if isinstance(v, torch.Tensor) else None)
        if self.result is not None:
            steps = outputs[0].shape[0]
            first_args, first_kwargs = fx.node.map_aggregate((args, kwargs), lambda v: v[0] if isinstance(v, torch.Tensor) else v)
            first_out = fx.node.map_aggregate(out, lambda v: v[0] if isinstance(v, torch.Tensor) else v)
            record = self.result.analog_ops.setdefault(self.node.name, {"op": name, "macs": 0, "calls": 0})
            record["macs"] += steps * macs(fn, first_args, first_kwargs, first_out)
            record["calls"] += steps
        encoded = iter(range(len(outputs)))
        out = fx.node.map_aggregate(out, lambda v: self.coding.encode(v, state, next(encoded), homogeneous)
                                    if isinstance(v, torch.Tensor) else v)
        if homogeneous and self.coding.selection_keeps_spikes and len(trains) == 1 and isinstance(out, torch.Tensor):
            self.tag_grid(out, *self.spike_grid(trains[0]))  # a selection of trains on one grid per channel
        return out

    def per_step(self, fn, args, kwargs):
        """Apply a per-sample op to each step [B, ...] of its trains and stack the results; an op
        that returns no tensor (a shape) gives the same at every step and is returned once. An
        integer or boolean tensor of one step is an index or a mask (a constant buffer), not a
        value: the same at every step of the trains it meets (MaxxViT's relative-position index
        into a bias its MLP computes with spikes)."""
        tensors = _tensors((args, kwargs))
        if not tensors:
            return fn(*args, **kwargs)
        steps = {a.shape[0] for a in tensors if not _is_index(a)} or {1}
        if len(steps) > 1:
            raise ConversionError("an op received spike trains of different lengths")
        (steps,) = steps

        def at(t):
            return fx.node.map_aggregate((args, kwargs), lambda v: (v[0] if _is_index(v) else v[t])
                                         if isinstance(v, torch.Tensor) else v)

        a, k = at(0)
        first = fn(*a, **k)
        if not _tensors(first):  # a shape; otherwise a tensor or a tuple holding tensors (chunk, attention, LSTM)
            return first
        return _stacked(first, [fn(*a, **k) for a, k in map(at, range(1, steps))])

    def record_site(self, site: str, out: torch.Tensor, tally: torch.Tensor | None = None) -> None:
        """Steps, values and spike counts of a site's output train. ``tally``: the spikes the
        neuron counted per entry of a step as it ran (``run(..., counts)``), summed here over
        the batch; otherwise the train's nonzero entries are counted (``nonzero_counts``).
        Counted as the neuron runs, counting took 0.64 of the time ``nonzero_counts`` took
        after it on a [8, 16, 16, 32, 32] train, 0.34 on [8, 16, 64, 8, 8] and 0.70 on
        [8, 64, 16, 32, 32] (an IF loop timed with each and with neither, one thread); both are
        exact, so the counts are the same."""
        self.steps[site] = self.steps.get(site, 0) + out.shape[0]
        if self.values:
            self.totals[site] = self.totals[site] + out.sum(0) if site in self.totals else out.sum(0)
        if self.result is not None:
            counts = nonzero_counts(out) if tally is None else neuron_sums(tally.unsqueeze(0))
            self.counted.put(out, counts)  # layers fed straight by it reuse the count
            _accumulate(self.result.spikes, site, counts)
            self.result.steps[site] = self.steps[site]

    def integer_layer(self, layer: nn.Module, train: torch.Tensor) -> IntegerLayer | None:
        """The layer in integer arithmetic where its input's entries are integers k times a
        value (``tag_grid``) and the network's ``integer_synapses`` mode takes it: "always"
        wherever supported, "auto" where also ``worthwhile``, "never" nowhere."""
        value, count = self.spike_grid(train)
        if value is None or self.integer == "never" or not supported(layer, train, layer.weight):
            return None
        if self.integer == "auto" and not worthwhile(layer):
            return None
        return INTEGER_LAYERS.get(layer, layer.weight, value, count)

    def tag_grid(self, train: torch.Tensor, value: torch.Tensor | None, count: int) -> None:
        """Remember that every entry of ``train`` is k·``value`` (per channel) with k an integer
        in 0..``count``, for the synaptic layers it feeds (integer synapses)."""
        if value is not None and count <= MAX_COUNT:
            self.grids.put(train, (value, count))

    def spike_grid(self, train: torch.Tensor) -> tuple[torch.Tensor, int] | tuple[None, int]:
        """(a, n) of a train tagged by ``tag_grid``; (None, 0) for any other."""
        return self.grids.get(train, (None, 0))

    def tag_average(self, op: Op, fn, args, kwargs, out) -> None:
        """An average over windows of one divisor d (``Op.spike_average``) of spikes of value a
        gives multiples of a/d, up to n times the input's count."""
        value, count = self.spike_grid(args[0])
        average = None if value is None else op.spike_average(fn if isinstance(fn, nn.Module) else None, args, kwargs)
        if average is not None and isinstance(out, torch.Tensor):
            divisor, window = average
            self.tag_grid(out, value / divisor, count * window)

    def record_events(self, layer: str, train: torch.Tensor) -> None:
        if self.result is None:
            return
        counts = self.counted.get(train)
        events = counts if counts is not None else nonzero_counts(train)
        if layer in self.analog:
            self.result.analog_layers.add(layer)
            if self.node in self.constant:  # the same input at every step: computed once, presented per the coding
                events = events * self.coding.presentations(train.shape[0], self.snn.T)
            else:  # the result of an analog op: a new input at every step of its train
                self.result.analog_steps[layer] = self.result.analog_steps.get(layer, 0) + train.shape[0]
        _accumulate(self.result.events, layer, events)

    def site_values(self) -> dict[str, torch.Tensor]:
        """Each site's decoded value per neuron over all steps run so far (sum, or mean for
        rate coding); empty unless the runner was asked for values."""
        return {site: self.coding.value(total, self.steps[site]) for site, total in self.totals.items()}


def nonzero_counts(train: torch.Tensor) -> torch.Tensor:
    """Nonzero entries of a train [steps, B, ...] per neuron, summed over steps and batch
    (int64, contiguous; ``neuron_sums``). A float train's comparison is written as 1.0/0.0
    into a float buffer and summed; summing a bool tensor was 5x slower, measured."""
    if not train.is_floating_point():
        return neuron_sums(train != 0)
    return neuron_sums(torch.ne(train, 0, out=torch.empty_like(train)))


def neuron_sums(train: torch.Tensor) -> torch.Tensor:
    """The entries of a train [steps, B, ...] summed per neuron over steps and batch (int64,
    contiguous; a float train summed in at least float32, exact for counts up to 2^24 per
    entry). Summed in the train's memory order (its per-neuron dims ordered by stride, so that
    steps and batch are the outer rows of one dense block): a channels-last train summed as
    NCHW took 10x as long (1.2 against 0.11 ms on [1, 64, 16, 32, 32], one thread)."""
    order = sorted(range(2, train.dim()), key=lambda d: -train.stride(d))
    rows = train.permute(0, 1, *order)
    sums = rows.sum((0, 1), dtype=torch.promote_types(train.dtype, torch.float32) if train.is_floating_point() else None)
    back = sums.permute(*sorted(range(len(order)), key=lambda i: order[i]))
    return back.to(torch.long, memory_format=torch.contiguous_format)


def _accumulate(counts: dict, key: str, value: torch.Tensor) -> None:
    counts[key] = counts[key] + value if key in counts else value


def _is_index(value: torch.Tensor) -> bool:
    """A one-step integer or boolean tensor: an index or mask (``TrainRunner.per_step``)."""
    return value.shape[0] == 1 and not value.is_floating_point() and not value.is_complex()


def _is_train(value) -> bool:
    return isinstance(value, torch.Tensor)


def _copied(value):
    """A copy of a runner's state (dicts, tuples and lists of tensors and numbers) whose tensors
    and dicts a run can change without changing the original's."""
    if isinstance(value, dict):
        return {key: _copied(v) for key, v in value.items()}
    if isinstance(value, (tuple, list)):
        return type(value)(map(_copied, value))
    return value.clone() if isinstance(value, torch.Tensor) else value


def _stacked(first, rest: list):
    """Per-step results stacked along a new first dim (time), inside tuples and lists too (an
    LSTM's (output, (h, c))); what is not a tensor is the first step's."""
    if isinstance(first, torch.Tensor):
        return first.unsqueeze(0) if not rest else torch.stack([first, *rest])
    if isinstance(first, (tuple, list)):
        return type(first)(_stacked(v, [r[i] for r in rest]) for i, v in enumerate(first))
    return first


def _tensors(tree):
    found = []
    fx.node.map_aggregate(tree, lambda v: found.append(v) if isinstance(v, torch.Tensor) else None)
    return found
