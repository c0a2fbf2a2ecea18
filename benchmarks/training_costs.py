"""Issue 5 item 5: what training-time methods buy on Fashion-MNIST (small_cnn).

(a) Bit regulariser (docs/methods.md §3, 001 Eq. 10–11): QCFS L = 15 (T = 4 bits, every code used)
    trained with λ = 0 and larger λ ("mean" normalisation); ANN accuracy, bit-plane SNN
    accuracy and spikes per image over the full test set.
(b) AL (docs/methods.md §7, PASCAL Alg. 4): uniform L = 8 (stage_1_uniform) against the AL levels
    for χ = 2 (levels 4,8) and χ = 3 (levels 2,4,8); PASC accuracy over the full test set and
    T_eff. χ = 3 reuses χ = 2's stage_1_uniform and stage_2_uniform (they do not depend on χ).

    python benchmarks/training_costs.py --out benchmarks/results/training_costs.md

Runs are kept under --work and reused when finished (delete it to start over).
"""
from __future__ import annotations

import argparse
import os
import platform
import shlex
import shutil
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import test_loader, trained  # noqa: E402

import spikebridge as sb  # noqa: E402
from spikebridge.train.adaptive import STAGE_1, STAGE_2, STAGE_3, run_algorithm4  # noqa: E402
from spikebridge.train.checkpoint import load_checkpoint, model_from_checkpoint  # noqa: E402
from spikebridge.analysis.evaluation import evaluate_snn  # noqa: E402

AL_LEVELS = {2: [4, 8], 3: [2, 4, 8]}


