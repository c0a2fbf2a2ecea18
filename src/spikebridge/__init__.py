"""spikebridge: convert trained PyTorch ANNs into low-latency spiking networks.

Pipeline: prepare → train → convert → calibrate → simulate → analyse/export.

    import spikebridge as sb
    qann = sb.prepare(model, levels=8)          # QCFS ANN, train it
    snn = sb.convert(qann, method="pasc")       # exact SNN
    res = snn.simulate(x)                       # anytime logits, spike counts
    print(sb.verify(qann, snn, x).table())
"""
from .analysis.verify import VerifyReport, verify
from .ann.prepare import prepare, set_levels, sites, with_average_pooling
from .ann.qcfs import QCFS
from .calibrate.finetune import finetune
from .calibrate.ftbc import ftbc
from .conversion.converter import calibration_statistics, convert
from .conversion.registry import methods
from .device import keep_freed_memory
from .errors import (
    CheckpointError, ConversionError, DataError, InputError, OptionError, SpikeBridgeError, UnsupportedActivationError,
)
from .export.snn_file import load, save
from .snn.network import SimulationResult, SpikingNetwork
from .train.checkpoint import load_ann

__version__ = "0.1.0"

__all__ = [
    "prepare", "sites", "set_levels", "with_average_pooling", "QCFS", "convert", "methods", "calibration_statistics",
    "SpikingNetwork", "SimulationResult", "ftbc", "finetune", "verify", "VerifyReport",
    "save", "load", "load_ann", "keep_freed_memory", "SpikeBridgeError", "ConversionError", "UnsupportedActivationError",
    "DataError", "CheckpointError", "OptionError", "InputError",
]
