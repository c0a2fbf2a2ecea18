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

The check (``check_batches`` > 0; docs/methods.md §5 "Never worse"): on calibration images the
biases were not fitted on, with readouts u_1 < … < u_n (the steps after which the network is
read; default its T), the steps are cut into blocks (0, u_1], (u_1, u_2], … Block by block,
the fitted biases of the block (every site) are scaled by a λ in (0, 1/2, 1), later blocks
trying the same λ. The previous block's λ (0 for the first: no FTBC) stays unless another
makes no fewer predictions equal to the ANN's at each readout from the block on and
significantly more in all: with d_i the change in image i's number of agreeing readouts,
Σd_i > 3·sqrt(Σd_i²) (a paired sign test at three standard deviations; the readouts of one
image are not independent trials, so the image is the unit). So on the held-out images the
agreeing predictions at each readout never fall from one block to the next, and the checked
network agrees with the ANN at every readout at least as often as the uncalibrated one. Steps
after the last readout lose their biases.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import nn

from ..conversion.converter import checked_batches
from ..conversion.graph import ann_site_modules
from ..conversion.registry import Source
from ..device import module_device, place
from ..errors import OptionError, SpikeBridgeError, check_int
from ..inputs import example_input
from ..progress import progress as progress_bar
from ..snn.codings import RATE
from ..snn.engine import TrainRunner
from ..snn.network import SpikingNetwork
from ..snn.neurons import SpikingNeuron


SCALES = (0.0, 0.5, 1.0)  # the λ the check tries for each step's biases


def ftbc(snn: SpikingNetwork, ann: nn.Module, data: Iterable, alpha: float = 0.5, batches: int = 4,
         check_batches: int = 4, readouts: list[int] | None = None,
         progress: bool = True, device=None) -> dict[str, dict[str, list[float]]]:
    """Calibrate the FTBC biases of a rate-coded ``snn`` in place against ``ann``.

    data: batches of x or (x, y), or a tensor [N, ...] (split into batches of 256 images),
    checked and cast like convert()'s calibration data; the first ``batches`` are fitted, one
    calibration pass each, and the next ``check_batches`` decide how much of the fitted biases to keep (module
    docstring; 0 keeps them all, as 003 does). readouts: the steps after which the network
    will be read (default: its T; for anytime use, every t you will read). Returns {site: {"error_before": [e(t)],
    "error_after": [e(t)]}} for t = 1..T, where e(t) = mean over channels c of |mean over batch
    and positions of θ·s_c(t) − a_c|, averaged over the fitted batches, for the biases before
    and after calibration, and when checked "kept": [λ(t)], the scale kept at each step (the
    same for every site). device: where to calibrate (the SNN is moved there; default: where it is).
    """
    neurons = _check_snn(snn)
    if not alpha > 0:
        raise OptionError(f"FTBC needs a step size alpha > 0, got {alpha!r}")
    check_int(batches, "batches")
    if not isinstance(check_batches, int) or check_batches < 0:
        raise OptionError(f"check_batches must be an integer >= 0, got {check_batches!r}")
    readouts = sorted(set(readouts or [snn.T]))
    if readouts[0] < 1 or readouts[-1] > snn.T:
        raise OptionError(f"readouts must lie in 1..T = {snn.T}, got {readouts}")
    device = place(snn, device)
    capture = ann_activations(ann, snn)
    items = checked_batches(data, batches + check_batches, snn.input_spec(), device, "FTBC")
    inputs, held_out = items[:batches], items[batches:]
    if not inputs:
        raise SpikeBridgeError("FTBC got no calibration data (the data iterable is empty)")
    if len(held_out) < check_batches:
        raise SpikeBridgeError(f"FTBC fits {batches} batches and checks its biases on {check_batches} more, but the "
                               f"data has {len(items)} (pass more data, or check_batches=0 to keep every bias unchecked)")
    snn.set_T(snn.T)
    was_training = snn.training
    snn.eval()
    with torch.no_grad():
        before = _errors(snn, capture, inputs)
        for x in progress_bar(inputs, "FTBC", enabled=progress):
            _FTBCRunner(snn, capture(x), alpha).run(x)
        kept = check_biases(snn, capture.model, held_out, readouts) if held_out else None
        after = _errors(snn, capture, inputs)
    snn.train(was_training)
    summary = {site: {"error_before": before[site], "error_after": after[site]} for site in neurons}
    for entry in summary.values() if kept is not None else ():
        entry["kept"] = kept
    return summary


