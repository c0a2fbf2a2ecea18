"""ReLU conversion end to end (METHODS §4): max-norm, percentile and data-driven thresholds
and initial potentials on a trained ReLU network, from streamed calibration batches."""
from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

import spikebridge as sb
from spikebridge.conversion.graph import ann_site_modules
from spikebridge.errors import ConversionError
from spikebridge.conversion.thresholds import max_threshold, percentile_threshold, search_threshold, search_threshold_channelwise
from spikebridge.device import single_thread

from helpers import trained_relu


def _net():
    """No BatchNorm: the converter's graph then computes the very activations the ANN does."""
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2),
        nn.Flatten(), nn.Linear(16 * 9, 32), nn.ReLU(), nn.Linear(32, 10))


@pytest.fixture(scope="module")
def setup():
    """helpers.trained_relu: 4 calibration batches of 128."""
    with single_thread():
        yield trained_relu(_net, 4, lr=0.02)


def _activations(ann, calib) -> dict[str, torch.Tensor]:
    """Each site's ANN activations over the calibration batches, [N, C, ...] float64."""
    gm, sites = ann_site_modules(ann, relu=True)
    out = {name: [] for name in sites}
    hooks = [m.register_forward_hook(lambda m, i, o, name=name: out[name].append(o.double()))
             for name, m in sites.items()]
    with torch.no_grad():
        for x, _ in calib:
            gm(x)
    for h in hooks:
        h.remove()
    return {name: torch.cat(v) for name, v in out.items()}


def _per_channel(a: torch.Tensor) -> torch.Tensor:
    return a.transpose(0, 1).reshape(a.shape[1], -1).T  # [N·H·W, C]


def test_each_rule_sets_its_statistic_of_the_sites_activations(setup):
    ann, calib = setup["ann"], setup["calib"]
    acts = _activations(ann, calib)
    assert list(acts) == ["1", "4", "8"]
    expect = {
        ("max-norm", 4): lambda a: (max_threshold(a), 0.0),
        ("percentile", 4): lambda a: (percentile_threshold(a, 99.9), 0.0),
        ("data-driven", 1): lambda a: search_threshold(a, 1)[:2],
        ("data-driven", 4): lambda a: search_threshold(a, 4)[:2],
    }
    for (method, T), rule in expect.items():
        snn = sb.convert(ann, method, T=T, calibration_data=calib)
        assert list(snn.neurons()) == list(acts) and snn.T == T
        for name, neuron in snn.neurons().items():
            theta, v0 = rule(acts[name])
            assert neuron.threshold.item() == pytest.approx(theta, rel=1e-6), (method, name)
            assert neuron.v0.item() == pytest.approx(v0, rel=1e-6, abs=1e-9), (method, name)
    snn = sb.convert(ann, "data-driven", T=2, calibration_data=calib, channel_wise=True, m=2)
    for name, neuron in snn.neurons().items():
        theta, v0, _ = search_threshold_channelwise(_per_channel(acts[name]), 2, 2)
        assert neuron.threshold.flatten().double() == pytest.approx(theta, rel=1e-6)
        assert neuron.v0.flatten().double() == pytest.approx(v0, rel=1e-6)


@pytest.mark.parametrize("T", [1, 2, 4])
def test_first_site_of_the_snn_codes_the_model_and_data_driven_has_least_error(setup, T):
    """At the first site the IF neuron sees a constant input, so its decoded output is
    ã = θ/T·clip(floor((T·a + v0)/θ), 0, T); the data-driven θ, v0 give the least Σ|a − ã|."""
    ann, calib = setup["ann"], setup["calib"]
    x = torch.cat([b for b, _ in calib])
    a = _activations(ann, calib)["1"]
    errors = {}
    for method in ("max-norm", "percentile", "data-driven"):
        snn = sb.convert(ann, method, T=T, calibration_data=calib)
        neuron = snn.neurons()["1"]
        theta, v0 = neuron.threshold.double(), neuron.v0.double()
        coded = snn.simulate(x, values=True).values["1"].double()
        model = theta / T * torch.clamp(torch.floor((T * a + v0) / theta), 0, T)
        # the neuron adds a T times; the model multiplies: they may round apart at a bin edge
        assert (coded - model).abs().gt(1e-5).double().mean() < 1e-4, method
        positive = a > 0
        errors[method] = (a - coded)[positive].abs().sum().item()
    assert errors["data-driven"] <= min(errors["max-norm"], errors["percentile"])


