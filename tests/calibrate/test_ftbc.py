"""FTBC (METHODS §5): per-(step, channel) biases, calibrated forward, O(layers) per batch."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import spikebridge as sb
from spikebridge.cli import main
from spikebridge.errors import OptionError, SpikeBridgeError
from spikebridge.calibrate import ftbc as ftbc_module
from spikebridge.calibrate.ftbc import _better, calibrate_neuron, channel_mean, ftbc
from spikebridge.snn.neurons import IFNeuron
from spikebridge.device import single_thread

from helpers import fashion_mnist_14x14, sgd_fit, small_relu_cnn, trained_relu


def _net():
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.AvgPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.AvgPool2d(2),
        nn.Flatten(), nn.Linear(16 * 9, 32), nn.ReLU(), nn.Linear(32, 10))


@pytest.fixture(scope="module")
def setup():
    """A QCFS ANN (L = 32, 4 sites) trained for 400 steps on 10k Fashion-MNIST images, the
    calibration batches (4 x 128 training images) and the 10k test images."""
    with single_thread():
        torch.manual_seed(0)
        x, y = fashion_mnist_14x14("train", 10000)
        xt, yt = fashion_mnist_14x14("test", 10000)
        qann = sgd_fit(sb.prepare(_net(), levels=32, threshold=2.0), x, y, 400, lr=0.05, weight_decay=5e-4, cosine=True)
        calib = [x[j * 128:(j + 1) * 128] for j in range(4)]
        yield {"qann": qann, "calib": calib, "xt": xt, "yt": yt}


@pytest.fixture(scope="module")
def calibrated(setup):
    """{T: (uncalibrated accuracy, calibrated accuracy, summary, snn)} for T = 2, 4.

    α = 0.3 (003 uses 0.2–0.5): at α = 0.5 one pass over 4 batches overshoots at one site and
    step of this network at T = 4 (error ratio 1.32 measured), at 0.3 every ratio is <= 0.83."""
    out = {}
    for T in (2, 4):
        snn = sb.convert(setup["qann"], "qcfs", T=T)
        with torch.no_grad():
            before = (snn(setup["xt"]).argmax(1) == setup["yt"]).double().mean().item()
            summary = ftbc(snn, setup["qann"], setup["calib"], alpha=0.3, batches=4, check_batches=0,
                           progress=False)
            after = (snn(setup["xt"]).argmax(1) == setup["yt"]).double().mean().item()
        out[T] = (before, after, summary, snn)
    return out


@pytest.mark.parametrize("T", [2, 4])
def test_ftbc_lowers_every_sites_error_at_every_step(calibrated, T):
    summary = calibrated[T][2]
    assert list(summary) == list(calibrated[T][3].neurons())
    for site, e in summary.items():
        assert len(e["error_before"]) == len(e["error_after"]) == T
        for t, (b, a) in enumerate(zip(e["error_before"], e["error_after"])):
            assert a < b, f"{site} step {t + 1}: {b:.4f} -> {a:.4f}"


@pytest.mark.parametrize("T, gain", [(2, 0.02), (4, 0.002)])
def test_ftbc_raises_held_out_accuracy(calibrated, T, gain):
    """003's claim: FTBC on top of QCFS raises low-latency accuracy (10k test images;
    measured here: T=2 73.98% -> 79.06%, T=4 80.86% -> 81.39%, ANN 82.14%)."""
    before, after, _, _ = calibrated[T]
    assert after >= before + gain, (before, after)


def test_biases_are_buffers_saved_and_reloaded(calibrated, setup, tmp_path):
    snn = calibrated[4][3]
    state = snn.state_dict()
    for site, neuron in snn.neurons().items():
        channels = 32 if site == "13" else 16 if site in ("6", "9") else 8
        assert state[f"graph.{site}.bias"].shape == (4, channels)
        assert neuron.bias.abs().sum() > 0
    sb.save(snn, tmp_path / "snn.pt")
    loaded = sb.load(tmp_path / "snn.pt")
    for site, neuron in loaded.neurons().items():
        assert torch.equal(neuron.bias, snn.neurons()[site].bias)
    x = setup["xt"][:64]
    with torch.no_grad():
        assert torch.equal(loaded.simulate(x, 4).logits, snn.simulate(x, 4).logits)
    fresh = sb.convert(setup["qann"], "qcfs", T=4)
    fresh.load_state_dict(state)
    assert all(torch.equal(fresh.neurons()[s].bias, n.bias) for s, n in snn.neurons().items())


def test_bias_is_subtracted_and_repeated_batches_converge():
    """One neuron, the same batch over and over: with b subtracted (METHODS errata) and each
    step run with the bias already learned, the channel-mean error of every step goes to ~0."""
    torch.manual_seed(0)
    neuron = IFNeuron(torch.tensor([1.0, 2.0, 0.5]), torch.tensor([0.5, 1.0, 0.25]), T=4)
    z = torch.rand(1, 256, 3, 5) * 1.5
    a = (z[0] * 0.7).clamp(max=1.0)
    first = None
    for _ in range(30):
        out = calibrate_neuron(neuron, z, a, alpha=0.5)
        err = torch.stack([channel_mean(o - a).abs() for o in neuron(z)])
        first = err if first is None else first
    assert neuron.bias.shape == (4, 3)
    assert err.max() < 0.1 * first.max()
    assert torch.equal(out, neuron(z))  # the corrected train is what the neuron now emits


def test_cost_is_linear_in_depth(monkeypatch):
    """Per batch every neuron runs a fixed number of steps however deep the network is: the
    input train of a layer is computed once, not replayed from the input for every layer."""
    calls: dict[int, int] = {}
    step, infer = IFNeuron.step, IFNeuron._infer

    def counting(self, v, x_t, t):
        calls[id(self)] = calls.get(id(self), 0) + 1
        return step(self, v, x_t, t)

    def counting_infer(self, x, v, t0, steps, counts=None):  # an inference run counts its steps
        calls[id(self)] = calls.get(id(self), 0) + steps
        return infer(self, x, v, t0, steps, counts)

    monkeypatch.setattr(IFNeuron, "step", counting)
    monkeypatch.setattr(IFNeuron, "_infer", counting_infer)
    T, batches = 3, 2
    for depth in (2, 6):
        torch.manual_seed(depth)
        layers = [nn.Flatten()]
        for i in range(depth):
            layers += [nn.Linear(12 if i == 0 else 16, 16), nn.ReLU()]
        qann = sb.prepare(nn.Sequential(*layers, nn.Linear(16, 3)), levels=4, threshold=1.0)
        snn = sb.convert(qann, "qcfs", T=T)
        calls.clear()
        ftbc(snn, qann, [torch.randn(8, 12) for _ in range(batches)], batches=batches, check_batches=0,
             progress=False)
        assert len(calls) == depth
        # one calibration pass (2T steps: step, correct, re-step) + the before/after measurements
        assert set(calls.values()) == {batches * (2 * T + 2 * T)}


def test_relu_methods_use_the_converters_site_names():
    """A ReLU ANN with module, functional, in-place and reused ReLUs, converted by max-norm."""

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.fc2, self.fc3 = nn.Linear(6, 16), nn.Linear(16, 16), nn.Linear(16, 16)
            self.out = nn.Linear(16, 3)
            self.act = nn.ReLU()

        def forward(self, x):
            x = self.act(self.fc1(x))
            x = F.relu(self.fc2(x), inplace=True)
            x = self.act(self.fc3(x))
            return self.out(x.relu())

    torch.manual_seed(0)
    ann = Net().eval()
    data = [torch.randn(64, 6) for _ in range(3)]
    snn = sb.convert(ann, "max-norm", T=4, calibration_data=data)
    summary = ftbc(snn, ann, data, batches=3, check_batches=0, progress=False)
    assert list(summary) == list(snn.neurons()) and len(summary) == 4
    for e in summary.values():
        assert sum(e["error_after"]) < sum(e["error_before"])


def test_sum_coded_and_mismatched_networks_are_refused(setup):
    qann = setup["qann"]
    pasc = sb.convert(qann, "pasc")
    with pytest.raises(SpikeBridgeError, match="rate-coded"):
        ftbc(pasc, qann, setup["calib"], progress=False)
    other = sb.prepare(nn.Sequential(nn.Flatten(), nn.Linear(196, 10), nn.ReLU(), nn.Linear(10, 10)), levels=4)
    with pytest.raises(SpikeBridgeError, match="does not match"):
        ftbc(sb.convert(qann, "qcfs", T=2), other, setup["calib"], progress=False)
    with pytest.raises(SpikeBridgeError, match="no calibration data"):
        ftbc(sb.convert(qann, "qcfs", T=2), qann, [], progress=False)
    with pytest.raises(SpikeBridgeError, match="check_batches=0"):
        ftbc(sb.convert(qann, "qcfs", T=2), qann, setup["calib"], batches=2, check_batches=3, progress=False)
    with pytest.raises(OptionError, match="readouts"):
        ftbc(sb.convert(qann, "qcfs", T=2), qann, setup["calib"], batches=2, check_batches=2, readouts=[3])


def _agreement(snn, ann, batches, readouts) -> list[int]:
    """Per readout, the predictions equal to the ANN's, summed over the images."""
    with torch.no_grad():
        logits = [(snn.simulate(x, max(readouts), record=False).logits, ann(x).argmax(1)) for x in batches]
        return [sum(int((z[u - 1].argmax(1) == y).sum()) for z, y in logits) for u in readouts]


