"""Checkpoints: atomic writes, clean errors for bad files, rebuilding the model."""
import pickle

import pytest
import torch
from torch import nn

from spikebridge import models, prepare, sites
from spikebridge.train.checkpoint import (
    FORMAT, VERSION, load_ann, load_checkpoint, model_from_checkpoint, save_checkpoint, thresholds_of,
)
from spikebridge.errors import CheckpointError


def payload_for(model, levels):
    return {
        "format": FORMAT, "version": VERSION, "model": model.spikebridge_spec, "dataset": "fashion-mnist",
        "levels": levels, "thresholds": thresholds_of(model) if levels else {}, "state_dict": model.state_dict(),
        "optimizer": {}, "scheduler": {}, "epoch": 1, "args": {"seed": 0}, "metrics": [{"epoch": 1, "test_acc": 0.5}],
    }


def qcfs_model(levels):
    torch.manual_seed(0)
    model = prepare(models.create("small_cnn", in_channels=1, width=4), levels=levels)
    model.spikebridge_spec = {"name": "small_cnn", "num_classes": 10, "in_channels": 1, "width": 4}
    for i, m in enumerate(sites(model).values()):
        m.threshold.data.fill_(1.5 + i)
    return model


def test_round_trip_rebuilds_qcfs_model_with_per_site_levels(tmp_path):
    names = list(sites(qcfs_model(8)))
    levels = {name: L for name, L in zip(names, [3, 7, 15, 2])}
    model = qcfs_model(levels).eval()
    path = tmp_path / "ann.pt"
    save_checkpoint(path, payload_for(model, levels))
    ckpt = load_checkpoint(path)
    assert ckpt["epoch"] == 1 and ckpt["levels"] == levels
    assert ckpt["thresholds"][names[1]] == pytest.approx(2.5)
    rebuilt = load_ann(path)
    assert not rebuilt.training
    assert {n: m.levels for n, m in sites(rebuilt).items()} == levels
    assert rebuilt.spikebridge_spec["width"] == 4
    x = torch.randn(5, 1, 28, 28)
    assert torch.equal(rebuilt(x), model(x))


def test_round_trip_relu_model(tmp_path):
    torch.manual_seed(0)
    model = models.create("small_cnn", in_channels=1, width=4).eval()
    save_checkpoint(tmp_path / "relu.pt", payload_for(model, None))
    rebuilt = model_from_checkpoint(tmp_path / "relu.pt")
    assert not sites(rebuilt)
    x = torch.randn(3, 1, 28, 28)
    assert torch.equal(rebuilt(x), model(x))


def test_crash_during_write_keeps_old_file(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    model = qcfs_model(8)
    save_checkpoint(path, payload_for(model, {n: 8 for n in sites(model)}))
    before = path.read_bytes()

    def dying_save(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", dying_save)
    with pytest.raises(OSError):
        save_checkpoint(path, {"format": FORMAT, "epoch": 2})
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert load_checkpoint(path)["epoch"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]


def test_interrupt_before_rename_leaves_no_file_under_final_name(tmp_path, monkeypatch):
    import os

    path = tmp_path / "new.pt"

    def killed(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, {"format": FORMAT})
    assert list(tmp_path.iterdir()) == []


def one_line_error(path):
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    return message


def test_missing_file(tmp_path):
    assert "does not exist" in one_line_error(tmp_path / "nope.pt")


def test_garbage_and_truncated_files(tmp_path):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x00\x01 this is not a checkpoint" * 10)
    one_line_error(garbage)
    good = tmp_path / "good.pt"
    save_checkpoint(good, payload_for(qcfs_model(4), {n: 4 for n in sites(qcfs_model(4))}))
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[:2000])
    one_line_error(truncated)


def test_foreign_files(tmp_path):
    plain = tmp_path / "plain.pt"
    torch.save({"state_dict": {"w": torch.zeros(2)}}, plain)
    assert "not a spikebridge ANN checkpoint" in one_line_error(plain)
    module = tmp_path / "module.pt"
    torch.save(nn.Linear(2, 2), module)  # a pickled object: refused, never unpickled
    one_line_error(module)
    raw_pickle = tmp_path / "raw.pkl"
    raw_pickle.write_bytes(pickle.dumps({"format": FORMAT}))
    one_line_error(raw_pickle)
    future = tmp_path / "future.pt"
    torch.save({"format": FORMAT, "version": 99}, future)
    assert "version" in one_line_error(future)


def test_weights_that_do_not_fit(tmp_path):
    model = qcfs_model(8)
    payload = payload_for(model, {n: 8 for n in sites(model)})
    payload["model"] = dict(payload["model"], width=8)
    save_checkpoint(tmp_path / "bad.pt", payload)
    with pytest.raises(CheckpointError, match="this checkpoint is for a different model than 'small_cnn'"):
        load_ann(tmp_path / "bad.pt")


def test_a_checkpoint_relabelled_as_another_model_says_so(tmp_path):
    model = qcfs_model(8)
    payload = payload_for(model, {n: 8 for n in sites(model)})
    spec = {k: v for k, v in payload["model"].items() if k != "width"}  # models that have no width option
    for other in ("vgg16", "resnet20", "mobilenetv2"):
        payload["model"] = dict(spec, name=other)
        save_checkpoint(tmp_path / "relabelled.pt", payload)
        with pytest.raises(CheckpointError, match=f"different model than '{other}'") as err:
            load_ann(tmp_path / "relabelled.pt")
        assert "unknown site" not in str(err.value) and "\n" not in str(err.value)
    payload["model"] = dict(payload["model"], name="vgg16", width=4)  # an option the model has not
    save_checkpoint(tmp_path / "relabelled.pt", payload)
    with pytest.raises(CheckpointError, match="different model or by another spikebridge version"):
        load_ann(tmp_path / "relabelled.pt")


@pytest.mark.parametrize("content, reason", [
    (b"", "the file is empty"),
    (b"hello, not a checkpoint\n", "not a zip archive"),
])
def test_unreadable_checkpoint_messages_name_no_torch_internals(tmp_path, content, reason):
    path = tmp_path / "x.pt"
    path.write_bytes(content)
    message = one_line_error(path)
    assert reason in message and "spikebridge train" in message


def test_unreadable_checkpoint_messages_for_pickles_and_truncation(tmp_path):
    torch.save(nn.Linear(2, 2), tmp_path / "module.pt")
    truncated = tmp_path / "truncated.pt"
    save_checkpoint(truncated, payload_for(qcfs_model(8), {n: 8 for n in sites(qcfs_model(8))}))
    truncated.write_bytes(truncated.read_bytes()[:-300])
    for path in (tmp_path / "module.pt", truncated):
        message = one_line_error(path)
        for leak in ("weights_only", "Memo value", "(101)", "Unpickler", "GLOBAL"):
            assert leak not in message, message


def test_orphan_temporary_files_of_interrupted_writes_are_removed_by_the_next_write(tmp_path):
    orphan = tmp_path / ".last.pt.abc123.tmp"
    orphan.write_bytes(b"partial")
    other = tmp_path / ".other.pt.abc123.tmp"  # another file's: kept
    other.write_bytes(b"partial")
    save_checkpoint(tmp_path / "last.pt", {"format": FORMAT, "version": 1})
    assert not orphan.exists() and other.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.pt.abc123.tmp", "last.pt"]
