"""Nothing silently wrong (issue #15): NaN/inf in weights, thresholds, inputs or calibration
data, bad thresholds, float64 models, and inputs of the wrong type, dtype or shape give the
exact answer or a one-line SpikeBridgeError that says what is wrong."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import spikebridge as sb
from spikebridge import ConversionError, InputError, OptionError, SpikeBridgeError


class Small(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.fc = nn.Linear(4 * 6 * 6, 3)

    def forward(self, x):
        return self.fc(torch.flatten(F.relu(self.conv(x)), 1))


def _small():
    torch.manual_seed(0)
    return Small().eval()


X = torch.randn(6, 1, 8, 8)


def _one_line(exc: pytest.ExceptionInfo) -> str:
    text = str(exc.value)
    assert "\n" not in text and text, text
    return text


@pytest.fixture(scope="module")
def snns():
    qann = sb.prepare(_small(), levels=4, threshold=1.0)
    return qann, {m: sb.convert(qann, m) for m in ("qcfs", "pasc", "bitplane")}


# -- NaN and inf (item 2) ---------------------------------------------------------------------
@pytest.mark.parametrize("method", ["pasc", "bitplane", "qcfs", "max-norm"])
def test_a_nan_weight_is_refused_at_conversion_naming_it(method):
    model = _small()
    with torch.no_grad():
        model.conv.weight[0, 0, 0, 0] = math.nan
    qann = sb.prepare(model, levels=4) if method != "max-norm" else model
    kwargs = {"calibration_data": X} if method == "max-norm" else {}
    with pytest.raises(ConversionError, match=r"conv\.weight holds 1 NaN or inf") as err:
        sb.convert(qann, method, **kwargs)
    _one_line(err)


@pytest.mark.parametrize("theta", [math.nan, 0.0, -1.0, math.inf])
def test_a_bad_qcfs_threshold_is_refused_at_conversion_naming_the_site(theta):
    qann = sb.prepare(_small(), levels=4)
    with torch.no_grad():
        sb.sites(qann)["relu"].threshold.fill_(theta)
    for method in ("pasc", "bitplane", "qcfs"):
        with pytest.raises(ConversionError, match=r"(QCFS site 'relu' has threshold|relu\.threshold holds)") as err:
            sb.convert(qann, method)
        _one_line(err)


@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_nan_or_inf_input_is_refused_by_simulate_and_verify(snns, value):
    qann, nets = snns
    x = X.clone()
    x[2, 0, 3, 3] = value
    for snn in nets.values():
        with pytest.raises(InputError, match="contains NaN or inf") as err:
            snn.simulate(x)
        _one_line(err)
        with pytest.raises(InputError, match="contains NaN or inf"):
            sb.verify(qann, snn, x)


def test_verify_never_reports_a_nan_comparison_as_a_number(snns):
    qann, nets = snns
    broken = sb.prepare(_small(), levels=4)
    with torch.no_grad():
        broken.fc.weight[0, 0] = math.nan  # the ANN is NaN, the SNN (from the good ANN) is finite
    with pytest.raises(InputError, match="ANN's logits are NaN or inf") as err:
        sb.verify(broken, nets["pasc"], X)
    _one_line(err)


def test_verify_on_no_data_is_an_error_not_zero_percent(snns):
    qann, nets = snns
    for empty in (X[:0], [], iter(())):
        with pytest.raises(InputError) as err:
            sb.verify(qann, nets["pasc"], empty)
        _one_line(err)


# -- calibration data with NaN/inf (item 3) ----------------------------------------------------
@pytest.mark.parametrize("method", ["max-norm", "percentile", "data-driven", "local-balancing", "network-level"])
def test_calibration_data_with_nan_is_refused(method):
    """local-balancing runs the network on the images without statistics: it used to turn NaN
    into θ = 1 at every site, silently."""
    x = X.clone()
    x[0, 0, 0, 0] = math.nan
    for data in ([(x, None)], x):
        with pytest.raises(InputError, match="calibration got .* contains NaN or inf") as err:
            sb.convert(_small(), method, calibration_data=data)
        _one_line(err)


def test_ftbc_refuses_nan_and_batches_the_network_cannot_take():
    """It used to fit NaN biases from NaN images, silently."""
    model = _small()
    snn = sb.convert(model, "max-norm", T=2, calibration_data=X)
    x = X.clone()
    x[0, 0, 0, 0] = math.inf
    for data, message in ((x, "FTBC got .* contains NaN or inf"), ([X.long()], "dtype int64"),
                          ([torch.randn(2, 3, 8, 8)], r"takes \[B, 1, H, W\]")):
        with pytest.raises(InputError, match=message) as err:
            sb.ftbc(snn, model, data, batches=1, check_batches=0, progress=False)
        _one_line(err)
    assert all(not n.bias.numel() for n in snn.neurons().values())  # nothing was fitted
    sb.ftbc(snn, model, [X.double()], batches=1, check_batches=0, progress=False)  # cast, as convert() does
    assert all(n.bias.shape[0] == 2 and torch.isfinite(n.bias).all() for n in snn.neurons().values())


@pytest.mark.parametrize("method", ["max-norm", "percentile", "data-driven"])
def test_activations_that_overflow_are_refused_naming_the_site(method):
    model = _small()
    with torch.no_grad():
        model.conv.weight.fill_(1e38)
    with pytest.raises(InputError, match="activations at site 'relu' contain NaN or inf") as err:
        sb.convert(model, method, calibration_data=X * 1e10)
    _one_line(err)


# -- thresholds (item 4) -----------------------------------------------------------------------
@pytest.mark.parametrize("theta", [0, -0.5, math.nan, math.inf, "8"])
def test_prepare_refuses_a_threshold_that_is_not_finite_and_positive(theta):
    with pytest.raises(OptionError, match="threshold must be a finite number > 0") as err:
        sb.prepare(_small(), threshold=theta)
    _one_line(err)


def test_neurons_refuse_a_threshold_that_is_not_finite_and_positive():
    from spikebridge.snn.neurons import BitplaneNeuron, IFNeuron, PASCNeuron

    for make in (lambda t: IFNeuron(t), lambda t: PASCNeuron(t, 4), lambda t: BitplaneNeuron(t, 4)):
        for theta in (0.0, -1.0, math.nan, torch.tensor([1.0, 0.0])):
            with pytest.raises(OptionError, match="threshold must be finite and > 0"):
                make(theta)


# -- float64 models (item 8) -------------------------------------------------------------------
class BNAfterAdd(nn.Module):
    """A BatchNorm that follows no conv (as in DenseNet): it becomes a 1x1 conv."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(1, 4, 3), nn.Conv2d(1, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4 * 6 * 6, 3)

    def forward(self, x):
        return self.fc(torch.flatten(F.relu(self.bn(F.relu(self.a(x)) + F.relu(self.b(x)))), 1))


