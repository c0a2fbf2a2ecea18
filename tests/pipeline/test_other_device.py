"""Every step runs on a device other than the CPU and gives the CPU's results: conversion by
every method, simulation, calibration, fine-tuning, evaluation, verification, export and every
command, with the model and data on the device that ``fake_device`` stands in for a GPU
(its device rules, on the CPU: the numbers must be bit for bit the CPU's)."""
from __future__ import annotations

import contextlib
import io

import pytest
import torch
from torch import nn

import spikebridge as sb
from spikebridge.analysis.evaluation import evaluate_snn
from spikebridge.cli import main
from spikebridge.conversion.registry import Source, methods
from spikebridge.export.nir import export_nir
from spikebridge.snn import engine

from fake_device import Elsewhere, FakeDevice, elsewhere


@pytest.fixture(autouse=True)
def nchw_on_the_cpu_too(monkeypatch):
    """Off the CPU the engine convolves NCHW (``engine.step_layout``); the fake device computes
    on the CPU, so with the CPU's channels-last steps pinned to NCHW both run the same kernels
    and must give the same bits (tests/snn/test_step_layout.py compares the two layouts)."""
    monkeypatch.setattr(engine, "CHANNELS_LAST_PIXELS", float("inf"))


class _Net(nn.Module):
    """Conv-BN-ReLU, a residual add, pooling, a linear readout: channel-wise thresholds at two sites."""

    def __init__(self):
        super().__init__()
        self.c1, self.bn, self.c2 = nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.Conv2d(4, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 4 * 4, 3)

    def forward(self, x):
        y = torch.relu(self.bn(self.c1(x)))
        return self.fc(nn.functional.avg_pool2d(torch.relu(self.c2(y)) + y, 2).flatten(1))


def _net(qcfs: bool = False) -> nn.Module:
    torch.manual_seed(0)
    net = _Net().eval()
    with torch.no_grad():
        net.bn.running_mean.uniform_(-0.2, 0.2)
    return sb.prepare(net, levels=3, threshold=1.0) if qcfs else net


torch.manual_seed(1)
X = torch.rand(48, 1, 8, 8)
DATA = [(X[i:i + 16], torch.randint(0, 3, (16,))) for i in range(0, 48, 16)]


def _on_device(tensors: list[tuple[str, torch.Tensor]]) -> list[str]:
    """The names of the tensors that are not on the fake device."""
    return [name for name, t in tensors if not isinstance(t, Elsewhere)]


def test_the_fake_device_refuses_what_cuda_refuses():
    with FakeDevice():
        a = elsewhere(torch.ones(2, 3))
        with pytest.raises(RuntimeError, match="fake device: add"):
            a + torch.ones(3)
        with pytest.raises(TypeError, match="cpu"):
            a.numpy()
        assert a.device == torch.device("meta") and isinstance(a * torch.tensor(2.0), Elsewhere)
        assert isinstance(torch.zeros(2, device=a.device), Elsewhere) and not isinstance(a.cpu(), Elsewhere)
        layer = elsewhere(nn.Linear(3, 1))
        assert isinstance(layer.weight, Elsewhere) and isinstance(layer.weight, nn.Parameter)
        assert isinstance(layer(a), Elsewhere)


def _convert(name: str, model: nn.Module, data):
    if methods()[name].source is Source.QCFS:
        return sb.convert(model, name)
    options = {"channel_wise": True} if any(f.name == "channel_wise" for f in methods()[name].option_fields()) else {}
    return sb.convert(model, name, T=4, calibration_data=data, **options)


@pytest.mark.parametrize("name", sorted(methods()))
def test_every_method_converts_and_simulates_on_the_device(name):
    qcfs = methods()[name].source is Source.QCFS
    on_cpu = _convert(name, _net(qcfs), DATA).simulate(X[:8])
    with FakeDevice():
        model = elsewhere(_net(qcfs))
        snn = _convert(name, model, [(elsewhere(x), y) for x, y in DATA])
        assert _on_device([*snn.named_parameters(), *snn.named_buffers()]) == []
        res = snn.simulate(X[:8])  # a CPU input is moved to the network's device
    assert isinstance(res.logits, Elsewhere)
    assert torch.equal(res.logits.as_subclass(torch.Tensor), on_cpu.logits)
    assert res.spikes.keys() == on_cpu.spikes.keys()
    for site, count in on_cpu.spikes.items():
        assert torch.equal(torch.as_tensor(res.spikes[site]).as_subclass(torch.Tensor), torch.as_tensor(count)), site


