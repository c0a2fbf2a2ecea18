"""network-level (docs/methods.md §10) and the default method for a ReLU ANN: each site's θ
chosen by the error at the network's output with the SNN simulated."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import spikebridge as sb
from spikebridge.conversion.registry import METHODS, Method, Source, default_method, methods, register
from spikebridge.device import single_thread

from spikebridge.snn import engine

from helpers import Residual, small_relu_cnn, trained_relu


@pytest.fixture(scope="module")
def setup():
    """helpers.trained_relu: 2 calibration batches of 128."""
    with single_thread():
        yield trained_relu(small_relu_cnn, 2, lr=0.05, weight_decay=5e-4)


def _output_error(snn, ann, batches, T) -> float:
    """Σ KL(softmax(z_ANN) ‖ softmax(z_SNN)) per image, z_SNN the logits after T steps."""
    total, images = 0.0, 0
    with torch.no_grad():
        for x, _ in batches:
            p = F.log_softmax(ann(x).double(), 1)
            q = F.log_softmax(snn.simulate(x, T, record=False).logits[-1].double(), 1)
            total += float((p.exp() * (p - q)).sum())
            images += x.shape[0]
    return total / images


def _accuracy(snn, test, T):
    x, y = test
    with torch.no_grad():
        return (snn.simulate(x, T, record=False).logits[-1].argmax(1) == y).double().mean().item()


@pytest.mark.parametrize("T", [1, 4])
def test_output_error_never_rises_and_is_at_most_the_rules_it_starts_from(setup, T):
    ann, calib = setup["ann"], setup["calib"]
    snn = sb.convert(ann, "network-level", T=T, calibration_data=calib)
    history, passes = snn.info["output_error"], snn.info["passes"]
    assert 1 <= passes <= 3 and len(history) == 1 + passes * len(snn.neurons())
    assert all(b <= a for a, b in zip(history, history[1:]))
    assert history[-1] == pytest.approx(_output_error(snn, ann, calib, T), rel=1e-6)
    assert set(snn.info["chosen"]) == set(snn.neurons())
    for neuron in snn.neurons().values():
        assert torch.allclose(neuron.v0, neuron.threshold / 2)
    # the global search contains these conversions (scale 1): network-level can only do better
    in_32 = [x[i:i + 32] for x, _ in calib for i in range(0, len(x), 32)]
    starts = [sb.convert(ann, "percentile", T=T, calibration_data=calib, channel_wise=True, v0_fraction=0.5),
              sb.convert(ann, "data-driven", T=T, calibration_data=calib, channel_wise=True),
              sb.convert(ann, "local-balancing", T=T, calibration_data=in_32)]
    for start in starts:
        assert history[-1] <= _output_error(start, ann, calib, T) * (1 + 1e-6)


@pytest.mark.parametrize("kind, steps", [("max pooling kept", (1, 4)), ("residual sums", (1,))])
def test_every_candidate_is_measured_from_the_same_point(kind, steps, monkeypatch):
    """The search runs the network up to site k once and the rest once per candidate, so each
    candidate must start from the same state: the running sums of max pooling kept as it is (an
    ANALOG op's state, which carries from one run of a runner to the next), and the live trains,
    into which a residual sum may be added in place (``sum_into``). Then E never rises and ends
    at the converted network's E."""
    if kind == "max pooling kept":
        with single_thread():
            trained = trained_relu(lambda: small_relu_cnn(nn.MaxPool2d), 2, lr=0.05)
        ann, calib = trained["ann"], trained["calib"]
    else:
        torch.manual_seed(0)
        ann, calib = Residual().eval(), [(torch.rand(64, 3, 16, 16), None) for _ in range(2)]
    taken = []
    fused = engine.TrainRunner.sum_into
    monkeypatch.setattr(engine.TrainRunner, "sum_into", lambda self, *a: taken.append(fused(self, *a)) or taken[-1])
    for T in steps:
        snn = sb.convert(ann, "network-level", T=T, calibration_data=[x for x, _ in calib])
        history = snn.info["output_error"]
        assert all(b <= a for a, b in zip(history, history[1:])), (T, history)
        assert history[-1] == pytest.approx(_output_error(snn, ann, calib, T), rel=1e-6)
    if kind == "residual sums" and torch.backends.mkldnn.is_available():
        assert any(t is not None for t in taken)  # the search did add convolutions into live trains


def test_more_accurate_than_per_site_rules_at_low_T(setup):
    """On held-out images, at T = 1 and 2, choosing θ by the output error beats choosing it by
    each site's own error (data-driven, 002) and the channel-wise percentile with v0 = θ/2."""
    ann, calib, test = setup["ann"], setup["calib"], setup["test"]
    for T in (1, 2):
        net = _accuracy(sb.convert(ann, "network-level", T=T, calibration_data=calib), test, T)
        dd = _accuracy(sb.convert(ann, "data-driven", T=T, calibration_data=calib), test, T)
        pct = _accuracy(sb.convert(ann, "percentile", T=T, calibration_data=calib, channel_wise=True,
                                   v0_fraction=0.5), test, T)
        assert net > max(dd, pct) + 0.02, (T, net, dd, pct)


def test_passes_repeat_the_site_by_site_search_until_nothing_changes(setup):
    """Pass p starts from pass p−1's choice: its history extends the shorter search's, and the
    search stops after a pass in which no site changed (its E equals the pass before's)."""
    ann, calib = setup["ann"], setup["calib"]
    runs = {p: sb.convert(ann, "network-level", T=4, calibration_data=calib, passes=p).info for p in (1, 2, 6)}
    sites = len(runs[1]["chosen"])
    for p, info in runs.items():
        assert info["passes"] <= p and len(info["output_error"]) == 1 + info["passes"] * sites
    assert runs[2]["output_error"][:1 + sites] == runs[1]["output_error"]
    longest = runs[6]
    assert longest["output_error"][:len(runs[2]["output_error"])] == runs[2]["output_error"]
    if longest["passes"] < 6:  # converged: its last pass changed nothing
        assert longest["output_error"][-1] == longest["output_error"][-1 - sites]
    assert longest["passes"] > 2  # at T = 4 on this network the second and third passes lower E
    assert longest["output_error"][-1] < runs[1]["output_error"][-1]
    with pytest.raises(sb.OptionError, match="passes be positive"):
        sb.convert(ann, "network-level", T=4, calibration_data=calib, passes=0)


def test_layer_wise_candidates_without_channel_statistics(setup):
    ann, calib = setup["ann"], setup["calib"]
    snn = sb.convert(ann, "network-level", T=2, calibration_data=calib, channel_wise=False)
    assert all(not label.split("×")[0].endswith("-channel") for label in snn.info["chosen"].values())
    with pytest.raises(sb.ConversionError, match="pass calibration_data"):
        sb.convert(ann, "network-level", T=2, statistics=sb.calibration_statistics(ann, calib, channel_wise=True))


def test_default_method_follows_the_kind_of_model(setup):
    ann, calib = setup["ann"], setup["calib"]
    assert default_method(Source.RELU).name == "network-level"
    assert default_method(Source.QCFS).name == "pasc"
    snn = sb.convert(ann, T=2, calibration_data=calib)
    named = sb.convert(ann, "network-level", T=2, calibration_data=calib)
    assert snn.method == "network-level"
    for a, b in zip(snn.neurons().values(), named.neurons().values()):
        assert torch.equal(a.threshold, b.threshold)
    qann = sb.prepare(small_relu_cnn(), levels=3)
    assert sb.convert(qann).method == "pasc"
    assert "network-level (default)" in str(sb.methods()) and "pasc (default)" in str(sb.methods())


def test_a_second_default_for_a_source_is_refused():
    record = methods()["max-norm"]
    twin = Method(name="max-norm-twin", summary="", coding=record.coding, source=Source.RELU, time=record.time,
                  options=record.options, build=record.build, default=True)
    with pytest.raises(ValueError, match="both the default"):
        register(twin)
    assert "max-norm-twin" not in METHODS


def test_cli_convert_without_a_method_uses_the_default(tmp_path, capsys, one_thread):
    from spikebridge.cli import main
    from spikebridge.demo import train_demo_ann

    _, ckpt, _ = train_demo_ann(tmp_path / "relu", epochs=1, train_images=128, progress=False, levels=None)
    assert main(["convert", str(ckpt), "--T", "2", "--calibration-images", "64", "--v0-fraction", "0.5",
                 "-o", str(tmp_path / "snn.sb")]) == 0
    out = capsys.readouterr().out
    assert "default for a ReLU ANN" in out and "network-level SNN (T=2" in out
    assert sb.load(tmp_path / "snn.sb").method == "network-level"
    assert main(["convert", str(ckpt), "--percentile", "99.0", "-o", str(tmp_path / "x.sb")]) == 2
    assert "does not apply to method 'network-level'" in capsys.readouterr().err


def test_the_search_reports_its_progress_in_a_log(setup, capsys, monkeypatch):
    """Stage 1, then one step per site, as lines in a log (progress.py; one per step at interval 0)."""
    from spikebridge import progress

    monkeypatch.setenv(progress.ENV_SECONDS, "0")
    sb.convert(setup["ann"], "network-level", T=2, calibration_data=setup["calib"], passes=1)
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("network-level search (T=2)")]
    assert [line.split(": ")[1].split(" (")[0] for line in lines] == ["1/4 steps", "2/4 steps", "3/4 steps",
                                                                       "4/4 steps"]
    assert lines[-1].endswith("done")
