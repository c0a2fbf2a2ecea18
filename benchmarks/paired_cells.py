"""Issue 12, item 5: is the default's gap to SpikingJelly's best mode at a T more than the
noise of the test set? (BENCHMARKS.md §12, "Paired on the same images").

For stored suite models (``runs/suite``, as ``relu_suite.py`` trained them) and T = 1, 2, 4,
8: which test images the default (``network-level`` converted for T, then the suite's FTBC for
the readout T) classifies right, and which each SpikingJelly mode of the suite does, on the
same weights and images as ``relu_suite.py``. Each accuracy is checked against the suite's
stored row (the same code must give the same images). The default is then paired with the
SpikingJelly mode the suite's table names best at that T (the best mean over seeds): b images
only the default gets right, c images only SpikingJelly does, summed over seeds, and the exact
two-sided McNemar test, p = P(|B − n/2| ≥ |b − n/2|) for B ~ Binomial(n = b + c, 1/2).

    python benchmarks/paired_cells.py --dataset fashion-mnist --models mlp --seeds 0,1,2,3,4
    python benchmarks/paired_cells.py --report
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch
from scipy.stats import binomtest

sys.path.insert(0, str(Path(__file__).parent))
from common import RESULTS, machine  # noqa: E402
from relu_suite import OUT as SUITE, SJ_PREFIX, relu_twin, spikingjelly_rows, suite_data, suite_ftbc  # noqa: E402
from suite_models import suite_arguments, suite_model  # noqa: E402

import spikebridge as sb  # noqa: E402

TS = [1, 2, 4, 8]
PATH = RESULTS / "paired_cells.json"


@torch.no_grad()
def predictions(snn, test, T: int) -> torch.Tensor:
    """The class ``snn`` gives each test image after T steps."""
    snn.eval()
    return torch.cat([snn.simulate(x, T, record=False).logits[T - 1].argmax(-1) for x, _ in test])


def run_seed(args, dataset: str, key: str, seed: int) -> dict:
    """{row label: {T: hits}} of the default and every SpikingJelly row (packed, ``unpacked``),
    with a check of each accuracy against the suite's results file."""
    ann, ckpt = suite_model(args.runs, dataset, key, seed)
    test, calib, calib32, ftbc_data = suite_data(dataset, ckpt["model"]["name"], None, 1024)
    stored = json.loads((SUITE / f"{dataset}_{key}_s{seed}.json").read_text())["accuracy"]
    rows: dict[str, dict[int, torch.Tensor]] = {"default": {}}
    for T in TS:
        snn = sb.convert(ann, "network-level", T=T, calibration_data=calib)
        suite_ftbc(snn, ann, ftbc_data, [T])
        rows["default"][T] = predictions(snn, test, T) == torch.cat([y for _, y in test])
    rows.update(spikingjelly_rows(relu_twin(ann), calib, calib32, test)[0])
    out = {}
    for label, hits in rows.items():
        suite_label = "network-level + FTBC" if label == "default" else label
        for T in TS:
            right, kept = int(hits[T].sum()), stored[suite_label][str(T)]
            accuracy = right / hits[T].numel()
            status = "as in the suite" if right == round(kept * hits[T].numel()) else f"SUITE HAS {100 * kept:.2f}"
            print(f"{dataset} {key} s{seed} {label} T={T}: {100 * accuracy:.2f} ({status})", flush=True)
        out[label] = {str(T): np.packbits(hits[T].numpy()).tobytes().hex() for T in TS}
    out["images"] = len(hits[TS[0]])
    return out


def exact_mcnemar(b: int, c: int) -> float:
    """Two-sided p of b discordant pairs one way and c the other: b against Binomial(b + c, 1/2)."""
    return binomtest(b, b + c).pvalue if b + c else 1.0


def unpacked(seed: dict, label: str, T: str) -> np.ndarray:
    """A row's hits at T (``run_seed`` keeps them as packed bits in hex)."""
    return np.unpackbits(np.frombuffer(bytes.fromhex(seed[label][T]), np.uint8))[:seed["images"]].astype(bool)


def paired(seeds: dict[str, dict]) -> list[dict]:
    """Per T: the SpikingJelly row with the best mean accuracy over the seeds, b, c and p."""
    cells = []
    for T in map(str, TS):
        def accuracy(label):
            return sum(unpacked(s, label, T).mean() for s in seeds.values()) / len(seeds)
        best = max((label for label in next(iter(seeds.values())) if label.startswith(SJ_PREFIX)), key=accuracy)
        b = c = 0
        for s in seeds.values():
            ours, theirs = unpacked(s, "default", T), unpacked(s, best, T)
            b, c = b + int((ours & ~theirs).sum()), c + int((~ours & theirs).sum())
        cells.append({"T": int(T), "default": float(accuracy("default")), "sj_best": best, "sj": float(accuracy(best)),
                      "b": b, "c": c, "p": exact_mcnemar(b, c)})
    return cells


def report(results: dict) -> str:
    lines = ["| model | seeds | T | default | SpikingJelly's best mode | only the default right (b) | "
             "only SpikingJelly right (c) | p (exact McNemar) |", "|---|---|---|---|---|---|---|---|"]
    for name, entry in results.items():
        for cell in paired(entry["seeds"]):
            lines.append(f"| {name} | {len(entry['seeds'])} | {cell['T']} | {100 * cell['default']:.2f} | "
                         f"{100 * cell['sj']:.2f} ({cell['sj_best'].removeprefix(SJ_PREFIX + ' ')}) | {cell['b']} | "
                         f"{cell['c']} | {cell['p']:.3g} |")
    return "\n".join(lines)


def main() -> None:
    args = suite_arguments(__doc__, report="print the table of the stored results, run nothing").parse_args()
    results = json.loads(PATH.read_text()) if PATH.exists() else {}
    if not args.report:
        torch.manual_seed(0)
        for key in args.models.split(","):
            entry = results.setdefault(f"{args.dataset}/{key}", {"seeds": {}})
            entry.update({"machine": machine(), "command": " ".join(sys.argv)})
            for seed in args.seeds.split(","):
                entry["seeds"][seed] = run_seed(args, args.dataset, key, int(seed))
                PATH.parent.mkdir(parents=True, exist_ok=True)
                PATH.write_text(json.dumps(results))
    print(report(results))


if __name__ == "__main__":
    main()
