"""User-facing errors and the argument checks that raise them. Every error a user can cause
by bad input is a SpikeBridgeError subclass whose message is one complete line; the CLI
prints it without a traceback."""
import importlib
import math
import numbers


class SpikeBridgeError(Exception):
    """Base class of every error caused by the user's input (model, data, files, options)."""


class OptionError(SpikeBridgeError, ValueError):
    """An argument or option has an invalid value (T, levels, thresholds, a method's options)."""


class UnsupportedActivationError(SpikeBridgeError):
    """prepare() met an activation it cannot turn into a QCFS site."""


class ConversionError(SpikeBridgeError):
    """convert() met a node that has no spiking equivalent."""


class DataError(SpikeBridgeError):
    """A dataset could not be found or read."""


class CheckpointError(SpikeBridgeError):
    """A file is missing, corrupt, or not a spikebridge checkpoint."""


class InputError(SpikeBridgeError, ValueError):
    """Data given to a network (simulate, verify, calibration) does not fit it: its type,
    dtype or shape, or it holds NaN or inf."""


def first_line(exc: BaseException, limit: int = 200) -> str:
    """The first line of an exception's message (its type's name if empty), at most ``limit``
    characters: what an error raised from it quotes."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:limit]


def check_int(value, name: str, minimum: int = 1) -> int:
    """``value`` must be an integer (not a bool) >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise OptionError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def check_positive(value, name: str) -> float:
    """``value`` must be a finite real number > 0 (a threshold, a scale)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value <= 0:
        raise OptionError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


def check_T(T) -> int:
    """Timesteps: an integer >= 1."""
    return check_int(T, "T")


def check_levels(levels) -> int:
    """Quantisation levels L: an integer >= 1."""
    return check_int(levels, "levels")


def require_transformers(purpose: str):
    """The ``transformers`` package (an optional extra), or an error naming the extra."""
    try:
        return importlib.import_module("transformers")
    except ImportError:
        raise SpikeBridgeError(f"{purpose} needs Hugging Face transformers: pip install "
                               "'spikebridge[transformers]'") from None
