"""sb.save / sb.load for SpikingNetworks: a data-only file that loads without running code.

Layout (version 2)::

    magic    b"SPIKEBRIDGE-SNN\\n" (16 bytes)
    length   the header's length, 8 bytes, little-endian unsigned
    header   compact JSON {"format": "spikebridge-snn", "version": 2, "json_length": n,
             "tensors_length": m, "sha256": hex digest of the body}, keys in this order
    body     n bytes of graph JSON, then m bytes of safetensors

Every byte is checked: the magic exactly, the header against its own re-serialisation, the
file's length against the header, the body against the digest (before any of it is parsed).
The graph JSON describes the network over the neuron protocol and the op table::

    {"method": registered method, "T": int or null, "info": JSON object,
     "modules": [{"target": "layer1.0.conv1", "type": "Conv2d" | "IFNeuron" | ..., "config": {...}}],
     "nodes": [{"name", "op", "target", "args": [value...], "kwargs": {name: value}}]}

Module types resolve through ``NEURONS`` (rebuilt as ``cls(threshold, **config)``) and the op
table's module classes (``cls(**config)``); call_function targets through
``FUNCTIONS_BY_NAME``, call_method names through ``BY_METHOD``, all limited to the kinds a
spiking network holds. A node value is JSON null, a bool, number or string, or an object with
one key: {"node": name}, {"tuple": [...]}, {"list": [...]}, {"dict": {...}}, {"slice": [start,
stop, step]}, {"ellipsis": null} or {"dtype": "float32"}. The tensors are the state dict of
the network (``graph.<target>.<name>``), with their dtypes. torch.fx generates the forward
code from the checked names, as it does for any GraphModule.

Files written by spikebridge 0.1 are torch pickles; they are refused unless
``allow_pickle=True`` (for files you trust).
"""
from __future__ import annotations

import hashlib
import json
import keyword
import os
import re
import struct
import warnings
import zipfile
from pathlib import Path

import safetensors.torch
import torch
from safetensors import SafetensorError
from torch import fx, nn

from ..conversion.graph import ACCEPTED
from ..conversion.ops import BY_FUNCTION, BY_METHOD, BY_MODULE, CONDITIONAL, FUNCTIONS_BY_NAME, on_numbers
from ..conversion.registry import get_method
from ..errors import CheckpointError, OptionError
from ..snn.network import SpikingNetwork
from ..snn.neurons import NEURONS
from ..train.checkpoint import atomic_write

FORMAT = "spikebridge-snn"
VERSION = 2
MAGIC = b"SPIKEBRIDGE-SNN\n"
MAX_HEADER = 4096

OP_MODULES = {cls.__name__: cls for cls, op in BY_MODULE.items() if op.kind in ACCEPTED}


def _accepted(key, index: dict) -> bool:
    """Some entry of ``key`` (its general one or one with ``applies``: F.pad) is one a spiking
    network holds; which one a call means, the engine reads off the call (``op_for_node``)."""
    return any(op.kind in ACCEPTED for op in (index[key], *CONDITIONAL.get(key, ())))


FUNCTIONS = {name: fn for name, fn in FUNCTIONS_BY_NAME.items()
             if _accepted(fn, BY_FUNCTION) or on_numbers(fn)}  # the engine runs operator.floordiv etc. on numbers only
FUNCTION_NAMES = {fn: name for name, fn in FUNCTIONS.items()}
METHODS = {name for name in BY_METHOD if _accepted(name, BY_METHOD)}
DTYPES = {str(t).removeprefix("torch."): t for t in vars(torch).values() if isinstance(t, torch.dtype)}
NODE_OPS = ("placeholder", "call_module", "call_function", "call_method", "output")
_ATOM = re.compile(r"[A-Za-z0-9_]+")


class _Invalid(Exception):
    """A checksum-valid file whose content does not describe a network (the reason)."""


