"""sb.save / sb.load: the data-only SNN file (export/snn_file.py). Round trips of every
method, a fresh process, corruption of every byte, crafted files that try to run code, the
refusal of spikebridge 0.1 pickles, and write errors."""
import hashlib
import json
import os
import struct
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import spikebridge as sb
from spikebridge.errors import CheckpointError
from spikebridge.snn.network import SpikingNetwork

MAGIC = b"SPIKEBRIDGE-SNN\n"


def randomized(model: nn.Module, seed: int) -> nn.Module:
    """Random weights and BatchNorm statistics, so that folding and every tensor matter."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            elif isinstance(m, (nn.Conv2d, nn.Linear)):
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * 0.5)
                if m.bias is not None:
                    m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
    return model.eval()


def cnn(seed: int = 0) -> nn.Module:
    return randomized(nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.AvgPool2d(2),
                                    nn.Flatten(), nn.Linear(4 * 4 * 4, 10)), seed)


class Residual(nn.Module):
    """Nested module paths, a shared layer, torch.add, +, torch.cat, slicing, view(size(0), -1),
    torch.flatten, F.avg_pool2d, and adaptive average pooling as a module and a function."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU())
        self.conv = nn.Conv2d(4, 4, 3, padding=1)
        self.shortcut = nn.Conv2d(4, 4, 1, bias=False)
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.fc = nn.Linear(8 * 2 * 2, 10)

    def forward(self, x):
        x = self.stem(x)
        y = F.relu(self.conv(x))
        z = torch.add(x, y)
        z = z + F.relu(self.shortcut(z))
        z = F.avg_pool2d(z, 2)
        w = self.pool(torch.cat([z, y[:, :, ::2, ::2]], dim=1))
        w = F.adaptive_avg_pool2d(w, 2)
        return self.fc(w.view(w.size(0), -1)) + self.fc(torch.flatten(w, 1))


def inputs(n: int = 3, seed: int = 1) -> torch.Tensor:
    return torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed))


def assert_same(snn: SpikingNetwork, loaded: SpikingNetwork, x: torch.Tensor) -> None:
    assert type(loaded) is SpikingNetwork and not loaded.training
    assert (loaded.method, loaded.T, loaded.info) == (snn.method, snn.T, snn.info)
    before, after = snn.state_dict(), loaded.state_dict()
    assert list(after) == list(before)
    for key, t in before.items():
        assert after[key].dtype == t.dtype and torch.equal(after[key], t), key
    with torch.no_grad():
        assert torch.equal(loaded.simulate(x).logits, snn.simulate(x).logits)


def round_trip(snn: SpikingNetwork, path) -> SpikingNetwork:
    sb.save(snn, path)
    return sb.load(path)


def forge(path, doc: dict, tensors: bytes) -> None:
    """Write a file in the documented layout, checksum included, around any content."""
    graph = json.dumps(doc).encode()
    header = json.dumps({"format": "spikebridge-snn", "version": 2, "json_length": len(graph),
                         "tensors_length": len(tensors), "sha256": hashlib.sha256(graph + tensors).hexdigest()},
                        separators=(",", ":")).encode()
    path.write_bytes(MAGIC + struct.pack("<Q", len(header)) + header + graph + tensors)


def parts(path) -> tuple[dict, bytes, int]:
    """(graph description, safetensors bytes, offset of the body) of a saved file."""
    data = path.read_bytes()
    (n_header,) = struct.unpack("<Q", data[16:24])
    header = json.loads(data[24:24 + n_header])
    body = 24 + n_header
    return json.loads(data[body:body + header["json_length"]]), data[body + header["json_length"]:], body


@pytest.mark.parametrize("method", ["qcfs", "pasc", "bitplane"])
def test_qcfs_methods_round_trip(method, tmp_path, one_thread):
    qann = sb.prepare(cnn(), levels=7)
    snn = sb.convert(qann, method, T=4 if method == "qcfs" else None)
    assert_same(snn, round_trip(snn, tmp_path / "snn.sb"), inputs())


@pytest.mark.parametrize("method", ["data-driven", "max-norm"])
def test_relu_methods_round_trip(method, tmp_path, one_thread):
    snn = sb.convert(cnn(), method, T=4, calibration_data=[torch.rand(16, 1, 8, 8)])
    assert snn.info["thresholds"]
    assert_same(snn, round_trip(snn, tmp_path / "snn.sb"), inputs())


def test_residual_graph_round_trips(tmp_path, one_thread):
    qann = sb.prepare(randomized(Residual(), 2), levels=5)
    for method in ("qcfs", "pasc"):
        snn = sb.convert(qann, method, T=3 if method == "qcfs" else None)
        loaded = round_trip(snn, tmp_path / f"{method}.sb")
        assert_same(snn, loaded, inputs())
        assert loaded.graph.code == snn.graph.code