def snn_numbers(ann, method: str, loader) -> dict:
    """Accuracy, spikes per image and T_eff of ``ann`` converted with ``method``."""
    snn = sb.convert(ann, method)
    ev = evaluate_snn(snn, loader, progress=False)
    spikes = sum(float(v.sum()) for v in ev.result.spikes.values())
    return {"acc": next(iter(ev.accuracy.values())), "spikes": spikes / ev.images,
            "T_eff": snn.info.get("T_eff", snn.T)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=2, help="E: epochs of every (a) run and of stage_1_uniform")
    ap.add_argument("--limit-train", type=int, default=24000, help="first N training images (0: all 60000)")
    ap.add_argument("--width", type=int, default=16, help="small_cnn width")
    ap.add_argument("--lambdas", type=float, nargs="+", default=[0.0, 0.03, 0.1, 0.3, 1.0],
                    help="bit regulariser λ values, 'mean' normalisation")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (1: on a loaded 2-core machine two threads are several times slower)")
    ap.add_argument("--work", default="runs/bench_training_costs", help="training runs (reused when finished)")
    ap.add_argument("--out", default=None, help="write the markdown results here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    work = Path(args.work)
    base = dict(model="small_cnn", dataset="fashion-mnist", model_kwargs={"width": args.width},
                limit_train=args.limit_train or None, augment=True)
    loader = test_loader(batch_size=500)

    bits = []
    for lam in args.lambdas:
        t = time.perf_counter()
        ann, ckpt = trained(str(work / f"bits_lambda_{lam:g}"), levels=15, epochs=args.epochs, bit_l1=lam,
                            bit_l1_normalize="mean", **base)
        row = {"lambda": lam, "ann": ckpt["metrics"][-1]["test_acc"], **snn_numbers(ann, "bitplane", loader)}
        row["seconds"] = time.perf_counter() - t
        bits.append(row)
        print(f"λ={lam:g}: {row}", flush=True)

    al = {}
    for chi, levels in AL_LEVELS.items():
        t = time.perf_counter()
        out = work / f"al_chi{chi}"
        if chi != 2:  # stages 1 and 2 do not depend on χ: reuse χ = 2's
            for stage in (STAGE_1, STAGE_2):
                if not (out / stage).exists():
                    shutil.copytree(work / "al_chi2" / stage, out / stage)
        result = run_algorithm4(out, epochs=args.epochs, clusters=chi, levels=levels, levels_uniform=8,
                                progress=False, **base)
        if chi == 2:
            uniform = model_from_checkpoint(load_checkpoint(result.checkpoints[STAGE_1]))
            al["uniform"] = {"levels": "8 everywhere", "ann": result.test_acc[STAGE_1],
                             **snn_numbers(uniform, "pasc", loader)}
            al["uniform"]["stage2"] = result.test_acc[STAGE_2]
        final = model_from_checkpoint(load_checkpoint(result.checkpoints[STAGE_3]))
        al[chi] = {"levels": ", ".join(f"{s}:{L}" for s, L in result.levels.items()), "ann": result.test_acc[STAGE_3],
                   **snn_numbers(final, "pasc", loader), "M": {m.site: m.M for m in result.metrics}}
        al[chi]["seconds"] = time.perf_counter() - t
        print(f"χ={chi}: {al[chi]}", flush=True)

    text = report(args, bits, al, time.perf_counter() - start)
    print(text)
    if args.out:
        Path(args.out).write_text(text)


def report(args, bits, al, seconds: float) -> str:
    images = args.limit_train or 60000
    stage2 = max(1, round(2 * args.epochs / 3))
    lines = [
        "# Training costs: bit regulariser and AL (Fashion-MNIST, small_cnn)", "",
        "Command:", "", f"    python benchmarks/{Path(__file__).name} " + shlex.join(sys.argv[1:]), "",
        f"Machine: nproc {os.cpu_count()}, torch {torch.__version__}, {args.threads} torch thread(s), "
        f"python {platform.python_version()}, shared with other jobs. Total wall time {seconds / 60:.1f} min.", "",
        f"Setup: small_cnn width {args.width} (4 QCFS sites), first {images} training images with random "
        f"crop + flip, SGD recipe of docs/methods.md §0 (lr 0.1 cosine, batch 128, θ₀ = 8), seed 0; every accuracy "
        "and spike count is over the full 10000-image test set, SNNs simulated in float32.", "",
        f"## (a) Bit regulariser (docs/methods.md §3), L = 15, T = 4 bits, {args.epochs} epochs each", "",
        "λ is the 'mean' normalisation: λ × mean number of 1-bits per neuron and image (sum over the four "
        "sites' neurons, averaged over images and neurons).", "",
        "| λ (mean) | ANN acc | bit-plane SNN acc | spikes / image | spikes vs λ = 0 |",
        "|---|---|---|---|---|",
    ]
    ref = next((r["spikes"] for r in bits if r["lambda"] == 0), bits[0]["spikes"])
    lines += [f"| {r['lambda']:g} | {100 * r['ann']:.2f}% | {100 * r['acc']:.2f}% | {r['spikes']:.0f} | "
              f"{r['spikes'] / ref:.2f}× |" for r in bits]
    lines += [
        "", f"## (b) AL (docs/methods.md §7, PASCAL Alg. 4), E = {args.epochs}", "",
        f"Alg. 4 as `spikebridge al --train` runs it: stage_1_uniform (L = 8, {args.epochs} epochs), AL on "
        f"the first {min(3000, images)} training images, stage_2_uniform (L = 8, from the same initial weights, "
        f"{stage2} epoch(s)), "
        f"stage_3_adaptive (AL levels, {args.epochs} epochs, from stage_2's weights and θ). The uniform row is "
        f"stage_1_uniform ({args.epochs} epochs); the AL rows trained {2 * args.epochs + stage2} epochs in all.", "",
        "| levels | ANN acc | PASC acc | T_eff | spikes / image | levels per site |",
        "|---|---|---|---|---|---|",
    ]
    u = al["uniform"]
    lines.append(f"| uniform L = 8 | {100 * u['ann']:.2f}% | {100 * u['acc']:.2f}% | {u['T_eff']:.2f} | "
                 f"{u['spikes']:.0f} | 8 everywhere |")
    for chi, levels in AL_LEVELS.items():
        r = al[chi]
        lines.append(f"| AL χ = {chi} ({','.join(map(str, levels))}) | {100 * r['ann']:.2f}% | "
                     f"{100 * r['acc']:.2f}% | "
                     f"{r['T_eff']:.2f} | {r['spikes']:.0f} | {r['levels']} |")
    lines += ["", f"stage_2_uniform (L = 8, {stage2} epoch(s)) ANN accuracy: {100 * u['stage2']:.2f}%. "
              "AL metric M per site (stage_1_uniform's model): "
              + ", ".join(f"{s} {m:.3g}" for s, m in al[2]["M"].items()) + ".", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
