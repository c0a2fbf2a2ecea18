"""Patterns of models nobody wrote for spikebridge that the timm sweep (BENCHMARKS.md §13)
found spikebridge failing on or refusing, each converted exactly now: a layer with shared
weights called on inputs of different shapes (CoaT's MLP shared by its scales), a constant
integer index into a train that neurons compute (MaxxViT's relative-position MLP), a
BatchNorm1d on tokens flattened to [B·N, C] (LeViT), a nonlinear op on a parameter alone
(SwinV2's clamped, exponentiated logit scale), computed at conversion, functional layer
calls whose weight or bias is computed from parameters (BEiT's qkv bias, NFNet's standardised
convolution weight), layers at conversion, and activations the input cannot change (the
relative-position MLPs of MaxxViT and SwinV2-CR, EfficientViM's sigmoid of a parameter): no
site, computed at conversion."""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings, strategies as st
from torch import nn
from torch.nn import functional as F

import spikebridge as sb
from spikebridge.analysis import energy as en


class SharedMlp(nn.Module):
    """One MLP applied to 9 and to 4 tokens of the same image, as CoaT's parallel blocks do."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Conv2d(1, 8, 2, stride=2)
        self.mlp = nn.Sequential(nn.Linear(8, 12), nn.ReLU(), nn.Linear(12, 8))
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        fine = F.relu(self.embed(x)).flatten(2).transpose(1, 2)                   # [B, 9, 8]
        coarse = F.adaptive_avg_pool1d(fine.transpose(1, 2), 4).transpose(1, 2)   # [B, 4, 8]
        return self.head(self.mlp(fine).mean(1) + self.mlp(coarse).mean(1))


class IndexedBias(nn.Module):
    """A bias table computed by an MLP with a ReLU, read through a constant integer index and
    added to the features (MaxxViT's relative positions). MaxxViT's coordinates are constants,
    and so is its table (``FixedByWeights``); here each image's mean moves them, so that the
    index reads a train that neurons compute."""

    def __init__(self):
        super().__init__()
        self.register_buffer("coords", torch.randn(5, 2))
        self.register_buffer("index", torch.randint(0, 5, (3, 3)))
        self.table = nn.Sequential(nn.Linear(2, 6), nn.ReLU(), nn.Linear(6, 1))
        self.conv = nn.Conv2d(1, 4, 2, stride=2)
        self.fc = nn.Linear(4 * 9, 3)

    def forward(self, x):
        coords = self.coords + x.mean((1, 2, 3)).view(-1, 1, 1)   # [B, 5, 2]
        bias = self.table(coords).flatten(1)[:, self.index]       # [B, 3, 3]
        return self.fc(F.relu(F.relu(self.conv(x)) + bias[:, None]).flatten(1))


class TokenNorm(nn.Module):
    """LeViT's linear + BatchNorm1d on the tokens flattened to [B·N, C], and a BatchNorm1d on
    [B, C] features that no linear layer takes."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Conv2d(1, 8, 2, stride=2)
        self.linear, self.bn = nn.Linear(8, 8), nn.BatchNorm1d(8)
        self.bn2 = nn.BatchNorm1d(8)
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        tokens = F.relu(self.embed(x)).flatten(2).transpose(1, 2)   # [B, 9, 8]
        y = self.linear(tokens)
        y = F.relu(self.bn(y.flatten(0, 1)).reshape_as(y))
        return self.head(F.relu(self.bn2(y.mean(1))))


class ScaledByParameter(nn.Module):
    """Features times exp(clamp(θ, max=0.5)), θ a parameter, as SwinV2's cosine attention
    scales its logits; and a clamp on a train that stays refused."""

    def __init__(self, clamp_train: bool = False):
        super().__init__()
        self.logit_scale = nn.Parameter(torch.tensor([0.2, 0.9, -0.3, 1.5]))
        self.conv = nn.Conv2d(1, 4, 2, stride=2)
        self.fc = nn.Linear(4 * 9, 3)
        self.clamp_train = clamp_train

    def forward(self, x):
        h = F.relu(self.conv(x))
        h = torch.clamp(h, max=0.5) if self.clamp_train else h
        scale = torch.clamp(self.logit_scale.reshape(1, 4, 1, 1), max=0.5).exp()
        return self.fc((h * scale).flatten(1))


class ComputedWeights(nn.Module):
    """A convolution with a weight standardised per output channel (NFNet's ScaledStdConv2d:
    F.batch_norm over the weight) and a linear layer with a bias concatenated from parameters
    and zeros (BEiT's qkv bias)."""

    def __init__(self):
        super().__init__()
        self.weight, self.bias = nn.Parameter(torch.randn(4, 1, 2, 2)), nn.Parameter(torch.randn(4) * 0.1)
        self.fc = nn.Linear(4 * 9, 6, bias=False)
        self.q_bias, self.v_bias = nn.Parameter(torch.randn(2) * 0.1), nn.Parameter(torch.randn(2) * 0.1)
        self.head = nn.Linear(6, 3)

    def forward(self, x):
        weight = F.batch_norm(self.weight.reshape(1, 4, -1), None, None, training=True, momentum=0.0,
                              eps=1e-6).reshape_as(self.weight)
        h = F.relu(F.conv2d(x, weight, self.bias, stride=2))
        bias = torch.cat((self.q_bias, torch.zeros_like(self.v_bias), self.v_bias))
        return self.head(F.relu(F.linear(h.flatten(1), self.fc.weight, bias)))


ACTIVATIONS = {"ReLU": nn.ReLU(), "GELU": nn.GELU(), "F.silu": F.silu, "torch.tanh": torch.tanh,
               "Hardswish": nn.Hardswish()}


class FixedByWeights(nn.Module):
    """Activations whose values the input cannot change: an MLP with ``act`` on a coordinate
    table (MaxxViT's and SwinV2-CR's relative positions), a sigmoid of a parameter that gates
    the features (EfficientViM), and a ReLU of a parameter that the QCFS ANN of an earlier
    prepare quantized (``qcfs``: a QCFS module of its own there)."""

    def __init__(self, act: str = "ReLU", qcfs: bool = False):
        super().__init__()
        self.register_buffer("coords", torch.randn(5, 2))
        self.embed, self.act, self.table = nn.Linear(2, 6), ACTIVATIONS[act], nn.Linear(6, 4)
        self.gate = nn.Parameter(torch.randn(4))
        self.shift = nn.Parameter(torch.randn(4))
        self.fixed_site = sb.QCFS(levels=4, threshold=1.0) if qcfs else nn.ReLU()
        self.conv = nn.Conv2d(1, 4, 2, stride=2)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        bias = self.table(self.act(self.embed(self.coords))).mean(0) + self.fixed_site(self.shift)  # [4]
        h = F.relu(self.conv(x)).mean((2, 3)) + bias  # [B, 4]
        return self.fc(F.relu(h) * torch.sigmoid(self.gate))


def _prepared(model: nn.Module, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm1d):
            m.running_mean.uniform_(-0.5, 0.5), m.running_var.uniform_(0.5, 2.0)
    return sb.prepare(model.eval(), levels=4, threshold=1.0).double().eval()


@settings(max_examples=4, deadline=None)
@given(st.integers(0, 2 ** 16), st.sampled_from(["pasc", "bitplane"]),
       st.sampled_from([SharedMlp, IndexedBias, TokenNorm, ScaledByParameter, ComputedWeights, FixedByWeights]))
def test_each_pattern_converts_exactly(seed, method, net):
    torch.manual_seed(seed)
    qann = _prepared(net(), seed)
    snn = sb.convert(qann, method)
    report = sb.verify(qann, snn, torch.randn(4, 1, 6, 6, dtype=torch.float64))
    assert report.agreement == 1.0 and sum(report.mismatches.values()) == 0 and report.max_logit_diff < 1e-9


def test_no_batchnorm_is_left_and_its_conv_takes_both_ranks():
    snn = sb.convert(_prepared(TokenNorm(), 0), "pasc")
    assert not any(isinstance(m, nn.BatchNorm1d) for m in snn.modules())
    convs = [n for n in snn.graph.graph.nodes if n.op == "call_module"
             and isinstance(snn.graph.get_submodule(n.target), nn.Conv1d)]
    assert [n.args[0].target for n in convs] == [torch.atleast_3d] * 2


def test_a_shared_layer_is_recorded_per_call_and_counted_per_call():
    qann = _prepared(SharedMlp(), 0)
    snn = sb.convert(qann, "pasc").double()
    x = torch.rand(2, 1, 6, 6, dtype=torch.float64)
    result = snn.simulate(x)
    layers = snn.synaptic_layers()
    assert list(layers) == ["embed", "mlp.0", "mlp.2", "mlp.0#2", "mlp.2#2", "head"]
    assert layers["mlp.0"] is layers["mlp.0#2"]
    assert result.events["mlp.0"].shape == (9, 8) and result.events["mlp.0#2"].shape == (4, 8)
    macs = en.count_macs(qann, x[:1])
    assert macs["mlp.0"] == 9 * 8 * 12 and macs["mlp.0#2"] == 4 * 8 * 12
    report = en.energy_report(result, layers, macs)
    assert [row.name for row in report.layers] == list(layers)
    rows = {row.name: row for row in report.layers}
    for name in ("mlp.0", "mlp.0#2"):  # linear: each event reaches every output feature
        assert rows[name].acs_exact == result.events[name].sum().item() * 12 / x.shape[0]
        assert rows[name].macs == macs[name]


@pytest.mark.parametrize("method", ["pasc", "qcfs"])
def test_a_one_step_index_is_the_same_at_every_step(method):
    qann = _prepared(IndexedBias(), 1)
    snn = sb.convert(qann, method, **({"T": 4} if method == "qcfs" else {}))
    x = torch.rand(3, 1, 6, 6, dtype=torch.float64)
    logits = snn.simulate(x).logits
    assert logits.shape[0] > 1 and torch.isfinite(logits).all()
    if method == "pasc":
        assert torch.allclose(logits[-1], qann(x), atol=1e-9)


def test_a_nonlinear_op_on_parameters_alone_is_computed_at_conversion():
    qann = _prepared(ScaledByParameter(), 0)
    snn = sb.convert(qann, "pasc")
    ops = {n.target for n in snn.graph.graph.nodes if n.op in ("call_function", "call_method")}
    assert torch.clamp not in ops and "exp" not in ops and "reshape" not in ops
    (folded,) = [m for name, m in snn.graph.named_modules() if name.startswith("constant_exp")]
    expected = torch.tensor([0.2, 0.5, -0.3, 0.5], dtype=torch.float64).exp().view(1, 4, 1, 1)
    assert torch.allclose(folded.value, expected)
    with pytest.raises(sb.ConversionError, match="clamp"):  # on a train it has no spiking meaning
        sb.convert(_prepared(ScaledByParameter(clamp_train=True), 0), "pasc")


def test_layer_calls_on_computed_weights_become_layers_at_conversion():
    qann = _prepared(ComputedWeights(), 0)
    assert {F.conv2d, F.linear} <= {n.target for n in sb.prepare(ComputedWeights(), levels=4).graph.nodes}
    snn = sb.convert(qann, "pasc")
    layers = list(snn.synaptic_layers().values())
    assert [type(m) for m in layers] == [nn.Conv2d, nn.Linear, nn.Linear]
    standardised = F.batch_norm(qann.weight.reshape(1, 4, -1), None, None, training=True, momentum=0.0, eps=1e-6)
    assert torch.allclose(layers[0].weight, standardised.reshape_as(qann.weight))
    assert torch.equal(layers[1].bias, torch.cat((qann.q_bias, torch.zeros(2, dtype=torch.float64), qann.v_bias)))


def test_constant_values_leave_in_place_calls_alone():
    from torch import fx

    from spikebridge.conversion.constant import Constant
    from spikebridge.conversion.graph import constant_values
    graph = fx.Graph()
    read = graph.call_module("c")
    doubled = graph.call_method("mul", (read, 2))
    in_place = graph.call_method("mul_", (read, 2))
    graph.output((doubled, in_place))
    gm = fx.GraphModule({"c": Constant((2,), torch.ones(2))}, graph)
    values = constant_values(gm)
    assert torch.equal(values[doubled], torch.full((2,), 2.0)) and in_place not in values
    assert torch.equal(gm.c.value, torch.ones(2))  # the constant itself unchanged


@pytest.mark.parametrize("act", sorted(ACTIVATIONS))
def test_activations_the_input_cannot_change_get_no_site(act):
    qann = sb.prepare(FixedByWeights(act), levels=4)
    assert list(sb.sites(qann)) == ["relu", "relu_1"]  # the two on the image's features
    model = FixedByWeights(act, qcfs=True)  # the QCFS ANN of an earlier prepare: a site on a parameter
    assert list(sb.sites(sb.prepare(model, levels=4))) == ["fixed_site", "relu", "relu_1"]


@pytest.mark.parametrize("method", ["pasc", "bitplane"])
@settings(max_examples=4, deadline=None)
@given(seed=st.integers(0, 2 ** 16), act=st.sampled_from(sorted(ACTIVATIONS)))
def test_they_are_computed_at_conversion_and_the_snn_is_exact(method, seed, act):
    torch.manual_seed(seed)
    for qcfs in (False, True):
        qann = _prepared(FixedByWeights(act, qcfs), seed)
        snn = sb.convert(qann, method)
        assert sorted(snn.neurons()) == ["relu", "relu_1"]  # none on the table, the gate or the parameter's site
        assert sorted(snn.info.get("levels", ["relu", "relu_1"])) == ["relu", "relu_1"]  # pasc: what it coded
        x = torch.randn(5, 1, 6, 6, dtype=torch.float64)
        report = sb.verify(qann, snn, x)
        assert report.agreement == 1.0 and report.max_logit_diff < 1e-9
        folded = [n.target for n in snn.graph.graph.nodes if n.op == "call_module" and n.target.startswith("constant_")]
        assert len(folded) == 3  # the table's activation, the parameter's site and the sigmoid


@pytest.mark.parametrize("method", ["network-level", "data-driven", "local-balancing"])
def test_a_relu_method_converts_a_network_gated_by_a_parameter(method):
    """A ReLU method took every activation for a site and refused the sigmoid; now the table's
    ReLU, the parameter's ReLU and the gate are the ANN's values, computed at conversion."""
    torch.manual_seed(0)
    model = FixedByWeights("ReLU").eval()
    data = torch.rand(64, 1, 6, 6)
    snn = sb.convert(model, method, T=4, calibration_data=data)
    assert sorted(snn.neurons()) == ["relu", "relu_1"]
    values = {name.removeprefix("constant_"): m.value for name, m in snn.graph.named_modules()
              if name.startswith("constant_")}
    assert torch.equal(values["sigmoid"], torch.sigmoid(model.gate).detach())
    assert torch.equal(values["act"], torch.relu(model.embed(model.coords)).detach())
    assert torch.equal(values["fixed_site"], torch.relu(model.shift).detach())


class ParameterReadTwice(nn.Module):
    """A parameter through an in-place ReLU module, and the same parameter added as it is."""

    def __init__(self):
        super().__init__()
        self.shift = nn.Parameter(torch.tensor([-1.0, 2.0, -3.0, 4.0]))
        self.fixed_site = nn.ReLU(inplace=True)
        self.conv = nn.Conv2d(1, 4, 2, stride=2)

    def forward(self, x):
        return F.relu(self.conv(x)).mean((2, 3)) * self.fixed_site(self.shift) + self.shift


def test_an_in_place_activation_of_a_parameter_changes_no_other_reader():
    model = ParameterReadTwice().eval()
    x = torch.rand(32, 1, 6, 6)
    snn = sb.convert(model, "network-level", T=2, calibration_data=x)
    values = {name: m.value for name, m in snn.graph.named_modules() if name.startswith("constant_")}
    assert torch.equal(values["constant_fixed_site"], torch.tensor([0.0, 2.0, 0.0, 4.0]))
    assert torch.equal(values["constant_shift"], torch.tensor([-1.0, 2.0, -3.0, 4.0]))
    assert torch.equal(model.shift.detach(), torch.tensor([-1.0, 2.0, -3.0, 4.0]))
