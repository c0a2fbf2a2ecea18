"""Training loop, exact resume, fine-tuning from ReLU, and the `spikebridge train` CLI, on tiny
subsets of the real Fashion-MNIST."""
import json

import pytest
import torch
from torch import nn

from spikebridge import prepare, sites
from spikebridge.train.checkpoint import load_ann, load_checkpoint
from spikebridge.cli import main
from spikebridge.errors import SpikeBridgeError
from spikebridge.train.loop import TrainConfig, set_percentile_thresholds, train

pytest.importorskip("spikebridge.data").get_dataset("fashion-mnist", "test")  # DataError if absent

TINY = dict(model="small_cnn", model_kwargs={"width": 8}, batch_size=32, limit_train=256, limit_test=128,
            augment=False)


def zero_loss(model):
    return torch.zeros(())


def test_training_learns_and_logs_every_epoch(tmp_path):
    model, history = train(TrainConfig(out=str(tmp_path), epochs=3, levels=4, threshold=2.0, **TINY),
                           progress=False)
    assert [r["epoch"] for r in history] == [1, 2, 3]
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert history[-1]["train_acc"] > history[0]["train_acc"]
    assert history[-1]["test_acc"] > 0.4  # chance is 0.1
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert lines == history
    assert set(lines[0]) == {"epoch", "train_loss", "train_acc", "test_acc", "lr", "seconds"}
    assert lines[0]["lr"] == 0.1 and lines[1]["lr"] < 0.1  # cosine decay
    ckpt = load_checkpoint(tmp_path / "last.pt")
    assert ckpt["epoch"] == 3 and ckpt["metrics"] == history
    assert set(ckpt["levels"].values()) == {4} and len(ckpt["thresholds"]) == 4
    assert ckpt["args"]["lr"] == 0.1 and ckpt["args"]["weight_decay"] == 5e-4
    rebuilt = load_ann(tmp_path / "last.pt")
    x = torch.randn(4, 1, 28, 28)
    assert torch.equal(rebuilt(x), model(x))


def test_resume_after_kill_is_bit_exact(tmp_path):
    config = dict(epochs=2, levels=8, seed=3, **dict(TINY, augment=True))
    reference, ref_history = train(TrainConfig(out=str(tmp_path / "a"), extra_loss=zero_loss, **config),
                                   progress=False)

    calls = []

    def killed_in_epoch_two(model):
        calls.append(1)
        if len(calls) == 8 + 3:  # 256 / 32 = 8 steps per epoch: die in the middle of epoch 2
            raise KeyboardInterrupt
        return torch.zeros(())

    out = tmp_path / "b"
    with pytest.raises(KeyboardInterrupt):
        train(TrainConfig(out=str(out), extra_loss=killed_in_epoch_two, **config), progress=False)
    assert load_checkpoint(out / "last.pt")["epoch"] == 1
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 1

    with pytest.raises(SpikeBridgeError, match="--resume"):
        train(TrainConfig(out=str(out), **config), progress=False)
    # Resuming takes the recorded settings, whatever the caller passes.
    resumed, history = train(TrainConfig(out=str(out), resume=True, extra_loss=zero_loss, epochs=9), progress=False)
    assert len(history) == 2
    for key, value in reference.state_dict().items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(value, resumed.state_dict()[key]), key
    strip = [{k: v for k, v in r.items() if k != "seconds"} for r in ref_history]
    assert [{k: v for k, v in r.items() if k != "seconds"} for r in history] == strip
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 2

    _, again = train(TrainConfig(out=str(out), resume=True), progress=False)  # finished: nothing to do
    assert again == history


def test_set_percentile_thresholds_runs_the_relu_network():
    relu = nn.Sequential(nn.Flatten(), nn.ReLU(), nn.Linear(100, 10), nn.ReLU())
    with torch.no_grad():
        relu[2].weight.copy_(torch.eye(10, 100))
        relu[2].bias.zero_()
    model = prepare(relu, levels=2)
    x = torch.cat([torch.arange(1.0, 101.0), -torch.arange(1.0, 101.0)]).view(2, 100)
    chosen = set_percentile_thresholds(model, [(x, torch.zeros(2))], percentile=50)
    first, second = sites(model)
    assert chosen[first] == [50.5]  # median of the positive values 1..100 (linear interpolation)
    assert chosen[second] == [5.5]  # the second site sees the ReLU outputs 1..10, not QCFS(…, L=2)
    assert sites(model)[first].threshold.item() == 50.5
    relu[0] = nn.Linear(100, 100)
    with torch.no_grad():
        relu[0].weight.copy_(torch.eye(100))
        relu[0].bias.zero_()
    per_channel = prepare(relu, levels=2, channel_wise=True)  # channel j sees j + 1 and 0
    chosen = set_percentile_thresholds(per_channel, [(x, torch.zeros(2))], percentile=50)
    assert chosen[first] == list(range(1, 101)) and chosen[second] == list(range(1, 11))
    assert torch.equal(sites(per_channel)[second].threshold.flatten(), torch.arange(1.0, 11.0))