def save(snn: SpikingNetwork, path) -> None:
    """Write ``snn`` to ``path`` atomically in the data-only format above. A network part
    without a data-only form, or a path that cannot be written, is a CheckpointError."""
    if not isinstance(snn, SpikingNetwork):
        raise TypeError(f"sb.save expects a SpikingNetwork, got {type(snn).__name__}")
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"cannot save the SNN to {path}: it is a directory")
    graph_json = json.dumps(_describe(snn), separators=(",", ":")).encode()
    tensors = safetensors.torch.save(_tensors(snn))
    digest = hashlib.sha256(graph_json)
    digest.update(tensors)
    header = _header(len(graph_json), len(tensors), digest.hexdigest())

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            for part in (MAGIC, struct.pack("<Q", len(header)), header, graph_json, tensors):
                f.write(part)

    try:
        atomic_write(path, write)
    except OSError as exc:
        raise CheckpointError(f"cannot write SNN file {path} ({exc.strerror or exc})") from None


def load(path, map_location="cpu", *, allow_pickle: bool = False) -> SpikingNetwork:
    """Read a network written by ``save``, in eval mode, moved to the device ``map_location``.

    Anything else is a one-line CheckpointError. ``allow_pickle=True`` also reads a pickled
    spikebridge 0.1 file, running its code: only for files you trust.
    """
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"SNN file {path} is a directory")
    if not path.exists():
        raise CheckpointError(f"SNN file {path} does not exist")
    if not path.is_file():
        raise CheckpointError(f"SNN file {path} is not a regular file")
    try:
        with open(path, "rb") as f:
            pickled = f.read(2) == b"PK"
            if not pickled:
                f.seek(0)
                graph_json, tensors = _read(f, path)
    except OSError as exc:
        raise CheckpointError(f"cannot read SNN file {path} ({exc.strerror or exc})") from None
    if pickled:
        return _load_pickled(path, map_location, allow_pickle)
    try:
        snn = _rebuild(graph_json, tensors)
    except _Invalid as exc:
        raise CheckpointError(f"{path} is not a valid spikebridge SNN file ({_one_line(exc)})") from None
    return snn.to(map_location).eval()


# -- the envelope ----------------------------------------------------------------------------

def _header(json_length: int, tensors_length: int, digest: str) -> bytes:
    return json.dumps({"format": FORMAT, "version": VERSION, "json_length": json_length,
                       "tensors_length": tensors_length, "sha256": digest}, separators=(",", ":")).encode()


def _read(f, path: Path) -> tuple[bytes, bytes]:
    """(graph JSON, safetensors bytes) of an open file, after every envelope check."""
    def unreadable(reason: str) -> CheckpointError:
        return CheckpointError(f"{path} is not a readable spikebridge SNN file ({reason})")

    size = os.fstat(f.fileno()).st_size
    if f.read(len(MAGIC)) != MAGIC:
        raise unreadable(f"it does not start with {MAGIC!r}")
    head = f.read(8)
    left = size - len(MAGIC) - 8
    if len(head) < 8:
        raise unreadable("truncated before its header")
    (header_length,) = struct.unpack("<Q", head)
    if header_length > min(MAX_HEADER, left):
        raise unreadable(f"header length {header_length} is out of range")
    raw = f.read(header_length)
    try:
        header = json.loads(raw)
    except (ValueError, RecursionError):
        raise unreadable("corrupt header") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise unreadable("corrupt header")
    if header.get("version") != VERSION:
        raise unreadable(f"SNN file version {header.get('version')!r}; this spikebridge reads version {VERSION}")
    n, m, digest = header.get("json_length"), header.get("tensors_length"), header.get("sha256")
    if not (type(n) is int and type(m) is int and isinstance(digest, str)) or raw != _header(n, m, digest):
        raise unreadable("corrupt header")
    if n < 0 or m < 0 or n + m != left - header_length:
        raise unreadable(f"the header announces {n} + {m} bytes of content but {left - header_length} follow: "
                         "the file is truncated or has bytes appended")
    graph_json, tensors = f.read(n), f.read(m)
    actual = hashlib.sha256(graph_json)
    actual.update(tensors)
    if actual.hexdigest() != digest:
        raise unreadable("checksum mismatch: the file is corrupt")
    return graph_json, tensors


