"""Ops computed on decoded values (docs/methods.md §8): the codings' decode/encode rules as
properties, and end to end on the small ViT under both codings."""
from __future__ import annotations

import torch
from hypothesis import given, settings, strategies as st

import spikebridge as sb
from spikebridge import models
from spikebridge.analysis.energy import energy_report
from spikebridge.snn.codings import RATE, SUM

trains = st.integers(1, 12).flatmap(lambda T: st.lists(st.floats(-4, 4), min_size=T, max_size=T))


@given(trains, st.integers(1, 12))
def test_rate_decode_is_the_running_mean_and_encode_keeps_it_in_any_windows(values, window):
    x = torch.tensor(values, dtype=torch.float64).view(-1, 1)
    whole_state, chunked_state = {}, {}
    (mean,) = RATE.decode([x], whole_state)
    steps = torch.arange(1, len(values) + 1, dtype=torch.float64).view(-1, 1)
    assert torch.allclose(mean, x.cumsum(0) / steps, atol=1e-12)
    y = torch.tanh(mean)  # any f of the running mean
    out = RATE.encode(y, whole_state)
    assert torch.allclose(out.cumsum(0) / steps, y, atol=1e-9)  # the train's running mean is y(t)
    pieces = []
    for t0 in range(0, len(values), window):
        (m,) = RATE.decode([x[t0:t0 + window]], chunked_state)
        pieces.append(RATE.encode(torch.tanh(m), chunked_state))
    assert torch.equal(torch.cat(pieces), out)  # bit for bit the same in windows


@given(trains)
def test_sum_decode_is_the_sum_and_encode_one_step(values):
    x = torch.tensor(values, dtype=torch.float64).view(-1, 1)
    (total,) = SUM.decode([x], {})
    assert total.shape == (1, 1) and torch.allclose(total, x.sum(0, keepdim=True))
    assert torch.equal(SUM.encode(total, {}), total)


def _vit(activation: str, seed: int = 0):
    torch.manual_seed(seed)
    ann = models.create("vit_tiny", num_classes=10, in_channels=1, image_size=16, depth=2, dim=16, heads=2,
                        activation=activation)
    qann = sb.prepare(ann, levels=8, threshold=1.0).eval().double()
    return qann, torch.randn(8, 1, 16, 16, dtype=torch.float64)


@settings(max_examples=5, deadline=None)
@given(st.integers(0, 2 ** 16), st.sampled_from(["pasc", "bitplane"]))
def test_the_small_vit_converts_exactly_under_sum_coding(seed, method):
    qann, x = _vit("gelu", seed)
    snn = sb.convert(qann, method)
    report = sb.verify(qann, snn, x)
    assert report.agreement == 1.0 and sum(report.mismatches.values()) == 0 and report.max_logit_diff < 1e-9
    result = snn.simulate(x)
    ops = {r["op"] for r in result.analog_ops.values()}
    assert {"layer_norm", "matmul", "softmax"} <= ops
    energy = energy_report(result, snn.synaptic_layers())
    assert energy.totals["analog_op_macs"] == sum(r["macs"] for r in result.analog_ops.values()) / x.shape[0]
    analog = {l.name for l in energy.layers if l.analog}
    assert "blocks.1.attention.qkv" in analog and "blocks.1.mlp.2" not in analog  # the MLP's second layer gets spikes


def test_a_relu_vit_under_rate_coding_approaches_the_ann_and_is_the_same_in_any_chunks():
    qann, x = _vit("relu")
    snn = sb.convert(qann, "qcfs", T=64)
    a, b = snn.simulate(x, chunk=8), snn.simulate(x, chunk=64)
    assert torch.equal(a.logits, b.logits)
    ann = qann(x)
    error = (a.logits - ann).abs().mean((1, 2))
    assert error[63] < error[3] < error[0]
    # the analog ops run at every step: T calls each, on the running means
    assert all(r["calls"] == 64 for name, r in a.analog_ops.items() if "blocks_1" in name or "blocks.1" in name)


def test_the_report_lists_what_is_still_analog(tmp_path):
    from spikebridge.analysis.report import write_report
    from spikebridge.analysis.summary import analyse

    qann, x = _vit("gelu")
    loader = [(x, torch.zeros(len(x), dtype=torch.long))]
    data = analyse(qann, {"pasc": sb.convert(qann, "pasc")}, loader, [4], progress=False)
    ops = data["energy"]["pasc"]["analog_ops"]
    assert {"layer_norm", "softmax", "matmul"} <= {a["op"] for a in ops} and all(a["macs"] > 0 for a in ops)
    text = write_report(tmp_path, data).read_text()
    assert "Still analog" in text and "blocks_1_norm2" in text
