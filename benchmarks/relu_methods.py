"""Issue 4 benchmark: converting ReLU (and QCFS) networks at low T on Fashion-MNIST.

Full test set, accuracy at T = 1, 2, 4, 8, 16, 32, 64 for a ReLU small CNN: max-norm, 99.9
percentile, data-driven layer-wise and channel-wise, each with and without FTBC, data-driven
fine-tuned at T = 1, 2, 4 (latency-increasing); for a QCFS small CNN (L = 8): qcfs with and
without FTBC; and SpikingJelly 2.0's ann2snn converter on the same ReLU model ("max",
"99.9%", and its strongest setting: 99.9% channel-wise with half thresholds). The script
installs SpikingJelly for itself (it is not a spikebridge dependency).

    python benchmarks/relu_methods.py --relu-epochs 2 --epochs 1

Split over processes with --groups and --name, then join their tables (rows in the order given):

    python benchmarks/relu_methods.py --merge part1,part2,part3 --name relu_methods
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import RESULTS, machine, qcfs_model, relu_model, save, spikingjelly, test_loader  # noqa: E402

import spikebridge as sb  # noqa: E402
from spikebridge import data  # noqa: E402
from spikebridge.analysis.evaluation import evaluate_snn  # noqa: E402

TS = [1, 2, 4, 8, 16, 32, 64]
GROUPS = ("thresholds", "data-driven", "finetune", "qcfs", "spikingjelly")


@torch.no_grad()
def spikingjelly_accuracy(relu: torch.nn.Module, calib, test, **recipe) -> dict[int, float]:
    """SpikingJelly's rate-coding converter; accuracy after each step of one T = max run."""
    ann2snn, functional = spikingjelly()
    converter = ann2snn.FXConverter(recipe=ann2snn.recipes.RateCodingRecipe(calib, **recipe))
    snn = converter.convert(copy.deepcopy(relu)).eval()
    correct, images = torch.zeros(max(TS)), 0
    for x, y in test:
        functional.reset_net(snn)
        out = 0
        for t in range(max(TS)):
            out = out + snn(x)
            correct[t] += (out.argmax(1) == y).sum()
        images += y.numel()
    return {T: float(correct[T - 1]) / images for T in TS}


def anytime(snn, test, ann) -> dict[int, float]:
    return evaluate_snn(snn, test, TS, progress=False, reference=ann).accuracy