def _pipeline(device):
    """network-level conversion, checked FTBC, evaluation against the ANN, one epoch of
    fine-tuning and a NIR export, with ``device=`` where the API takes it; the ANN stays where
    it is (the CPU)."""
    ann = _net()
    snn = sb.convert(ann, T=2, calibration_data=DATA, device=device)
    kept = sb.ftbc(snn, ann, DATA, batches=1, check_batches=2, readouts=[1, 2], progress=False, device=device)
    evaluation = evaluate_snn(snn, DATA, [1, 2], progress=False, reference=ann, device=device)
    graph = export_nir(snn, allow_drop_ftbc=True)
    history = sb.finetune(snn, DATA[:2], T_schedule=(2,), epochs=1, progress=False, device=device)
    stats = sb.calibration_statistics(ann, DATA, channel_wise=True, device=device)
    qann = _net(qcfs=True)
    report = sb.verify(qann, sb.convert(qann, "pasc"), X, device=device)
    return snn, kept, evaluation, graph, history, stats, report


def test_calibration_evaluation_finetuning_export_and_verify_on_the_device():
    snn, kept, evaluation, graph, history, stats, report = _pipeline(None)
    with FakeDevice():
        snn_d, kept_d, evaluation_d, graph_d, history_d, stats_d, report_d = _pipeline("meta")
        assert _on_device([*snn_d.named_parameters(), *snn_d.named_buffers()]) == []
    assert kept_d == kept and evaluation_d.accuracy == evaluation.accuracy
    assert evaluation_d.agreement == evaluation.agreement
    for key, value in snn.state_dict().items():
        assert torch.equal(snn_d.state_dict()[key].as_subclass(torch.Tensor), value), key
    assert graph_d.nodes.keys() == graph.nodes.keys()
    for key, node in graph.nodes.items():
        for field in ("weight", "bias", "r", "v_threshold"):
            if hasattr(node, field):
                assert (getattr(graph_d.nodes[key], field) == getattr(node, field)).all(), (key, field)
    assert [h["loss"] for h in history_d] == [h["loss"] for h in history]
    for site in stats.sites:
        assert torch.equal(stats_d.channel_max(site), stats.channel_max(site))
    assert report_d.images == report.images and report_d.agreement == report.agreement == 1.0


def _cli(argv: list[str]) -> str:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    assert code == 0, f"{' '.join(argv)}:\n{err.getvalue()}"
    return out.getvalue()


SMALL = ["--model", "small_cnn", "--model-option", "width=4", "--epochs", "1", "--limit-train", "128",
         "--limit-test", "64", "--no-augment", "--no-progress"]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """A QCFS and a ReLU small_cnn, trained on the CPU on 128 Fashion-MNIST images."""
    folder = tmp_path_factory.mktemp("device")
    _cli(["train", *SMALL, "--levels", "3", "--out", str(folder / "q"), "--device", "cpu"])
    _cli(["train", *SMALL, "--relu", "--out", str(folder / "r"), "--device", "cpu"])
    return folder


def _commands(folder, device: str) -> list[str]:
    """Every command but demo (train, then the rest on the checkpoints) with --device; their output."""
    q, r, d = folder / "q/last.pt", folder / "r/last.pt", folder / device
    dev = ["--device", device]
    return [
        _cli(["train", *SMALL, "--levels", "3", "--out", str(d / "trained"), *dev]),
        _cli(["convert", str(q), "--method", "pasc", "-o", str(d / "p.sb"), *dev]),
        _cli(["convert", str(r), "--T", "2", "--calibration-images", "64", "-o", str(d / "r.sb"), *dev]),
        _cli(["evaluate", str(d / "p.sb"), "--limit", "64", *dev]),
        _cli(["verify", str(q), "--limit", "64", *dev]),
        _cli(["calibrate", "ftbc", str(d / "r.sb"), "--ckpt", str(r), "-o", str(d / "rf.sb"), "--batches", "1",
              "--batch-size", "32", *dev]),
        _cli(["evaluate", str(d / "rf.sb"), "--limit", "64", *dev]),
        _cli(["finetune", str(d / "r.sb"), "-o", str(d / "ft.sb"), "--limit", "64", "--test-limit", "64",
              "--out", str(d / "finetune"), "--no-progress", *dev]),
        _cli(["report", str(q), "--limit", "64", "-o", str(d / "report"), *dev]),
        _cli(["export", str(d / "r.sb"), "--nir", str(d / "r.nir"), *dev]),
        _cli(["al", str(q), "--levels", "2,4", "-o", str(d / "levels.json"), *dev]),
    ]


def test_every_command_runs_on_the_device_with_the_cpus_results(checkpoints, one_thread):
    on_cpu = _commands(checkpoints, "cpu")
    with FakeDevice():
        on_device = _commands(checkpoints, "meta")
    for cpu, device in zip(on_cpu, on_device):
        assert device.replace(str(checkpoints / "meta"), "") == cpu.replace(str(checkpoints / "cpu"), "")