class Padded(nn.Module):
    """Padding (function, zero, reflection, replication), upsampling and parametric quantized
    activations (LeakyReLU, ELU, Softplus) and a clip to [0, 2]."""

    def __init__(self):
        super().__init__()
        self.conv, self.conv2 = nn.Conv2d(1, 4, 3), nn.Conv2d(4, 4, 3, padding=1)
        self.pads = nn.Sequential(nn.ZeroPad2d((1, 0, 1, 0)), nn.ReflectionPad2d(1), nn.ReplicationPad2d((0, 1, 1, 0)))
        self.up, self.act = nn.Upsample(scale_factor=2, mode="bilinear"), nn.LeakyReLU(0.2)
        self.fc = nn.LazyLinear(10)

    def forward(self, x):
        x = self.act(self.conv(F.pad(x, (1, 1, 0, 2))))
        x = F.elu(self.conv2(self.up(self.pads(x))), 0.5).clamp(0, 2)
        return self.fc(F.softplus(F.interpolate(x, size=(5, 5)), beta=2.0).flatten(1))


def test_padding_upsampling_and_parametric_activations_round_trip(tmp_path, one_thread):
    net = Padded()
    net(torch.zeros(1, 1, 8, 8))
    qann = sb.prepare(randomized(net, 3), levels=5)
    assert [getattr(site, "function", "relu") for site in sb.sites(qann).values()] == [
        "leaky_relu(0.2)", "elu(0.5)", "relu", "softplus(2.0, 20.0)"]
    for method in ("pasc", "bitplane"):
        snn = sb.convert(qann, method)
        loaded = round_trip(snn, tmp_path / f"{method}.sb")
        assert_same(snn, loaded, inputs())
        assert loaded.graph.code == snn.graph.code


def test_float64_network_keeps_its_dtype(tmp_path, one_thread):
    snn = sb.convert(sb.prepare(cnn(), levels=3), "qcfs", T=2).double()
    loaded = round_trip(snn, tmp_path / "snn.sb")
    assert all(t.dtype == torch.float64 for t in loaded.state_dict().values())
    assert_same(snn, loaded, inputs().double())


def test_info_tuples_become_lists_and_non_json_info_is_refused(tmp_path):
    snn = sb.convert(sb.prepare(cnn(), levels=3), "qcfs", T=2)
    snn.info["input_shape"] = (1, 8, 8)
    assert round_trip(snn, tmp_path / "snn.sb").info["input_shape"] == [1, 8, 8]
    snn.info["stats"] = torch.ones(2)
    with pytest.raises(CheckpointError, match="info"):
        sb.save(snn, tmp_path / "bad.sb")
    snn.info["stats"] = {1: "int key"}
    with pytest.raises(CheckpointError, match="info"):
        sb.save(snn, tmp_path / "bad.sb")
    assert not (tmp_path / "bad.sb").exists()


