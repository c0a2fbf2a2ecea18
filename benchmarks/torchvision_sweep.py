"""Issue 11 item 6: every torchvision classifier converts or is refused, never crashes
(BENCHMARKS.md §10).

For each name of ``torchvision.models.list_models(module=torchvision.models)``: the model with
random weights and random BatchNorm statistics, at the smallest square input it accepts (of
SIZES); ``sb.prepare`` (L = 8, max pooling replaced by average pooling); then ``pasc``,
``bitplane`` and ``qcfs`` (T = 4). The sum-coded SNNs are checked against the prepared ANN in
float64 on 2 random images (``sb.verify``: prediction agreement and level mismatches) when the
ANN's float64 forward pass takes less than --verify-seconds; the rate-coded one is simulated.
Models with more than --max-params parameters (regnet_y_128gf, vit_h_14: 0.6 billion) are
converted in float32 and not verified: the prepared copy, the converted copy and a float64
twin would not fit in this machine's 24 GB (the first sweep was killed for memory there).
Each model's outcome per method: "exact" (agreement 100%, 0 mismatches), "converted" (not
verified: too slow or too large here), "inexact" (a bug), "refused: <reason>" (a
ConversionError, by design), "crashed: <exception>" (a bug). Results go to
benchmarks/results/torchvision_sweep.json after every model (models already there are skipped
unless --fresh); --report prints the markdown table.

    python benchmarks/torchvision_sweep.py                    # all of them (about an hour on 2 cores)
    for m in $(python -c "import torchvision as t; print(*t.models.list_models(module=t.models))"); do
        (ulimit -v 16000000; python benchmarks/torchvision_sweep.py --models $m); done   # one process each, capped
    python benchmarks/torchvision_sweep.py --models resnet18,vit_b_16
    python benchmarks/torchvision_sweep.py --report
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path

import torch
import torchvision
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
from common import RESULTS, machine  # noqa: E402

import spikebridge as sb  # noqa: E402

SIZES = (16, 32, 64, 96, 128, 160, 224, 299)
METHODS = ("pasc", "bitplane", "qcfs")


def random_model(name: str) -> nn.Module:
    """torchvision's ``name`` untrained, with BatchNorm statistics drawn at random (else every
    BatchNorm is the identity and the test is weaker)."""
    torch.manual_seed(0)
    model = torchvision.models.get_model(name, weights=None, num_classes=10).eval()
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None:
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 2.0)
    return model


@torch.no_grad()
def smallest_input(model: nn.Module) -> int | None:
    for size in SIZES:
        try:
            model(torch.randn(1, 3, size, size))
            return size
        except Exception:  # too small for the model: torch raises several types
            continue
    return None


def too_large(exc: BaseException) -> bool:
    """Out of this machine's memory (a MemoryError, or torch's "can't allocate")."""
    return isinstance(exc, MemoryError) or "allocate" in str(exc)


def reason(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}" if str(exc) else type(exc).__name__


@torch.no_grad()
def sweep_model(name: str, verify_seconds: float, max_params: int) -> dict:
    row: dict = {"model": name}
    start = time.perf_counter()
    model = random_model(name)
    row["parameters"] = sum(p.numel() for p in model.parameters())
    large = row["parameters"] > max_params
    size = smallest_input(model)
    row["input"] = size
    if size is None:
        row["outcome"] = {m: "crashed: no input size of " + str(SIZES) + " runs the ANN" for m in METHODS}
        return row
    x = torch.randn(2, 3, size, size, dtype=torch.float32 if large else torch.float64)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            qann = sb.prepare(model, levels=8).eval()
            qann(x[:1].float())
    except (sb.ConversionError, sb.UnsupportedActivationError) as exc:
        row["outcome"] = dict.fromkeys(METHODS, "refused: " + reason(exc))
        return row
    except Exception as exc:  # noqa: BLE001  (a crash is what the sweep counts)
        what = "not run: out of memory here" if too_large(exc) else "crashed (prepare): " + reason(exc)
        row["outcome"] = dict.fromkeys(METHODS, what)
        return row
    del model
    row["sites"] = len(sb.sites(qann))
    if not large:
        qann = qann.double()
    t = time.perf_counter()
    qann(x)
    row["ann_seconds"] = time.perf_counter() - t
    verify = not large and row["ann_seconds"] < verify_seconds
    outcome = {}
    for method in METHODS:
        snn = None  # the previous method's network is freed before the next is built
        try:
            snn = sb.convert(qann, method, **({"T": 4} if method == "qcfs" else {}))
        except sb.ConversionError as exc:
            outcome[method] = "refused: " + reason(exc)
            continue
        except Exception as exc:  # noqa: BLE001
            outcome[method] = "not run: out of memory here" if too_large(exc) else "crashed (convert): " + reason(exc)
            continue
        try:
            if method == "qcfs" or large:
                logits = snn.simulate(x).logits
                if method != "qcfs":
                    outcome[method] = "converted" if torch.isfinite(logits).all() else "crashed: non-finite logits"
                    continue
                outcome[method] = "simulated" if torch.isfinite(logits).all() else "crashed: non-finite logits"
            elif verify:
                report = sb.verify(qann, snn, x)
                exact = report.agreement == 1.0 and sum(report.mismatches.values()) == 0
                outcome[method] = "exact" if exact else f"inexact: agreement {report.agreement:.3f}"
                row.setdefault("max_logit_diff", {})[method] = report.max_logit_diff
            else:
                outcome[method] = "converted"
        except Exception as exc:  # noqa: BLE001
            outcome[method] = "not run: out of memory here" if too_large(exc) else "crashed (simulate): " + reason(exc)
    row["outcome"] = outcome
    row["seconds"] = time.perf_counter() - start
    return row


def markdown(results: dict) -> str:
    rows = results["models"]
    lines = [f"{len(rows)} classifiers of torchvision {results['torchvision']} ({results['machine']}); "
             "input: the smallest of " + ", ".join(map(str, SIZES)) + " each accepts.", "",
             "| model | input | sites | " + " | ".join(METHODS) + " |", "|---|---|---|" + "---|" * len(METHODS)]
    for r in rows.values():
        cells = [r["outcome"].get(m, "—") for m in METHODS]
        lines.append(f"| {r['model']} | {r.get('input')} | {r.get('sites', '—')} | " + " | ".join(cells) + " |")
    lines += ["", "| method | " + " | ".join(["exact", "converted (not verified)", "simulated", "refused", "crashed/inexact",
                                             "not run (memory)"]) + " |", "|---|---|---|---|---|---|---|"]
    for m in METHODS:
        outs = [r["outcome"].get(m, "") for r in rows.values()]
        count = lambda prefix: sum(o.startswith(prefix) for o in outs)  # noqa: E731
        lines.append(f"| {m} | {count('exact')} | {count('converted')} | {count('simulated')} | {count('refused')} | "
                     f"{count('crashed') + count('inexact')} | {count('not run')} |")
    return "\n".join(lines)


def sweep(doc: str, name: str, row_of, markdown_of, header=lambda args: {}, **arguments) -> None:
    """The command line of a sweep over torchvision's classifiers: ``row_of(name, args)`` for each
    model not yet in the results file (``name``, or --name; every model with --fresh), each row
    added to the file as it is then (processes of one sweep may run side by side);
    ``arguments``: {flag: argparse keywords} of the sweep's own options, ``header(args)``: what
    the results record of them besides the command; --report prints ``markdown_of(results)``."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default=None, help="comma-separated names (default: all classifiers)")
    for flag, keywords in arguments.items():
        p.add_argument(flag, **keywords)
    p.add_argument("--fresh", action="store_true", help="re-run models already in the results file")
    p.add_argument("--name", default=name, help="the results file, benchmarks/results/NAME.json (default %(default)s)")
    p.add_argument("--report", action="store_true")
    args = p.parse_args()
    out = RESULTS / f"{args.name}.json"
    if args.report:
        print(markdown_of(json.loads(out.read_text())))
        return
    models = args.models.split(",") if args.models else torchvision.models.list_models(module=torchvision.models)
    read = lambda: json.loads(out.read_text()) if out.exists() else {"models": {}}  # noqa: E731
    for model in models:
        if model in read()["models"] and not args.fresh:
            continue
        row = row_of(model, args)
        print(model, row.get("input"), row["outcome"], f"{row.get('seconds', 0):.0f} s", flush=True)
        results = read()  # read again: another process of the sweep may have written since
        results.update(machine=machine(), torchvision=torchvision.__version__, command=" ".join(sys.argv),
                       **header(args))
        results["models"][model] = row
        RESULTS.mkdir(exist_ok=True)
        written = out.with_suffix(f".{os.getpid()}.tmp")
        written.write_text(json.dumps(results, indent=1))
        written.replace(out)  # whole: a reader never sees half a file


def main() -> None:
    sweep(__doc__, "torchvision_sweep", lambda name, args: sweep_model(name, args.verify_seconds,
                                                                       int(args.max_params)), markdown,
          **{"--verify-seconds": dict(type=float, default=20.0, help="verify in float64 only when the ANN's float64 "
                                                                     "pass on 2 images takes less"),
             "--max-params": dict(type=float, default=3e8, help="above this many parameters: float32, no verify "
                                                                "(memory; default %(default)s)")})


if __name__ == "__main__":
    main()
