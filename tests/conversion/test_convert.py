"""End-to-end conversion (METHODS §1–3): exact methods reproduce the QCFS ANN on real
architectures with random weights and BatchNorm statistics; unsupported graphs are refused."""
import subprocess
import sys
import warnings

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

import spikebridge as sb
from spikebridge.conversion.constant import Constant
from spikebridge import ConversionError, OptionError
from spikebridge import models


def randomize(model: nn.Module, seed: int) -> nn.Module:
    """Random BatchNorm statistics and affine parameters, so folding is really tested."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            n = m.num_features
            m.running_mean.copy_(torch.rand(n, generator=g) - 0.5)
            m.running_var.copy_(torch.rand(n, generator=g) * 1.5 + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(n, generator=g) * 0.6 - 0.3)
    return model


def qcfs_model(model: nn.Module, levels, seed: int = 0) -> nn.Module:
    """Prepared copy with per-site thresholds drawn in [0.5, 2.5] and mixed levels."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        names = list(sb.sites(sb.prepare(model)))
        per_site = {n: levels[i % len(levels)] for i, n in enumerate(names)}
        qann = sb.prepare(randomize(model, seed), levels=per_site)
    g = torch.Generator().manual_seed(seed + 1)
    for site in sb.sites(qann).values():
        site.threshold.data.fill_(float(torch.rand(1, generator=g)) * 2 + 0.5)
    return qann.eval()


ARCHITECTURES = {
    "vgg16": lambda: models.create("vgg16", num_classes=10),
    "resnet20": lambda: models.create("resnet20", num_classes=10),
    "tv:resnet18": lambda: torchvision.models.resnet18(num_classes=10),
}


@pytest.mark.parametrize("arch", list(ARCHITECTURES))
@pytest.mark.parametrize("method,levels", [("pasc", [3, 8, 5, 1, 16]), ("bitplane", [7, 15, 3]),
                                           ("bitplane", [5, 10, 12])])
def test_exact_methods_equal_the_ann_in_float64(arch, method, levels):
    qann = qcfs_model(ARCHITECTURES[arch](), levels).double()
    snn = sb.convert(qann, method).double()
    x = torch.randn(4, 3, 32, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    report = sb.verify(qann, snn, x)
    assert report.images == 4 and report.agreement == 1.0
    assert len(report.mismatches) == len(sb.sites(qann))
    assert all(m == 0 for m in report.mismatches.values()), report.table()
    assert report.max_logit_diff < 1e-9
    assert sum(report.neurons.values()) > 0


def test_float32_agreement_is_reported():
    qann = qcfs_model(ARCHITECTURES["resnet20"](), [4, 8])
    snn = sb.convert(qann, "pasc")
    report = sb.verify(qann, snn, torch.randn(8, 3, 32, 32))
    assert report.agreement >= 0.99
    total = sum(report.neurons.values())
    assert sum(report.mismatches.values()) <= 1e-3 * total  # summation order only
    assert "prediction agreement" in report.table()


def test_pasc_reports_t_eff_and_latency():
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3), nn.ReLU(), nn.Flatten(),
                        nn.LazyLinear(3))
    net(torch.zeros(1, 1, 8, 8))
    qann = sb.prepare(net, levels={"1": 2, "3": 6})
    snn = sb.convert(qann, "pasc")
    assert snn.info["T_eff"] == 4.0
    # the input site emits its 2 steps at once; site 2 integrates them, waits max(2,6) - 1, emits 6
    assert snn.info["pipeline_latency"] == 2 + 5 + 6
    res = snn.simulate(torch.randn(2, 1, 8, 8))
    assert res.steps == {"1": 2, "3": 6}
    assert res.logits.shape == (6, 2, 3)
    with pytest.raises(ValueError, match="pasc.*T cannot be set"):
        snn.simulate(torch.randn(2, 1, 8, 8), T=4)


def test_qcfs_rate_coded_anytime_logits_and_spikes():
    qann = qcfs_model(models.create("small_cnn", num_classes=10, in_channels=1), [8])
    snn = sb.convert(qann, "qcfs", T=8)
    x = torch.randn(3, 1, 28, 28)
    res = snn.simulate(x, T=16)
    assert res.logits.shape == (16, 3, 10)
    assert set(res.spikes) == set(sb.sites(qann))
    assert all(steps == 16 for steps in res.steps.values())
    # anytime: the first 8 steps of a 16-step run are the 8-step run (snn's own T)
    assert torch.allclose(snn(x), res.logits[7], atol=1e-5)
    # logits at step t are the mean of the first t output steps
    assert torch.allclose(res.logits[0] * 1, res.logits[1] * 2 - (res.logits[1] * 2 - res.logits[0]), atol=1e-6)
    # events of the analog first layer count every step of the constant input
    (first,) = res.analog_layers
    assert int(res.events[first].sum()) == 16 * int((x != 0).sum())