@pytest.mark.parametrize("method", ["qcfs", "pasc", "bitplane", "max-norm", "percentile", "data-driven"])
def test_a_float64_model_converts_into_a_float64_snn(method):
    torch.manual_seed(0)
    model = BNAfterAdd().double().eval()
    x = X.double()
    if sb.methods()[method].source.name == "QCFS":
        snn = sb.convert(sb.prepare(model, levels=4), method)
    else:
        snn = sb.convert(model, method, calibration_data=x)
    assert {t.dtype for t in (*snn.parameters(), *snn.buffers()) if t.is_floating_point()} == {torch.float64}
    assert snn.simulate(x).logits.dtype == torch.float64


# -- inputs that do not fit ---------------------------------------------------------------------
BAD_INPUTS = {
    "wrong channels": (torch.randn(2, 3, 8, 8), "the network takes \\[B, 1, H, W\\] float32"),
    "wrong spatial size": (torch.randn(2, 1, 10, 10), "(does not fit|cannot run on input of shape)"),
    "no batch dimension": (torch.randn(1, 8, 8), "x.unsqueeze\\(0\\)"),
    "5-D": (torch.randn(2, 1, 1, 8, 8), "takes \\[B, 1, H, W\\]"),
    "float16": (torch.randn(2, 1, 8, 8).half(), "dtype float16.*x.to\\(torch.float32\\)"),
    "int64": (torch.ones(2, 1, 8, 8, dtype=torch.int64), "dtype int64"),
    "a list": ([[0.0] * 8] * 8, "got a value of type list, not a tensor"),
}


@pytest.mark.parametrize("case", BAD_INPUTS, ids=list(BAD_INPUTS))
def test_inputs_that_do_not_fit_are_one_line_errors_for_simulate_verify_and_calibration(snns, case):
    qann, nets = snns
    x, message = BAD_INPUTS[case]
    for snn in nets.values():
        with pytest.raises(InputError, match=message) as err:
            snn.simulate(x)
        _one_line(err)
    if isinstance(x, torch.Tensor):
        with pytest.raises(InputError, match=message) as err:
            sb.verify(qann, nets["pasc"], x)
        _one_line(err)
    if case not in ("float16",):  # calibration casts floating-point batches to the model's dtype
        for method in ("max-norm", "local-balancing"):  # statistics first, or the network on the images
            with pytest.raises(InputError) as err:
                sb.convert(_small(), method, calibration_data=[x])
            _one_line(err)


def test_a_tensor_as_calibration_data_is_split_into_batches():
    snn = sb.convert(_small(), "max-norm", calibration_data=X)
    assert torch.isfinite(snn.simulate(X).logits).all()


def test_calibration_data_that_is_not_iterable_is_an_error():
    with pytest.raises(InputError, match="got a value of type int") as err:
        sb.convert(_small(), "max-norm", calibration_data=3)
    _one_line(err)


def test_bad_T_and_bad_models_are_option_and_conversion_errors(snns):
    _, nets = snns
    with pytest.raises(OptionError, match="T must be an integer >= 1"):
        nets["qcfs"].simulate(X, T=0)
    with pytest.raises(OptionError, match="runs for its levels"):
        nets["pasc"].simulate(X, T=4)
    with pytest.raises(ConversionError, match="needs a torch nn.Module, got NoneType"):
        sb.convert(None)
    with pytest.raises(SpikeBridgeError):
        sb.convert(None, "max-norm", calibration_data=X)
