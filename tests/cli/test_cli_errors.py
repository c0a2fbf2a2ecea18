"""The bad-input table of the command line (issue #15): each subcommand × a missing file, a
file of the wrong type, a wrong dataset and bad numbers ends with exit code 2 and one line on
stderr, before any training or data loading where the input can be checked first."""
from __future__ import annotations

import pickle
import re

import numpy as np
import pytest
import torch

from spikebridge import models
from spikebridge.ann.prepare import prepare, sites
from spikebridge.cli import main
from spikebridge.train.checkpoint import FORMAT, VERSION, save_checkpoint, thresholds_of


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A tiny QCFS checkpoint, its PASC and rate-coded SNN files, a text file, an empty
    directory, and a CIFAR-10 root (3-channel images) for the wrong-dataset cases."""
    d = tmp_path_factory.mktemp("cli")
    torch.manual_seed(0)
    relu = models.create("small_cnn", in_channels=1, width=4)
    model = prepare(relu, levels=4)
    save_checkpoint(d / "ann.pt", {
        "format": FORMAT, "version": VERSION, "model": relu.spikebridge_spec, "dataset": "fashion-mnist",
        "levels": {n: 4 for n in sites(model)}, "thresholds": thresholds_of(model), "state_dict": model.state_dict(),
        "optimizer": {}, "scheduler": {}, "epoch": 1, "args": {"seed": 0}, "metrics": [{"epoch": 1, "test_acc": 0.5}]})
    assert main(["convert", str(d / "ann.pt"), "--method", "pasc", "-o", str(d / "pasc.snn")]) == 0
    assert main(["convert", str(d / "ann.pt"), "--method", "qcfs", "--T", "2", "-o", str(d / "rate.snn")]) == 0
    (d / "notes.txt").write_text("not a checkpoint\n")
    (d / "empty").mkdir()
    folder = d / "cifar" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        with open(folder / name, "wb") as f:
            pickle.dump({"data": np.zeros((4, 3072), np.uint8), "labels": [0, 1, 2, 3]}, f)
    return d


# (subcommand arguments; {d} is the fixture's directory), grouped by what is wrong
CASES = {
    # missing files
    "train --levels-file missing": "train --levels-file {d}/missing.json --out {d}/run --epochs 1",
    "al missing": "al {d}/missing.pt --levels 1,2",
    "convert missing": "convert {d}/missing.pt --method pasc -o {d}/x.snn",
    "calibrate missing": "calibrate ftbc {d}/missing.snn --ckpt {d}/ann.pt -o {d}/x.snn",
    "finetune missing": "finetune {d}/missing.snn -o {d}/x.snn",
    "evaluate missing": "evaluate {d}/missing.snn",
    "verify missing": "verify {d}/missing.pt",
    "report missing": "report {d}/missing.pt -o {d}/report",
    "export missing": "export {d}/missing.snn --nir {d}/x.nir",
    # files of the wrong type
    "al text file": "al {d}/notes.txt --levels 1,2",
    "convert text file": "convert {d}/notes.txt --method pasc -o {d}/x.snn",
    "convert an SNN file": "convert {d}/pasc.snn --method pasc -o {d}/x.snn",
    "calibrate an ANN checkpoint": "calibrate ftbc {d}/ann.pt --ckpt {d}/ann.pt -o {d}/x.snn",
    "calibrate a PASC SNN": "calibrate ftbc {d}/pasc.snn --ckpt {d}/ann.pt -o {d}/x.snn --batches 1",
    "finetune text file": "finetune {d}/notes.txt -o {d}/x.snn",
    "evaluate text file": "evaluate {d}/notes.txt",
    "evaluate a checkpoint without --method": "evaluate {d}/ann.pt",
    "verify text file": "verify {d}/notes.txt",
    "verify a directory": "verify {d}/empty",
    "report text file": "report {d}/notes.txt -o {d}/report",
    "export text file": "export {d}/notes.txt --nir {d}/x.nir",
    "export a PASC SNN": "export {d}/pasc.snn --nir {d}/x.nir",
    # wrong datasets
    "demo missing data root": "demo --out {d}/demo --data-root {d}/nowhere",
    "train missing data root": "train --data-root {d}/nowhere --out {d}/run --epochs 1",
    "train empty data root": "train --data-root {d}/empty --out {d}/run --epochs 1",
    "train unknown dataset": "train --dataset nosuch --out {d}/run --epochs 1",
    "evaluate unknown dataset": "evaluate {d}/pasc.snn --dataset nosuch",
    "evaluate a 3-channel dataset": "evaluate {d}/pasc.snn --dataset cifar10 --data-root {d}/cifar",
    "verify a 3-channel dataset": "verify {d}/ann.pt --dataset cifar10 --data-root {d}/cifar",
    "verify empty data root": "verify {d}/ann.pt --data-root {d}/empty",
    "finetune empty data root": "finetune {d}/rate.snn --data-root {d}/empty -o {d}/x.snn",
    "calibrate empty data root": "calibrate ftbc {d}/rate.snn --ckpt {d}/ann.pt --data-root {d}/empty -o {d}/x.snn",
    "report unknown dataset": "report {d}/ann.pt --dataset nosuch -o {d}/report --methods pasc",
    # bad numbers
    "demo epochs 0": "demo --epochs 0",
    "demo snn-images -1": "demo --snn-images -1",
    "train epochs 0": "train --epochs 0",
    "train lr nan": "train --lr nan",
    "train threshold 0": "train --threshold 0",
    "train momentum -1": "train --momentum -1",
    "train levels 0": "train --levels 0",
    "al levels 0": "al {d}/ann.pt --levels 0,2",
    "al images 0": "al {d}/ann.pt --levels 1,2 --images 0",
    "convert T 0": "convert {d}/ann.pt --method qcfs --T 0 -o {d}/x.snn",
    "convert T for PASC": "convert {d}/ann.pt --method pasc --T 4 -o {d}/x.snn",
    "convert unknown method": "convert {d}/ann.pt --method nosuch -o {d}/x.snn",
    "convert calibration-images 0": "convert {d}/ann.pt --method max-norm --calibration-images 0 -o {d}/x.snn",
    "calibrate batches 0": "calibrate ftbc {d}/rate.snn --ckpt {d}/ann.pt --batches 0 -o {d}/x.snn",
    "calibrate alpha -1": "calibrate ftbc {d}/rate.snn --ckpt {d}/ann.pt --alpha -1 -o {d}/x.snn",
    "finetune T 0": "finetune {d}/rate.snn --T 0,1 -o {d}/x.snn",
    "finetune epochs x": "finetune {d}/rate.snn --epochs x -o {d}/x.snn",
    "finetune limit 0": "finetune {d}/rate.snn --limit 0 -o {d}/x.snn",
    "evaluate limit 0": "evaluate {d}/pasc.snn --limit 0",
    "evaluate T a": "evaluate {d}/rate.snn --T a",
    "evaluate batch-size 0": "evaluate {d}/pasc.snn --batch-size 0",
    "verify limit -3": "verify {d}/ann.pt --limit -3",
    "report T 0": "report {d}/ann.pt --T 0 -o {d}/report",
    "report limit 0": "report {d}/ann.pt --limit 0 -o {d}/report",
    "report unknown method": "report {d}/ann.pt --methods pasc,nosuch -o {d}/report",
    "export input-shape 0": "export {d}/rate.snn --nir {d}/x.nir --input-shape 0,28",
}


def test_every_subcommand_has_cases():
    from spikebridge.cli import COMMANDS

    assert {c.split()[0] for c in CASES.values()} == set(COMMANDS)


MESSAGES = {  # what some of them say
    "evaluate a 3-channel dataset": "the network takes \\[B, 1, H, W\\] float32 batches",
    "verify a directory": "is a directory; pass a checkpoint file",
    "train empty data root": "data not found under --data-root",
    "evaluate limit 0": "--limit: expected an integer >= 1, got '0'",
}


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_bad_input_exits_2_with_one_line_on_stderr(files, case, capsys):
    argv = CASES[case].format(d=files).split()
    assert main(argv) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("spikebridge"), err
    assert "Traceback" not in err
    if case in MESSAGES:
        assert re.search(MESSAGES[case], err), err
