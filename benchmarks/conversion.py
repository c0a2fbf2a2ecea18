"""Issue 3 benchmark: exact and rate-coded conversion of QCFS small CNNs on Fashion-MNIST.

For each L: ANN test accuracy; PASC and bit-plane accuracy and prediction agreement with the
ANN in float32 over the full test set; "qcfs" accuracy at T = 1..64 from one anytime run;
simulation throughput of each method against the dense limit (steps × the ANN's forward time
on the same batches).

    python benchmarks/conversion.py --levels 3,7,8,15 --relu-epochs 2 --epochs 1
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import machine, qcfs_model, save, test_loader, timed  # noqa: E402

import spikebridge as sb  # noqa: E402
from spikebridge.analysis.evaluation import evaluate_snn  # noqa: E402

TS = [1, 2, 4, 8, 16, 32, 64]


def throughput(ann, snns: dict, x: torch.Tensor) -> dict:
    """images/s of simulate() per method and its ratio to steps × ANN forward time."""
    with torch.no_grad():
        t_ann = timed(lambda: ann(x))
        rows = {}
        for name, (snn, T) in snns.items():
            t = timed(lambda: snn.simulate(x, T, record=False))
            steps = snn.info.get("T_eff", T or snn.T)
            rows[name] = {"steps": steps, "images_per_s": x.shape[0] / t,
                          "dense_limit_images_per_s": x.shape[0] / (steps * t_ann),
                          "time_over_limit": t / (steps * t_ann)}
    return {"ann_images_per_s": x.shape[0] / t_ann, "methods": rows}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--levels", default="3,7,8,15")
    p.add_argument("--relu-epochs", type=int, default=2, help="epochs of the ReLU base model")
    p.add_argument("--epochs", type=int, default=1, help="QCFS fine-tuning epochs per L")
    p.add_argument("--runs", default="runs/bench")
    p.add_argument("--limit", type=int, default=None, help="test images (default: all 10 000)")
    p.add_argument("--batch", type=int, default=500, help="batch size for the throughput measurement")
    args = p.parse_args()
    torch.manual_seed(0)
    loader = test_loader(limit=args.limit)
    results = {"machine": machine(), "command": " ".join(sys.argv), "models": {}}
    for L in [int(v) for v in args.levels.split(",")]:
        ann, ckpt = qcfs_model(args.runs, L, args.epochs, args.relu_epochs)
        row = {"ann_accuracy": ckpt["metrics"][-1]["test_acc"]}
        for method in ("pasc", "bitplane"):
            snn = sb.convert(ann, method)
            report = sb.verify(ann, snn, loader)
            acc = evaluate_snn(snn, loader, progress=False).accuracy
            row[method] = {"accuracy": list(acc.values())[-1], "agreement": report.agreement,
                           "level_mismatches": sum(report.mismatches.values()),
                           "neurons_checked": sum(report.neurons.values()),
                           "steps": snn.info.get("T_eff", snn.T)}
        qcfs = sb.convert(ann, "qcfs", T=max(TS))
        row["qcfs"] = evaluate_snn(qcfs, loader, TS, progress=False).accuracy
        x = next(iter(test_loader(batch_size=args.batch)))[0]
        row["throughput"] = throughput(ann, {"qcfs": (sb.convert(ann, "qcfs", T=8), 8),
                                             "pasc": (sb.convert(ann, "pasc"), None),
                                             "bitplane": (sb.convert(ann, "bitplane"), None)}, x)
        results["models"][f"L={L}"] = row
        print(f"L={L}: {row}", flush=True)
    print(f"results: {save('conversion', results)}")
    print(markdown(results))


def markdown(results: dict) -> str:
    lines = ["| model | ANN | PASC (T_eff) | PASC agreement | bit-plane (T) | bit-plane agreement | "
             + " | ".join(f"qcfs T={T}" for T in TS) + " |", "|" + "---|" * (6 + len(TS))]
    for name, r in results["models"].items():
        pa, bp, qcfs = r["pasc"], r["bitplane"], {int(T): a for T, a in r["qcfs"].items()}  # JSON keys are str
        lines.append(f"| {name} | {100 * r['ann_accuracy']:.2f} | {100 * pa['accuracy']:.2f} ({pa['steps']:g}) | "
                     f"{100 * pa['agreement']:.2f}% | {100 * bp['accuracy']:.2f} ({bp['steps']}) | "
                     f"{100 * bp['agreement']:.2f}% | "
                     + " | ".join(f"{100 * qcfs[T]:.2f}" for T in TS) + " |")
    lines += ["", "| model | ANN img/s | method | steps | img/s | dense limit img/s | time / limit |", "|---|---|---|---|---|---|---|"]
    for name, r in results["models"].items():
        tp = r["throughput"]
        for m, row in tp["methods"].items():
            lines.append(f"| {name} | {tp['ann_images_per_s']:.0f} | {m} | {row['steps']:g} | {row['images_per_s']:.0f} | "
                         f"{row['dense_limit_images_per_s']:.0f} | {row['time_over_limit']:.2f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
