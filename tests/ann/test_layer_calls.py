"""Functional layer calls on a module's own tensors become layer modules (ann/layer_calls.py):
timm-style layers that compute F.batch_norm, F.linear or F.conv2d in their own forward trace to
a graph that computes what the model computes, in train and eval mode, with one copy of each
tensor, and convert as their torch.nn twins do. Also: a model holding computed (non-leaf) tensors
after an eval forward, and one with an optional input left out, trace and run."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings, strategies as st
from torch import nn

import spikebridge as sb
from spikebridge.ann.tracing import trace

from helpers import trained_relu


class BatchNormAct(nn.BatchNorm2d):
    """timm's BatchNormAct2d, reduced: batch norm by F.batch_norm in its forward, then its ReLU."""

    def __init__(self, channels: int):
        super().__init__(channels)
        self.act = nn.ReLU()

    def forward(self, x):
        x = F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, self.training,
                         self.momentum, self.eps)
        return self.act(x)


class FunctionalLinear(nn.Linear):
    def forward(self, x):
        return F.linear(x, self.weight, self.bias)


class FunctionalConv(nn.Conv2d):
    """A conv that calls F.conv2d with its own arguments given by keyword."""

    def forward(self, x):
        return F.conv2d(x, self.weight, self.bias, stride=self.stride, padding=self.padding, groups=self.groups)


def _net(functional: bool, bias: bool = True, groups: int = 1) -> nn.Module:
    conv, bn, linear = (FunctionalConv, BatchNormAct, FunctionalLinear) if functional else (nn.Conv2d, None, nn.Linear)
    norm_act = (lambda c: bn(c)) if functional else (lambda c: nn.Sequential(nn.BatchNorm2d(c), nn.ReLU()))
    return nn.Sequential(conv(1, 8, 3, padding=1, bias=bias), norm_act(8), nn.AvgPool2d(2),
                         conv(8, 16, 3, padding=1, groups=groups, bias=bias), norm_act(16), nn.AvgPool2d(2),
                         nn.Flatten(), linear(16 * 9, 32), nn.ReLU(), linear(32, 10))


def _twin(net: nn.Module) -> nn.Module:
    """The same weights in torch.nn's own layers."""
    twin = _net(False, bias=net[0].bias is not None, groups=net[3].groups)
    state = {k.replace("1.", "1.0.", 1) if k.startswith("1.") else k.replace("4.", "4.0.", 1) if k.startswith("4.")
             else k: v for k, v in net.state_dict().items()}
    twin.load_state_dict(state)
    return twin