def _load_pickled(path: Path, map_location, allow_pickle: bool) -> SpikingNetwork:
    """A torch pickle (zip): refused unless ``allow_pickle``; then unpickled, with a warning."""
    if not allow_pickle:
        if _is_pickled_snn(path):
            raise CheckpointError(
                f"{path} is an SNN file of spikebridge 0.1, a pickle that is not loaded by default: re-create it "
                "with 'spikebridge convert', or, only for a file you trust, load it once with "
                "sb.load(path, allow_pickle=True) and sb.save it again")
        raise CheckpointError(f"{path} is not a spikebridge SNN file (an ANN checkpoint? run "
                              "'spikebridge convert CKPT --method ... -o SNN' first)")
    warnings.warn(f"{path} is a pickled spikebridge 0.1 SNN file: sb.save the network again to get a "
                  "data-only file", stacklevel=3)
    try:
        payload = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as exc:  # unpickling runs the file's code, which may raise anything
        raise CheckpointError(f"{path} is not a readable pickled SNN file ({_one_line(exc)})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT \
            or not isinstance(payload.get("network"), SpikingNetwork):
        raise CheckpointError(f"{path} is not a spikebridge SNN file (the pickle holds no SpikingNetwork)")
    return payload["network"].eval()


def _is_pickled_snn(path: Path) -> bool:
    """Whether a torch zip's pickle names the 0.1 SNN format, read as bytes, never unpickled."""
    try:
        with zipfile.ZipFile(path) as archive:
            name = next((n for n in archive.namelist() if n.endswith("/data.pkl")), None)
            if name is None:
                return False
            with archive.open(name) as f:
                head = f.read(4096)  # the dict's "format" entry comes first
    except Exception:  # a damaged or odd archive, whatever zipfile raises: not a file we can name
        return False
    return FORMAT.encode() in head


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300] or type(exc).__name__


# -- writing the description -----------------------------------------------------------------

def _describe(snn: SpikingNetwork) -> dict:
    gm = snn.graph
    nodes = list(gm.graph.nodes)
    targets = {n.target for n in nodes if n.op == "call_module"}
    modules = [_describe_module(name, m) for name, m in gm.named_modules(remove_duplicate=False) if name in targets]
    return {"method": snn.method, "T": snn.T, "info": _plain(snn.info, "the network's info"),
            "modules": modules, "nodes": [_describe_node(n) for n in nodes]}


def _describe_module(target: str, module: nn.Module) -> dict:
    cls = type(module)
    if not _is_path(target):
        raise CheckpointError(f"cannot save module {target!r}: its name is not a dotted path of letters, digits and _")
    if NEURONS.get(cls.__name__) is cls:
        try:
            config = module.config()
        except NotImplementedError:
            raise CheckpointError(f"cannot save neuron {target!r}: {cls.__name__} has no config()") from None
    elif OP_MODULES.get(cls.__name__) is cls:
        config = BY_MODULE[cls].module_config(module)
    else:
        raise CheckpointError(f"cannot save module {target!r} ({cls.__name__}): only spikebridge neurons and the "
                              "op table's layers have a data-only form")
    return {"target": target, "type": cls.__name__, "config": _plain(config, f"the config of module {target!r}")}


