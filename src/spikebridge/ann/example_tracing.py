"""torch.fx tracing that knows the shapes of an example input.

A plain ``torch.fx`` trace records what ``forward`` does to a symbolic input; it fails as soon
as Python needs a value: a branch on a shape (timm's VGG pools only when ``x.shape[-1] < 7``),
``int(math.sqrt(N))`` of a token count (NesT), ``len`` of a shape (Hiera), unpacking a shape
of unknown rank (transformers). ``ExampleTracer`` computes every node's value as it records the
node, on fake tensors (``torch._subclasses.FakeTensorMode``: shapes and dtypes, no data, no
compute), so Python can read:

- a shape, its entries, its length and the numbers computed from them (``bool``, ``int``,
  ``float``, ``len``, iteration): those are resolved from the example and the graph takes the
  branch the example took. Entries of a shape that is unpacked or iterated stay graph nodes.
- never a tensor's data: ``if x.sum() > 0``, ``x.item()`` and branches on parameters or buffers
  (whose values training changes) stay refused, as by torch.fx. Parameters and buffers are fake
  too, so their data is out of reach.

``trace_with_example`` traces at two batch sizes and refuses a graph that differs between them:
the graph is specialised to the example's shape except the batch, which the converted network
must take at any size. A node whose value cannot be computed on fake tensors has none; Python
reading it fails as in a plain trace.
"""
from __future__ import annotations

import contextlib
import copy
import functools
import inspect
import operator

import torch
from torch import fx, nn
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.fx._symbolic_trace import _maybe_revert_all_patches

from ..device import module_dtype
from ..errors import SpikeBridgeError
from .assignment import AssignableProxy, check_assignments
from .qcfs import QCFS

TRACED_BATCHES = (2, 3)  # the batch sizes trace_with_example compares (1 would take squeeze-like branches)


class _NoValue:
    """The value of a node that could not be computed on fake tensors."""


NO_VALUE = _NoValue()


class SiteTracer(fx.Tracer):
    """Keeps QCFS sites (and every torch.nn leaf) as single call_module nodes; buffers read in
    ``forward`` are ``get_attr`` nodes (as parameters are), so a graph that slices one by a
    traced length (BERT's position ids) re-traces. A tensor factory given traced sizes one by
    one (``torch.ones(B, n)``) is recorded (``sizes_as_tuples``), and so is an assignment into
    part of a tensor (``assignment``)."""

    proxy_buffer_attributes = True

    def trace(self, root, concrete_args=None) -> fx.Graph:
        self.assignments: list[tuple[fx.Node, fx.Node]] = []
        with sizes_as_tuples():
            graph = super().trace(root, concrete_args)
        check_assignments(self.assignments)
        return graph

    def proxy(self, node: fx.Node) -> fx.Proxy:
        return AssignableProxy(node, self)  # x[index] = v is recorded (``assignment``)

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, QCFS) or super().is_leaf_module(m, qualname)


SIZED_FACTORIES = ("ones", "zeros", "empty", "rand", "randn")


@contextlib.contextmanager
def sizes_as_tuples():
    """torch.ones(B, n) with a traced number among the sizes raises a TypeError (torch's
    argument parser does not hand a Proxy in those positions to fx), while torch.ones((B, n))
    is recorded: while it lasts, the factories of SIZED_FACTORIES take sizes given one by one
    as one tuple where one of them is traced (timm's Gemma4 ViT makes its patch mask so)."""
    originals = {name: getattr(torch, name) for name in SIZED_FACTORIES}

    def sized(original):
        @functools.wraps(original)
        def factory(*size, **kwargs):
            if any(isinstance(s, fx.Proxy) for s in size):
                return original(size, **kwargs)
            return original(*size, **kwargs)
        return factory
    try:
        for name, original in originals.items():
            setattr(torch, name, sized(original))
        yield
    finally:
        for name, original in originals.items():
            setattr(torch, name, original)


class ValueProxy(AssignableProxy):
    """A proxy that knows its node's value on the example: Python may read it where it is not a
    tensor (a shape, a length, a number computed from them)."""

    def __init__(self, node: fx.Node, tracer: fx.proxy.TracerBase, value):
        super().__init__(node, tracer)
        self.value = value

    def _python(self, what: str):
        if isinstance(self.value, torch.Tensor):
            raise fx.proxy.TraceError(f"{what} needs a traced tensor's data")
        if self.value is NO_VALUE:
            raise fx.proxy.TraceError(f"{what} needs a value that fake tensors could not compute")
        return self.value

    def __setitem__(self, index, value) -> None:
        super().__setitem__(index, value)
        self.value = self.tracer.values[self.node]

    def __getattr__(self, name: str):
        if name == "device" and isinstance(self.value, torch.Tensor):
            return _Device(self, name)
        return super().__getattr__(name)

    def __iter__(self):
        if isinstance(self.value, (tuple, list)):  # a shape: each entry its getitem node
            return iter([self[i] for i in range(len(self.value))])
        return super().__iter__()

    def __len__(self):
        return len(self._python("len"))

    def __int__(self):
        return int(self._python("int"))

    def __index__(self):
        return int(self._python("an index"))

    def __float__(self):
        return float(self._python("float"))