def test_check_keeps_only_biases_that_help_on_held_out_images(setup):
    """Biases fitted on images unlike the ones the network will see (bright noise), the check on
    two batches of real images: it scales them block by block so that, on those images, the
    network agrees with the ANN at each readout at least as often as without biases."""
    qann, T, readouts = setup["qann"], 4, [1, 2, 4]
    torch.manual_seed(0)
    held_out = setup["calib"][:2]
    data = [torch.rand_like(held_out[0]) * 6 for _ in range(2)] + held_out
    plain = sb.convert(qann, "qcfs", T=T)
    unchecked = sb.convert(qann, "qcfs", T=T)
    ftbc(unchecked, qann, data, batches=2, check_batches=0, progress=False)
    checked = sb.convert(qann, "qcfs", T=T)
    summary = ftbc(checked, qann, data, batches=2, check_batches=2, readouts=readouts, progress=False)
    scores = {name: _agreement(snn, qann, held_out, readouts)
              for name, snn in [("plain", plain), ("unchecked", unchecked), ("checked", checked)]}
    assert any(u < p for u, p in zip(scores["unchecked"], scores["plain"])), scores  # the overshooting biases hurt
    assert all(c >= p for c, p in zip(scores["checked"], scores["plain"])), scores
    kept = summary["2"]["kept"]
    assert all(e["kept"] == kept for e in summary.values()) and len(kept) == T
    assert kept[2] == kept[3] and set(kept) <= {0.0, 0.5, 1.0} and kept != [1.0] * T
    for site, neuron in checked.neurons().items():
        for t in range(T):
            assert torch.allclose(neuron.bias[t], kept[t] * unchecked.neurons()[site].bias[t])


