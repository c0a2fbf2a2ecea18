"""prepare(): every ReLU call site becomes its own QCFS module (DESIGN.md, METHODS §0)."""
import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

import spikebridge as sb
from spikebridge import QCFS, SpikeBridgeError, UnsupportedActivationError
from spikebridge.ann.quantized import QuantizedActivation


class AllReluKinds(nn.Module):
    """nn.ReLU, a reused nn.ReLU, F.relu, torch.relu, Tensor.relu_ and F.relu(inplace)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.act = nn.ReLU()
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        x = self.act(self.conv(x))
        x = self.act(x - 0.1)
        x = F.relu(x - 0.2)
        x = torch.relu(x - 0.3)
        x = x - 0.4
        x.relu_()
        x = x.mean([2, 3])
        y = x - 0.5
        F.relu(y, inplace=True)
        return self.fc(y)


def test_every_call_site_gets_its_own_qcfs():
    model = AllReluKinds()
    qann = sb.prepare(model, levels=4)
    found = sb.sites(qann)
    assert list(found) == ["act", "act_1", "relu", "relu_1", "relu_", "relu_2"]
    assert len({id(m) for m in found.values()}) == 6
    assert all(isinstance(m, QCFS) and m.levels == 4 for m in found.values())
    # the user's model is untouched
    assert isinstance(model.act, nn.ReLU)


def test_in_place_relus_keep_their_meaning():
    """With huge thresholds QCFS is ReLU rounded to a fine grid: outputs match the model."""
    model = AllReluKinds().double()
    qann = sb.prepare(model, levels=2**20, threshold=50.0).double()
    x = torch.randn(5, 1, 8, 8, dtype=torch.float64)
    assert torch.allclose(qann(x), model(x.clone()), atol=1e-3)


def test_levels_mapping_per_site_and_errors():
    model = AllReluKinds()
    names = list(sb.sites(sb.prepare(model)))
    mapping = {n: i + 1 for i, n in enumerate(names)}
    qann = sb.prepare(model, levels=mapping)
    assert {n: m.levels for n, m in sb.sites(qann).items()} == mapping
    with pytest.raises(SpikeBridgeError, match="unknown site"):
        sb.prepare(model, levels={**mapping, "nope": 3})
    with pytest.raises(SpikeBridgeError, match="missing site"):
        sb.prepare(model, levels={names[0]: 3})
    with pytest.raises(SpikeBridgeError, match="levels must be"):
        sb.prepare(model, levels=0)


def test_torchvision_basicblock_reused_relu_is_split():
    qann = sb.prepare(torchvision.models.resnet18(num_classes=10), levels=8)
    names = list(sb.sites(qann))
    assert "layer1.0.relu" in names and "layer1.0.relu_1" in names
    assert len(names) == 17  # stem + 2 per BasicBlock
    assert not any(isinstance(m, nn.MaxPool2d) for m in qann.modules())
    assert qann(torch.randn(2, 3, 32, 32)).shape == (2, 10)


@pytest.mark.parametrize("act", [nn.PReLU(), nn.Softsign(), nn.LogSigmoid()])
def test_other_activations_are_named_and_refused(act):
    model = nn.Sequential(nn.Linear(4, 4), act, nn.Linear(4, 2))
    with pytest.raises(UnsupportedActivationError, match=r"node '_1' \(call_module .*\) in 1: only ReLU, ReLU6"):
        sb.prepare(model)


def test_functional_logsigmoid_refused_with_site():
    class M(nn.Module):
        def forward(self, x):
            return F.logsigmoid(x)

    with pytest.raises(UnsupportedActivationError, match="log_sigmoid"):
        sb.prepare(M())


def test_channel_wise_thresholds_and_set_levels():
    model = nn.Sequential(nn.Conv2d(1, 6, 3), nn.BatchNorm2d(6), nn.ReLU(), nn.Flatten(), nn.LazyLinear(2))
    model(torch.zeros(1, 1, 5, 5))
    qann = sb.prepare(model, levels=4, channel_wise=True)
    (site,) = sb.sites(qann).values()
    assert site.threshold.shape == (6,)
    sb.set_levels(qann, 7)
    assert site.levels == 7


def test_model_without_activation_is_refused():
    with pytest.raises(UnsupportedActivationError, match="no activation"):
        sb.prepare(nn.Linear(3, 3))


def test_untraceable_model_is_a_clean_error():
    class Dynamic(nn.Module):
        def forward(self, x):
            return x.relu() if x.sum() > 0 else x

    with pytest.raises(SpikeBridgeError, match="torch.fx could not trace"):
        sb.prepare(Dynamic())


# -- max pooling replaced exactly or refused (issue #15 item 5) --------------------------------
class _Pooled(torch.nn.Module):
    def __init__(self, pool):
        super().__init__()
        self.pool = pool

    def forward(self, x):
        return self.pool(torch.relu(x))


MAX_POOLS = {
    "2x2": torch.nn.MaxPool2d(2),
    "3x3 stride 2 padding 1": torch.nn.MaxPool2d(3, 2, 1),
    "ceil_mode": torch.nn.MaxPool2d(3, 2, 1, ceil_mode=True),
    "rectangular": torch.nn.MaxPool2d((2, 3), (1, 2), (1, 0)),
    "functional positional": lambda x: torch.nn.functional.max_pool2d(x, 3, 2, 1, 1, True),
    "functional keywords": lambda x: torch.nn.functional.max_pool2d(x, kernel_size=3, stride=2, padding=1,
                                                                     ceil_mode=True),
}


@pytest.mark.parametrize("case", MAX_POOLS, ids=list(MAX_POOLS))
def test_max_pooling_becomes_average_pooling_over_exactly_the_same_windows(case):
    model = _Pooled(MAX_POOLS[case]).eval()
    x = torch.randn(3, 2, 13, 11)
    with pytest.warns(UserWarning, match="same windows"):
        qann = sb.prepare(model, levels=8)
    assert qann(x).shape == model(x).shape
    # a constant map (1 = one QCFS level of θ/L = 8/8) averages to that constant, also where a
    # window overlaps the padding, which max pooling ignores: the windows hold the same inputs
    ones = torch.ones(1, 2, 13, 11)
    assert torch.equal(qann(ones), model(ones))


@pytest.mark.parametrize("pool, reason", [
    (torch.nn.MaxPool2d(2, 2, dilation=2), "dilation"),
    (lambda x: torch.nn.functional.max_pool2d(x, 2, 2, 0, 2), "dilation"),
    (torch.nn.MaxPool2d(2, return_indices=True), "returns indices"),
], ids=["dilation", "functional dilation", "return_indices"])
def test_max_pooling_without_an_exact_replacement_is_refused_naming_it(pool, reason):
    model = _Pooled(pool if isinstance(pool, torch.nn.Module) else pool)
    with pytest.raises(sb.ConversionError, match=rf"cannot replace node .* by average pooling: .*{reason}"):
        sb.prepare(model, levels=8)


# -- a ReLU squared by its only reader is one site of f = ReLU² (StarReLU, squared ReLU) ---------
SQUARES = {
    "pow operator": lambda r: r ** 2,
    "torch.pow": lambda r: torch.pow(r, 2),
    "method pow": lambda r: r.pow(exponent=2),
    "torch.square": torch.square,
    "method square": lambda r: r.square(),
    "product": lambda r: r * r,
}
RELUS = {"module": nn.ReLU(), "F.relu": F.relu, "torch.relu": torch.relu, "method": lambda z: z.relu()}


class StarReLUNet(nn.Module):
    """conv → s·square(relu(z)) + b (timm's StarReLU) → pool → linear."""

    def __init__(self, relu, square):
        super().__init__()
        self.conv, self.fc = nn.Conv2d(2, 4, 3, padding=1), nn.Linear(4, 3)
        self.relu, self.square = relu, square
        self.scale, self.bias = nn.Parameter(torch.tensor(0.8)), nn.Parameter(torch.tensor(-0.1))

    def forward(self, x):
        h = self.scale * self.square(self.relu(self.conv(x))) + self.bias
        return self.fc(h.mean((2, 3)))


@pytest.mark.parametrize("square", list(SQUARES))
@pytest.mark.parametrize("relu", list(RELUS))
def test_a_squared_relu_is_one_site_and_converts_exactly(relu, square):
    torch.manual_seed(0)
    qann = sb.prepare(StarReLUNet(RELUS[relu], SQUARES[square]), levels=5, threshold=2.0).double().eval()
    (site,) = sb.sites(qann).values()
    assert site.function == "relu_squared" and site.k_min == 0
    x = torch.randn(8, 2, 6, 6, dtype=torch.float64)
    report = sb.verify(qann, sb.convert(qann, "pasc").double(), x)
    assert report.agreement == 1.0 and sum(report.mismatches.values()) == 0


class NotASquare(nn.Module):
    def __init__(self, body):
        super().__init__()
        self.conv, self.body = nn.Conv2d(2, 4, 3, padding=1), body

    def forward(self, x):
        return self.body(self.conv(x)).mean((2, 3))


@pytest.mark.parametrize("body", [
    lambda z: torch.relu(z) ** 3,                          # another power
    lambda z: (lambda r: r ** 2 + r)(torch.relu(z)),       # the ReLU has a second reader
    lambda z: F.relu(z, inplace=True) ** 2,                # in place: z itself changed
    lambda z: F.relu6(z) ** 2,                             # a clipped ReLU
    lambda z: torch.relu(z) * torch.relu(-z),              # a product of two sites
], ids=["cube", "two readers", "in place", "relu6", "two sites"])
def test_other_readers_of_a_relu_are_not_fused(body):
    qann = sb.prepare(NotASquare(body), levels=4)
    assert sb.sites(qann) and not any(isinstance(m, QuantizedActivation) for m in qann.modules())