class _Device(fx.proxy.Attribute):
    """``x.device`` of a traced tensor: a graph node where a call reads it, so the graph moves
    with its input; only its ``type``, the str ``torch.autocast`` needs (EfficientViT's
    ``with torch.autocast(device_type=v.device.type, enabled=False)``, which is not recorded),
    is read off the example."""

    @property
    def type(self) -> str:
        return self.root.value.device.type


class ExampleTracer(SiteTracer):
    """A SiteTracer that computes every node's value on fake copies of ``examples`` (one per
    placeholder, in order) as it records the node (module docstring)."""

    def __init__(self, *examples: torch.Tensor):
        super().__init__()
        self.mode = FakeTensorMode(allow_non_fake_inputs=True)
        self.examples = iter([self.mode.from_tensor(x) for x in examples])
        self.values: dict[fx.Node, object] = {}

    def proxy(self, node: fx.Node) -> ValueProxy:
        self.values[node] = self._value(node)
        return ValueProxy(node, self, self.values[node])

    def to_bool(self, obj: ValueProxy) -> bool:
        return bool(obj._python("a branch"))

    def _value(self, node: fx.Node):
        if node.op == "placeholder":
            return next(self.examples, NO_VALUE)  # after the input: an argument at its default
        args, kwargs = fx.node.map_arg((node.args, node.kwargs), self.values.__getitem__)
        missing = []
        fx.node.map_aggregate((args, kwargs), lambda a: missing.append(a) if a is NO_VALUE else a)
        if missing:
            return NO_VALUE
        # run modules as modules, not as traced calls; tensors made here are fake
        with _maybe_revert_all_patches(), torch.no_grad(), self.mode:
            try:
                if node.op == "get_attr":
                    value = operator.attrgetter(node.target)(self.root)
                    return self.mode.from_tensor(value) if isinstance(value, torch.Tensor) else value
                if node.op == "call_function":
                    return node.target(*args, **kwargs)
                if node.op == "call_method":
                    return getattr(args[0], node.target)(*args[1:], **kwargs)
                return self.root.get_submodule(node.target)(*args, **kwargs)
            except Exception:  # an op without a fake kernel, or data read: no value, as in a plain trace
                return NO_VALUE


def trace_with_example(model: nn.Module, example: torch.Tensor) -> fx.Graph:
    """The graph of ``model`` traced by ExampleTracer on inputs of ``example``'s shape at the
    batch sizes TRACED_BATCHES (the first on ``model``, the others on copies); a
    SpikeBridgeError if the two graphs differ (the forward pass branches on its batch size, or
    bakes it in)."""
    models = [model] + [copy.deepcopy(model) for _ in TRACED_BATCHES[1:]]  # a trace may cache proxies in its model
    graphs = [_traced(m, batch_of(example, b, model)) for m, b in zip(models, TRACED_BATCHES)]
    codes = [g.python_code("self").src for g in graphs]
    if codes[0] != codes[1]:
        raise SpikeBridgeError(f"{type(model).__name__}'s forward pass depends on its batch size "
                               f"(traced at batch sizes {TRACED_BATCHES}, the graphs differ): a converted network "
                               "must take any batch size")
    return graphs[0]


def _traced(model: nn.Module, example: torch.Tensor) -> fx.Graph:
    """ExampleTracer's graph without the Python values no node uses (the shapes and comparisons
    a resolved branch read)."""
    tracer = ExampleTracer(example)
    defaults = _defaults(model)
    graph = tracer.trace(model, concrete_args=defaults)
    order = {n: i for i, n in enumerate(graph.nodes)}
    names = list(inspect.signature(model.forward).parameters)[1:]
    for placeholder, name in zip([n for n in graph.nodes if n.op == "placeholder"][1:], names):
        if name not in defaults:
            continue
        chain, stack = {placeholder}, [placeholder]  # and fx's check that the argument has its default
        while stack:
            for user in stack.pop().users:
                if user not in chain:
                    chain.add(user)
                    stack.append(user)
        for node in sorted(chain, key=order.__getitem__, reverse=True):
            graph.erase_node(node)
    for node in reversed(graph.nodes):
        value = tracer.values.get(node)
        if not node.users and node.op in ("call_function", "call_method") and not isinstance(
                value, (torch.Tensor, _NoValue, type(None))):  # None: an assert, kept
            graph.erase_node(node)
    return graph


def _defaults(model: nn.Module) -> dict:
    """The forward pass's arguments after the input that have defaults, at their defaults (the
    network takes one input: ``if mask is not None`` must see None, not a traced value)."""
    parameters = list(inspect.signature(model.forward).parameters.values())[1:]
    return {p.name: p.default for p in parameters if p.default is not inspect.Parameter.empty
            and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def batch_of(example: torch.Tensor, size: int, model: nn.Module) -> torch.Tensor:
    """``size`` samples of ``example``'s shape on its device; floating point in ``model``'s
    dtype, other dtypes (token ids) as they are."""
    dtype = module_dtype(model)
    x = example[:1].expand(size, *example.shape[1:])
    return (x.to(dtype) if dtype is not None and x.is_floating_point() else x).contiguous()
