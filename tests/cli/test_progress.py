"""Progress reaches a log: when stdout is not a terminal, long loops print plain lines
(spikebridge.progress); the demo says what it does before each phase."""
import argparse
import json

import pytest

from spikebridge import progress
from spikebridge.progress import LogProgress


def test_log_lines_count_items_and_end_with_done(capsys):
    bar = LogProgress(range(4), "simulate qcfs", every=0)
    seen = []
    for i in bar:
        seen.append(i)
        bar.set_postfix(loss="0.5")
    assert seen == [0, 1, 2, 3]
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(",")[0] for line in lines] == [
        "simulate qcfs: 1/4 batches (25%)", "simulate qcfs: 2/4 batches (50%)", "simulate qcfs: 3/4 batches (75%)",
        "simulate qcfs: 4/4 batches (100%)"]
    assert "left" in lines[0] and lines[-1].endswith("done  loss=0.5")


def test_no_line_before_the_interval_has_passed(capsys):
    assert list(LogProgress(range(3), "FTBC", every=3600)) == [0, 1, 2]
    assert capsys.readouterr().out == ""                 # short loops stay quiet


def test_progress_picks_log_lines_off_a_terminal_and_nothing_when_disabled(capsys, monkeypatch):
    monkeypatch.setenv(progress.ENV_SECONDS, "0")
    bar = progress.progress([1], "x")
    assert isinstance(bar, LogProgress) and list(bar) == [1]       # pytest's stdout is not a terminal
    assert list(progress.progress([1, 2], "x", enabled=False)) == [1, 2]
    assert capsys.readouterr().out == "x: 1/1 batches (100%), 0:00 elapsed, done\n"
    monkeypatch.setenv(progress.ENV_SECONDS, "not a number")
    assert progress.interval() == progress.DEFAULT_SECONDS


def test_training_progress_reaches_a_log(tmp_path, capsys, monkeypatch):
    from spikebridge.train.loop import TrainConfig, train

    monkeypatch.setenv(progress.ENV_SECONDS, "0")
    train(TrainConfig(model="small_cnn", model_kwargs={"width": 4}, levels=4, epochs=1, limit_train=256,
                      limit_test=64, augment=False, out=str(tmp_path), batch_size=128))
    out = capsys.readouterr().out
    assert "epoch 1/1: 1/2 batches (50%)" in out and "loss=" in out   # per batch, with the running loss
    assert "test: 1/1 batches (100%)" in out
    assert out.strip().splitlines()[-1].startswith("epoch 1/1  loss")


@pytest.mark.filterwarnings("ignore:.*positive activations than kept")
def test_demo_says_what_it_does_before_each_phase(tmp_path, capsys, monkeypatch):
    from spikebridge import demo

    monkeypatch.setattr(demo, "DEMO_CALIBRATION_IMAGES", 128)
    monkeypatch.setattr(demo, "DEMO_TS", (1, 2))
    monkeypatch.setattr(demo, "DEMO_RELU_TS", (2,))
    monkeypatch.setattr(demo, "DEMO_WIDTH", 4)
    args = argparse.Namespace(out=str(tmp_path), epochs=1, train_images=128, data_root=None, snn_images=100,
                              fresh=False, device="cpu")
    assert demo.run_demo(args) == 0
    out = capsys.readouterr().out
    phases = [line for line in out.splitlines() if line[:1] == "[" and "/4]" in line[:6]]
    assert [p[:5] for p in phases] == ["[1/4]", "[2/4]", "[3/4]", "[4/4]"]
    for method in ("qcfs", "pasc", "bitplane", "qcfs + FTBC", "max-norm", "data-driven", "data-driven + FTBC",
                   "network-level", "network-level + FTBC"):
        assert f"  {method} (" in out                                       # each method as it is simulated
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert set(report["anns"]) == {"QCFS ANN", "ReLU ANN"} and report["images"] == 100
    assert all(a["images"] == 100 for a in report["anns"].values())
    assert {m: v["exact"] for m, v in report["methods"].items() if v["exact"]} == {"pasc": True, "bitplane": True}
    assert set(report["activations"]) == {"QCFS ANN", "ReLU ANN"}
    assert all(v["legend_over_data"] is False for v in report["figures"].values())