def test_the_check_measures_every_scale_from_the_same_point(monkeypatch):
    """Each λ's steps run from the same point of the held-out run (TrainRunner.snapshot): on a
    network that keeps its max pooling, whose running sums carry from one run of the steps to
    the next, the agreement the check measures for every λ is what a fresh simulation of the
    network with biases λ·b gives."""
    with single_thread():
        trained = trained_relu(lambda: small_relu_cnn(nn.MaxPool2d), 2, lr=0.05)
    ann, T = trained["ann"], 2
    x, _ = fashion_mnist_14x14("train", 5000 + 128 * 6)
    data = [x[5000 + 128 * j:5000 + 128 * (j + 1)] for j in range(6)]
    snn = sb.convert(ann, "max-norm", T=T, calibration_data=data[:2])
    fitted = copy.deepcopy(snn)
    ftbc(fitted, ann, data[:4], batches=4, check_batches=0, progress=False)
    measured = []
    monkeypatch.setattr(ftbc_module, "_better", lambda new, old: measured.append((new, old)) or _better(new, old))
    ftbc(snn, ann, data, batches=4, check_batches=2, progress=False)
    fresh = {}
    with torch.no_grad():
        for scale in ftbc_module.SCALES:
            scaled = copy.deepcopy(fitted)
            for neuron in scaled.neurons().values():
                neuron.bias.mul_(scale)
            fresh[scale] = torch.cat([(scaled(b).argmax(1) == ann(b).argmax(1))[:, None] for b in data[4:]])
    assert measured and torch.equal(measured[0][0], fresh[0.5]) and torch.equal(measured[0][1], fresh[0.0])
    assert torch.equal(measured[1][0], fresh[1.0])


