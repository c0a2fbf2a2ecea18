"""ReLU6 sites and other clips to [0, c] in the methods that convert a ReLU ANN (docs/methods.md
§4, §8), and calibration data given as one tensor [N, ...] to the methods that run the network on
it and to FTBC."""
from __future__ import annotations


import pytest
import torch
import torch.nn.functional as F
from torch import nn

import spikebridge as sb
from spikebridge import UnsupportedActivationError
from spikebridge.device import single_thread

from helpers import trained_relu


class _Net(nn.Module):
    """ReLU6 as a module called at two sites and as F.relu6; ``relu`` swaps both for ReLU,
    ``clamp`` for the same clips written as nn.Hardtanh(0, 6) and torch.clamp(x, 0, 6)."""

    def __init__(self, relu: bool = False, clamp: bool = False):
        super().__init__()
        self.c1, self.c2 = nn.Conv2d(1, 8, 3, padding=1), nn.Conv2d(8, 16, 3, padding=1)
        self.fc1, self.fc2 = nn.Linear(16 * 9, 32), nn.Linear(32, 10)
        self.act = nn.ReLU() if relu else nn.Hardtanh(0, 6) if clamp else nn.ReLU6()
        self.second = F.relu if relu else (lambda z: torch.clamp(z, 0, 6)) if clamp else F.relu6

    def forward(self, x):
        x = F.avg_pool2d(self.act(self.c1(x)), 2)
        x = F.avg_pool2d(self.second(self.c2(x)), 2)
        return self.fc2(self.act(self.fc1(x.flatten(1))))


@pytest.fixture(scope="module")
def setup():
    """A trained ReLU6 net whose first layer is scaled 8x, so that every site clips at 6."""
    with single_thread():
        s = trained_relu(_Net, 4, lr=0.02)
    with torch.no_grad():
        s["ann"].c1.weight.mul_(8)
        s["ann"].c1.bias.mul_(8)
    s["relu_twin"], s["clamp_twin"] = (_Net(**{kind: True}).eval() for kind in ("relu", "clamp"))
    for twin in (s["relu_twin"], s["clamp_twin"]):
        twin.load_state_dict(s["ann"].state_dict())
    return s


def _predictions(model_or_snn, x, T=None):
    with torch.no_grad():
        if T is None:
            return model_or_snn(x).argmax(1)
        return model_or_snn.simulate(x, T, record=False).logits[-1].argmax(1)


def test_relu6_sites_are_rate_coded_with_thresholds_at_most_the_clip(setup):
    ann, (x, _) = setup["ann"], setup["test"]
    ann_pred, twin_pred = _predictions(ann, x), _predictions(setup["relu_twin"], x)
    assert (ann_pred != twin_pred).float().mean() > 0.2  # the clip changes a fifth of the predictions
    snn = sb.convert(ann, "max-norm", T=64, calibration_data=setup["calib"])
    assert list(snn.neurons()) == ["act", "relu6", "act_1"]
    # the statistics are of the clipped outputs: every site saturates, so max-norm puts θ at the clip
    assert all(float(n.threshold) == 6.0 for n in snn.neurons().values())
    pred = _predictions(snn, x, 64)
    agree, agree_twin = (pred == ann_pred).float().mean(), (pred == twin_pred).float().mean()
    assert agree >= 0.9 and agree >= agree_twin + 0.15
    for method in ("percentile", "data-driven"):
        thresholds = sb.convert(ann, method, T=4, calibration_data=setup["calib"]).neurons().values()
        assert all(float(n.threshold) <= 6.0 for n in thresholds)


