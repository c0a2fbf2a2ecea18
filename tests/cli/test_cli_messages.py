"""What the command line tells a person: help texts with defaults, warnings as one plain line,
notes where an option does not apply, a short summary after a report."""
import argparse

import pytest

from spikebridge.cli import build_parser, main, warning_line
from spikebridge.train.loop import TrainConfig, train


def _commands():
    """(name, parser) of every subcommand, nested ones (calibrate ftbc) included."""
    parser = build_parser()
    todo = [("", parser)]
    while todo:
        name, p = todo.pop()
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                todo += [(f"{name} {sub}".strip(), sp) for sub, sp in action.choices.items()]
        if name:
            yield name, p


def test_every_argument_has_help_and_every_default_is_shown():
    seen = 0
    for name, parser in _commands():
        for action in parser._actions:
            if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
                continue
            seen += 1
            label = f"spikebridge {name} {'/'.join(action.option_strings) or action.dest}"
            assert action.help, f"{label} has no help text"
            if action.default not in (None, False, argparse.SUPPRESS):
                assert "default" in action.help, f"{label}: its default {action.default!r} is not in its help"
    assert seen > 100


@pytest.mark.parametrize("command,option,default", [
    (["evaluate"], "--T", "1,2,4,8,16,32,64"), (["finetune"], "--T", "1,2,4"), (["finetune"], "--epochs", "5,2,2"),
    (["finetune"], "--lr", "0.001"), (["train"], "--epochs", "3"), (["report"], "--T", "1,2,4,8,16"),
    (["verify"], "--method", "pasc"), (["calibrate", "ftbc"], "--alpha", "0.5")])
def test_help_shows_defaults(capsys, command, option, default):
    assert main(command + ["-h"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    entry = text[text.index(f" {option} "):]
    assert f"default: {default}" in entry[:400], entry[:400]


def test_verify_help_documents_its_arguments(capsys):
    assert main(["verify", "-h"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "CKPT an ANN checkpoint written by 'spikebridge train'" in text
    assert "prediction" in text and "level" in text and "--float64" in text and "--limit N" in text


def test_warning_line_is_one_plain_line():
    line = warning_line("convert", "3 site(s) had more positive\nactivations than kept")
    assert line == "spikebridge convert: warning: 3 site(s) had more positive activations than kept"


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ckpt")
    for levels, out in ((4, "qcfs"), (None, "relu")):
        train(TrainConfig(model="small_cnn", model_kwargs={"width": 4}, levels=levels, epochs=1, limit_train=128,
                          limit_test=64, augment=False, out=str(folder / out)), progress=False)
    return folder


def test_cli_warning_is_one_line_without_file_or_source(checkpoints, capsys):
    # a small --max-samples (the option the warning names) makes the data-driven thresholds subsample
    assert main(["convert", str(checkpoints / "relu" / "last.pt"), "--method", "data-driven", "--max-samples", "1000",
                 "--calibration-images", "64", "-o", str(checkpoints / "dd.pt")]) == 0
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("spikebridge convert: warning: ") and "max_samples" in lines[0]
    assert ".py" not in err and "warnings.warn" not in err and "UserWarning" not in err


def test_evaluate_says_that_T_does_not_apply_to_pasc(checkpoints, capsys):
    snn = str(checkpoints / "pasc.pt")
    assert main(["convert", str(checkpoints / "qcfs" / "last.pt"), "--method", "pasc", "-o", snn]) == 0
    capsys.readouterr()
    assert main(["evaluate", snn, "--T", "1,2,4", "--limit", "50"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("note: --T 1,2,4 does not apply to pasc") and "T_eff" in out[0]
    assert out[2].split() == ["T_eff", "accuracy"] and len(out) == 4   # one row
    assert main(["evaluate", snn, "--limit", "50"]) == 0
    assert "note:" not in capsys.readouterr().out                      # no --T given, nothing to say


def test_report_prints_a_short_summary(checkpoints, capsys, tmp_path):
    assert main(["report", str(checkpoints / "qcfs" / "last.pt"), "--methods", "qcfs,bitplane", "--T", "1,2",
                 "--limit", "40", "-o", str(tmp_path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[1].split()[:3] == ["method", "from", "steps"] and "E_ANN/E_SNN" in out[1]
    rows = {line.split()[0]: line.split() for line in out[2:4]}
    assert rows["qcfs"][1:4] == ["QCFS", "ANN", "2"]                   # the T its energy is for: max(--T)
    assert rows["bitplane"][1:5] == ["(exact)", "QCFS", "ANN", "3"]    # its own T = ceil(log2(4 + 1)), not in --T
    assert out[-1].startswith("report written to")


def test_convert_recommends_ftbc_after_a_rate_coded_conversion_only(checkpoints, capsys):
    """FTBC calibrates every rate-coded SNN (docs/methods.md §5): convert names the command
    that runs it on the file just written; an exact (sum-coded) SNN has nothing to correct."""
    snn = str(checkpoints / "qcfs_rate.pt")
    assert main(["convert", str(checkpoints / "qcfs" / "last.pt"), "--method", "qcfs", "--T", "2", "-o", snn]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-1] == (f"recommended next: spikebridge calibrate ftbc {snn} --ckpt {checkpoints / 'qcfs' / 'last.pt'} "
                       "-o OUT (FTBC, docs/methods.md §5)")
    pasc = str(checkpoints / "p.pt")
    assert main(["convert", str(checkpoints / "qcfs" / "last.pt"), "--method", "pasc", "-o", pasc]) == 0
    assert "recommended next" not in capsys.readouterr().out
