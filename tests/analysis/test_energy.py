"""Operation counts, energy and latency (METHODS.md §6, §2)."""
from dataclasses import dataclass, field

import pytest
import torch
from hypothesis import assume, given, settings, strategies as st
from torch import nn

from spikebridge.analysis import energy as en
from spikebridge import models


@dataclass
class FakeResult:
    """Stand-in with the fields of spikebridge.network.SimulationResult that energy.py reads."""
    events: dict
    analog_layers: set
    batch_size: int
    T: int = 4
    spikes: dict = field(default_factory=dict)
    steps: dict = field(default_factory=dict)
    analog_steps: dict = field(default_factory=dict)
    analog_ops: dict = field(default_factory=dict)


def test_vgg16_cifar10_macs_match_pascal_a5():
    macs = en.count_macs(models.create("vgg16", num_classes=10).eval(), torch.zeros(2, 3, 32, 32))
    assert sum(macs.values()) == 332_111_872
    assert macs["features.0"] == 1_769_472 and macs["classifier.0"] == 2_097_152
    assert macs["classifier.6"] == 40_960
    # 000 Table 3's c for VGG-16 CIFAR-10 is MACs(Conv1_1) / total, printed as 0.005.
    assert round(macs["features.0"] / sum(macs.values()), 3) == 0.005


def test_count_macs_linear_leading_dims_groups_and_reuse():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv1d(4, 6, 3, groups=2)
            self.fc = nn.Linear(5, 7)

        def forward(self, x):
            return self.fc(self.fc(self.conv(x))[..., :5])

    macs = en.count_macs(Net(), torch.zeros(3, 4, 7))
    assert macs["conv"] == 6 * 5 * (4 // 2) * 3
    assert macs["fc"] == macs["fc#2"] == 5 * 7 * 6  # called twice, 6 leading positions per image each time


@pytest.mark.parametrize("pos, fanout", [((0, 0), 4), ((0, 1), 6), ((1, 1), 9)])
def test_exact_fanout_hand_counted(pos, fanout):
    conv = nn.Conv2d(1, 2, 3, padding=1)
    events = torch.zeros(1, 3, 3)
    events[(0, *pos)] = 5
    assert en.synaptic_ops_exact(conv, events) == 5 * fanout * 2


def _brute_force(c_in, c_out, groups, k, stride, pad, dil, mode, events):
    """Σ_in e_in · fanout(in), with fanout counted by enumerating every synapse."""
    H, W = events.shape[1:]
    Ho = (H + 2 * pad - dil * (k - 1) - 1) // stride + 1
    Wo = (W + 2 * pad - dil * (k - 1) - 1) // stride + 1
    fanout = torch.zeros_like(events)
    per_group = c_in // groups
    for o in range(c_out):
        g = o // (c_out // groups)
        for i in range(Ho):
            for j in range(Wo):
                for c in range(g * per_group, (g + 1) * per_group):
                    for u in range(k):
                        for v in range(k):
                            y, x = i * stride - pad + u * dil, j * stride - pad + v * dil
                            if mode == "circular":
                                y, x = y % H, x % W
                            if 0 <= y < H and 0 <= x < W:
                                fanout[c, y, x] += 1
    return int((events * fanout).sum())


@settings(max_examples=40, deadline=None)
@given(groups=st.sampled_from([1, 2]), cin_g=st.integers(1, 2), cout_g=st.integers(1, 2),
       k=st.integers(1, 3), stride=st.integers(1, 3), pad=st.integers(0, 2), dil=st.integers(1, 2),
       H=st.integers(2, 6), W=st.integers(2, 6), mode=st.sampled_from(["zeros", "circular"]),
       seed=st.integers(0, 2**16))
def test_exact_ops_match_brute_force(groups, cin_g, cout_g, k, stride, pad, dil, H, W, mode, seed):
    c_in, c_out = cin_g * groups, cout_g * groups
    assume(dil * (k - 1) + 1 <= min(H, W) + 2 * pad and not (mode == "circular" and pad > min(H, W)))
    conv = nn.Conv2d(c_in, c_out, k, stride, pad, dil, groups, padding_mode=mode)
    g = torch.Generator().manual_seed(seed)
    events = torch.randint(0, 4, (c_in, H, W), generator=g).float()
    assert en.synaptic_ops_exact(conv, events) == _brute_force(
        c_in, c_out, groups, k, stride, pad, dil, mode, events)


def test_exact_equals_approx_without_border_effects():
    # No padding and stride 1 on a 1x1 kernel, and linear: every input has the full fan-out.
    g = torch.Generator().manual_seed(0)
    for layer, shape in [(nn.Conv2d(3, 5, 1), (3, 4, 4)), (nn.Linear(6, 4), (6,))]:
        events = torch.randint(0, 3, shape, generator=g).float()
        macs = en.count_macs(layer, torch.zeros(1, *shape))[""]
        rate = en.input_spike_rate(events, batch_size=1)
        assert en.synaptic_ops_exact(layer, events) == pytest.approx(en.synaptic_ops_approx(macs, rate))
    # Dense events on an unpadded conv: exactly one AC per MAC; padding makes the exact count smaller.
    ones = torch.ones(2, 6, 6)
    assert en.synaptic_ops_exact(nn.Conv2d(2, 3, 3), ones) == en.count_macs(nn.Conv2d(2, 3, 3), ones[None])[""]
    padded = nn.Conv2d(2, 3, 3, padding=1)
    assert en.synaptic_ops_exact(padded, ones) < en.count_macs(padded, ones[None])[""]


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 3), st.integers(1, 3), st.integers(1, 3), st.integers(0, 1), st.integers(1, 2), st.integers(3, 6),
       st.booleans())