def check_biases(snn: SpikingNetwork, ann: nn.Module, inputs: list[torch.Tensor], readouts: list[int]) -> list[float]:
    """Scale the fitted biases block by block (module docstring), ``ann`` (ftbc passes its
    traced copy of the ANN, on the SNN's device) giving the reference predictions: the steps up
    to the first readout, then up to each next one, each block's biases (all sites) by a λ of
    SCALES, later blocks trying the same λ; a λ replaces the previous block's only if it agrees
    with the ANN on ``inputs`` significantly more often at the readouts from that block on
    (``_better``). Steps after the last readout lose their biases (they change no readout).
    Returns λ(t) for t = 1..T; the neurons keep λ(t)·b(t)."""
    neurons = list(snn.neurons().values())
    fitted = [n.bias.clone() for n in neurons]
    with torch.no_grad():
        labels = [ann(x).argmax(1) for x in inputs]
    runners = [TrainRunner(snn, None) for _ in inputs]
    sums: list[torch.Tensor | float] = [0.0] * len(inputs)
    last = readouts[-1]
    kept = [0.0] * snn.T
    previous = 0.0
    for start, end in zip([0] + readouts[:-1], readouts):
        agree = {}
        for scale in SCALES:
            _scale_steps(neurons, fitted, range(start, last), scale)
            hits = []
            for i, (x, y) in enumerate(zip(inputs, labels)):
                saved = runners[i].snapshot()  # each λ's steps continue from the same point
                totals = sums[i] + torch.cumsum(runners[i].run_window(x, (start, last - start)), 0)
                runners[i].restore(saved)
                hits.append(torch.stack([totals[u - 1 - start].argmax(1) == y for u in readouts if u > start], 1))
            agree[scale] = torch.cat(hits)  # [image, readout from the block on]: agrees with the ANN
        best = previous
        for scale in SCALES:
            if scale != best and _better(agree[scale], agree[best]):
                best = scale
        _scale_steps(neurons, fitted, range(start, last), best)
        for i, x in enumerate(inputs):
            sums[i] = sums[i] + runners[i].run_window(x, (start, end - start)).sum(0)
        kept[start:end] = [best] * (end - start)
        previous = best
    _scale_steps(neurons, fitted, range(last, snn.T), 0.0)
    return kept


SIGNIFICANCE = 3.0  # standard deviations a λ must gain by to replace the previous block's


def _better(new: torch.Tensor, old: torch.Tensor) -> bool:
    """True if ``new`` ([image, readout]: agrees with the ANN) agrees at no readout less often
    than ``old`` and beats it by more than SIGNIFICANCE standard deviations of a paired sign test
    on the images: with d_i the change in image i's number of agreeing readouts,
    Σd > SIGNIFICANCE·sqrt(Σd²) (for one readout, g − l > 3·sqrt(g + l))."""
    if (new.sum(0) < old.sum(0)).any():
        return False
    d = (new.long() - old.long()).sum(1).double()
    return float(d.sum()) > SIGNIFICANCE * float(d.square().sum()) ** 0.5


def _scale_steps(neurons, fitted: list[torch.Tensor], steps: range, scale: float) -> None:
    for neuron, bias in zip(neurons, fitted):
        for t in steps:
            if t < bias.shape[0]:
                neuron.bias[t] = scale * bias[t]


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
    methods (a QCFS ANN is taken as its ReLU equivalent there, as convert() does). Its
    ``model`` is the traced copy of the ANN it runs, on the SNN's device."""
    gm, modules = ann_site_modules(ann, relu=snn.record.source is Source.RELU,
                                   example=example_input(input_shape=snn.info.get("input_shape")))
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

    capture.model = gm
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
