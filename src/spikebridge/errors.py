"""User-facing errors. Every error a user can cause by bad input is a SpikeBridgeError
subclass whose message is one complete line; the CLI prints it without a traceback."""


class SpikeBridgeError(Exception):
    """Base class of every error caused by the user's input (model, data, files, options)."""


class UnsupportedActivationError(SpikeBridgeError):
    """prepare() met an activation it cannot turn into a QCFS site."""


class ConversionError(SpikeBridgeError):
    """convert() met a node that has no spiking equivalent."""


class DataError(SpikeBridgeError):
    """A dataset could not be found or read."""


class CheckpointError(SpikeBridgeError):
    """A file is missing, corrupt, or not a spikebridge checkpoint."""