def _describe_node(node: fx.Node) -> dict:
    target = node.target
    if node.op == "call_function":
        target = FUNCTION_NAMES.get(node.target)
        if target is None:
            raise CheckpointError(f"cannot save node {node.name!r}: function {node.target!r} is not in the op table")
    elif node.op not in NODE_OPS:
        raise CheckpointError(f"cannot save node {node.name!r}: a {node.op} node has no data-only form")
    description = {"name": node.name, "op": node.op, "target": target,
                   "args": [_encode(a, node) for a in node.args],
                   "kwargs": {k: _encode(v, node) for k, v in node.kwargs.items()}}
    problem = _node_problem(node.op, target, node.args, node.kwargs)
    if problem:
        raise CheckpointError(f"cannot save node {node.name!r}: {problem}")
    return description


def _encode(value, node: fx.Node):
    if isinstance(value, fx.Node):
        return {"node": value.name}
    if value is None or type(value) in (bool, int, float, str):
        return value
    if isinstance(value, tuple) and not hasattr(value, "_fields"):
        return {"tuple": [_encode(v, node) for v in value]}
    if isinstance(value, list):
        return {"list": [_encode(v, node) for v in value]}
    if isinstance(value, dict) and all(type(k) is str for k in value):
        return {"dict": {k: _encode(v, node) for k, v in value.items()}}
    if isinstance(value, slice):
        return {"slice": [_encode(v, node) for v in (value.start, value.stop, value.step)]}
    if value is Ellipsis:
        return {"ellipsis": None}
    if isinstance(value, torch.dtype):
        return {"dtype": str(value).removeprefix("torch.")}
    raise CheckpointError(f"cannot save node {node.name!r}: its argument {value!r} ({type(value).__name__}) "
                          "has no data-only form")


def _plain(value, where: str):
    """``value`` as JSON data (tuples as lists); anything else is a CheckpointError."""
    if value is None or type(value) in (bool, int, float, str):
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(v, where) for v in value]
    if isinstance(value, dict) and all(type(k) is str for k in value):
        return {k: _plain(v, where) for k, v in value.items()}
    raise CheckpointError(f"cannot save {where}: {value!r} ({type(value).__name__}) is not JSON data "
                          "(null, bool, number, string, list, or dict with string keys)")


def _tensors(snn: SpikingNetwork) -> dict[str, torch.Tensor]:
    """The state dict of the graph's modules, as separate contiguous CPU tensors."""
    targets = {n.target for n in snn.graph.graph.nodes if n.op == "call_module"}
    return {f"graph.{name}.{key}": t.detach().to("cpu", memory_format=torch.contiguous_format, copy=True)
            for name, module in snn.graph.named_modules(remove_duplicate=False) if name in targets
            for key, t in module.state_dict().items()}


# -- checks shared by both ends ----------------------------------------------------------------

def _nodes_in(value) -> list[fx.Node]:
    found = []
    fx.node.map_arg(value, found.append)
    return found


def _is_path(target) -> bool:
    """A module path: dotted atoms of letters, digits and _, none a Python keyword."""
    return isinstance(target, str) and all(_ATOM.fullmatch(a) and not keyword.iskeyword(a) for a in target.split("."))


def _is_name(name) -> bool:
    return isinstance(name, str) and name.isidentifier() and not keyword.iskeyword(name)


def _node_problem(op: str, target, args: tuple, kwargs: dict) -> str | None:
    """What makes a node unsafe or foreign to a spiking network (None: nothing)."""
    if not isinstance(target, str):
        return f"its target {target!r} is not a string"
    if op == "placeholder" and not _is_name(target):
        return f"input name {target!r} is not a Python identifier"
    if op == "placeholder" and (len(args) > 1 or kwargs or _nodes_in(args)):
        return "an input takes at most a constant default value"
    if op == "output" and (len(args) != 1 or kwargs):
        return "the output node takes one value"
    if op == "call_module" and not _is_path(target):
        return f"module path {target!r} is not a dotted path of letters, digits and _"
    if op == "call_method" and target not in METHODS:
        return f"method {target!r} is not in the op table"
    if op == "call_function" and target not in FUNCTIONS:
        return f"function {target!r} is not in the op table"
    if op == "output" and target != "output":
        return f"the output node's target is {target!r}"
    if op == "call_function" and FUNCTIONS[target] is getattr and not (
            len(args) == 2 and isinstance(args[1], str) and _is_name(args[1]) and not args[1].startswith("_")):
        return "getattr may only read a public attribute named by a constant"
    bad = next((k for k in kwargs if not _is_name(k)), None)
    if bad is not None:
        return f"keyword {bad!r} is not a Python identifier"
    return None


