"""SpikingNetwork: a converted graph and how to run it (docs/architecture.md "snn").

A spike train is a tensor [T, B, ...]; the analog input enters as a 1-step train. The engine
(``engine.TrainRunner``) runs the graph layer by layer, time-major, dispatching each node on
the neuron protocol (``neurons.SpikingNeuron``) or the op table (``conversion.ops``). The
method's record (``conversion.registry``) gives the coding (``codings``) and time policy.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
from torch import fx, nn

from ..conversion.ops import Kind, Op, op_for_module
from ..conversion.registry import Method, get_method
from ..device import module_device
from ..errors import OptionError, check_int, check_T
from ..inputs import InputSpec, input_spec
from .codings import Coding
from .neurons import SpikingNeuron


@dataclass
class SimulationResult:
    """What one simulation measured.

    logits: [T, B, classes], the output read out after each step (anytime).
    spikes: site -> spike count per neuron position, summed over steps and batch.
    events: synaptic layer call (``SpikingNetwork.synaptic_layers``) -> non-zero input events
        per input position, summed over steps and batch (a constant rate-coded input counts
        once per step).
    steps: site -> number of steps of the site's output train.
    values: site -> the train's decoded value per neuron [B, ...] (sum, or mean for rate
        coding); filled only when asked for (verify uses it).
    analog_layers: synaptic layers whose input is not spikes (the analog input, or the result
        of an analog op): they do MACs. analog_steps: for those fed by an analog op, how many
        distinct inputs they received (computed anew each time; a constant input counts once).
    analog_ops: node -> {"op", "macs", "calls"} for every op computed on decoded values
        (docs/methods.md §8): its MACs summed over the batch and its calls (once per image
        under sum coding, once per step under rate coding).
    """

    logits: torch.Tensor
    spikes: dict[str, torch.Tensor] = field(default_factory=dict)
    events: dict[str, torch.Tensor] = field(default_factory=dict)
    steps: dict[str, int] = field(default_factory=dict)
    values: dict[str, torch.Tensor] = field(default_factory=dict)
    analog_layers: set[str] = field(default_factory=set)
    analog_steps: dict[str, int] = field(default_factory=dict)
    analog_ops: dict[str, dict] = field(default_factory=dict)
    batch_size: int = 0

    @property
    def T(self) -> int:
        return self.logits.shape[0]

    def add_counts(self, other: "SimulationResult") -> "SimulationResult":
        """Add the counts of a simulation of the same network on other images: spikes, events
        and analog MACs summed, images added (logits and values are left as they are)."""
        for key, value in other.spikes.items():
            self.spikes[key] = self.spikes[key] + value if key in self.spikes else value
        for key, value in other.events.items():
            self.events[key] = self.events[key] + value if key in self.events else value
        for key, value in other.analog_ops.items():
            self.analog_ops.setdefault(key, {**value, "macs": 0})["macs"] += value["macs"]
        self.steps.update(other.steps)
        self.analog_layers |= other.analog_layers
        self.analog_steps.update(other.analog_steps)
        self.batch_size += other.batch_size
        return self

    def accuracy(self, labels: torch.Tensor) -> torch.Tensor:
        """Fraction of correct predictions after each step: [T]."""
        return (self.logits.argmax(-1) == labels.to(self.logits.device)).double().mean(1)


MAX_AUTO_CHUNK = 8
AUTO_CHUNK_INPUT_BYTES = 1 << 20


def auto_chunk(x: torch.Tensor) -> int:
    """Steps per chunk when ``simulate`` is given none: as many as keep one chunk of the input
    within ``AUTO_CHUNK_INPUT_BYTES`` (1 MiB), from 1 to ``MAX_AUTO_CHUNK``. Measured on CIFAR
    inputs (T = 32, one thread, freed memory kept by ``keep_freed_memory``; BENCHMARKS.md §9):
    at batch 64 ResNet-20 ran 1.09x faster one step at a time than in chunks of 8 (each step's
    activations stay in cache from layer to layer); at batch 16 every chunk from 1 to 8 ran
    within 3% (VGG-16: chunks of 8 5% faster); at batch 4 and 1 chunks of 8 were 1.13x and
    1.23x faster (the per-node overhead is paid once per chunk). Memory grows with the chunk."""
    step_bytes = max(1, x.numel() * x.element_size())
    return max(1, min(MAX_AUTO_CHUNK, AUTO_CHUNK_INPUT_BYTES // step_bytes))


CHUNK_TRIES = (1, 2, 4, 8)
CHUNK_TIMINGS = 2  # times each try is timed; the shortest counts


class ChunkTuner:
    """The default steps per window of a network run in time chunks, chosen by measurement per
    run shape (input shape, batch, T, what is recorded): the first run takes ``auto_chunk`` and
    is not timed (it packs weights, probes folds and learns the step size); each later run tries
    the next of 1, 2, 4 and 8 steps (up to T, and up to what ``window_steps_allowed`` lets the
    memory hold), timed, in two interleaved rounds; from then on the
    one of shortest time is taken (with one timing each, max-norm and qcfs networks of the same
    shape ended 11% apart in one row of the speed benchmark: ResNet-20, batch 64, T = 4).
    Every chunk gives the same results bit for bit, so the choice changes only time (and
    memory, which grows with the chunk, up to 8 steps). No input-size rule was best for every
    model (``benchmarks/chunk_rules.py``, one thread, T = 4–32, time over ``auto_chunk``'s;
    BENCHMARKS.md §9): windows of 2 steps instead of 1 at batch 64 took 0.89–0.92x on ResNet-20
    and 0.96–0.99x on VGG-16 but 1.05–1.09x on small_cnn and 1.07–1.11x on ResNet-18; windows of
    8 instead of 5 at batch 16 0.91–0.93x on ResNet-20 and 0.90–0.96x on VGG-16, 1.01–1.03x on
    ResNet-18. Inference on the CPU only: a GPU's time needs a synchronisation, and training's
    runs are not measured; those take ``auto_chunk``."""

    def __init__(self):
        self.seconds: dict[tuple, dict[int, list[float]]] = {}  # run shape -> chunk -> its timings

    def choose(self, key: tuple, T: int, first: int, most: int = MAX_AUTO_CHUNK) -> tuple[int, bool]:
        """(steps per window, whether to time the run and report it with ``measured``); the
        tries go up to ``most`` steps (at least 1), what memory allows (``window_steps_allowed``)."""
        if key not in self.seconds:
            if len(self.seconds) >= INPUT_SHAPES_KEPT:
                self.seconds.clear()
            self.seconds[key] = {}
            return first, False
        timed = self.seconds[key]
        tries = list(dict.fromkeys(min(c, T) for c in CHUNK_TRIES if c <= max(1, most)))
        for round_ in range(CHUNK_TIMINGS):  # rounds over the tries, interleaved
            untried = [c for c in tries if len(timed.get(c, ())) <= round_]
            if untried:
                return untried[0], True
        return min(timed, key=lambda c: min(timed[c])), False

    def measured(self, key: tuple, chunk: int, seconds: float) -> None:
        self.seconds.setdefault(key, {}).setdefault(chunk, []).append(seconds)


TUNED_WINDOW_BYTES = 128 << 20


def window_steps_allowed(x: torch.Tensor, step_bytes: int | None) -> int:
    """The most steps per window the chunk tuner tries: as many as keep the largest synaptic
    output of one window over the whole batch within ``TUNED_WINDOW_BYTES`` (128 MiB), so that
    tuning never multiplies a large input's memory (ImageNet-size images keep ``auto_chunk``'s
    one step). ``step_bytes``: that output per image and step, learnt by the first run."""
    if step_bytes is None:
        return 1
    return max(1, TUNED_WINDOW_BYTES // max(1, x.shape[0] * step_bytes))


AUTO_PIECE_TRAIN_BYTES = 6 << 20


def auto_batch_chunk(x: torch.Tensor, steps: int) -> int:
    """Images per piece when a network that runs in one window (sum coding) is given a batch:
    as many as keep a piece's input, repeated over the network's ``steps``, within
    ``AUTO_PIECE_TRAIN_BYTES`` (6 MiB), at least one: 64 CIFAR images at 8 steps, 16 at 32, so
    the trains do not grow with the steps. Measured (``benchmarks/batch_pieces.py``, BENCHMARKS.md
    §9; one thread, batch 64, time of pieces of 32 / 16 / 8 images over the whole batch's): PASC
    at L = 8 0.93 / 0.91 / 0.91 on small_cnn, 1.02 / 0.99 / 1.02 on ResNet-20, 0.97 / 1.00 /
    1.01 on ResNet-18 and 1.03 / 1.11 / 1.28 on VGG-16, whose 4x4 and 2x2 layers run small
    GEMMs on few images; at L = 32 0.88–1.05 / 0.90–1.11 / 0.92–1.19. Not measured on a GPU."""
    image_bytes = max(1, x[0].numel() * x.element_size()) if x.shape[0] else 1
    return max(1, AUTO_PIECE_TRAIN_BYTES // (image_bytes * max(1, steps)))


STEP_PIECE = 64
STEP_PIECE_BYTES = 8 << 20
INPUT_SHAPES_KEPT = 64


def auto_step_pieces(x: torch.Tensor, step_bytes: int | None, autograd: bool = False) -> int:
    """Images per piece when a network simulated in time chunks (rate coding) is given a batch:
    in inference on the CPU, ``STEP_PIECE`` (64) when 64 images' largest synaptic output of one step
    (``step_bytes`` per image, learnt by the network's previous run on inputs of this shape)
    takes at most ``STEP_PIECE_BYTES`` (8 MiB); otherwise (not yet known, larger activations,
    another device, or a run on ``autograd``'s path, surrogate-gradient training: not measured)
    the whole batch. Measured (``benchmarks/batch_pieces.py``, BENCHMARKS.md
    §9; max-norm, T = 8, one thread, time of pieces of 64 over the whole batch's): ResNet-20
    (64 KiB per image) 0.96 / 0.87 / 0.82 at batch 128 / 256 / 512, small_cnn (128 KiB)
    0.89 / 0.93 / 0.89, the activations of a piece staying in cache from layer to layer;
    VGG-16 and ResNet-18 (256 KiB) 1.02–1.10 in pieces of 128 to 32 at batch 256, and ResNet-20
    at batch 64 1.06–1.11 in pieces of 32 and 16."""
    if step_bytes is None or x.device.type != "cpu" or autograd or step_bytes * STEP_PIECE > STEP_PIECE_BYTES:
        return max(1, x.shape[0])
    return STEP_PIECE


def call_names(nodes) -> dict:
    """Each call of a module its record name, in the order given: the module's name for its
    first call, name#2, name#3, … for the later ones. A layer with shared weights called on
    inputs of different shapes (CoaT's MLP, shared by its scales) has one input-event map per
    call, and the calls' operations and energy are counted apart."""
    names, seen = {}, {}
    for node in nodes:
        seen[node.target] = seen.get(node.target, 0) + 1
        names[node] = call_name(node.target, seen[node.target])
    return names


def call_name(name: str, call: int) -> str:
    """The record name of a module's ``call``-th call (1, 2, …): name, name#2, …"""
    return name if call == 1 else f"{name}#{call}"


def _input_key(x: torch.Tensor) -> tuple:
    return tuple(x.shape[1:]), x.dtype, x.device


@dataclass(frozen=True)
class GraphPlan:
    """What a simulation reads off the graph (``SpikingNetwork.plan``).

    modules: each module call's target -> (module, its op table entry; None for a neuron), in
    execution order. neurons: the activation sites, in execution order. synaptic: each call of
    a synaptic layer (conv, linear; BatchNorm folded in), in execution order, by its record
    name (``call_names``: a layer called k times, shared weights, is k records). calls: each
    synaptic call node -> its record name. constant: the nodes with
    no neuron upstream (and not neurons): the same value at every step, computed on the analog
    input. analog: the synaptic layers whose input is not spikes: it has passed no neuron since
    the analog input, a constant, or an op computed on decoded values (``graph.analog_nodes``)
    other than one that selects among its inputs where the coding keeps spikes spikes (max
    pooling under rate coding); by record name. ops: each function or method call's op table
    entry (``op_for_node``: the entry that means this call, where a function has several), or
    None where the table has none."""

    key: tuple
    modules: dict[str, tuple[nn.Module, Op | None]]
    neurons: dict[str, SpikingNeuron]
    synaptic: dict[str, nn.Module]
    calls: dict[fx.Node, str]
    constant: frozenset[fx.Node]
    analog: frozenset[str]
    ops: dict[fx.Node, Op | None]

    @classmethod
    def of(cls, gm: fx.GraphModule, coding: Coding, key: tuple) -> GraphPlan:
        from ..conversion.graph import analog_nodes
        from ..conversion.ops import op_for_node

        modules = {}
        for n in gm.graph.nodes:
            if n.op == "call_module" and n.target not in modules:
                module = gm.get_submodule(n.target)
                modules[n.target] = (module, None if isinstance(module, SpikingNeuron) else op_for_module(module))
        neurons = {t: m for t, (m, _) in modules.items() if isinstance(m, SpikingNeuron)}
        calls = call_names(n for n in gm.graph.nodes if n.op == "call_module" and modules[n.target][1] is not None
                           and modules[n.target][1].kind is Kind.SYNAPTIC)
        synaptic = {name: modules[n.target][0] for n, name in calls.items()}

        def is_neuron(node: fx.Node) -> bool:
            return node.op == "call_module" and node.target in neurons

        spiking: set[fx.Node] = set()
        for node in gm.graph.nodes:
            if is_neuron(node) or any(a in spiking for a in node.all_input_nodes):
                spiking.add(node)
        constant = {n for n in gm.graph.nodes if n not in spiking and n.op != "output"}
        analog = constant | {n for n in analog_nodes(gm)
                             if not (coding.selection_keeps_spikes and op_for_node(n, gm).selects)}
        for node in gm.graph.nodes:
            if not is_neuron(node) and any(a in analog for a in node.all_input_nodes):
                analog.add(node)
        layers = frozenset(name for n, name in calls.items()  # a constant layer's inputs are constants, so in analog
                           if any(a in analog for a in n.all_input_nodes))
        ops = {n: op_for_node(n, gm) for n in gm.graph.nodes if n.op in ("call_function", "call_method")}
        return cls(key, modules, neurons, synaptic, calls, frozenset(constant), layers, ops)


class SpikingNetwork(nn.Module):
    """A converted SNN. ``forward(x)`` returns logits [B, classes] after ``T`` steps;
    ``simulate(x, T)`` returns a SimulationResult with anytime logits and spike counts.

    graph: the model's torch.fx graph with a neuron at every activation site and BatchNorm
    folded into the synaptic layers. method: the registered method's name.

    Its parameters do not require grad, so a simulation builds no autograd graph (which would
    double its time and keep every step alive) unless the input requires grad or training
    asks for it: ``snn.requires_grad_()`` before training it (``sb.finetune`` does).

    ``integer_synapses`` (not saved): "auto" (the default): on a CPU with int8 matrix units,
    a synaptic layer fed by spikes whose outputs each sum ≥ 512 inputs into ≥ 64 channels runs
    in integer arithmetic (``snn/integer_synapses.py``: the same values up to float rounding;
    a median 0.37 of the float32 time per call where measured); "always": every layer fed by
    spikes on the CPU; "never": floating point throughout.
    """

    integer_synapses: str = "auto"

    def __init__(self, graph: fx.GraphModule, method: str, T: int | None, info: dict | None = None):
        super().__init__()
        graph.requires_grad_(False)
        self.graph = graph
        self.method = method
        self.T = T
        self.info = dict(info or {})
        self._step_bytes: dict[tuple, int] = {}  # per input shape: the largest synaptic output of one image's step
        self._chunks = ChunkTuner()
        self._plan: GraphPlan | None = None

    def __getstate__(self) -> dict:
        """A copy (deepcopy, pickle) finds its own plan: fx copies a graph's nodes outside
        deepcopy's memo, so a plan copied along would hold the original's nodes under a key
        that still matches (its constant nodes then never found, a shared layer's calls
        unnamed)."""
        return {**self.__dict__, "_plan": None}

    @property
    def record(self) -> Method:
        return get_method(self.method)

    @property
    def coding(self) -> Coding:
        return self.record.coding

    # -- structure -------------------------------------------------------------------------
    def plan(self) -> GraphPlan:
        """What every simulation reads off the graph (``GraphPlan``), found once and found again
        when the graph, a module of it or the method changes. The key holds the graph, its code
        (a new string at every ``recompile``), the method and every submodule under every name
        it has (held, so that no id is reused): a walk of ~30 µs on ResNet-20, where finding
        the plan takes ~1.5 ms, 2–4% of a simulation at batch 16, T = 4 (measured)."""
        key = (self.graph.graph, self.graph.code, self.method, tuple(self.graph.named_modules(remove_duplicate=False)))
        if self._plan is None or self._plan.key != key:
            self._plan = GraphPlan.of(self.graph, self.coding, key)
        return self._plan

    def neurons(self) -> dict[str, SpikingNeuron]:
        """Activation sites in execution order: {site name: neuron}."""
        return dict(self.plan().neurons)

    def synaptic_layers(self) -> dict[str, nn.Module]:
        """Synaptic layers (conv, linear; BatchNorm folded in) in execution order, one entry
        per call: a layer called k times (shared weights) is its name, then name#2 … name#k
        (``call_names``; ``analysis.energy.count_macs`` names the ANN's calls alike)."""
        return dict(self.plan().synaptic)

    def constant_nodes(self) -> set[fx.Node]:
        """Nodes with no neuron upstream (and not neurons): their value is the same at every
        step, computed on the analog input."""
        return set(self.plan().constant)

    def analog_layers(self) -> set[str]:
        """Synaptic layers whose input is not spikes (``GraphPlan.analog``)."""
        return set(self.plan().analog)

    def input_spec(self) -> InputSpec:
        """What ``simulate`` takes: batches of the network's dtype (and shape, where known)."""
        return input_spec(self.graph)

    def set_T(self, T: int | None) -> None:
        """Set the number of steps of every time-driven neuron (rate-coded IF, bit-plane)."""
        if T is None:
            return
        check_T(T)
        for neuron in self.neurons().values():
            if neuron.time_driven:
                neuron.T = T
        self.T = T

    # -- execution -------------------------------------------------------------------------
    def simulate(self, x: torch.Tensor, T: int | None = None, record: bool = True, values: bool = False,
                 chunk: int | None = None, batch_chunk: int | None = None) -> SimulationResult:
        """Run the SNN on analog input x [B, ...] (moved to the network's device). T overrides
        the network's steps for this run only, where the method's time policy accepts a T (PASC runs its levels). An input
        that does not fit (``input_spec``) is an InputError.

        chunk: steps simulated at once. A network whose neurons all run step by step
        (``stepwise``: rate-coded IF) simulates time in chunks of that many steps, each neuron
        carrying its potential from one chunk to the next, so memory grows with the chunk, not
        with T; the results are the same for every chunk. Default: ``auto_chunk(x)`` (1 to 8,
        fewer for larger inputs); in inference on the CPU, from the second run of a shape on,
        1, 2, 4 and 8 steps are each timed twice and the fastest is kept (``ChunkTuner``).
        Sum-coded neurons see their whole input before they emit, and run in one window (their
        T is the levels or bits, not a user's T).

        batch_chunk: images simulated at once, each piece a simulation of its own. Default: for
        a network run in time chunks, ``auto_step_pieces`` (pieces of 64 on the CPU where the
        network's steps are small, so that a piece's activations stay in cache); for one run
        in one window (sum-coded, or T ≤ chunk), ``auto_batch_chunk``, so memory grows with the
        piece, not with the batch times the steps. Logits and counts are the same for every
        piece size up to float rounding (a kernel can take another path for another number of
        images; docs/architecture.md). ``values=True`` runs the batch in one
        piece (a site's value need not have the batch first).
        """
        if T is not None and not self.record.time.accepts_T:
            raise OptionError(f"method {self.method!r} runs for {self.record.time.description}")
        x = self.input_spec().check(x, "simulate()").to(module_device(self))
        neurons = self.plan().neurons
        timed = {n: m for n, m in neurons.items() if m.time_driven}
        saved, default = {n: m.T for n, m in timed.items()}, self.T
        self.set_T(T)
        try:
            autograd = torch.is_grad_enabled() and (x.requires_grad or any(p.requires_grad for p in self.parameters()))
            stepwise = bool(self.T and neurons and all(n.stepwise for n in neurons.values()))
            step_bytes = self._step_bytes.get(_input_key(x))
            timing = False
            if chunk is None and stepwise and self.T > 1 and x.device.type == "cpu" and not autograd:
                key = (_input_key(x), x.shape[0], self.T, record, values, batch_chunk)
                chunk, timing = self._chunks.choose(key, self.T, auto_chunk(x), window_steps_allowed(x, step_bytes))
            chunk = check_int(auto_chunk(x) if chunk is None else chunk, "chunk")
            if stepwise and self.T > chunk:
                windows = [(t0, min(chunk, self.T - t0)) for t0 in range(0, self.T, chunk)]
                auto = auto_step_pieces(x, step_bytes, autograd)
            else:
                windows = [None]
                auto = auto_batch_chunk(x, max((n.steps_out(1) for n in neurons.values()), default=1))
            size = check_int(auto if batch_chunk is None else batch_chunk, "batch_chunk")
            pieces = x.split(size) if x.shape[0] > size and not values else [x]
            start = time.perf_counter()
            results = [self._run(piece, record, values, windows) for piece in pieces]
            if timing:
                self._chunks.measured(key, chunk, time.perf_counter() - start)
            result = results[0]
            for other in results[1:]:
                result.add_counts(other)
            result.logits = torch.cat([r.logits for r in results], 1)
            return result
        finally:  # each neuron keeps its own steps (mixed-level bit-plane sites differ)
            for name, neuron in timed.items():
                neuron.T = saved[name]
            self.T = default

    def _run(self, x: torch.Tensor, record: bool, values: bool, windows: list) -> SimulationResult:
        """One simulation of the batch x, window by window (None: all steps at once)."""
        from .engine import TrainRunner

        result = SimulationResult(logits=torch.empty(0), batch_size=x.shape[0])
        runner = TrainRunner(self, result if record else None, values)
        logits, running = [], None
        for window in windows:
            out = runner.run_window(x, window)
            t0, steps = window or (0, self.T)
            chunk_logits, running = self.coding.readout(out, steps, t0, running)
            logits.append(chunk_logits)
        result.logits = torch.cat(logits) if len(logits) > 1 else logits[0]
        result.values = runner.site_values()
        if len(self._step_bytes) >= INPUT_SHAPES_KEPT:
            self._step_bytes.clear()
        self._step_bytes[_input_key(x)] = runner.step_bytes
        return result

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.simulate(x, record=False).logits[-1]