def test_clips_written_as_hardtanh_and_clamp_convert_as_relu6_does(setup):
    """nn.Hardtanh(0, 6) and torch.clamp(x, 0, 6) compute ReLU6: the same sites, thresholds and
    logits under a ReLU method, and the same exact SNN under PASC."""
    ann, twin, (x, _) = setup["ann"], setup["clamp_twin"], setup["test"]
    assert torch.equal(ann(x), twin(x))
    snns = [sb.convert(net, "max-norm", T=8, calibration_data=setup["calib"]) for net in (ann, twin)]
    assert list(snns[1].neurons()) == ["act", "clamp", "act_1"]
    for a, b in zip(snns[0].neurons().values(), snns[1].neurons().values()):
        assert torch.equal(a.threshold, b.threshold) and torch.equal(a.v0, b.v0)
    with torch.no_grad():
        assert torch.equal(snns[0].simulate(x[:256], record=False).logits,
                           snns[1].simulate(x[:256], record=False).logits)
    qann = sb.prepare(twin, levels=8)
    assert [float(site.threshold.detach().flatten()[0]) for site in sb.sites(qann).values()] == [6.0, 6.0, 6.0]
    report = sb.verify(qann.double(), sb.convert(qann, "pasc").double(), x[:64].double())
    assert report.agreement == 1.0 and report.max_logit_diff < 1e-9


def test_the_default_converts_a_relu6_network(setup):
    ann, (x, _) = setup["ann"], setup["test"]
    snn = sb.convert(ann, T=8, calibration_data=setup["calib"])
    assert snn.method == "network-level"
    assert (_predictions(snn, x, 8) == _predictions(ann, x)).float().mean() >= 0.9


def test_other_activations_are_still_refused_by_relu_methods():
    net = nn.Sequential(nn.Linear(4, 8), nn.Hardswish(), nn.Linear(8, 2))
    with pytest.raises(UnsupportedActivationError, match="take ReLU, ReLU6 and clips to"):
        sb.convert(net, "max-norm", T=4, calibration_data=torch.randn(8, 4))


def _images(calib) -> torch.Tensor:
    return torch.cat([x for x, _ in calib])


@pytest.mark.parametrize("method", ["local-balancing", "network-level"])
def test_a_tensor_is_split_into_batches_like_the_statistics(setup, method):
    """Iterating a tensor yields single images without a batch dimension (a conv runs on them,
    the flatten before the classifier does not): it is split into batches of 256 instead."""
    ann, images = setup["ann"], _images(setup["calib"])
    from_tensor = sb.convert(ann, method, T=2, calibration_data=images)
    from_batches = sb.convert(ann, method, T=2, calibration_data=list(images.split(256)))
    for site, neuron in from_tensor.neurons().items():
        assert torch.equal(neuron.threshold, from_batches.neurons()[site].threshold)


def test_ftbc_takes_a_tensor_as_batches_of_256(setup):
    ann, images = setup["ann"], _images(setup["calib"])
    snns = [sb.convert(ann, "max-norm", T=4, calibration_data=setup["calib"]) for _ in range(2)]
    sb.ftbc(snns[0], ann, images, batches=1, check_batches=1, progress=False)
    sb.ftbc(snns[1], ann, images.split(256), batches=1, check_batches=1, progress=False)
    biases = [{site: n.bias for site, n in snn.neurons().items()} for snn in snns]
    assert all(b.shape[0] == 4 for b in biases[0].values())
    assert all(torch.equal(biases[0][site], biases[1][site]) for site in biases[0])


def test_torchvision_mobilenet_v2_converts_with_the_default_as_it_is():
    """ReLU6 at every site, the classifier behind F.adaptive_avg_pool2d and torch.flatten."""
    torch.manual_seed(0)
    import torchvision
    ann = torchvision.models.mobilenet_v2(num_classes=10, width_mult=0.25).eval()
    calls = sum(isinstance(m, nn.ReLU6) for m in ann.modules())  # each module is called once
    x = torch.randn(32, 3, 32, 32)
    snn = sb.convert(ann, T=2, calibration_data=x)
    assert snn.method == "network-level" and len(snn.neurons()) == calls == 35
    assert snn.simulate(x[:4], record=False).logits.shape == (2, 4, 10)