# -- reading the description -----------------------------------------------------------------

def _rebuild(graph_json: bytes, tensor_bytes: bytes) -> SpikingNetwork:
    try:
        doc = json.loads(graph_json)
    except (ValueError, RecursionError) as exc:
        raise _Invalid(f"its graph is not JSON: {_one_line(exc)}") from None
    try:
        tensors = safetensors.torch.load(tensor_bytes)
    except (SafetensorError, KeyError, ValueError, RuntimeError, AssertionError) as exc:  # KeyError: an odd dtype
        raise _Invalid(f"its tensors do not parse: {_one_line(exc)}") from None
    _expect(doc, dict, "the graph description", keys={"method", "T", "info", "modules", "nodes"})
    method, T, info = doc["method"], doc["T"], doc["info"]
    if not isinstance(method, str):
        raise _Invalid(f"method {method!r} is not a string")
    try:
        get_method(method)
    except OptionError as exc:
        raise _Invalid(str(exc)) from None
    if T is not None and (type(T) is not int or T < 1):
        raise _Invalid(f"T = {T!r} is not an integer >= 1")
    _expect(info, dict, "info")
    modules = _rebuild_modules(_expect(doc["modules"], list, "modules"), tensors)
    try:
        graph = _rebuild_graph(_expect(doc["nodes"], list, "nodes"), set(modules))
    except RecursionError:
        raise _Invalid("a node's arguments are nested too deeply") from None
    gm = fx.GraphModule(nn.Module(), fx.Graph())
    for target, module in modules.items():
        try:
            gm.add_submodule(target, module)
        except KeyError as exc:  # the name of an attribute every GraphModule has
            raise _Invalid(f"module path {target!r} cannot be used: {_one_line(exc)}") from None
    try:
        gm.graph = graph  # torch.fx generates forward() from the checked names and compiles it
        graph.lint()
    except Exception as exc:  # a malformed graph (an operator's arity, ...): whatever fx raises
        raise _Invalid(f"its graph is not a valid program: {_one_line(exc)}") from None
    snn = SpikingNetwork(gm, method, T, info)
    try:
        snn.load_state_dict(tensors, strict=True, assign=True)
    except RuntimeError as exc:
        raise _Invalid(f"its tensors do not fit the network: {_one_line(exc)}") from None
    return snn


def _expect(value, kind: type, what: str, keys: set | None = None):
    if not isinstance(value, kind) or (keys is not None and set(value) != keys):
        shape = f" with keys {sorted(keys)}" if keys is not None else ""
        raise _Invalid(f"{what} is not a JSON {'object' if kind is dict else 'array'}{shape}")
    return value


