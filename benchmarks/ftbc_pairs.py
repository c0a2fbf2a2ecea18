"""Issue 12, item 4: the suite's (run, method, T) cells where FTBC is below the same network
without it, paired on the same test images (BENCHMARKS.md §12, "The two in the files now").

Every such cell of ``benchmarks/results/relu_suite/*.json`` (rows of ours, ``relu_suite.OUR_ROWS``)
is made again as the suite makes it: the model trained or reused under --runs, the SNN for T
steps, then the suite's FTBC for the readout T. Both accuracies are checked against the suite's
row to the image. For accuracy and for agreement with the ANN's prediction: b images only the
network with FTBC gets (right, or agreeing), c only the one without, and the exact two-sided
McNemar p (b against Binomial(b + c, 1/2)).

    python benchmarks/ftbc_pairs.py
    python benchmarks/ftbc_pairs.py --report
"""
from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import RESULTS, machine  # noqa: E402
from paired_cells import exact_mcnemar, predictions  # noqa: E402
from relu_suite import OUR_ROWS, converted, load_results, suite_data, suite_ftbc  # noqa: E402
from suite_models import suite_arguments, suite_model  # noqa: E402

PATH = RESULTS / "ftbc_pairs.json"


def below(results: list[dict]) -> list[tuple[dict, str, str]]:
    """(run, label, T) of every cell where the row with FTBC is below the row without."""
    return [(r, label, T) for r in results for label in OUR_ROWS if label + " + FTBC" in r["accuracy"]
            for T, fitted in r["accuracy"][label + " + FTBC"].items() if fitted < r["accuracy"][label][T]]


def mcnemar(ours: torch.Tensor, theirs: torch.Tensor) -> dict:
    """b images only ``ours`` has, c only ``theirs``, and the exact McNemar p."""
    b, c = int((ours & ~theirs).sum()), int((~ours & theirs).sum())
    return {"b": b, "c": c, "p": exact_mcnemar(b, c)}


def pair(args, run: dict, label: str, T: str) -> dict:
    ann, ckpt = suite_model(args.runs, run["dataset"], run["model"], run["seed"])
    test, calib, calib32, ftbc_data = suite_data(run["dataset"], ckpt["model"]["name"], None, 1024)
    labels = torch.cat([y for _, y in test])
    with torch.no_grad():
        ann_says = torch.cat([ann(x).argmax(-1) for x, _ in test])
    plain = converted(ann, OUR_ROWS[label], int(T), calib, calib32)
    fitted = copy.deepcopy(plain)
    suite_ftbc(fitted, ann, ftbc_data, [int(T)])
    said = {name: predictions(snn, test, int(T)) for name, snn in (("without", plain), ("with", fitted))}
    accuracy = {name: float((p == labels).float().mean()) for name, p in said.items()}
    for name, suite_label in (("without", label), ("with", label + " + FTBC")):
        if round(accuracy[name] * len(labels)) != round(run["accuracy"][suite_label][T] * len(labels)):
            raise SystemExit(f"{label} {name} FTBC at T={T}: {accuracy[name]:.4f}, the suite has "
                             f"{run['accuracy'][suite_label][T]:.4f}")
    agreement = {name: float((p == ann_says).float().mean()) for name, p in said.items()}
    return {"dataset": run["dataset"], "model": run["model"], "seed": run["seed"], "method": label, "T": int(T),
            "accuracy": accuracy, "agreement": agreement,
            "right": mcnemar(said["with"] == labels, said["without"] == labels),
            "agreeing": mcnemar(said["with"] == ann_says, said["without"] == ann_says)}


def report(rows: list[dict]) -> str:
    lines = ["| run | method | T | accuracy without / with FTBC | right: b / c, p | agreement with the ANN "
             "without / with | agreeing: b / c, p |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        a, g, right, agree = r["accuracy"], r["agreement"], r["right"], r["agreeing"]
        lines.append(f"| {r['dataset']}/{r['model']} s{r['seed']} | {r['method']} | {r['T']} | "
                     f"{100 * a['without']:.2f} / {100 * a['with']:.2f} | {right['b']} / {right['c']}, "
                     f"{right['p']:.2g} | {100 * g['without']:.2f} / {100 * g['with']:.2f} | "
                     f"{agree['b']} / {agree['c']}, {agree['p']:.2g} |")
    return "\n".join(lines)


def main() -> None:
    args = suite_arguments(__doc__, report="print the table of the stored results, run nothing").parse_args()
    if not args.report:
        torch.manual_seed(0)
        rows = [pair(args, run, label, T) for run, label, T in below(load_results())]
        PATH.write_text(json.dumps({"machine": machine(), "command": " ".join(sys.argv), "rows": rows}, indent=1))
    print(report(json.loads(PATH.read_text())["rows"]))


if __name__ == "__main__":
    main()
