"""The method registry: one record per conversion method (docs/architecture.md).

A ``Method`` declares everything the rest of the package needs to know about a method: its
coding, what it converts from (a QCFS ANN or a ReLU ANN), its time policy, a typed options
dataclass, the builder that puts its neurons into the graph, and whether it is the default for
the models it converts (one default per source: ``convert`` without a method uses it). The converter, the engine,
evaluation, the CLI (whose flags are generated from the options) and calibration read the
record; nothing outside this module compares method names. Each method is one file in
``conversion/methods/`` that calls ``register``.
"""
from __future__ import annotations

import argparse
import dataclasses
import enum
import importlib
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import OptionError
from ..snn.codings import Coding


class Source(enum.Enum):
    """What a method converts: a prepared QCFS ANN, or a plain ReLU ANN plus calibration data."""
    QCFS = "QCFS ANN"
    RELU = "ReLU ANN"


@dataclass(frozen=True)
class TimePolicy:
    """How a method's number of steps is chosen.

    accepts_T: ``T`` may be given at conversion and simulation; default_T: used when it is
    not (None: the method derives it from its levels); anytime: one run of T steps gives the
    accuracy after every t <= T (rate coding), else each T needs its own run.
    """
    description: str
    accepts_T: bool
    anytime: bool
    default_T: int | None = None

    def steps_for(self, Ts: list[int]) -> int | None:
        """The T to convert with when accuracies at ``Ts`` are wanted."""
        return max(Ts) if self.anytime else None

    def runs(self, Ts: list[int] | None, own_T: int | None) -> list[int | None]:
        """The simulations (their T; None: the network's own) that give the accuracy at ``Ts``."""
        if not self.accepts_T:
            return [None]
        if self.anytime:
            return [max(Ts or [own_T])]
        return sorted(set(Ts or [own_T]))


ANY_T = TimePolicy("any T (default 4); one simulation gives every t <= T", accepts_T=True, anytime=True, default_T=4)
OWN_LEVELS = TimePolicy("its levels: T_eff = mean L; T cannot be set", accepts_T=False, anytime=False)
BITS = TimePolicy("T = ceil(log2(L+1)) by default; other T re-code the level", accepts_T=True, anytime=False)


def option(default, help: str, choices=None):
    """A field of a method's options dataclass, with its CLI help (and choices)."""
    return dataclasses.field(default=default, metadata={"help": help, "choices": choices})


@dataclass(frozen=True)
class CalibrationOptions:
    """Options every method that converts a ReLU ANN has: how its calibration statistics are
    collected (the converter reads them; the method's options dataclass extends this one)."""
    channel_wise: bool = option(False, "one threshold per channel instead of per site")
    max_samples: int = option(2_000_000, "positive activations kept per site for the statistics")
    calibration_batches: int | None = option(None, "use only the first N calibration batches")


@dataclass(frozen=True)
class Method:
    name: str
    summary: str
    coding: Coding
    source: Source
    time: TimePolicy
    options: type
    build: Callable
    reference: str = ""
    default: bool = False  # the method convert() uses for a model of this source when none is named

    def parse_options(self, given: dict) -> object:
        """The options dataclass from keyword arguments; unknown names or wrong types are an
        OptionError that names the valid options."""
        fields = {f.name: f for f in dataclasses.fields(self.options)}
        unknown = sorted(set(given) - set(fields))
        if unknown:
            valid = ", ".join(fields) or "none"
            raise OptionError(f"method {self.name!r} has no option {', '.join(map(repr, unknown))}; "
                              f"its options: {valid}")
        for name, value in given.items():
            _check_type(self.name, fields[name], value)
        return self.options(**given)

    def option_fields(self) -> list[dataclasses.Field]:
        return list(dataclasses.fields(self.options))


def _check_type(method: str, field: dataclasses.Field, value) -> None:
    allowed = _types(field.type)
    ok = any(
        (t is type(None) and value is None)
        or (t is bool and isinstance(value, bool))
        or (t is int and isinstance(value, int) and not isinstance(value, bool))
        or (t is float and isinstance(value, (int, float)) and not isinstance(value, bool))
        or (t is str and isinstance(value, str))
        for t in allowed)
    choices = field.metadata.get("choices")
    if not ok or (choices and value not in choices):
        want = f"one of {list(choices)}" if choices else " or ".join(t.__name__ for t in allowed)
        raise OptionError(f"option {field.name!r} of method {method!r} must be {want}, got {value!r}")


def _types(annotation) -> tuple[type, ...]:
    if isinstance(annotation, str):
        annotation = eval(annotation, {"__builtins__": __builtins__})  # "int | None" from __future__ annotations
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        return typing.get_args(annotation)
    return (annotation,)


METHODS: dict[str, Method] = {}