def _rebuild_modules(entries: list, tensors: dict) -> dict[str, nn.Module]:
    """{target: module} in file order: neurons with their real thresholds, op-table layers on
    the meta device (no memory until the state dict is assigned)."""
    modules = {}
    for entry in entries:
        _expect(entry, dict, "a module entry", keys={"target", "type", "config"})
        target, name, config = entry["target"], entry["type"], _expect(entry["config"], dict, "a module's config")
        if not _is_path(target) or target in modules:
            raise _Invalid(f"module path {target!r} is malformed or repeated")
        if not all(v is None or type(v) in (bool, int, float, str)
                   or (isinstance(v, list) and all(x is None or type(x) in (bool, int, float, str) for x in v))
                   for v in config.values()):
            raise _Invalid(f"the config of module {target!r} holds more than numbers, strings and lists of them")
        kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in config.items()}
        if not isinstance(name, str):
            raise _Invalid(f"module type {name!r} of {target!r} is not a string")
        try:
            if name in NEURONS:
                threshold = tensors.get(f"graph.{target}.threshold")
                if threshold is None:
                    raise _Invalid(f"the tensor graph.{target}.threshold is missing")
                module = NEURONS[name](threshold, **kwargs)
                if _plain(module.config(), f"the config of neuron {target!r}") != config:
                    raise _Invalid(f"neuron {target!r} ({name}) does not take the config {config}")
            elif name in OP_MODULES:
                cls = OP_MODULES[name]
                if set(config) != set(BY_MODULE[cls].config_keys):
                    raise _Invalid(f"module {target!r} ({name}) needs the config keys {sorted(BY_MODULE[cls].config_keys)}")
                with torch.device("meta"):
                    module = cls(**kwargs)
            else:
                raise _Invalid(f"module type {name!r} of {target!r} is neither a neuron nor an op-table layer")
        except (TypeError, ValueError, RuntimeError) as exc:  # OptionError and NotImplementedError included
            raise _Invalid(f"module {target!r} ({name}) cannot be built from {config}: {_one_line(exc)}") from None
        modules[target] = module
    return modules


def _rebuild_graph(entries: list, module_targets: set) -> fx.Graph:
    graph, made = fx.Graph(), {}
    for i, entry in enumerate(entries):
        _expect(entry, dict, "a node entry", keys={"name", "op", "target", "args", "kwargs"})
        name, op, target = entry["name"], entry["op"], entry["target"]
        if not isinstance(name, str) or name in made:
            raise _Invalid(f"node name {name!r} is malformed or repeated")
        if op not in NODE_OPS:
            raise _Invalid(f"node {name!r} has the unknown op {op!r}")
        if (op == "output") != (i == len(entries) - 1):
            raise _Invalid("the graph must end with its one output node")
        args = tuple(_decode(a, made) for a in _expect(entry["args"], list, f"the args of node {name!r}"))
        kwargs = _expect(entry["kwargs"], dict, f"the kwargs of node {name!r}")
        kwargs = {k: _decode(v, made) for k, v in kwargs.items()}
        problem = _node_problem(op, target, args, kwargs)
        if problem:
            raise _Invalid(f"node {name!r}: {problem}")
        if op == "call_module" and target not in module_targets:
            raise _Invalid(f"node {name!r} calls module {target!r}, which the file does not describe")
        node = graph.create_node(op, FUNCTIONS[target] if op == "call_function" else target, args, kwargs, name)
        if node.name != name:
            raise _Invalid(f"node name {name!r} is not a valid fx name")
        made[name] = node
    unused = module_targets - {n.target for n in graph.nodes if n.op == "call_module"}
    if unused:
        raise _Invalid(f"modules {sorted(unused)} are described but never called")
    return graph


def _decode(value, nodes: dict):
    if value is None or type(value) in (bool, int, float, str):
        return value
    if not isinstance(value, dict) or len(value) != 1:
        raise _Invalid(f"node argument {value!r} is not an encoded value")
    (kind, data), = value.items()
    if kind == "node" and isinstance(data, str) and data in nodes:
        return nodes[data]
    if kind in ("tuple", "list") and isinstance(data, list):
        items = [_decode(v, nodes) for v in data]
        return tuple(items) if kind == "tuple" else items
    if kind == "dict" and isinstance(data, dict):
        return {k: _decode(v, nodes) for k, v in data.items()}
    if kind == "slice" and isinstance(data, list) and len(data) == 3:
        return slice(*(_decode(v, nodes) for v in data))
    if kind == "ellipsis" and data is None:
        return Ellipsis
    if kind == "dtype" and isinstance(data, str) and data in DTYPES:
        return DTYPES[data]
    raise _Invalid(f"node argument {value!r} is not an encoded value (or names a node not defined before it)")
