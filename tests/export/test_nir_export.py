"""NIR export: the graph each target gets (θ folded, pooling, flatten, joins), a re-simulation of
the file under the target's neuron semantics against spikebridge's emulation, refusals, and the
same graph from the API and from a saved SNN."""
import h5py
import nir
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import spikebridge as sb
from spikebridge.cli import main
from spikebridge.export.nir import export_nir
from spikebridge.export.targets import TARGETS, emulate

SHAPE = (1, 12, 12)


class Residual(nn.Module):
    """An identity block (stride 1) and a downsampling block (stride 2, 1x1 conv shortcut)."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU())
        self.conv1 = nn.Conv2d(4, 4, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(4)
        self.down1 = nn.Conv2d(4, 6, 3, stride=2, padding=1, bias=False)
        self.down2 = nn.Conv2d(6, 6, 3, padding=1)
        self.shortcut = nn.Sequential(nn.Conv2d(4, 6, 1, stride=2, bias=False), nn.BatchNorm2d(6))
        self.fc = nn.Linear(6, 3)

    def forward(self, x):
        x = self.stem(x)
        x = F.relu(x + self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x))))))
        x = F.relu(self.down2(F.relu(self.down1(x))) + self.shortcut(x))
        return self.fc(x.mean((2, 3)))


def plain():
    return nn.Sequential(nn.Conv2d(1, 4, 3, stride=2, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.AvgPool2d(2),
                         nn.Conv2d(4, 6, 3, padding=1, bias=False), nn.BatchNorm2d(6), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))


def unequal():
    """Adaptive pooling 6x6 -> 4x4 (windows of 2 and 3) before a flatten and a linear layer."""
    return nn.Sequential(nn.Conv2d(1, 3, 3, stride=2, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(4),
                         nn.Flatten(), nn.Linear(48, 5), nn.ReLU(), nn.Linear(5, 3))


def grouped():
    """A depthwise convolution (MobileNet) and one of two groups: written to NIR as dense ones."""
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, stride=2, padding=1, groups=4),
                         nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 6, 1, groups=2), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 3))


MODELS = [plain, Residual, unequal, grouped]


def make_snn(model, T=4):
    torch.manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    qann = sb.prepare(model, levels=4, threshold=1.0, channel_wise=True)
    qann(torch.rand(2, *SHAPE))  # channel-wise thresholds take their size here
    for m in qann.modules():
        if isinstance(m, sb.QCFS):
            m.threshold.data.uniform_(0.3, 1.0)
    return sb.convert(qann, "qcfs", T=T)


def simulate_nir(graph, x, T, semantics):
    """A minimal NIR simulator (dt = 1): incoming edges summed; IF and LIF nodes with the
    target's ``semantics`` (v0 from the metadata where it is 'initial'). Returns anytime
    logits [T, B, classes]."""
    preds = {name: [a for a, b in graph.edges if b == name] for name in graph.nodes}
    order, done = [], set()
    while len(order) < len(graph.nodes):
        for name in graph.nodes:
            if name not in done and all(p in done for p in preds[name]):
                order.append(name)
                done.add(name)

    def arr(a):
        return torch.as_tensor(np.asarray(a), dtype=torch.float64)

    v = {}
    for name, node in graph.nodes.items():
        if isinstance(node, nir.LIF):  # snnTorch's reading: β = 1 − 1e-4/τ in float32, input weight r·1e-4/τ
            assert np.float32(1 - 1e-4 / node.tau).min() == 1 and np.allclose(node.r * 1e-4 / node.tau, 1)
        if isinstance(node, (nir.IF, nir.LIF)):
            v0 = arr(node.metadata["v_initial"]) if semantics.v0_mode == "initial" else torch.zeros(node.v_threshold.shape, dtype=torch.float64)
            v[name] = v0.expand(x.shape[0], *v0.shape).clone()
    outputs = []
    for _ in range(T):
        val = {}
        for name in order:
            node = graph.nodes[name]
            if isinstance(node, nir.Input):
                val[name] = x
                continue
            i = sum(val[p] for p in preds[name])
            if isinstance(node, nir.Conv2d):
                val[name] = F.conv2d(i, arr(node.weight), arr(node.bias), tuple(np.atleast_1d(node.stride)),
                                     tuple(np.atleast_1d(node.padding)), tuple(np.atleast_1d(node.dilation)),
                                     int(node.groups))
            elif isinstance(node, nir.Affine):
                val[name] = F.linear(i, arr(node.weight)) + arr(node.bias)
            elif isinstance(node, (nir.AvgPool2d, nir.SumPool2d)):
                k = tuple(int(s) for s in node.kernel_size)
                y = F.avg_pool2d(i, k, tuple(int(s) for s in node.stride))
                val[name] = y * (np.prod(k) if isinstance(node, nir.SumPool2d) else 1)
            elif isinstance(node, nir.Flatten):
                assert node.start_dim < 0  # read alike with and without a batch dim
                val[name] = i.flatten(int(node.start_dim), int(node.end_dim))
            elif isinstance(node, (nir.IF, nir.LIF)):
                theta = arr(node.v_threshold)
                v[name] = v[name] + i
                if semantics.multi_spike:
                    n = torch.where(v[name] > 0, torch.div(v[name], theta, rounding_mode="trunc"), 0.0)
                else:
                    n = (v[name] > theta if semantics.strict else v[name] >= theta).double()
                v[name] = v[name] - n * theta if semantics.reset == "subtract" else torch.where(n > 0, 0.0, v[name])
                if semantics.floor is not None:
                    v[name] = torch.maximum(v[name], semantics.floor * theta)
                val[name] = n
            elif isinstance(node, nir.Output):
                val[name] = i
            else:
                raise AssertionError(f"unexpected NIR node {type(node).__name__}")
        outputs.append(val["output"])
    out = torch.stack(outputs)
    return out.cumsum(0) / torch.arange(1, T + 1, dtype=out.dtype).view(-1, 1, 1)


@pytest.mark.parametrize("target", sorted(TARGETS))
@pytest.mark.parametrize("model", MODELS)
def test_file_computes_what_the_emulation_predicts(model, target, tmp_path):
    T = 6
    snn = make_snn(model(), T=T).double()
    export_nir(snn, tmp_path / "net.nir", SHAPE, target=target)
    graph = nir.read(tmp_path / "net.nir")
    x = torch.rand(5, *SHAPE, dtype=torch.float64)
    emulated = emulate(snn, target)
    want = emulated.simulate(x)
    assert sum(int(s.sum()) for s in want.spikes.values()) > 0
    torch.testing.assert_close(simulate_nir(graph, x, T, TARGETS[target].semantics_for()), want.logits,
                               rtol=0, atol=1e-9)
    if target == "generic":  # spikebridge's own neuron: the file is the SNN itself
        torch.testing.assert_close(want.logits, snn.simulate(x).logits, rtol=0, atol=0)


@pytest.mark.parametrize("target", ["snntorch", "sinabs"])
@pytest.mark.parametrize("v0,scale", [("zero", 1.0), ("per-step", 0.6)])
def test_conversion_choices_compute_what_the_emulation_predicts(target, v0, scale):
    T = 5
    snn = make_snn(Residual(), T=T).double()
    graph = export_nir(snn, None, SHAPE, target=target, v0=v0, threshold_scale=scale)
    x = torch.rand(4, *SHAPE, dtype=torch.float64)
    torch.testing.assert_close(simulate_nir(graph, x, T, TARGETS[target].semantics_for(v0, scale)),
                               emulate(snn, target, v0, scale).simulate(x).logits, rtol=0, atol=1e-9)


def kinds(graph):
    return [type(n).__name__ for n in graph.nodes.values()]


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_graph_uses_only_what_the_importer_maps(target):
    graph = export_nir(make_snn(plain()), None, SHAPE, target=target)
    pool = "AvgPool2d" if TARGETS[target].pool == "avg" else "SumPool2d"
    neuron = "LIF" if target == "snntorch" else "IF"
    assert set(kinds(graph)) == {"Input", "Output", "Conv2d", "Affine", neuron, pool, "Flatten"}
    for node in graph.nodes.values():
        if isinstance(node, (nir.IF, nir.LIF)):  # every neuron reads synaptic layers: θ folded, threshold λ
            np.testing.assert_allclose(node.v_threshold, TARGETS[target].threshold_scale, rtol=1e-7)
        if isinstance(node, nir.Flatten):
            assert (node.start_dim, node.end_dim) == (-3, -1)


def test_theta_is_folded_into_the_next_layer():
    """The first conv's rows are divided by the following neuron's θ, the next conv's input
    channels multiplied by it (no Scale nodes)."""
    snn = make_snn(plain())
    graph = export_nir(snn, None, SHAPE)
    conv0, conv4 = (snn.graph.get_submodule(n).weight.detach().double() for n in ("0", "4"))
    theta = snn.graph.get_submodule("2").threshold.double()
    np.testing.assert_allclose(graph.nodes["0"].weight, conv0 / theta.view(-1, 1, 1, 1), rtol=1e-6)
    theta6 = snn.graph.get_submodule("6").threshold.double()
    want = conv4 * theta.view(1, -1, 1, 1) / theta6.view(-1, 1, 1, 1)
    np.testing.assert_allclose(graph.nodes["4"].weight, want, rtol=1e-6)


def test_residual_joins():
    snn = make_snn(Residual())
    generic = export_nir(snn, None, SHAPE)
    assert sorted(a for a, b in generic.edges if b == "relu_1") == ["conv2", "stem_2"]
    assert sorted(a for a, b in generic.edges if b == "relu_3") == ["down2", "shortcut_0"]
    for target in ("norse", "sinabs"):  # depth-first executors: one chain, relays in the middle neurons
        graph = export_nir(snn, None, SHAPE, target=target)
        assert all(sum(b == n for _, b in graph.edges) <= 1 for n in graph.nodes)
        assert "shortcut_0" not in graph.nodes
        assert graph.nodes["relu"].v_threshold.shape == (8, 12, 12)  # 4 channels + 4 relays of stem_2
        assert graph.nodes["relu_2"].metadata["relay_channels"] == 4


def test_uniform_thresholds_for_snntorch():
    graph = export_nir(make_snn(Residual()), None, SHAPE, target="snntorch")
    for node in graph.nodes.values():
        if isinstance(node, nir.LIF):
            assert np.unique(node.v_threshold).size == 1


def test_v0_per_step_is_a_bias():
    snn = make_snn(plain())
    zero = export_nir(snn, None, SHAPE, target="norse", v0="zero")
    step = export_nir(snn, None, SHAPE, target="norse", v0="per-step")
    neuron = snn.graph.get_submodule("2")  # θ folded: v0/θ per channel, over T steps
    np.testing.assert_allclose(step.nodes["0"].bias - zero.nodes["0"].bias, (neuron.v0 / neuron.threshold / snn.T).numpy(),
                               rtol=1e-6)
    with pytest.raises(sb.OptionError, match="initial potential"):
        export_nir(snn, None, SHAPE, target="norse", v0="initial")


def test_adaptive_pooling_with_equal_windows_is_fixed_pooling():
    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(3), nn.Flatten(),
                          nn.Linear(18, 3))
    graph = export_nir(make_snn(model), None, SHAPE)
    pools = [n for n in graph.nodes.values() if isinstance(n, nir.AvgPool2d)]
    assert len(pools) == 1 and list(pools[0].kernel_size) == [4, 4] and list(pools[0].stride) == [4, 4]


def test_adaptive_pooling_with_unequal_windows_is_refused_plainly_unless_a_linear_layer_follows():
    graph = export_nir(make_snn(unequal()), None, SHAPE)
    assert "AvgPool2d" not in kinds(graph) and graph.nodes["4"].weight.shape == (5, 3 * 6 * 6)
    model = nn.Sequential(nn.Conv2d(1, 3, 3, stride=2, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(4),
                          nn.Conv2d(3, 2, 1), nn.ReLU(), nn.Flatten(), nn.Linear(32, 3))
    with pytest.raises(sb.SpikeBridgeError, match=r"adaptive pooling from 6x6 to 4x4 has unequal windows") as err:
        export_nir(make_snn(model), None, SHAPE)
    assert "int64" not in str(err.value)


def test_api_and_saved_snn_export_the_same_graph(tmp_path):
    snn = make_snn(Residual())
    sb.save(snn, tmp_path / "snn.pt")
    for target in ("generic", "norse"):
        a = export_nir(snn, None, SHAPE, target=target)
        b = export_nir(sb.load(tmp_path / "snn.pt"), None, SHAPE, target=target)
        assert list(a.nodes) == list(b.nodes) and a.edges == b.edges
        for name, node in a.nodes.items():
            for key in ("weight", "bias", "v_threshold"):
                if hasattr(node, key):
                    np.testing.assert_array_equal(getattr(node, key), getattr(b.nodes[name], key))


def test_file_has_no_v_reset_for_old_readers(tmp_path):
    """nir 1.0.4 (sinabs's pin) refuses IF nodes with a v_reset; NIR's default is 0."""
    export_nir(make_snn(plain()), tmp_path / "net.nir", SHAPE, target="sinabs")
    with h5py.File(tmp_path / "net.nir") as f:
        assert not any("v_reset" in node for node in f["node/nodes"].values())
    graph = nir.read(tmp_path / "net.nir")
    assert all(not np.any(n.v_reset) for n in graph.nodes.values() if isinstance(n, nir.IF))


def test_convert_records_the_input_shape():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 10 * 10, 3))
    data = [torch.rand(4, *SHAPE) for _ in range(2)]
    assert sb.convert(model, "max-norm", T=4, calibration_data=data).info["input_shape"] == list(SHAPE)
    qann = sb.prepare(model, levels=4)
    assert "input_shape" not in sb.convert(qann, "qcfs").info
    snn = sb.convert(qann, "qcfs", input_shape=SHAPE)
    assert snn.info["input_shape"] == list(SHAPE)
    assert export_nir(snn).nodes["input"].input_type["input"].tolist() == list(SHAPE)


def test_sum_coded_refused():
    qann = sb.prepare(plain(), levels=4)
    with pytest.raises(sb.SpikeBridgeError, match="NIR has no neuron"):
        export_nir(sb.convert(qann, "pasc"), None, SHAPE)


def test_ftbc_refused_unless_dropped():
    snn = make_snn(plain())
    next(iter(snn.neurons().values())).set_bias(torch.full((2, 1), 0.1))
    with pytest.raises(sb.SpikeBridgeError, match="FTBC"):
        export_nir(snn, None, SHAPE)
    with pytest.warns(UserWarning, match="drops the FTBC"):
        graph = export_nir(snn, None, SHAPE, allow_drop_ftbc=True)
    dropped = [n.metadata["spikebridge"]["ftbc_bias_dropped"] for n in graph.nodes.values() if isinstance(n, nir.IF)]
    assert dropped[0] and not any(dropped[1:])


def test_input_shape_required():
    with pytest.raises(sb.SpikeBridgeError, match="input shape"):
        export_nir(make_snn(plain()), None)


def test_cli_export(tmp_path, capsys):
    snn = make_snn(Residual())
    sb.save(snn, tmp_path / "snn.pt")
    out = tmp_path / "out.nir"
    assert main(["export", str(tmp_path / "snn.pt"), "--nir", str(out), "--input-shape", "1,12,12"]) == 0
    text = capsys.readouterr().out
    assert "target generic" in text and "reset by subtraction" in text and "no importer implements" in text
    graph = nir.read(out)
    x = torch.rand(3, *SHAPE, dtype=torch.float64)
    torch.testing.assert_close(simulate_nir(graph, x, snn.T, TARGETS["generic"].semantics_for()),
                               snn.double().simulate(x).logits, rtol=0, atol=1e-6)
    assert main(["export", str(tmp_path / "snn.pt"), "--nir", str(out), "--input-shape", "1,12,12",
                 "--target", "norse", "--v0", "zero", "--no-check"]) == 0
    text = capsys.readouterr().out
    assert "hard reset to 0, spike on v > θ" in text and "not run here (--no-check)" in text and "norse==1.1.0" in text
    assert main(["export", str(tmp_path / "snn.pt"), "--nir", str(out)]) == 2
    assert "input shape" in capsys.readouterr().err


def test_a_3d_convolution_network_takes_5d_batches_and_nir_refuses_it_plainly():
    model = nn.Sequential(nn.Conv3d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 2 * 4 * 4, 3))
    snn = sb.convert(sb.prepare(model, levels=4, threshold=1.0), "qcfs", T=4)
    with pytest.raises(sb.InputError, match=r"takes \[B, 1, D, H, W\] float32"):  # a 2-d image
        snn.simulate(torch.rand(2, 1, 6, 6))
    with pytest.raises(sb.SpikeBridgeError, match="NIR has no 3-d convolution"):
        export_nir(snn, None, (1, 4, 6, 6))