def per_T(make, test, ann) -> dict[int, float]:
    """Methods whose SNN depends on T: convert (and calibrate) once per T."""
    return {T: evaluate_snn(make(T), test, [T], progress=False, reference=ann).accuracy[T] for T in TS}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--relu-epochs", type=int, default=2, help="epochs of the ReLU model")
    p.add_argument("--epochs", type=int, default=1, help="QCFS fine-tuning epochs (L = 8)")
    p.add_argument("--runs", default="runs/bench")
    p.add_argument("--limit", type=int, default=None, help="test images (default: all 10 000)")
    p.add_argument("--calibration-images", type=int, default=2048)
    p.add_argument("--finetune-images", type=int, default=10_000)
    p.add_argument("--groups", default=",".join(GROUPS),
                   help=f"which rows to run (comma-separated from {', '.join(GROUPS)}; data-driven-layer or "
                        "data-driven-channel for half of data-driven), e.g. to split the work over processes")
    p.add_argument("--name", default="relu_methods", help="results file name under benchmarks/results")
    p.add_argument("--merge", help="comma-separated result names of a split run: join them into --name, run nothing")
    args = p.parse_args()
    if args.merge:
        merged = merge([json.loads((RESULTS / f"{n}.json").read_text()) for n in args.merge.split(",")])
        print(f"results: {save(args.name, merged)}")
        print(markdown(merged))
        return
    torch.manual_seed(0)
    test = test_loader(limit=args.limit)
    train_set = data.get_dataset("fashion-mnist", "train")
    calib = data.make_loader(data.calibration_subset(train_set, args.calibration_images), 256)
    ftbc_data = [b for b, _ in zip(data.make_loader(train_set, 128, shuffle=True, seed=1), range(4))]
    relu, relu_ckpt = relu_model(args.runs, args.relu_epochs)
    qann, q_ckpt = qcfs_model(args.runs, 8, args.epochs, args.relu_epochs)
    rows: dict[str, dict[int, float]] = {}
    groups = set(args.groups.split(","))
    results = {"machine": machine(), "command": " ".join(sys.argv),
               "relu_ann_accuracy": relu_ckpt["metrics"][-1]["test_acc"],
               "qcfs_ann_accuracy": q_ckpt["metrics"][-1]["test_acc"], "accuracy": rows}

    def report(name, accuracy):
        rows[name] = accuracy
        print(f"{name}: " + ", ".join(f"T={T} {100 * a:.2f}" for T, a in accuracy.items()), flush=True)
        save(args.name, results)  # after every row: an interrupted run keeps what it measured

    def with_ftbc(snn, ann):
        sb.ftbc(snn, ann=ann, data=ftbc_data, alpha=0.5, batches=4, progress=False)
        return snn

    for name, rule in [("max-norm", "max-norm"), ("percentile 99.9", "percentile")]:
        if "thresholds" not in groups:
            break
        report(name, anytime(sb.convert(relu, rule, T=max(TS), calibration_data=calib), test, relu))
        report(name + " + FTBC", anytime(with_ftbc(sb.convert(relu, rule, T=max(TS), calibration_data=calib), relu),
                                         test, relu))
    for cw in (False, True):
        if not groups & {"data-driven", "data-driven-" + ("channel" if cw else "layer")}:
            continue
        name = "data-driven " + ("channel-wise" if cw else "layer-wise")
        convert = lambda T: sb.convert(relu, "data-driven", T=T, calibration_data=calib, channel_wise=cw)  # noqa: E731
        report(name, per_T(convert, test, relu))
        report(name + " + FTBC", per_T(lambda T: with_ftbc(convert(T), relu), test, relu))
    if "finetune" in groups:
        tuned = sb.convert(relu, "data-driven", T=1, calibration_data=calib)
        ft_loader = data.make_loader(data.calibration_subset(
            data.get_dataset("fashion-mnist", "train", augment=True), args.finetune_images), 128, shuffle=True)
        fine = {}
        for T in (1, 2, 4):
            sb.finetune(tuned, ft_loader, T_schedule=(T,), epochs=(1,), lr=5e-3, progress=False)
            fine[T] = evaluate_snn(tuned, test, [T], progress=False).accuracy[T]
        report("data-driven fine-tuned (1 epoch per T)", fine)
    if "qcfs" in groups:
        report("qcfs (QCFS ANN, L=8)", anytime(sb.convert(qann, "qcfs", T=max(TS)), test, qann))
        report("qcfs + FTBC (QCFS ANN, L=8)", anytime(with_ftbc(sb.convert(qann, "qcfs", T=max(TS)), qann), test, qann))
    if "spikingjelly" in groups:
        sj_calib = data.make_loader(data.calibration_subset(train_set, args.calibration_images), 256)
        report("SpikingJelly max", spikingjelly_accuracy(relu, sj_calib, test, mode="max"))
        report("SpikingJelly 99.9%", spikingjelly_accuracy(relu, sj_calib, test, mode="99.9%"))
        report("SpikingJelly 99.9% channel-wise, half threshold",
               spikingjelly_accuracy(relu, sj_calib, test, mode="99.9%", channel_wise=True, half_threshold=True))
    print(f"results: {save(args.name, results)}")
    print(markdown(results))


def merge(parts: list[dict]) -> dict:
    """One table from the results of a split run: every part used the same ReLU model and
    machine; the QCFS model's accuracy is taken from the parts that hold QCFS rows."""
    def same(key, group):
        if len({str(part[key]) for part in group}) != 1:
            raise SystemExit(f"the parts differ in {key}: they are not one run")
        return group[0][key]

    with_qcfs = [part for part in parts if any(name.startswith("qcfs") for name in part["accuracy"])] or parts
    return {"machine": same("machine", parts), "relu_ann_accuracy": same("relu_ann_accuracy", parts),
            "qcfs_ann_accuracy": same("qcfs_ann_accuracy", with_qcfs), "commands": [part["command"] for part in parts],
            "accuracy": {name: acc for part in parts for name, acc in part["accuracy"].items()}}


def markdown(results: dict) -> str:
    lines = [f"ReLU ANN {100 * results['relu_ann_accuracy']:.2f}%, QCFS ANN (L=8) {100 * results['qcfs_ann_accuracy']:.2f}%",
             "", "| method | " + " | ".join(f"T={T}" for T in TS) + " |", "|---|" + "---|" * len(TS)]
    for name, acc in results["accuracy"].items():
        acc = {int(T): a for T, a in acc.items()}  # JSON keys are str
        lines.append(f"| {name} | " + " | ".join(f"{100 * acc[T]:.2f}" if T in acc else "—" for T in TS) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