def test_set_percentile_thresholds_runs_each_sites_own_float_activation():
    """A sigmoid gate and a SiLU site calibrate on sigmoid and SiLU outputs (not on ReLU's),
    the network running as the float model."""
    float_model = nn.Sequential(nn.Flatten(), nn.Sigmoid(), nn.Linear(100, 10), nn.SiLU())
    with torch.no_grad():
        float_model[2].weight.copy_(torch.eye(10, 100))
        float_model[2].bias.zero_()
    model = prepare(float_model, levels=4)
    x = torch.cat([torch.linspace(-6, 6, 100), torch.linspace(6, -6, 100)]).view(2, 100)
    chosen = set_percentile_thresholds(model, [(x, torch.zeros(2))], percentile=100)
    gate, silu = sites(model)
    assert chosen[gate] == [pytest.approx(torch.sigmoid(torch.tensor(6.0)).item())]  # below 1: a sigmoid's range
    # the SiLU site sees the float sigmoid outputs of the gate: max over both images of silu(sigmoid(x_j))
    expected = torch.nn.functional.silu(torch.sigmoid(x[:, :10])).max().item()
    assert chosen[silu] == [pytest.approx(expected)]


def test_a_max_pooling_network_fine_tuned_with_average_pooling(tmp_path):
    vgg = dict(TINY, model="vgg_small", model_kwargs={"width": 2, "pool": "max"})
    train(TrainConfig(out=str(tmp_path / "max"), epochs=1, levels=None, **vgg), progress=False)
    source = load_checkpoint(tmp_path / "max" / "last.pt")
    config = TrainConfig(out=str(tmp_path / "avg"), epochs=1, levels=None, init_from=str(tmp_path / "max" / "last.pt"),
                         **dict(vgg, model_kwargs={"pool": "avg"}, lr=1e-12))
    model, _ = train(config, progress=False)
    ckpt = load_checkpoint(tmp_path / "avg" / "last.pt")
    assert ckpt["model"] == {**source["model"], "pool": "avg"}
    assert not any(isinstance(m, torch.nn.MaxPool2d) for m in model.modules())
    weights = {k: v for k, v in ckpt["state_dict"].items() if "running" not in k and "num_batches" not in k}
    assert all(torch.allclose(v, source["state_dict"][k], atol=1e-9) for k, v in weights.items())  # started from them
    with pytest.raises(SpikeBridgeError, match="does not fit"):
        train(TrainConfig(out=str(tmp_path / "wide"), epochs=1, levels=None, init_from=str(tmp_path / "max" / "last.pt"),
                          **dict(vgg, model_kwargs={"width": 4})), progress=False)


def test_relu_then_qcfs_fine_tuning(tmp_path):
    train(TrainConfig(out=str(tmp_path / "relu"), epochs=1, levels=None, **TINY), progress=False)
    relu_ckpt = load_checkpoint(tmp_path / "relu" / "last.pt")
    assert relu_ckpt["levels"] is None
    config = TrainConfig(out=str(tmp_path / "qcfs"), epochs=1, levels=8, lr=0.01, init_from=str(tmp_path / "relu" / "last.pt"),
                         init_images=64, **{k: v for k, v in TINY.items() if k != "model"})
    model, _ = train(config, progress=False)
    # the run records the model it resolved; the same config (model None: the init_from's) reuses it
    from spikebridge.pipeline import train_or_reuse
    _, last, _ = train_or_reuse(config, progress=False)
    assert last == tmp_path / "qcfs" / "last.pt"
    ckpt = load_checkpoint(tmp_path / "qcfs" / "last.pt")
    assert ckpt["model"] == relu_ckpt["model"] and set(ckpt["levels"].values()) == {8}
    thresholds = list(ckpt["thresholds"].values())
    assert all(0 < t < 8.0 for t in thresholds) and len(set(thresholds)) == 4