def test_every_functional_call_becomes_a_module_holding_the_same_tensors():
    net = _net(True)
    gm = trace(net)
    assert not [n for n in gm.graph.nodes if n.op == "get_attr" or n.target in (F.batch_norm, F.linear, F.conv2d)]
    kinds = {name: type(m) for name, m in gm.named_modules() if name.endswith((".bn", ".conv", ".linear"))}
    assert kinds == {"0.conv": nn.Conv2d, "1.bn": nn.BatchNorm2d, "3.conv": nn.Conv2d, "4.bn": nn.BatchNorm2d,
                     "7.linear": nn.Linear, "9.linear": nn.Linear}
    assert set(gm.state_dict()) == (  # one copy of each tensor, at its module's new path
        {f"{i}.conv.{t}" for i in "03" for t in ("weight", "bias")}
        | {f"{i}.bn.{t}" for i in "14" for t in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")}
        | {f"{i}.linear.{t}" for i in "79" for t in ("weight", "bias")})
    assert sum(p.numel() for p in gm.parameters()) == sum(p.numel() for p in net.parameters())


@settings(max_examples=20, deadline=None)
@given(bias=st.booleans(), groups=st.sampled_from([1, 2, 8]), seed=st.integers(0, 2 ** 16))
def test_the_traced_graph_computes_the_model_in_train_and_eval_mode(bias, groups, seed):
    """Outputs equal in eval mode, and in train mode (batch statistics), where the running
    statistics are updated alike and the gradients reach the same parameters."""
    torch.manual_seed(seed)
    net = _net(True, bias, groups).double()
    gm = trace(net)
    x = torch.randn(6, 1, 14, 14, dtype=torch.float64)
    for mode in (True, False):
        net.train(mode), gm.train(mode)
        assert torch.equal(gm(x), net(x))
    net.train(), gm.train()
    net(x).sum().backward(), gm(x).sum().backward()
    for name in ("1", "4"):
        assert torch.equal(gm.get_submodule(f"{name}.bn").running_mean, net.get_submodule(name).running_mean)
        assert torch.equal(gm.get_submodule(f"{name}.bn").weight.grad, net.get_submodule(name).weight.grad)


def test_a_call_on_computed_tensors_is_left_and_made_a_layer_by_convert():
    """Training changes the tensors the weight is computed from, so prepare keeps the call;
    at conversion the weight is fixed, and the call becomes a layer holding it
    (graph.constant_layer_calls)."""
    class Scaled(nn.Conv2d):
        def forward(self, x):
            return F.conv2d(x, self.weight * 0.5, self.bias, padding=1)

    net = nn.Sequential(Scaled(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.LazyLinear(2))
    net(torch.zeros(1, 1, 6, 6))
    qann = sb.prepare(net, levels=4).double().eval()
    assert any(n.target is F.conv2d for n in qann.graph.nodes)
    snn = sb.convert(qann, "pasc")
    assert not any(n.target is F.conv2d for n in snn.graph.graph.nodes)
    assert torch.equal(snn.synaptic_layers()["conv2d_layer"].weight, qann.get_submodule("0").weight * 0.5)
    report = sb.verify(qann, snn, torch.randn(3, 1, 6, 6, dtype=torch.float64))
    assert report.agreement == 1.0 and report.max_logit_diff < 1e-9


@pytest.fixture(scope="module")
def trained():
    return trained_relu(lambda: _net(True), 2, lr=0.02)


def test_a_trained_timm_style_network_converts_as_its_torch_nn_twin(trained):
    """Default conversion (BatchNorm folded, ReLU sites) and PASC after prepare: the same SNN as
    the twin built from torch.nn's layers with the same weights."""
    net, twin, x = trained["ann"], _twin(trained["ann"]).eval(), trained["test"][0][:500]
    with torch.no_grad():
        assert torch.equal(net(x), twin(x))
        snns = [sb.convert(m, "max-norm", T=8, calibration_data=trained["calib"]) for m in (net, twin)]
        assert [n.threshold.tolist() for n in snns[0].neurons().values()] == \
            [n.threshold.tolist() for n in snns[1].neurons().values()]
        logits = [snn.simulate(x, record=False).logits for snn in snns]
    assert torch.allclose(logits[0], logits[1], atol=1e-5)
    assert (logits[0][-1].argmax(1) == trained["test"][1][:500]).double().mean() > 0.5  # chance: 0.1
    qann = sb.prepare(net, levels=8).double().eval()
    report = sb.verify(qann, sb.convert(qann, "pasc").double(), x[:64].double())
    assert report.agreement == 1.0 and report.max_logit_diff < 1e-9


class CachedBias(nn.Module):
    """Keeps a bias computed from its parameter in a dict after an eval forward (timm's LeViT and
    EfficientFormer), and takes an optional mask it does not need (timm's ViT)."""

    def __init__(self):
        super().__init__()
        self.conv, self.fc = nn.Conv2d(1, 4, 3), nn.Linear(4, 3)
        self.offset = nn.Parameter(torch.full((4,), 0.1))
        self.cache = {}

    def forward(self, x, mask=None):
        if not self.training:
            self.cache["bias"] = self.offset * 2  # a tensor with a grad_fn, not a graph leaf
        return self.fc(F.relu(self.conv(x)).mean((2, 3)) + self.offset)


def test_a_model_with_cached_computed_tensors_and_an_unused_optional_input_converts():
    net = CachedBias().eval()
    x = torch.randn(4, 1, 8, 8, dtype=torch.float64)
    net.double()(x)
    assert net.cache["bias"].grad_fn is not None
    qann = sb.prepare(net, levels=4).double().eval()
    report = sb.verify(qann, sb.convert(qann, "pasc").double(), x)
    assert report.agreement == 1.0 and report.max_logit_diff < 1e-9
    assert net.cache["bias"].grad_fn is not None  # the user's model is left as it was


class FunctionalNorm(nn.BatchNorm2d):
    """timm's BatchNormAct2d: F.batch_norm on its own buffers, training read at trace time."""

    def forward(self, x):
        return torch.relu(F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                                       self.training, 0.1, self.eps))


@pytest.mark.parametrize("training", [False, True])
def test_a_functional_batch_norm_becomes_a_module_in_the_models_mode(training):
    m = FunctionalNorm(3).train(training)
    with torch.no_grad():
        m.running_mean.uniform_(-0.2, 0.2), m.running_var.uniform_(0.5, 2.0)
    gm = trace(m)
    (bn,) = [mod for mod in gm.modules() if type(mod) is nn.BatchNorm2d]
    assert bn.training == training
    x = torch.randn(4, 3, 5, 5)
    expected = FunctionalNorm(3).train(training)
    expected.load_state_dict(m.state_dict())
    torch.testing.assert_close(gm(x), expected(x))