def test_a_transposed_conv_counts_a_mac_per_input_kernel_tap_and_an_ac_per_synapse_inside(
        k, stride, dilation, output_padding, groups, size, padded):
    """MACs: input elements · (C_out / groups) · prod(kernel), the input's size recovered from
    the output's; dense events reach every tap without padding, fewer with it (cropped)."""
    assume(output_padding < max(stride, dilation))
    layer = nn.ConvTranspose2d(2 * groups, 3 * groups, k, stride=stride, padding=k // 2 if padded else 0,
                               output_padding=output_padding, groups=groups, dilation=dilation)
    ones = torch.ones(1, 2 * groups, size, size + 1)
    assume(min(layer(ones).shape[2:]) > 0)
    macs = en.count_macs(layer, ones)[""]
    assert macs == ones.numel() * 3 * k * k
    acs = en.synaptic_ops_exact(layer, ones[0])
    assert acs == macs if not padded or k == 1 else acs < macs


@pytest.mark.parametrize("b, c, printed", [(0.66, 0.005, 7.49), (0.62, 0.005, 7.96), (0.73, 0.006, 6.76),
                                           (0.86, 0.008, 5.72), (0.91, 0.008, 5.42)])
def test_paper_ratio_reproduces_pascal_table3(b, c, printed):
    assert round(en.paper_energy_ratio(1.0, b, c), 2) == printed


def test_cost_presets_from_001_table6():
    assert en.COSTS["fp32"] == {"e_mac": 4.6, "e_ac": 0.9}
    assert en.COSTS["int8"]["e_ac"] == 0.03 and en.COSTS["int32"]["e_ac"] == 0.1
    assert en.COSTS["int8"]["e_mac"] == pytest.approx(0.23)
    assert en.COSTS["int32"]["e_mac"] == pytest.approx(3.2)


def _small_net():
    torch.manual_seed(0)
    return {"conv1": nn.Conv2d(1, 4, 3, padding=1), "conv2": nn.Conv2d(4, 4, 3, stride=2, padding=1),
            "fc": nn.Linear(4 * 2 * 2, 3)}


