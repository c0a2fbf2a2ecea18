"""Contract tests of the method registry, parametrised over every registered method: it
converts a small network, simulates it, survives save/load with identical outputs, follows
its time policy, validates its options, and is listed with its options in ``sb.methods()``
and ``spikebridge convert --help``."""
from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

import spikebridge as sb
from spikebridge import OptionError
from spikebridge.cli import build_parser
from spikebridge.conversion.registry import Source, methods

METHODS = sorted(methods())


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.AvgPool2d(2),
                         nn.Flatten(), nn.Linear(4 * 4 * 4, 8), nn.ReLU(), nn.Linear(8, 3)).eval()


CALIBRATION = [torch.rand(16, 1, 8, 8) for _ in range(2)]


def _convert(name: str, **kwargs):
    record = methods()[name]
    if record.source is Source.QCFS:
        model = sb.prepare(_net(), levels=7, threshold=1.0)
        return model, sb.convert(model, name, **kwargs)
    model = _net()
    return model, sb.convert(model, name, calibration_data=CALIBRATION, **kwargs)


@pytest.mark.parametrize("name", METHODS)
def test_converts_and_simulates(name):
    _, snn = _convert(name)
    x = torch.rand(5, 1, 8, 8)
    res = snn.simulate(x)
    assert snn.method == name and snn.coding is methods()[name].coding
    assert res.logits.shape[1:] == (5, 3) and torch.isfinite(res.logits).all()
    assert torch.equal(snn(x), res.logits[-1])
    assert set(res.spikes) == set(snn.neurons()) and len(snn.neurons()) == 2


@pytest.mark.parametrize("name", METHODS)
def test_save_load_round_trip_gives_identical_outputs(name, tmp_path):
    _, snn = _convert(name)
    sb.save(snn, tmp_path / "snn.sb")
    loaded = sb.load(tmp_path / "snn.sb")
    x = torch.rand(4, 1, 8, 8)
    assert loaded.method == snn.method and loaded.T == snn.T
    assert torch.equal(loaded.simulate(x).logits, snn.simulate(x).logits)


@pytest.mark.parametrize("name", METHODS)
def test_follows_its_time_policy(name):
    policy = methods()[name].time
    if not policy.accepts_T:
        with pytest.raises(OptionError, match="do not pass T"):
            _convert(name, T=2)
        _, snn = _convert(name)
        with pytest.raises(OptionError):
            snn.simulate(torch.rand(2, 1, 8, 8), T=2)
        return
    _, snn = _convert(name, T=2)
    assert snn.simulate(torch.rand(2, 1, 8, 8)).T == 2
    assert snn.simulate(torch.rand(2, 1, 8, 8), T=3).T == 3 and snn.T == 2  # T for one run only
    if policy.default_T is not None:
        assert _convert(name)[1].T == policy.default_T


@pytest.mark.parametrize("name", METHODS)
def test_options_are_typed_and_misspelt_ones_are_refused(name):
    record = methods()[name]
    fields = record.option_fields()
    with pytest.raises(OptionError, match=f"method '{name}' has no option 'no_such_option'"):
        _convert(name, no_such_option=1)
    for f in fields:
        assert f.metadata.get("help"), f"option {f.name} of {name} has no help text"
        _, default = _convert(name)
        _, explicit = _convert(name, **{f.name: f.default})
        x = torch.rand(3, 1, 8, 8)
        assert torch.equal(default(x), explicit(x)), f"{name}: passing the default of {f.name} changed the output"
        with pytest.raises(OptionError, match=f"option '{f.name}' of method '{name}' must be"):
            _convert(name, **{f.name: "not a valid value"})
    assert dataclasses.is_dataclass(record.options)


@pytest.mark.parametrize("name", METHODS)
def test_listed_with_its_options_in_methods_and_convert_help(name, capsys):
    record = methods()[name]
    assert sb.methods()[name] is record
    table = str(sb.methods())
    assert name in table and record.summary in table
    with pytest.raises(SystemExit):
        build_parser().parse_args(["convert", "--help"])
    help_text = capsys.readouterr().out
    assert name in help_text and record.summary in " ".join(help_text.split())
    for f in record.option_fields():
        flag = "--" + f.name.replace("_", "-")
        assert flag in help_text and f"{f.name}={f.default!r}" in table


def test_cli_option_flags_reach_the_method_and_foreign_ones_are_refused():
    from spikebridge.cli.common import method_options

    parser = build_parser()
    args = parser.parse_args(["convert", "ckpt", "--method", "percentile", "--percentile", "99.0", "--channel-wise",
                              "-o", "out"])
    assert method_options(args) == {"percentile": 99.0, "channel_wise": True}
    args = parser.parse_args(["convert", "ckpt", "--method", "pasc", "--percentile", "99.0", "-o", "out"])
    with pytest.raises(OptionError, match="--percentile does not apply to method 'pasc'"):
        method_options(args)
    args = parser.parse_args(["convert", "ckpt", "--method", "max-norm", "-o", "out"])
    assert method_options(args) == {}