def test_calibrate_cli(tmp_path, capsys):
    from spikebridge import models
    from spikebridge.train.checkpoint import FORMAT, VERSION, save_checkpoint, thresholds_of

    torch.manual_seed(0)
    model = models.create("small_cnn", num_classes=10, in_channels=1, width=4)
    qann = sb.prepare(model, levels=4).eval()
    save_checkpoint(tmp_path / "ann.pt", {
        "format": FORMAT, "version": VERSION, "model": model.spikebridge_spec, "dataset": "fashion-mnist",
        "levels": {s: 4 for s in sb.sites(qann)}, "thresholds": thresholds_of(qann), "state_dict": qann.state_dict(), "epoch": 0})
    sb.save(sb.convert(qann, "qcfs", T=2), tmp_path / "snn.pt")
    assert main(["calibrate", "ftbc", str(tmp_path / "snn.pt"), "--ckpt", str(tmp_path / "ann.pt"),
                 "--batches", "2", "--batch-size", "16", "-o", str(tmp_path / "cal.pt"), "--no-progress"]) == 0
    calibrated = sb.load(tmp_path / "cal.pt")
    assert all(n.bias.shape[0] == 2 for n in calibrated.neurons().values())
    assert "error" in capsys.readouterr().out
    assert main(["calibrate", "ftbc", str(tmp_path / "missing.pt"), "--ckpt", str(tmp_path / "ann.pt"),
                 "-o", str(tmp_path / "x.pt")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("spikebridge calibrate: error:") and "does not exist" in err and "\n" not in err


def test_a_scale_must_lose_at_no_readout_and_win_by_three_deviations():
    """_better: [image, readout] agreement; per image the readouts are one trial, not several."""
    old = torch.zeros(100, 3, dtype=torch.bool)
    gains = old.clone()
    gains[:9] = True  # 9 images gain at every readout: Σd = 27, 3·sqrt(Σd²) = 3·sqrt(81) = 27
    assert not _better(gains, old)
    gains[9] = True   # 10 images: 30 > 3·sqrt(90) = 28.5
    assert _better(gains, old)
    early = torch.zeros(1000, 3, dtype=torch.bool)
    early[:100, :2] = True  # 100 images gain at readouts 1 and 2 ...
    before = torch.zeros(1000, 3, dtype=torch.bool)
    before[500, 2] = True   # ... but readout 3 loses the one image that agreed there
    assert not _better(early, before)
    early[600, 2] = True    # readout 3 even: 1 and 1
    assert _better(early, before)
