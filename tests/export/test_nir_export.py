"""NIR export: structure, parameters, soft-reset metadata, and a re-simulation of the file."""
import nir
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import spikebridge as sb
from spikebridge.cli import main
from spikebridge.export.nir import export_nir

SHAPE = (1, 12, 12)


class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU())
        self.conv1 = nn.Conv2d(4, 4, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        x = self.stem(x)
        y = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return self.fc(F.relu(x + y).mean((2, 3)))


def plain():
    return nn.Sequential(nn.Conv2d(1, 4, 3, stride=2, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.AvgPool2d(2),
                         nn.Conv2d(4, 6, 3, padding=1, bias=False), nn.BatchNorm2d(6), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))


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
    snn = sb.convert(qann, "qcfs", T=T)
    snn.info.pop("input_shape", None)
    return snn


def simulate_nir(graph, x, T, soft_reset=True):
    """A minimal NIR simulator (dt = 1): incoming edges summed; IF with the reset, v0 and
    spike condition recorded in the metadata (soft_reset) or NIR's literal IF (hard reset to
    v_reset, v0 = 0, spike on v > v_threshold). Returns anytime logits [T, B, classes]."""
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
        if isinstance(node, nir.IF):
            v0 = arr(node.metadata["v_initial"]) if soft_reset else torch.zeros(node.v_threshold.shape, dtype=torch.float64)
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
                y = F.conv2d(i, arr(node.weight), None, tuple(np.atleast_1d(node.stride)),
                             tuple(np.atleast_1d(node.padding)), tuple(np.atleast_1d(node.dilation)), int(node.groups))
                val[name] = y + arr(node.bias).view(-1, 1, 1)
            elif isinstance(node, nir.Affine):
                val[name] = F.linear(i, arr(node.weight)) + arr(node.bias)
            elif isinstance(node, nir.AvgPool2d):
                val[name] = F.avg_pool2d(i, tuple(node.kernel_size), tuple(node.stride), tuple(node.padding))
            elif isinstance(node, nir.Flatten):
                val[name] = i.flatten(1 + int(node.start_dim))
            elif isinstance(node, nir.Scale):
                val[name] = i * arr(node.scale)
            elif isinstance(node, nir.IF):
                theta = arr(node.v_threshold)
                v[name] = v[name] + arr(node.r) * i
                if soft_reset:
                    assert node.metadata["reset"] == "subtract"
                    assert node.metadata["spike_condition"] == "v >= v_threshold"
                    s = (v[name] >= theta).double()
                    v[name] = v[name] - theta * s
                else:
                    s = (v[name] > theta).double()
                    v[name] = torch.where(s.bool(), arr(node.v_reset).expand_as(s), v[name])
                val[name] = s
            elif isinstance(node, nir.Output):
                val[name] = i
            else:
                raise AssertionError(f"unexpected NIR node {type(node).__name__}")
        outputs.append(val["output"])
    out = torch.stack(outputs)
    return out.cumsum(0) / torch.arange(1, T + 1, dtype=out.dtype).view(-1, 1, 1)


@pytest.mark.parametrize("model", [plain, Residual])
def test_export_structure_and_parameters(model, tmp_path):
    snn = make_snn(model())
    path = tmp_path / "net.nir"
    export_nir(snn, path, SHAPE)
    graph = nir.read(path)
    kinds = {type(n).__name__ for n in graph.nodes.values()}
    assert {"Input", "Output", "Conv2d", "Affine", "IF", "Scale", "AvgPool2d", "Flatten"} <= kinds
    names = {n.target: n.name for n in snn.graph.graph.nodes if n.op == "call_module"}
    for target, layer in snn.synaptic_layers().items():
        node = graph.nodes[names[target]]
        np.testing.assert_array_equal(node.weight, layer.weight.detach().numpy())  # BatchNorm folded
        bias = layer.bias.detach().numpy() if layer.bias is not None else 0
        np.testing.assert_array_equal(node.bias, np.broadcast_to(bias, node.bias.shape))
    for target, neuron in snn.neurons().items():
        node = graph.nodes[names[target]]
        theta = neuron.threshold.numpy().reshape(-1, *[1] * (node.v_threshold.ndim - 1))
        np.testing.assert_array_equal(node.v_threshold, np.broadcast_to(theta, node.v_threshold.shape))
        np.testing.assert_array_equal(node.metadata["v_initial"], node.v_threshold / 2)
        np.testing.assert_array_equal(node.r, 1)
        assert node.metadata["reset"] == "subtract"
        assert node.metadata["spikebridge"]["site"] == target
        assert graph.metadata["sites"][names[target]] == target
    assert graph.metadata["neuron_reset"] == "subtract"
    assert int(graph.metadata["T"]) == 4


def test_residual_add_is_summed_edges():
    graph = export_nir(make_snn(Residual()), None, SHAPE)
    assert sorted(a for a, b in graph.edges if b == "relu_1") == ["conv2", "stem_2_value"]


@pytest.mark.parametrize("model", [plain, Residual])
def test_nir_resimulation_matches_snn(model, tmp_path):
    T = 6
    snn = make_snn(model(), T=T).double()
    export_nir(snn, tmp_path / "net.nir", SHAPE)
    graph = nir.read(tmp_path / "net.nir")
    x = torch.rand(5, *SHAPE, dtype=torch.float64)
    res = snn.simulate(x)
    assert sum(int(s.sum()) for s in res.spikes.values()) > 0
    torch.testing.assert_close(simulate_nir(graph, x, T), res.logits, rtol=0, atol=1e-9)
    # NIR's literal IF (hard reset to v_reset, v0 = 0) is a different network: the metadata matters.
    assert not torch.allclose(simulate_nir(graph, x, T, soft_reset=False), res.logits)


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


def test_cli_round_trip(tmp_path, capsys):
    snn = make_snn(Residual())
    sb.save(snn, tmp_path / "snn.pt")
    out = tmp_path / "out.nir"
    assert main(["export", str(tmp_path / "snn.pt"), "--nir", str(out), "--input-shape", "1,12,12"]) == 0
    assert "soft reset" in capsys.readouterr().out
    graph = nir.read(out)
    assert graph.metadata["neuron_reset"] == "subtract"
    x = torch.rand(3, *SHAPE, dtype=torch.float64)
    torch.testing.assert_close(simulate_nir(graph, x, snn.T), snn.double().simulate(x).logits, rtol=0, atol=1e-6)
    assert main(["export", str(tmp_path / "snn.pt"), "--nir", str(out)]) == 2
    assert "input shape" in capsys.readouterr().err