def test_energy_report_by_hand():
    layers, B, T = _small_net(), 2, 4
    g = torch.Generator().manual_seed(1)
    events = {"conv1": torch.full((1, 4, 4), float(T * B)),         # steps × batch × nonzero pixels
              "conv2": torch.randint(0, 5, (4, 4, 4), generator=g).float(),
              "fc": torch.randint(0, 5, (16,), generator=g).float()}
    res = FakeResult(events, {"conv1"}, B, T)
    rep = en.energy_report(res, layers)
    by = {l.name: l for l in rep.layers}
    assert [l.name for l in rep.layers] == ["conv1", "conv2", "fc"]
    assert by["conv1"].macs == 16 * 4 * 9 and by["conv1"].analog and by["conv1"].input_rate is None
    assert by["conv1"].snn_macs == by["conv1"].macs and by["conv1"].acs_exact == 0
    assert by["conv2"].macs == 4 * 2 * 2 * 4 * 9
    assert by["conv2"].acs_exact == en.synaptic_ops_exact(layers["conv2"], events["conv2"]) / B
    assert by["fc"].acs_exact == events["fc"].sum().item() * 3 / B
    assert by["conv2"].ratio == pytest.approx(by["conv2"].e_ann_pj / by["conv2"].e_snn_pj)
    rate = events["conv2"].sum().item() / (64 * B)
    assert by["conv2"].input_rate == pytest.approx(rate)
    assert by["conv2"].acs_approx == pytest.approx(rate * by["conv2"].macs)
    e_snn = by["conv1"].macs * 4.6 + (by["conv2"].acs_exact + by["fc"].acs_exact) * 0.9
    t = rep.totals
    assert t["e_snn_pj"] == pytest.approx(e_snn)
    assert t["e_ann_pj"] == pytest.approx(4.6 * sum(l.macs for l in rep.layers))
    assert t["ratio"] == pytest.approx(t["e_ann_pj"] / e_snn)
    assert t["e_snn_uj"] == pytest.approx(e_snn * 1e-6)
    assert t["paper_c"] == pytest.approx(by["conv1"].macs / t["macs"])
    assert t["paper_b"] == pytest.approx((by["conv2"].input_rate + by["fc"].input_rate) / 2)
    # Explicit MACs, other costs, analog layer paid every step.
    rep8 = en.energy_report(res, layers, {n: l.macs for n, l in by.items()}, analog_steps=T, **en.COSTS["int8"])
    assert rep8.layers[0].snn_macs == T * by["conv1"].macs
    assert rep8.totals["e_ann_pj"] == pytest.approx(0.23 * t["macs"])
    d = rep8.as_dict()
    assert d["e_ac"] == 0.03 and d["layers"][1]["name"] == "conv2" and d["totals"] == rep8.totals


def test_spike_rates():
    res = FakeResult({}, set(), batch_size=2,
                     spikes={"a": torch.tensor([[4.0, 0.0], [2.0, 2.0]]), "b": torch.tensor([6.0, 0.0])},
                     steps={"a": 4, "b": 2})
    r = en.spike_rates(res)
    assert r["sites"]["a"] == {"neurons": 4, "steps": 4, "spikes_per_image": 4.0, "per_neuron": 1.0, "rate": 0.25}
    assert r["sites"]["b"]["rate"] == 6 / (2 * 2 * 2)
    assert r["overall"] == {"neurons": 6, "spikes_per_image": 7.0, "per_neuron": 14 / 12, "rate": 14 / (2 * (16 + 4))}
    assert en.spike_rates(res, {"a": 8, "b": 2})["sites"]["a"]["rate"] == 8 / (8 * 2 * 4)


def test_pasc_latency_and_t_eff():
    assert en.pasc_t_eff([4, 2, 4, 1]) == 2.75
    assert en.pasc_latency([1, 1, 1]) == 3                      # one step per layer
    assert en.pasc_latency([4] * 5) == 4 + 4 * (2 * 4 - 1)
    # E_1 = 4; site 2: max(4,2)-1+2 = 5; site 3: max(2,8)-1+8 = 15.
    assert en.pasc_latency([4, 2, 8]) == 4 + 5 + 15


def test_energy_report_on_a_simulated_network():
    import spikebridge as sb
    from spikebridge.snn import network
    from spikebridge.conversion.converter import convert
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2), nn.Flatten(),
                          nn.Linear(4 * 4 * 4, 3))
    for method, kwargs in [("pasc", {}), ("qcfs", {"T": 4})]:
        snn = convert(sb.prepare(model, levels=4).eval(), method=method)
        res = snn.simulate(torch.rand(2, 1, 8, 8), **kwargs)
        assert isinstance(res, network.SimulationResult)
        rep = en.energy_report(res, snn.synaptic_layers())
        assert {l.name for l in rep.layers} == set(res.events)
        assert sum(l.analog for l in rep.layers) == len(res.analog_layers) >= 1
        assert 0 < rep.totals["e_snn_pj"] and 0 < rep.totals["ratio"] < float("inf")
        assert set(en.spike_rates(res)["sites"]) == set(res.spikes)