def test_ftbc_biases_survive(tmp_path, one_thread):
    relu = cnn()
    x = torch.rand(16, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    snn = sb.convert(relu, "max-norm", T=4, calibration_data=[x])
    sb.ftbc(snn, ann=relu, data=[x], alpha=0.5, batches=1, check_batches=0, progress=False)
    biases = {site: n.bias for site, n in snn.neurons().items()}
    assert all(b.shape == (4, 4) and b.abs().sum() > 0 for b in biases.values())
    loaded = round_trip(snn, tmp_path / "snn.sb")
    assert all(torch.equal(loaded.neurons()[site].bias, b) for site, b in biases.items())
    assert_same(snn, loaded, inputs())


def test_loads_in_a_fresh_process(tmp_path, one_thread):
    snn = sb.convert(sb.prepare(randomized(Residual(), 4), levels=5), "pasc")
    x = inputs(4, seed=5)
    torch.save(x, tmp_path / "x.pt")
    torch.save(snn.simulate(x).logits, tmp_path / "expected.pt")
    sb.save(snn, tmp_path / "snn.sb")
    code = ("import sys, torch, spikebridge as sb; d = sys.argv[1]; snn = sb.load(d + '/snn.sb'); "
            "x = torch.load(d + '/x.pt'); "
            "assert torch.equal(snn.simulate(x).logits, torch.load(d + '/expected.pt')); print('same')")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "same", out.stderr


def test_every_flipped_byte_truncation_and_extension_is_refused(tmp_path):
    snn = sb.convert(sb.prepare(randomized(nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2)), 6), levels=3),
                     "qcfs", T=2)
    good = tmp_path / "snn.sb"
    sb.save(snn, good)
    data = good.read_bytes()
    doc, tensors, body = parts(good)
    regions = {"magic": 0, "header length": 16, "header": 24, "graph JSON": body,
               "safetensors": len(data) - len(tensors)}
    assert sorted(regions.values()) == list(regions.values()) and len(data) - len(tensors) > body
    bad = tmp_path / "bad.sb"
    bad.write_bytes(data)

    def refused() -> str:
        with pytest.raises(CheckpointError) as info:
            sb.load(bad)
        assert "\n" not in str(info.value)
        return str(info.value)

    # The file is changed in place: rewriting it whole costs a flush per write on ext4.
    with open(bad, "r+b", buffering=0) as f:
        for i in range(len(data)):  # every position, so every region above
            f.seek(i)
            f.write(bytes([data[i] ^ (0x01, 0x80, 0xFF, 0x20)[i % 4]]))
            refused()
            f.seek(i)
            f.write(data[i:i + 1])
        f.seek(0)
        f.write(data[:-1] + bytes([data[-1] ^ 1]))
        assert "checksum" in refused()
        f.seek(16)
        f.write(struct.pack("<Q", 2 ** 63))
        assert "out of range" in refused()
        f.seek(0)
        f.write(data)
    for extra in (b"\0", b"\n", b"junk", data):
        with open(bad, "ab") as f:
            f.write(extra)
        assert "truncated or has bytes appended" in refused()
        os.truncate(bad, len(data))
    for n in reversed(range(len(data))):
        os.truncate(bad, n)
        refused()
    assert_same(snn, sb.load(good), torch.rand(2, 4))


def test_newer_versions_and_odd_headers_are_named(tmp_path):
    sb.save(sb.convert(sb.prepare(cnn(), levels=3), "qcfs", T=2), tmp_path / "snn.sb")
    data = (tmp_path / "snn.sb").read_bytes()
    (tmp_path / "v3.sb").write_bytes(data.replace(b'"version":2', b'"version":3', 1))
    with pytest.raises(CheckpointError, match="version 3; this spikebridge reads version 2"):
        sb.load(tmp_path / "v3.sb")
    nested = b"[" * 2000 + b"]" * 2000
    (tmp_path / "nested.sb").write_bytes(MAGIC + struct.pack("<Q", len(nested)) + nested)
    with pytest.raises(CheckpointError, match="corrupt header"):
        sb.load(tmp_path / "nested.sb")


def _set_module_type(doc, canary):
    doc["modules"][0]["type"] = "os.system"
    doc["modules"][0]["config"] = {"command": f"touch {canary}"}


def _call_eval(doc, canary):
    doc["nodes"][1].update(op="call_function", target="builtins.eval", args=[f"open(r'{canary}', 'w')"], kwargs={})


def _call_method(doc, canary):
    doc["nodes"][1].update(op="call_method", target="__init__", args=[{"node": "input_1"}], kwargs={})


def _inject_module_path(doc, canary):
    target = f'x"), open(r"{canary}", "w"), getattr(self, "y'
    doc["modules"][0]["target"] = doc["nodes"][1]["target"] = target


def _inject_input_name(doc, canary):
    doc["nodes"][0]["target"] = f"x=open(r'{canary}', 'w')"


def _inject_keyword(doc, canary):
    doc["nodes"][1]["kwargs"] = {f"a=open(r'{canary}', 'w'), b": 1}


def _read_dunder(doc, canary):
    doc["nodes"][1].update(op="call_function", target="builtins.getattr", args=[{"node": "input_1"}, "__class__"],
                           kwargs={})


def _unknown_dtype(doc, canary):
    doc["nodes"][0]["args"] = [{"dtype": "os"}]


def _later_node(doc, canary):
    doc["nodes"][1]["args"] = [{"node": doc["nodes"][-2]["name"]}]


def _unknown_method(doc, canary):
    doc["method"] = "spiky"


def _zero_T(doc, canary):
    doc["T"] = 0


def _neuron_config(doc, canary):
    doc["modules"][1]["config"] = {"T": 2, "v0": 5.0}


def _layer_device(doc, canary):
    doc["modules"][0]["config"]["device"] = "cuda"


def _undescribed_module(doc, canary):
    del doc["modules"][0]


@pytest.mark.parametrize("mutate", [
    _set_module_type, _call_eval, _call_method, _inject_module_path, _inject_input_name, _inject_keyword,
    _read_dunder, _unknown_dtype, _later_node, _unknown_method, _zero_T, _neuron_config, _layer_device,
    _undescribed_module], ids=lambda f: f.__name__.strip("_"))