def test_qcfs_if_matches_ann_when_T_equals_levels_on_one_layer():
    """IF with v0 = θ/2 and constant input codes QCFS with L = T exactly (METHODS §1)."""
    net = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3)).double()
    qann = sb.prepare(net, levels=4).double()
    snn = sb.convert(qann, "qcfs", T=4).double()
    x = torch.randn(32, 6, dtype=torch.float64)
    assert torch.allclose(snn(x), qann(x), atol=1e-12)


def test_bitplane_T_below_and_above_the_code_length():
    qann = qcfs_model(models.create("small_cnn", num_classes=10, in_channels=1), [15]).double()
    x = torch.randn(4, 1, 28, 28, dtype=torch.float64)
    exact = sb.convert(qann, "bitplane").double()
    assert exact.T == 4
    longer = sb.convert(qann, "bitplane", T=6).double()
    assert torch.allclose(longer(x), exact(x), atol=1e-12)
    with pytest.warns(UserWarning, match="saturate"):
        shorter = sb.convert(qann, "bitplane", T=2)
    assert shorter.double().simulate(x).logits.shape[0] == 2


def test_bitplane_saturation_warning_for_power_of_two_levels():
    qann = qcfs_model(models.create("small_cnn", num_classes=10, in_channels=1), [16])
    with pytest.warns(UserWarning, match="top level cannot be coded"):
        sb.convert(qann, "bitplane", T=4)


