"""spikebridge: convert trained PyTorch ANNs into low-latency spiking networks.

Pipeline: prepare → train → convert → calibrate → simulate → analyse/export.

    import spikebridge as sb
    qann = sb.prepare(model, levels=8)          # QCFS ANN, train it
    snn = sb.convert(qann, method="pasc")       # exact SNN
    res = snn.simulate(x)                       # anytime logits, spike counts
    print(sb.verify(qann, snn, x).table())
"""
from .convert import calibration_statistics, convert, methods
from .finetune import finetune
from .ftbc import ftbc
from .errors import CheckpointError, ConversionError, DataError, SpikeBridgeError, UnsupportedActivationError
from .network import SimulationResult, SpikingNetwork
from .prepare import prepare, set_levels, sites
from .qcfs import QCFS
from .checkpoint import load_ann
from .serialization import load, save
from .verify import VerifyReport, verify

__version__ = "0.1.0"

__all__ = [
    "prepare", "sites", "set_levels", "QCFS", "convert", "methods", "calibration_statistics",
    "SpikingNetwork", "SimulationResult", "ftbc", "finetune", "verify", "VerifyReport",
    "save", "load", "load_ann", "SpikeBridgeError", "ConversionError", "UnsupportedActivationError",
    "DataError", "CheckpointError",
]
