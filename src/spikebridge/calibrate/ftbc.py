"""FTBC: forward temporal bias correction of a rate-coded SNN (docs/methods.md §5; paper 003).

Every IF neuron gets a per-(step, channel) bias b[t, C] (its ``bias`` buffer, so it is in
the state dict and in sb.save files): v ← v + z(t) − b(t); s = H(v − θ); v ← v − θ·s.
Calibration is forward only. For one batch, one pass through the graph reaches the sites
in topological order, each fed by the already calibrated sites before it; at a site with
ANN activation a (same images) and input train z, for t = 1..T:

    run step t with the current b(t);  δ = channel-mean(θ·s(t) − a);  b(t) += α·δ;
    re-run step t with the new b(t), so that the state carried into t + 1 is corrected,

then the corrected output train goes on to the next layers. The bias is *subtracted* (the
sign of 003's Alg. 1 is wrong, docs/methods.md errata) and each step starts from the bias already
learned, so repeated batches refine it instead of over-correcting (unlike 003's code).
Cost: per batch, every neuron runs 2T steps and every other layer once: O(layers).
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from itertools import islice

import torch
from torch import nn

from ..conversion.graph import ann_site_modules
from ..conversion.registry import Source
from ..device import module_device, place
from ..errors import OptionError, SpikeBridgeError, check_int
from ..progress import progress as progress_bar
from ..snn.codings import RATE
from ..snn.engine import TrainRunner
from ..snn.network import SpikingNetwork
from ..snn.neurons import SpikingNeuron


def ftbc(snn: SpikingNetwork, ann: nn.Module, data: Iterable, alpha: float = 0.5, batches: int = 4,
         progress: bool = True, device=None) -> dict[str, dict[str, list[float]]]:
    """Calibrate the FTBC biases of a rate-coded ``snn`` in place against ``ann``.

    data: batches of x or (x, y); the first ``batches`` are used, one calibration pass each.
    Returns {site: {"error_before": [e(t)], "error_after": [e(t)]}} for t = 1..T, where
    e(t) = mean over channels c of |mean over batch and positions of θ·s_c(t) − a_c|,
    averaged over the calibration batches, for the biases before and after calibration.
    device: where to calibrate (the SNN is moved there; default: where it is).
    """
    neurons = _check_snn(snn)
    if not alpha > 0:
        raise OptionError(f"FTBC needs a step size alpha > 0, got {alpha!r}")
    check_int(batches, "batches")
    device = place(snn, device)
    capture = ann_activations(ann, snn)
    inputs = [(item[0] if isinstance(item, (tuple, list)) else item).to(device) for item in islice(data, batches)]
    if not inputs:
        raise SpikeBridgeError("FTBC got no calibration data (the data iterable is empty)")
    snn.set_T(snn.T)
    was_training = snn.training
    snn.eval()
    with torch.no_grad():
        before = _errors(snn, capture, inputs)
        for x in progress_bar(inputs, "FTBC", enabled=progress):
            _FTBCRunner(snn, capture(x), alpha).run(x)
        after = _errors(snn, capture, inputs)
    snn.train(was_training)
    return {site: {"error_before": before[site], "error_after": after[site]} for site in neurons}


def _check_snn(snn: SpikingNetwork) -> dict[str, SpikingNeuron]:
    if not isinstance(snn, SpikingNetwork):
        raise SpikeBridgeError(f"FTBC calibrates a SpikingNetwork, got {type(snn).__name__}")
    if snn.coding is not RATE:
        raise SpikeBridgeError(f"FTBC needs a rate-coded SNN; method {snn.method!r} is {snn.coding.name}-coded: its "
                               "spikes do not estimate the ANN activation at every step")
    neurons = snn.neurons()
    other = [name for name, n in neurons.items() if not n.stepwise]
    if other or not neurons:
        raise SpikeBridgeError(f"FTBC needs a neuron with per-step biases at every site; not at {other or 'any site'}")
    return neurons


def ann_activations(ann: nn.Module, snn: SpikingNetwork) -> Callable[[torch.Tensor], dict[str, torch.Tensor]]:
    """A function x -> {site: ANN activation} with the SNN's site names: the QCFS outputs
    (sb.sites) for QCFS methods, the ReLU outputs at the sites convert() names for ReLU
    methods (a QCFS ANN is taken as its ReLU equivalent there, as convert() does)."""
    gm, modules = ann_site_modules(ann, relu=snn.record.source is Source.RELU)
    names = list(modules)
    expected = list(snn.neurons())
    if names != expected:
        raise SpikeBridgeError(
            f"the ANN does not match the SNN: its activation sites {names[:6]}{'...' if len(names) > 6 else ''} "
            f"are not the SNN's {expected[:6]}{'...' if len(expected) > 6 else ''} (pass the ANN the SNN was "
            "converted from)")
    gm.to(module_device(snn))
    found: dict[str, torch.Tensor] = {}
    for name, module in modules.items():
        module.register_forward_hook(
            lambda _m, _i, out, name=name: found.__setitem__(name, out.detach().clone()))

    def capture(x: torch.Tensor) -> dict[str, torch.Tensor]:
        found.clear()
        with torch.no_grad():
            gm(x)
        return dict(found)

    return capture


def channel_mean(e: torch.Tensor) -> torch.Tensor:
    """Mean over batch and positions of every channel (dim 1): [B, C, ...] -> [C]."""
    return e.mean([d for d in range(e.dim()) if d != 1])


def calibrate_neuron(neuron: SpikingNeuron, train: torch.Tensor, a: torch.Tensor, alpha: float) -> torch.Tensor:
    """FTBC at one site (docs/methods.md §5): for t = 1..T, step with b(t); b(t) += α·channel-mean(θ·s(t) − a);
    re-step with the new b(t). Returns the corrected output train [T, B, ...]."""
    T = neuron.T
    if train.shape[0] not in (1, T):
        raise OptionError(f"the neuron runs T = {T} steps but got an input train of {train.shape[0]} steps")
    if a.shape != train.shape[1:]:
        raise SpikeBridgeError(f"ANN activation of shape {tuple(a.shape)} does not match the SNN site's "
                               f"{tuple(train.shape[1:])}")
    _widen_bias(neuron, T, a.shape[1])
    v = neuron.init_state(train[0])
    out = []
    for t in range(T):
        x_t = train[0 if train.shape[0] == 1 else t]
        _, o = neuron.step(v, x_t, t)
        neuron.bias[t] += alpha * channel_mean(o - a)
        v, o = neuron.step(v, x_t, t)
        out.append(o)
    return torch.stack(out)


def _widen_bias(neuron: SpikingNeuron, T: int, channels: int) -> None:
    """Make the bias [max(T_b, T), C], keeping the biases already learned."""
    old = neuron.bias
    if old.shape[0] >= T and old.shape[1] == channels:
        return
    if old.shape[1] not in (1, channels):
        raise SpikeBridgeError(f"the neuron's bias has {old.shape[1]} channels, its site {channels}")
    bias = old.new_zeros(max(old.shape[0], T), channels)
    bias[:old.shape[0]] = old
    neuron.set_bias(bias)


def _errors(snn: SpikingNetwork, capture, inputs) -> dict[str, list[float]]:
    """Per site and step, mean over channels of |channel-mean(θ·s(t) − a)|, mean over batches."""
    total: dict[str, torch.Tensor] = {}
    for x in inputs:
        for site, err in _ErrorRunner(snn, capture(x)).run_errors(x).items():
            total[site] = total.get(site, 0) + err
    return {site: (err / len(inputs)).tolist() for site, err in total.items()}


class _FTBCRunner(TrainRunner):
    """One pass of the SNN graph that calibrates each IF neuron on its input train when it
    reaches it, then passes the corrected train on (O(layers) per batch)."""

    def __init__(self, snn: SpikingNetwork, targets: dict[str, torch.Tensor], alpha: float):
        super().__init__(snn, None)
        self.targets = targets
        self.alpha = alpha

    def call_module(self, target, args, kwargs):
        module = self.fetch_attr(target)
        if isinstance(module, SpikingNeuron):
            return calibrate_neuron(module, args[0], self.targets[target], self.alpha)
        return super().call_module(target, args, kwargs)


class _ErrorRunner(TrainRunner):
    """One ordinary pass that records each site's per-step channel-mean error."""

    def __init__(self, snn: SpikingNetwork, targets: dict[str, torch.Tensor]):
        super().__init__(snn, None)
        self.targets = targets
        self.errors: dict[str, torch.Tensor] = {}

    def run_errors(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        self.run(x)
        return self.errors

    def call_module(self, target, args, kwargs):
        out = super().call_module(target, args, kwargs)
        if isinstance(self.fetch_attr(target), SpikingNeuron):
            a = self.targets[target]
            self.errors[target] = torch.stack([channel_mean(o - a).abs().mean() for o in out])
        return out