class Branchy(nn.Module):
    """Grouped and depthwise convs, a standalone BatchNorm after an add, concatenation,
    adaptive pooling, Linear+BatchNorm1d, functional ReLU and a reshape."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(2, 8, 3, padding=1)
        self.grouped = nn.Conv2d(8, 8, 3, padding=1, groups=4)
        self.depthwise = nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False)
        self.bn_after_add = nn.BatchNorm2d(8)
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.fc = nn.Linear(64, 12)
        self.bn1d = nn.BatchNorm1d(12)
        self.drop = nn.Dropout(0.3)
        self.out = nn.Linear(12, 4)

    def forward(self, x):
        x = F.relu(self.stem(x))
        y = torch.relu(self.grouped(x))
        z = self.depthwise(x).relu()
        s = F.relu(self.bn_after_add(y + z))
        c = torch.cat([s, F.avg_pool2d(y, 1)], dim=1)
        c = self.pool(c)
        h = F.relu(self.bn1d(self.fc(c.view(c.size(0), -1))))
        return self.out(self.drop(h))


@pytest.mark.parametrize("method", ["pasc", "bitplane"])
def test_branchy_graph_is_exact(method):
    qann = qcfs_model(Branchy(), [3, 7, 2]).double()
    snn = sb.convert(qann, method).double()
    report = sb.verify(qann, snn, torch.randn(5, 2, 9, 9, dtype=torch.float64))
    assert report.agreement == 1.0 and sum(report.mismatches.values()) == 0
    assert not any(isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d, nn.Dropout)) for m in snn.modules())


class Gated(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(4, 4)
        self.scale = nn.Parameter(torch.ones(4))
        self.block = nn.Sequential(nn.Linear(4, 4))

    def forward(self, x):
        h = F.relu(self.a(x))
        return self.block(h) * h


def test_unsupported_node_names_node_op_origin_and_advice():
    class Clamped(Gated):
        def forward(self, x):
            return torch.clamp(self.block(F.relu(self.a(x))), -1, 1)

    with pytest.raises(ConversionError) as err:
        sb.convert(sb.prepare(Clamped()), "pasc")
    msg = str(err.value)
    assert "node 'clamp'" in msg and "call_function clamp" in msg and "no step-by-step meaning" in msg and "retrain" in msg


def test_a_product_of_trains_and_a_parameter_read_directly_convert_exactly():
    class UsesParam(Gated):
        def forward(self, x):
            h = F.relu(self.a(x))
            return self.block(h) * h + self.scale

    qann = sb.prepare(UsesParam()).double()
    x = torch.randn(6, 4, dtype=torch.float64)
    for method in ("pasc", "bitplane"):
        snn = sb.convert(qann, method)
        assert sb.verify(qann, snn, x).max_logit_diff < 1e-12
        assert {r["op"] for r in snn.simulate(x).analog_ops.values()} == {"mul"}
        assert any(isinstance(m, Constant) for m in snn.modules())


def test_method_and_argument_errors():
    qann = sb.prepare(nn.Sequential(nn.Linear(3, 3), nn.ReLU(), nn.Linear(3, 2)))
    with pytest.raises(OptionError, match="unknown method 'spiky'"):
        sb.convert(qann, "spiky")
    with pytest.raises(OptionError, match="T must be an integer"):
        sb.convert(qann, "qcfs", T=0)
    with pytest.raises(OptionError, match="do not pass T"):
        sb.convert(qann, "pasc", T=4)
    with pytest.raises(OptionError, match="no option 'standrd_if'; its options: standard_if"):
        sb.convert(qann, "bitplane", standrd_if=True)
    with pytest.raises(ConversionError, match="needs a QCFS model"):
        sb.convert(nn.Sequential(nn.Linear(3, 3), nn.ReLU()), "pasc")
    assert set(sb.methods()) >= {"qcfs", "pasc", "bitplane"}


def test_save_load_round_trip_in_a_fresh_process(tmp_path):
    qann = qcfs_model(ARCHITECTURES["resnet20"](), [3, 8])
    snn = sb.convert(qann, "pasc")
    x = torch.randn(3, 3, 32, 32)
    torch.save(x, tmp_path / "x.pt")
    torch.save(snn(x), tmp_path / "expected.pt")
    sb.save(snn, tmp_path / "snn.pt")
    code = (
        "import torch, spikebridge as sb, sys; d = sys.argv[1]; "
        "snn = sb.load(d + '/snn.pt'); x = torch.load(d + '/x.pt'); "
        "assert torch.equal(snn(x), torch.load(d + '/expected.pt')); print('same')"
    )
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "same", out.stderr


def test_load_refuses_foreign_files(tmp_path):
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(sb.CheckpointError, match="not a readable"):
        sb.load(tmp_path / "junk.pt")
    torch.save({"a": 1}, tmp_path / "other.pt")
    with pytest.raises(sb.CheckpointError, match="not a spikebridge SNN"):
        sb.load(tmp_path / "other.pt")
    with pytest.raises(sb.CheckpointError, match="does not exist"):
        sb.load(tmp_path / "missing.pt")


def test_simulate_T_applies_to_that_run_only():
    """simulate(x, T) must not change what later calls do; mixed-level bit-plane sites keep
    their own step counts."""
    qann = qcfs_model(models.create("small_cnn", num_classes=10, in_channels=1), [7, 15])
    x = torch.randn(2, 1, 28, 28)
    rate = sb.convert(qann, "qcfs", T=4)
    before = rate(x)
    assert rate.simulate(x, T=16).logits.shape[0] == 16
    assert rate.T == 4 and torch.equal(rate(x), before)
    bits = sb.convert(qann, "bitplane")
    steps = {n: m.T for n, m in bits.neurons().items()}
    assert set(steps.values()) == {3, 4}
    bits.simulate(x, T=6)
    assert {n: m.T for n, m in bits.neurons().items()} == steps


def test_a_refusal_names_the_block_a_node_comes_from_also_after_prepare():
    class Block(nn.Module):
        def forward(self, x):
            return x.abs()

    net = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Sequential(nn.Linear(4, 4), Block()), nn.Linear(4, 2))
    with pytest.raises(ConversionError, match=r"node 'abs\w*' .* in 2\.1 \(Block\)") as err:
        sb.convert(sb.prepare(net), "pasc")
    assert "top level" not in str(err.value)




def test_a_relu_ann_with_max_pooling_converts_as_it_is_or_with_average_pooling():
    """A ReLU ANN converts with its max pooling (module and F.max_pool2d); sb.with_average_pooling
    gives a ReLU copy (the user's model untouched) whose max pooling is average pooling over the
    same windows."""
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.pool, self.fc = nn.Conv2d(1, 4, 3, padding=1), nn.MaxPool2d(2), nn.Linear(4 * 16, 3)

        def forward(self, x):
            return self.fc(F.max_pool2d(self.pool(torch.relu(self.conv(x))), 2, 2).flatten(1))

    torch.manual_seed(0)
    net, x = Net().eval(), torch.randn(16, 1, 16, 16)
    kept = sb.convert(net, "max-norm", T=4, calibration_data=x)
    assert sum(isinstance(m, nn.MaxPool2d) for m in kept.graph.modules()) == 1
    assert {r["op"] for r in kept.simulate(x).analog_ops.values()} == {"max_pool2d"}  # the module and the function
    avg = sb.with_average_pooling(net)
    assert isinstance(net.pool, nn.MaxPool2d) and not isinstance(avg.pool, nn.MaxPool2d)
    with torch.no_grad():
        expected = net.fc(F.avg_pool2d(F.avg_pool2d(torch.relu(net.conv(x)), 2), 2, 2).flatten(1))
        assert torch.allclose(avg(x), expected, atol=1e-6)
    snn = sb.convert(avg, "max-norm", T=4, calibration_data=x)
    assert list(snn.neurons()) == ["relu"] and snn.simulate(x, record=False).logits.shape == (4, 16, 3)