def test_cli_train_end_to_end_with_levels_file(tmp_path, capsys):
    names = ["features.2", "features.5", "features.9", "classifier.1"]
    levels_file = tmp_path / "levels.json"
    levels_file.write_text(json.dumps({"levels": dict(zip(names, [2, 4, 4, 8]))}))
    out = tmp_path / "run"
    code = main(["train", "--epochs", "1", "--batch-size", "64", "--limit-train", "128", "--limit-test", "64",
                 "--levels-file", str(levels_file), "--out", str(out), "--no-augment", "--no-progress", "--seed", "1"])
    assert code == 0
    assert "test accuracy" in capsys.readouterr().out
    ckpt = load_checkpoint(out / "last.pt")
    assert ckpt["levels"] == dict(zip(names, [2, 4, 4, 8])) and ckpt["args"]["seed"] == 1


def test_cli_train_float_model_with_model_options(tmp_path, capsys):
    out = tmp_path / "vit"
    code = main(["train", "--model", "vit_tiny", "--model-option", "activation=relu", "--model-option", "depth=1",
                 "--float", "--epochs", "1", "--batch-size", "32", "--limit-train", "32", "--limit-test", "32",
                 "--out", str(out), "--no-progress", "--no-augment"])
    assert code == 0 and "test accuracy" in capsys.readouterr().out
    ckpt = load_checkpoint(out / "last.pt")
    assert ckpt["levels"] is None
    assert ckpt["model"] == {"name": "vit_tiny", "num_classes": 10, "in_channels": 1, "activation": "relu", "depth": 1}
    assert len(load_ann(out / "last.pt").blocks) == 1


def test_cli_train_with_adamw_records_it_and_a_run_without_the_field_is_reused(tmp_path, capsys):
    from spikebridge.pipeline import train_or_reuse
    from spikebridge.train.checkpoint import save_checkpoint

    out = tmp_path / "vit"
    code = main(["train", "--model", "vit_tiny", "--relu", "--optimizer", "adamw", "--lr", "1e-3",
                 "--weight-decay", "0.05", "--epochs", "1", "--batch-size", "32", "--limit-train", "64",
                 "--limit-test", "32", "--out", str(out), "--no-progress", "--no-augment"])
    assert code == 0 and "test accuracy" in capsys.readouterr().out
    ckpt = load_checkpoint(out / "last.pt")
    assert ckpt["args"]["optimizer"] == "adamw" and ckpt["args"]["weight_decay"] == 0.05
    assert "exp_avg" in next(iter(ckpt["optimizer"]["state"].values()))  # AdamW's state, not SGD's
    # a run recorded before the option existed trained with SGD: it is reused by a config asking for SGD
    del ckpt["args"]["optimizer"]
    save_checkpoint(out / "last.pt", ckpt)
    config = TrainConfig(out=str(out), model="vit_tiny", levels=None, epochs=1, batch_size=32, limit_train=64,
                         limit_test=32, augment=False)
    _, last, _ = train_or_reuse(config, progress=False)
    assert last == out / "last.pt" and load_checkpoint(last)["epoch"] == 1
    with pytest.raises(SpikeBridgeError, match="optimizer must be one of sgd, adamw"):
        train(TrainConfig(out=str(tmp_path / "bad"), optimizer="adam", **TINY), progress=False)


@pytest.mark.parametrize("argv, message", [
    (["--model", "no_such_net"], "unknown model 'no_such_net'"),
    (["--levels", "0"], "--levels: expected an integer >= 1"),
    (["--relu", "--levels", "4"], "--relu"),
    (["--model-option", "relu"], "--model-option: expected KEY=VALUE"),
    (["--model", "vit_tiny", "--model-option", "width=2"], "model 'vit_tiny' has no option width"),
    (["--init-from", "x.pt", "--model-option", "depth=2"], "checkpoint x.pt does not exist"),
    (["--dataset", "svhn"], "unknown dataset"),
])
def test_cli_train_bad_input_is_one_line_exit_2(tmp_path, capsys, argv, message):
    code = main(["train", "--out", str(tmp_path / "x"), "--limit-train", "8", "--no-progress", *argv])
    err = capsys.readouterr().err
    assert code == 2
    assert message in err and err.count("\n") == 1 and err.startswith("spikebridge train: error:")


def test_demo_ann_is_trained_once_then_reused(tmp_path, capsys):
    from spikebridge.demo import train_demo_ann

    model, path, acc = train_demo_ann(tmp_path, epochs=1, train_images=128, progress=False)
    assert path == tmp_path / "last.pt" and 0 < acc <= 1
    stamp = path.stat().st_mtime_ns
    again, _, acc_again = train_demo_ann(tmp_path, epochs=1, train_images=128)
    assert "reusing" in capsys.readouterr().out
    assert acc_again == acc and path.stat().st_mtime_ns == stamp
    x = torch.randn(2, 1, 28, 28)
    assert torch.equal(again(x), model(x))
    with pytest.raises(SpikeBridgeError, match="--fresh"):
        train_demo_ann(tmp_path, epochs=1, train_images=64)