def register(method: Method) -> Method:
    """Add a method to the registry (each file in conversion/methods/ calls this once)."""
    if method.name in METHODS:
        raise ValueError(f"method {method.name!r} is registered twice")
    if method.source is Source.RELU and not issubclass(method.options, CalibrationOptions):
        raise TypeError(f"method {method.name!r} converts a ReLU ANN: its options must extend CalibrationOptions")
    other = next((m.name for m in METHODS.values() if m.default and m.source is method.source), None)
    if method.default and other:
        raise ValueError(f"method {method.name!r} and {other!r} are both the default for a {method.source.value}")
    METHODS[method.name] = method
    return method


def _load() -> dict[str, Method]:
    importlib.import_module(f"{__package__}.methods")
    return METHODS


def get_method(name: str) -> Method:
    """The record of a registered method; an unknown name is an OptionError listing them."""
    methods = _load()
    if name not in methods:
        raise OptionError(f"unknown method {name!r}; choose one of {sorted(methods)}")
    return methods[name]


def default_method(source: Source) -> Method:
    """The record convert() uses for a model of ``source`` when no method is named."""
    found = [m for m in _load().values() if m.default and m.source is source]
    if len(found) != 1:
        raise ValueError(f"{len(found)} methods are registered as the default for a {source.value}")
    return found[0]


class MethodTable(dict):
    """{name: Method record}; printed, a readable table of the methods and their options."""

    def __str__(self) -> str:
        rows = [("method", "converts", "coding", "steps", "what it is")]
        options = {}
        for m in self.values():
            name = m.name + (" (default)" if m.default else "")
            rows.append((name, m.source.value, m.coding.name, m.time.description.split(";")[0], m.summary))
            options[m.name] = ", ".join(f"{f.name}={f.default!r}" for f in m.option_fields())
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
        lines = []
        for r in rows:
            lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[-1])
            name = r[0].removesuffix(" (default)")
            if options.get(name):
                lines.append(" " * (widths[0] + 2) + "options: " + options[name])
        return "\n".join(lines)

    __repr__ = __str__


def methods() -> MethodTable:
    """The registered methods (``sb.methods()``): {name: Method record}, printed as a table
    with each method's source, coding, time policy, summary and options."""
    return MethodTable(_load())


# -- the command line: flags generated from the records ------------------------------------

def add_option_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per option name of any registered method (``--channel-wise``, ``--m``, ...),
    with the methods it applies to and its default in the help. Flags that are not given stay
    absent from the parsed namespace, so the dataclass defaults apply."""
    by_name: dict[str, tuple[dataclasses.Field, list[str]]] = {}
    for method in _load().values():
        for f in method.option_fields():
            by_name.setdefault(f.name, (f, []))[1].append(method.name)
    group = parser.add_argument_group("method options (each applies to the methods named)")
    for name, (f, owners) in by_name.items():
        flag = "--" + name.replace("_", "-")
        text = f"{', '.join(owners)}: {f.metadata.get('help', '')} (default: {f.default})"
        kinds = [t for t in _types(f.type) if t is not type(None)]
        if kinds == [bool]:
            group.add_argument(flag, dest=f"option_{name}", action=argparse.BooleanOptionalAction,
                               default=argparse.SUPPRESS, help=text)
        else:
            group.add_argument(flag, dest=f"option_{name}", type=kinds[0], default=argparse.SUPPRESS,
                               choices=f.metadata.get("choices"), metavar=name.upper(), help=text)


def _given(args: argparse.Namespace) -> dict:
    return {k[len("option_"):]: v for k, v in vars(args).items() if k.startswith("option_")}


def _flags(names) -> str:
    return ", ".join("--" + n.replace("_", "-") for n in sorted(names))


def options_from_arguments(args: argparse.Namespace, method: Method) -> dict:
    """The options given on the command line, checked against ``method``'s options."""
    given = _given(args)
    mine = {f.name for f in method.option_fields()}
    foreign = set(given) - mine
    if foreign:
        raise OptionError(f"{_flags(foreign)} does not apply to method {method.name!r}"
                          f"{' (its options: ' + ', '.join(sorted(mine)) + ')' if mine else ' (it has no options)'}")
    return given


def options_for_methods(args: argparse.Namespace, methods: list[Method]) -> dict[str, dict]:
    """For a command that converts with several methods: each method gets the given options
    it has; an option that none of them has is an OptionError."""
    given = _given(args)
    per_method = {m.name: {k: v for k, v in given.items() if k in {f.name for f in m.option_fields()}}
                  for m in methods}
    unused = set(given) - {k for opts in per_method.values() for k in opts}
    if unused:
        raise OptionError(f"{_flags(unused)} applies to none of the methods {[m.name for m in methods]}")
    return per_method
