"""`train --bit-l1`: the bit regulariser of METHODS §3 in the training loop, on tiny subsets of
the real Fashion-MNIST."""
import pytest
import torch

from spikebridge import sites
from spikebridge.train.checkpoint import load_ann, load_checkpoint
from spikebridge.cli import main
from spikebridge.ann.regularizer import bit_count
from spikebridge.train.loop import TrainConfig, train


TINY = dict(model="small_cnn", model_kwargs={"width": 8}, batch_size=32, limit_train=256, limit_test=128,
            augment=False, levels=15, threshold=2.0)
CLI_TINY = ["--limit-train", "128", "--limit-test", "64", "--batch-size", "32", "--no-augment", "--no-progress"]


pytestmark = pytest.mark.usefixtures("one_thread")


def ones_per_image(model, n=128) -> float:
    """Mean number of 1-bits over all hidden QCFS levels per test image."""
    from spikebridge.data import calibration_subset, get_dataset, make_loader

    found = sites(model)
    total = []
    hooks = [m.register_forward_hook(lambda m, i, out: total.append(bit_count(out, m.theta(out.dim()), m.levels).sum()))
             for m in found.values()]
    with torch.no_grad():
        for x, _ in make_loader(calibration_subset(get_dataset("fashion-mnist", "test"), n), 64):
            model(x)
    for h in hooks:
        h.remove()
    return float(sum(total)) / n


def test_cli_records_lambda_and_normalisation(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), "--epochs", "1", "--bit-l1", "0.5", "--bit-l1-normalize", "mean",
                 *CLI_TINY]) == 0
    args = load_checkpoint(out / "last.pt")["args"]
    assert args["bit_l1"] == 0.5 and args["bit_l1_normalize"] == "mean"
    assert main(["train", "--out", str(tmp_path / "x"), "--bit-l1", "-1", *CLI_TINY]) == 2
    assert "--bit-l1: expected a finite number >= 0" in capsys.readouterr().err
    assert main(["train", "--out", str(tmp_path / "y"), "--relu", "--bit-l1", "1e-8", *CLI_TINY]) == 2
    assert "needs a QCFS ANN" in capsys.readouterr().err


def test_larger_lambda_gives_fewer_ones_on_the_same_data(tmp_path):
    plain, _ = train(TrainConfig(out=str(tmp_path / "plain"), epochs=2, **TINY), progress=False)
    sparse, history = train(TrainConfig(out=str(tmp_path / "sparse"), epochs=2, bit_l1=0.5, bit_l1_normalize="mean",
                                        **TINY), progress=False)
    assert not sites(sparse)["features.2"]._forward_hooks  # the regulariser's hooks are gone
    assert ones_per_image(sparse) < 0.7 * ones_per_image(plain)
    assert history[-1]["test_acc"] > 0.2  # still learns (chance is 0.1)
    rebuilt = load_ann(tmp_path / "sparse" / "last.pt")
    assert ones_per_image(rebuilt) == ones_per_image(sparse)


def test_resume_keeps_the_recorded_lambda(tmp_path):
    config = dict(epochs=2, bit_l1=0.5, bit_l1_normalize="mean", **TINY)
    reference, _ = train(TrainConfig(out=str(tmp_path / "a"), **config), progress=False)
    calls = []

    def killed_in_epoch_two(model):
        calls.append(1)
        if len(calls) == 8 + 3:  # 256 / 32 = 8 steps per epoch
            raise KeyboardInterrupt
        return torch.zeros(())

    with pytest.raises(KeyboardInterrupt):
        train(TrainConfig(out=str(tmp_path / "b"), extra_loss=killed_in_epoch_two, **config), progress=False)
    resumed, _ = train(TrainConfig(out=str(tmp_path / "b"), resume=True), progress=False)  # λ not passed again
    assert load_checkpoint(tmp_path / "b" / "last.pt")["args"]["bit_l1"] == 0.5
    for key, value in reference.state_dict().items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(value, resumed.state_dict()[key]), key