def _accuracy(snn, test, T):
    x, y = test
    with torch.no_grad():
        return (snn.simulate(x, T, record=False).logits[-1].argmax(1) == y).double().mean().item()


def test_data_driven_is_far_more_accurate_than_max_norm_at_low_T(setup):
    ann, calib, test = setup["ann"], setup["calib"], setup["test"]
    ann_acc = (ann(test[0]).argmax(1) == test[1]).double().mean().item()
    stats = sb.calibration_statistics(ann, calib, channel_wise=True)
    for T in (1, 2, 4):
        max_norm = _accuracy(sb.convert(ann, "max-norm", T=T, statistics=stats), test, T)
        for cw in (False, True):
            dd = _accuracy(sb.convert(ann, "data-driven", T=T, statistics=stats, channel_wise=cw), test, T)
            assert dd > max_norm + 0.2, (T, cw, dd, max_norm)
    T = 64  # and with enough steps a rate-coded SNN approaches its ANN
    assert _accuracy(sb.convert(ann, "data-driven", T=T, statistics=stats), test, T) > ann_acc - 0.05


def test_statistics_are_reusable_and_must_match_the_model(setup):
    ann, calib = setup["ann"], setup["calib"]
    stats = sb.calibration_statistics(ann, calib)
    for T in (1, 3):
        direct = sb.convert(ann, "data-driven", T=T, calibration_data=calib)
        reused = sb.convert(ann, "data-driven", T=T, statistics=stats)
        for (name, n1), n2 in zip(direct.neurons().items(), reused.neurons().values()):
            assert torch.equal(n1.threshold, n2.threshold) and torch.equal(n1.v0, n2.v0), name
    other = nn.Sequential(nn.Flatten(), nn.Linear(196, 10), nn.ReLU(), nn.Linear(10, 10))
    with pytest.raises(ConversionError, match="statistics cover sites"):
        sb.convert(other, "max-norm", statistics=stats)


def test_qcfs_ann_is_converted_as_its_relu_equivalent(setup):
    ann, calib = setup["ann"], setup["calib"]
    qann = sb.prepare(_net(), levels=4)
    qann.load_state_dict(ann.state_dict(), strict=False)  # same weights, QCFS thresholds of its own
    with pytest.warns(UserWarning, match="treats the QCFS sites as ReLU"):
        from_qcfs = sb.convert(qann, "data-driven", T=2, calibration_data=calib)
    from_relu = sb.convert(ann, "data-driven", T=2, calibration_data=calib)
    assert list(from_qcfs.neurons()) == list(from_relu.neurons()) == list(sb.sites(qann))
    for n1, n2 in zip(from_qcfs.neurons().values(), from_relu.neurons().values()):
        assert torch.equal(n1.threshold, n2.threshold) and torch.equal(n1.v0, n2.v0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # FTBC reads the QCFS ANN as ReLU too, without warning again
        sb.ftbc(from_qcfs, qann, calib, batches=2, check_batches=0, progress=False)
    sb.ftbc(from_relu, ann, calib, batches=2, check_batches=0, progress=False)
    for n1, n2 in zip(from_qcfs.neurons().values(), from_relu.neurons().values()):
        assert n1.bias.abs().sum() > 0 and torch.equal(n1.bias, n2.bias)


def test_subsampling_is_announced_where_it_changes_a_threshold(setup):
    ann, calib = setup["ann"], setup["calib"]
    over = [name for name, a in _activations(ann, calib).items() if (a > 0).sum() > 1000]
    assert over  # the sample cap below binds
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the max is exact on any sample: no warning
        sb.convert(ann, "max-norm", calibration_data=calib, max_samples=1000)
    for method in ("percentile", "data-driven"):
        with pytest.warns(UserWarning, match=f"{method} thresholds use a uniform random subsample"):
            snn = sb.convert(ann, method, calibration_data=calib, max_samples=1000)
        assert snn.info["subsampled_sites"] == over


def test_bad_inputs_are_refused(setup):
    ann = setup["ann"]
    with pytest.raises(ConversionError, match="pass calibration_data"):
        sb.convert(ann, "percentile")
    with pytest.raises(sb.InputError, match="yielded no batches"):
        sb.convert(ann, "percentile", calibration_data=[])
    with pytest.raises(ConversionError, match="no ReLU activation"):
        sb.convert(nn.Sequential(nn.Flatten(), nn.Linear(4, 2)), "max-norm", calibration_data=[torch.ones(1, 4)])
