"""spikebridge: convert trained PyTorch ANNs into low-latency spiking networks.

Pipeline: prepare → train → convert → calibrate → simulate → analyse/export.
"""
from .errors import CheckpointError, ConversionError, DataError, SpikeBridgeError, UnsupportedActivationError
from .prepare import prepare, set_levels, sites
from .qcfs import QCFS

__version__ = "0.1.0"