def test_crafted_files_with_a_valid_checksum_are_refused_without_running_code(mutate, tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(os, "system", lambda *a, **k: calls.append(a))
    snn = sb.convert(sb.prepare(nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2)), levels=3), "qcfs", T=2)
    sb.save(snn, tmp_path / "snn.sb")
    doc, tensors, _ = parts(tmp_path / "snn.sb")
    assert doc["nodes"][0]["name"] == "input_1" and doc["modules"][0]["type"] == "Linear"
    canary = tmp_path / "pwned"
    mutate(doc, canary)
    forge(tmp_path / "crafted.sb", doc, tensors)
    with pytest.raises(CheckpointError, match="is not a valid spikebridge SNN file") as info:
        sb.load(tmp_path / "crafted.sb")
    assert "\n" not in str(info.value)
    assert not canary.exists() and not calls


def test_tensors_must_fit(tmp_path):
    from safetensors.torch import load, save

    snn = sb.convert(sb.prepare(nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2)), levels=3), "qcfs", T=2)
    sb.save(snn, tmp_path / "snn.sb")
    doc, tensors, _ = parts(tmp_path / "snn.sb")
    missing = load(tensors)
    del missing["graph.0.weight"]
    wrong = load(tensors) | {"graph.0.weight": torch.zeros(2, 2)}
    for content, message in ((save(missing), "Missing key"), (save(wrong), "size mismatch"), (b"junk", "do not parse")):
        forge(tmp_path / "crafted.sb", doc, content)
        with pytest.raises(CheckpointError, match=message):
            sb.load(tmp_path / "crafted.sb")


def test_spikebridge_0_1_pickles_are_refused_unless_allowed(tmp_path):
    old = tmp_path / "old.pt"
    torch.save({"format": "spikebridge-snn", "version": 1, "network": {"fake": 1}}, old)
    with pytest.raises(CheckpointError, match="spikebridge convert.*allow_pickle") as info:
        sb.load(old)
    assert "\n" not in str(info.value)
    with pytest.warns(UserWarning, match="sb.save the network again"), \
            pytest.raises(CheckpointError, match="no SpikingNetwork"):
        sb.load(old, allow_pickle=True)
    snn = sb.convert(sb.prepare(cnn(), levels=3), "qcfs", T=2)
    torch.save({"format": "spikebridge-snn", "version": 1, "network": snn}, old)  # with today's module paths
    with pytest.warns(UserWarning, match="sb.save the network again"):
        assert_same(snn, sb.load(old, allow_pickle=True), inputs())
    torch.save({"format": "spikebridge-ann", "version": 1}, tmp_path / "ann.pt")
    with pytest.raises(CheckpointError, match="not a spikebridge SNN file"):
        sb.load(tmp_path / "ann.pt")


def test_save_and_load_errors(tmp_path):
    snn = sb.convert(sb.prepare(cnn(), levels=3), "qcfs", T=2)
    with pytest.raises(CheckpointError, match="is a directory"):
        sb.save(snn, tmp_path)
    (tmp_path / "file").write_text("x")
    with pytest.raises(CheckpointError, match="cannot write"):
        sb.save(snn, tmp_path / "file" / "snn.sb")
    if os.path.isdir("/proc/self"):
        with pytest.raises(CheckpointError, match="cannot write"):
            sb.save(snn, "/proc/spikebridge-test.sb")
    sb.save(snn, tmp_path / "new" / "folder" / "snn.sb")  # missing folders are created, as for ANN checkpoints
    assert sb.load(tmp_path / "new" / "folder" / "snn.sb").T == 2
    with pytest.raises(TypeError, match="expects a SpikingNetwork"):
        sb.save(cnn(), tmp_path / "ann.sb")
    with pytest.raises(CheckpointError, match="does not exist"):
        sb.load(tmp_path / "missing.sb")
    with pytest.raises(CheckpointError, match="is a directory"):
        sb.load(tmp_path)


def test_parts_without_a_data_only_form_are_refused_at_save(tmp_path):
    snn = sb.convert(sb.prepare(cnn(), levels=3), "qcfs", T=2)
    placeholder = next(iter(snn.graph.graph.nodes))
    placeholder.args = (torch.device("cpu"),)
    with pytest.raises(CheckpointError, match=f"node {placeholder.name!r}"):
        sb.save(snn, tmp_path / "snn.sb")
    placeholder.args = ()
    snn.graph.add_submodule("5", nn.GELU())
    with pytest.raises(CheckpointError, match="module '5' \\(GELU\\)"):
        sb.save(snn, tmp_path / "snn.sb")
    assert not (tmp_path / "snn.sb").exists()
