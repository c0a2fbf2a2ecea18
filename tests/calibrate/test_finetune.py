"""Surrogate-gradient fine-tuning of converted SNNs (METHODS §4 "SNN calibration")."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import spikebridge as sb
from spikebridge.cli import main
from spikebridge.errors import SpikeBridgeError
from spikebridge.calibrate.finetune import CHECKPOINT, finetune
from spikebridge.device import single_thread

from helpers import fashion_mnist_14x14, sgd_fit


@pytest.fixture(scope="module")
def setup():
    """A QCFS ANN (L = 8) trained for 200 steps on 4k 14x14 Fashion-MNIST images; the
    fine-tuning data: 16 batches of 64 other training images."""
    with single_thread():
        x, y = fashion_mnist_14x14("train", 5024)
        torch.manual_seed(0)
        qann = sb.prepare(nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.AvgPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.AvgPool2d(2),
            nn.Flatten(), nn.Linear(16 * 9, 32), nn.ReLU(), nn.Linear(32, 10)), levels=8, threshold=2.0)
        sgd_fit(qann, x[:4000], y[:4000], 200, lr=0.05)
        data = [(x[4000 + 64 * j:4000 + 64 * (j + 1)], y[4000 + 64 * j:4000 + 64 * (j + 1)]) for j in range(16)]
        yield {"qann": qann, "data": data}


def _loss(snn, data, T):
    with torch.no_grad():
        return sum(F.cross_entropy(snn.simulate(x, T, record=False).logits[-1], y, reduction="sum").item()
                   for x, y in data) / sum(len(y) for _, y in data)


def test_simulate_is_differentiable_once_the_weights_ask_for_gradients(setup):
    snn = sb.convert(setup["qann"], "qcfs", T=2)
    x, y = setup["data"][0]
    inference = snn.simulate(x, 2, record=False).logits  # a converted SNN's weights ask for no gradient
    assert not inference.requires_grad and not any(p.requires_grad for p in snn.parameters())
    snn.requires_grad_()
    logits = snn.simulate(x, 2, record=False).logits
    assert torch.equal(logits.detach(), inference)  # autograd's path computes the same bits
    F.cross_entropy(logits[-1], y).backward()
    grads = {n: p.grad for n, p in snn.named_parameters()}
    assert grads and all(g is not None and g.abs().sum() > 0 for g in grads.values()), grads.keys()


def test_an_input_that_asks_for_gradients_gets_them(setup):
    snn = sb.convert(setup["qann"], "qcfs", T=2)
    x, y = setup["data"][0]
    x = x.clone().requires_grad_()  # e.g. an attack through the SNN, its weights frozen
    F.cross_entropy(snn.simulate(x, 2, record=False).logits[-1], y).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in snn.parameters())


def test_one_epoch_lowers_the_loss_and_keeps_thresholds(setup):
    snn = sb.convert(setup["qann"], "qcfs", T=1)
    thresholds = {k: v.clone() for k, v in snn.state_dict().items() if k.endswith(("threshold", "v0"))}
    weights = {k: v.clone() for k, v in snn.named_parameters()}
    before = _loss(snn, setup["data"], 1)
    history = finetune(snn, setup["data"], T_schedule=(1,), epochs=1, lr=1e-2, progress=False,
                       test_data=setup["data"])
    after = _loss(snn, setup["data"], 1)
    assert after < 0.9 * before, (before, after)
    assert [(h["stage"], h["T"], h["epoch"]) for h in history] == [(0, 1, 1)]
    with torch.no_grad():  # the stage's test accuracy is the fine-tuned network's at that T
        correct = sum(int((snn.simulate(x, 1, record=False).logits[-1].argmax(-1) == y).sum()) for x, y in setup["data"])
    assert history[-1]["test_accuracy"] == correct / sum(len(y) for _, y in setup["data"])
    state = snn.state_dict()
    assert thresholds and all(torch.equal(state[k], v) for k, v in thresholds.items())
    assert any(not torch.equal(p, weights[k]) for k, p in snn.named_parameters())
    assert not any(p.requires_grad for p in snn.parameters())  # back to inference: simulations build no graph


class Interrupted(Exception):
    pass


class Crashing:
    """The batches of ``data``; raises after ``after`` batches in all (a killed run)."""

    def __init__(self, data, after):
        self.data, self.left = data, after

    def __iter__(self):
        for batch in self.data:
            if self.left == 0:
                raise Interrupted
            self.left -= 1
            yield batch


def test_latency_schedule_checkpoints_and_resumes_exactly(setup, tmp_path):
    data = setup["data"][:4]
    kwargs = dict(T_schedule=(1, 2), epochs=(2, 1), lr=5e-3, progress=False)
    full = sb.convert(setup["qann"], "qcfs", T=2)
    history = finetune(full, data, out=tmp_path / "full", **kwargs)
    assert [(h["T"], h["epoch"]) for h in history] == [(1, 1), (1, 2), (2, 1)]
    ckpt = torch.load(tmp_path / "full" / CHECKPOINT, weights_only=True)
    assert (ckpt["stage"], ckpt["epoch"]) == (1, 1) and set(ckpt) >= {"state_dict", "optimizer", "scheduler"}

    for crash_after in (6, 9):  # inside stage 0's second epoch; inside stage 1
        out = tmp_path / f"crash{crash_after}"
        snn = sb.convert(setup["qann"], "qcfs", T=2)
        with pytest.raises(Interrupted):
            finetune(snn, Crashing(data, crash_after), out=out, **kwargs)
        with pytest.raises(SpikeBridgeError, match="resume"):
            finetune(snn, data, out=out, **kwargs)
        resumed = sb.convert(setup["qann"], "qcfs", T=2)  # a fresh process: weights come from the checkpoint
        again = finetune(resumed, data, out=out, resume=True, **kwargs)
        assert [h["loss"] for h in again] == [h["loss"] for h in history]
        for (k, a), b in zip(resumed.state_dict().items(), full.state_dict().values()):
            assert torch.equal(a, b), k
    with pytest.raises(SpikeBridgeError, match="settings"):
        finetune(resumed, data, out=tmp_path / "full", resume=True, **{**kwargs, "epochs": (3, 1)})


def test_sum_coded_and_bad_schedules_are_refused(setup):
    with pytest.raises(SpikeBridgeError, match="rate-coded"):
        finetune(sb.convert(setup["qann"], "pasc"), setup["data"], progress=False)
    snn = sb.convert(setup["qann"], "qcfs", T=2)
    with pytest.raises(SpikeBridgeError, match="epochs"):
        finetune(snn, setup["data"], T_schedule=(1, 2), epochs=(1,), progress=False)
    with pytest.raises(SpikeBridgeError, match="T_schedule"):
        finetune(snn, setup["data"], T_schedule=(0,), progress=False)


def test_finetune_cli(tmp_path, capsys):
    from spikebridge import models

    torch.manual_seed(0)
    qann = sb.prepare(models.create("small_cnn", num_classes=10, in_channels=1, width=4), levels=4).eval()
    sb.save(sb.convert(qann, "qcfs", T=2), tmp_path / "snn.pt")
    args = ["finetune", str(tmp_path / "snn.pt"), "--T", "1,2", "--epochs", "1,1", "--limit", "64",
            "--batch-size", "32", "--test-limit", "64", "--out", str(tmp_path / "run"), "-o", str(tmp_path / "ft.pt"),
            "--no-progress"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "T=2" in out and (tmp_path / "run" / CHECKPOINT).is_file()
    # test accuracy after each stage, at that stage's T
    assert [line.split()[0] for line in out.splitlines() if " test " in line] == ["T=1:", "T=2:"]
    tuned = sb.load(tmp_path / "ft.pt")
    assert tuned.T == 2
    assert main(args) == 2 and "--resume" in capsys.readouterr().err
    assert main(args + ["--resume"]) == 0  # nothing left to train: the saved weights come back
    again = sb.load(tmp_path / "ft.pt").state_dict()
    assert all(torch.equal(again[k], v) for k, v in tuned.state_dict().items())
    assert main(["finetune", str(tmp_path / "nope.pt"), "-o", str(tmp_path / "x.pt")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("spikebridge finetune: error:") and "does not exist" in err and "\n" not in err
