"""Issue 12 benchmark: converting ReLU networks nobody tuned for (BENCHMARKS.md §12).

For every model of ``suite_models.MODELS`` (trained or reused under --runs), on the full test
set, the accuracy after T = 1, 2, 4, 8, 16, 32 steps of:

- spikebridge's methods for ReLU ANNs (docs/methods.md §4, §9, §10), with and without FTBC
  (§5, checked on held-out images), the default (``network-level`` + FTBC) among them;
- SpikingJelly 2.0's ann2snn on the same weights and images: RateCodingRecipe "max", "99.9%",
  "99.9%" channel-wise with half thresholds, and LocalThresholdBalancingRecipe read out from
  step 1 and with its delayed readout (``estimate_delay_start``). The script installs
  SpikingJelly for itself (``pip install --no-deps spikingjelly==2.0.0`` plus loguru requests
  tqdm scipy; a plain install drags in torchaudio); it is not a spikebridge dependency. It
  converts only nn.ReLU modules, so it gets a traced twin of the model in which every ReLU
  call site is its own nn.ReLU (the graph spikebridge converts).

Methods whose thresholds do not depend on T are read off one 32-step run (anytime); the
others are converted for each T. FTBC is calibrated for each T, for the readout T (ftbc's
default: what a user converting for T gets), on the network converted for T. Results go to
benchmarks/results/relu_suite/<dataset>_<model>_s<seed>.json after every row.

    python benchmarks/relu_suite.py --dataset fashion-mnist --models vgg,resnet20
    python benchmarks/relu_suite.py --dataset digits --seeds 0,1,2
    python benchmarks/relu_suite.py --report > benchmarks/results/relu_suite.md
"""
from __future__ import annotations

import copy
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import RESULTS, machine, spikingjelly  # noqa: E402
from suite_models import BY_KEY, MODELS, suite_arguments, suite_model  # noqa: E402

import spikebridge as sb  # noqa: E402
from spikebridge.analysis.evaluation import evaluate_snn  # noqa: E402
from spikebridge.ann.tracing import trace  # noqa: E402
from spikebridge.conversion.graph import relu_site_modules  # noqa: E402
from spikebridge.pipeline import loader  # noqa: E402
from spikebridge.train.loop import evaluate  # noqa: E402

TS = [1, 2, 4, 8, 16, 32]
OUT = RESULTS / "relu_suite"
DEFAULT = "network-level + FTBC"  # the recommended default (README, docs/methods.md §10)
SJ_PREFIX = "SpikingJelly"
GROUPS = ("thresholds", "layer-thresholds", "data-driven", "local-balancing", "network-level", "spikingjelly")


@dataclass(frozen=True)
class OurRow:
    """A row of ours (and its row with FTBC): the group that runs it, the method and its options,
    whether it is converted for each T (else once, read off one 32-step run) and whether it
    calibrates on batches of 32 (local balancing's batch) instead of 128."""
    group: str
    method: str
    options: dict = field(default_factory=dict)
    per_T: bool = False
    batches_of_32: bool = False


OUR_ROWS = {  # in the order of the results files
    "network-level": OurRow("network-level", "network-level", per_T=True),
    "percentile 99.9 channel-wise, v0 = θ/2": OurRow("thresholds", "percentile",
                                                     {"channel_wise": True, "v0_fraction": 0.5}),
    "max-norm": OurRow("layer-thresholds", "max-norm"),
    "percentile 99.9": OurRow("layer-thresholds", "percentile"),
    "local balancing (batches of 32)": OurRow("local-balancing", "local-balancing", batches_of_32=True),
    "data-driven": OurRow("data-driven", "data-driven", per_T=True),
    "data-driven channel-wise": OurRow("data-driven", "data-driven", {"channel_wise": True}, per_T=True),
}


def relu_twin(ann: torch.nn.Module) -> torch.nn.Module:
    """The traced model with every ReLU call site its own nn.ReLU module (what SpikingJelly needs)."""
    twin = trace(ann)
    relu_site_modules(twin, None)
    return twin.eval()


@torch.no_grad()
def spikingjelly_hits(twin, recipe, test, delay_data=None) -> dict[str, dict]:
    """Which test images SpikingJelly's converted network classifies right after each T of one
    32-step run (readout: the sum of the outputs from step 1: {"plain": {T: bool per image}}),
    and with ``delay_data`` also with its delayed readout (the sum from step
    estimate_delay_start(T) on, SpikingJelly's own estimate for each T: "delayed", "delay_start")."""
    ann2snn, functional = spikingjelly()
    snn = ann2snn.Converter(recipe=recipe).convert(copy.deepcopy(twin)).eval()
    delayed = {}
    if delay_data is not None:
        delayed = {T: ann2snn.estimate_delay_start(snn, delay_data, "cpu", T) for T in TS}
    hits = {"plain": {T: [] for T in TS}, "delayed": {T: [] for T in TS}}
    for x, y in test:
        functional.reset_net(snn)
        outputs = torch.stack([snn(x) for _ in range(max(TS))])
        for T in TS:
            hits["plain"][T].append(outputs[:T].sum(0).argmax(1) == y)
            if delayed:
                hits["delayed"][T].append(outputs[delayed[T]:T].sum(0).argmax(1) == y)
    out = {"plain": {T: torch.cat(h) for T, h in hits["plain"].items()}}
    if delayed:
        out["delayed"] = {T: torch.cat(h) for T, h in hits["delayed"].items()}
        out["delay_start"] = delayed
    return out


def spikingjelly_rows(twin, calib, calib32, test) -> tuple[dict[str, dict[int, torch.Tensor]], dict[int, int]]:
    """Every SpikingJelly row of the suite on the same weights and images, as
    {row label: {T: hits per image}} (``spikingjelly_hits``): RateCodingRecipe "max", "99.9%",
    "99.9%" channel-wise with half thresholds, and LocalThresholdBalancingRecipe (batches of 32)
    read from step 1 and with its delayed readout; and the delayed readout's first step for each T."""
    ann2snn, _ = spikingjelly()
    recipes = {"max": ann2snn.RateCodingRecipe(calib, mode="max"),
               "99.9%": ann2snn.RateCodingRecipe(calib, mode="99.9%"),
               "99.9% channel-wise, half threshold": ann2snn.RateCodingRecipe(
                   calib, mode="99.9%", channel_wise=True, half_threshold=True)}
    rows = {f"{SJ_PREFIX} {label}": spikingjelly_hits(twin, recipe, test)["plain"] for label, recipe in recipes.items()}
    ltb = spikingjelly_hits(twin, ann2snn.LocalThresholdBalancingRecipe(calib32), test, delay_data=calib32)
    rows[f"{SJ_PREFIX} LTB (batches of 32)"] = ltb["plain"]
    rows[f"{SJ_PREFIX} LTB, delayed readout"] = ltb["delayed"]
    return rows, ltb["delay_start"]


def suite_data(dataset: str, name: str, limit: int | None, calibration_images: int):
    """(test, calib, calib32, ftbc_data): the full test set in batches of 500; the calibration
    images in batches of 128 and of 32 (local balancing); FTBC's 8 other batches of 128."""
    test = loader(dataset, name, "test", batch_size=500, limit=limit)
    calib = list(loader(dataset, name, "train", batch_size=128, limit=calibration_images))
    calib32 = list(loader(dataset, name, "train", batch_size=32, limit=calibration_images))
    ftbc_data = list(loader(dataset, name, "train", batch_size=128, limit=8 * 128, shuffle=True, seed=1))
    return test, calib, calib32, ftbc_data


def suite_ftbc(snn, ann, ftbc_data, readouts) -> list[float]:
    """The suite's FTBC (4 batches fitted, 4 held out for the check, alpha 0.5) on ``snn`` in
    place; returns the share of each step's bias kept."""
    summary = sb.ftbc(snn, ann=ann, data=ftbc_data, alpha=0.5, batches=4, check_batches=4, readouts=readouts,
                      progress=False)
    return next(iter(summary.values()))["kept"]


def anytime(snn, test) -> dict[int, float]:
    return evaluate_snn(snn, test, TS, progress=False).accuracy


def for_steps(snn, T):
    """A copy of the T-independent ``snn`` that runs T steps."""
    copied = copy.deepcopy(snn)
    copied.set_T(T)
    return copied


def converted(ann, row: OurRow, T: int, calib, calib32):
    """The SNN of ``row`` for T steps, as the suite makes it (without FTBC)."""
    if row.per_T:
        return sb.convert(ann, row.method, T=T, calibration_data=calib, **row.options)
    data = calib32 if row.batches_of_32 else calib
    return for_steps(sb.convert(ann, row.method, T=max(TS), calibration_data=data, **row.options), T)


def at_T(snn, test, T) -> float:
    return evaluate_snn(snn, test, [T], progress=False).accuracy[T]


def run_model(args, dataset: str, key: str, seed: int) -> None:
    m = BY_KEY[key]
    ann, ckpt = suite_model(args.runs, dataset, key, seed)
    name = ckpt["model"]["name"]
    path = OUT / f"{dataset}_{key}_s{seed}.json"
    results = json.loads(path.read_text()) if path.exists() else {}
    results.update({"dataset": dataset, "model": key, "what": m.what, "seed": seed, "machine": machine(),
                    "command": " ".join(sys.argv), "arch": {"name": name, **m.kwargs}})
    rows = results.setdefault("accuracy", {})
    seconds = results.setdefault("seconds", {})
    extra = results.setdefault("extra", {})
    test, calib, calib32, ftbc_data = suite_data(dataset, name, args.limit, args.calibration_images)
    results["ann"] = evaluate(ann, test)
    results["test_images"] = sum(len(y) for _, y in test)
    groups = set(args.groups.split(","))

    def save():
        OUT.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(results, indent=1))

    def report(label, accuracy, spent=None):
        rows[label] = {str(T): a for T, a in accuracy.items()}
        if spent is not None:
            seconds[label] = spent
        print(f"{dataset} {key} s{seed} {label}: " + ", ".join(f"T={T} {100 * a:.2f}" for T, a in accuracy.items()),
              flush=True)
        save()

    def anytime_rows(label, method, data, **options):
        start = time.perf_counter()
        snn = sb.convert(ann, method, T=max(TS), calibration_data=data, **options)
        spent = time.perf_counter() - start
        report(label, anytime(snn, test), spent)
        seconds.pop(label + " + FTBC", None)  # the per-T rows below have no single cost
        ftbc_rows(label, lambda T: for_steps(snn, T), plain=False)

    def ftbc_rows(label, snn_at, plain=True):
        """For each T: the SNN snn_at(T) for T steps, calibrated by FTBC for the readout T (what a
        user converting for T gets) and, with plain, read before it too."""
        # each finished T is saved at once (under "partial") and a resumed run starts after it
        partial = results.setdefault("partial", {})
        if args.fresh:
            partial.pop(label, None)
        done = partial.setdefault(label, {})
        for T in TS:
            if str(T) in done:
                continue
            start = time.perf_counter()
            snn = snn_at(T)
            row = {"seconds": time.perf_counter() - start, "chosen": snn.info.get("chosen"),
                   "passes": snn.info.get("passes"), "plain": at_T(snn, test, T)} if plain else {}
            row["kept"] = suite_ftbc(snn, ann, ftbc_data, [T])
            row["fitted"] = at_T(snn, test, T)
            done[str(T)] = row
            save()
            print(f"  {label} T={T}: " + (f"{100 * row['plain']:.2f} ({row['seconds']:.0f} s) / " if plain else "")
                  + f"+ FTBC {100 * row['fitted']:.2f}", flush=True)
        del partial[label]
        if plain:
            report(label, {T: done[str(T)]["plain"] for T in TS}, sum(done[str(T)]["seconds"] for T in TS))
            extra[label] = {what: {T: done[str(T)][k] for T in TS}
                            for what, k in (("seconds_per_T", "seconds"), ("chosen", "chosen"), ("passes", "passes"))}
        extra[label + " + FTBC"] = {"kept": {T: done[str(T)]["kept"] for T in TS}}
        report(label + " + FTBC", {T: done[str(T)]["fitted"] for T in TS})

    for label, ours in OUR_ROWS.items():
        if ours.group not in groups or label + " + FTBC" in rows and not args.fresh:
            continue
        if ours.per_T:
            ftbc_rows(label, lambda T: converted(ann, ours, T, calib, calib32))
        else:
            anytime_rows(label, ours.method, data=calib32 if ours.batches_of_32 else calib, **ours.options)
    if "spikingjelly" in groups and (args.fresh or f"{SJ_PREFIX} LTB, delayed readout" not in rows):
        sj_rows, delay_start = spikingjelly_rows(relu_twin(ann), calib, calib32, test)
        extra[f"{SJ_PREFIX} LTB, delayed readout"] = {"delay_start": delay_start}
        for label, hits in sj_rows.items():
            report(label, {T: int(h.sum()) / h.numel() for T, h in hits.items()})


# -- the report ------------------------------------------------------------------------------

def load_results() -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(OUT.glob("*.json"))]


def mean(values):
    values = list(values)
    return sum(values) / len(values)


def grouped(results: list[dict]) -> dict[tuple[str, str], list[dict]]:
    """(dataset, model) -> the results of its seeds, in the suite's model order."""
    order = {m.key: i for i, m in enumerate(MODELS)}
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in sorted(results, key=lambda r: (r["dataset"] != "fashion-mnist", order[r["model"]], r["seed"])):
        groups.setdefault((r["dataset"], r["model"]), []).append(r)
    return groups


def seed_mean(runs: list[dict], label: str) -> dict[int, float] | None:
    if not all(label in r["accuracy"] for r in runs):
        return None
    return {T: mean(r["accuracy"][label][str(T)] for r in runs) for T in TS}


def labels_of(runs: list[dict]) -> list[str]:
    seen = []
    for r in runs:
        seen += [label for label in r["accuracy"] if label not in seen]
    return seen


def sj_best(runs, labels) -> dict[int, float]:
    sj = [seed_mean(runs, label) for label in labels if label.startswith(SJ_PREFIX)]
    return {T: max(acc[T] for acc in sj if acc) for T in TS}


def markdown(results: list[dict]) -> str:
    lines = []
    summary_rank: dict[str, dict[str, int]] = {}
    gaps: dict[str, list[float]] = {}
    default_rows = []
    for (dataset, key), runs in grouped(results).items():
        seeds = [r["seed"] for r in runs]
        ann = mean(r["ann"] for r in runs)
        labels = [label for label in labels_of(runs) if seed_mean(runs, label)]
        if not labels:
            continue
        finished = any(label.startswith(SJ_PREFIX) for label in labels)  # SpikingJelly's rows come last
        lines += [f"### {dataset}: {key} — {runs[0]['what']}" + ("" if finished else " (unfinished: not ranked)"), "",
                  f"ANN {100 * ann:.2f}% (seeds {', '.join(map(str, seeds))}; {runs[0]['test_images']} test images"
                  + ("; mean over seeds, ± half the range" if len(runs) > 1 else "") + ")", "",
                  "| method | " + " | ".join(f"T={T}" for T in TS) + " |", "|---|" + "---|" * len(TS)]
        accs = {label: seed_mean(runs, label) for label in labels}
        best = {T: max(a[T] for a in accs.values()) for T in TS}
        for label in labels:
            cells = []
            for T in TS:
                spread = ""
                if len(runs) > 1:
                    vals = [r["accuracy"][label][str(T)] for r in runs]
                    spread = f" ± {50 * (max(vals) - min(vals)):.1f}"
                text = f"{100 * accs[label][T]:.2f}{spread}"
                cells.append(f"**{text}**" if accs[label][T] == best[T] else text)
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        lines.append("")
        if not finished:
            continue
        order = sorted(labels, key=lambda label: -mean(accs[label].values()))
        model_name = f"{dataset}/{key}"
        for rank, label in enumerate(order, 1):
            summary_rank.setdefault(label, {})[model_name] = rank
            gaps.setdefault(label, []).extend(ann - accs[label][T] for T in TS)
        if DEFAULT in accs and any(label.startswith(SJ_PREFIX) for label in labels):
            sj = sj_best(runs, labels)
            default_rows.append((model_name, ann, accs[DEFAULT], sj))
    models = list(dict.fromkeys(m for ranks in summary_rank.values() for m in ranks))
    lines += ["### Summary: rank on each model (by mean accuracy over T = 1…32) and mean gap to the ANN", "",
              "| method | " + " | ".join(models) + " | mean rank | mean gap (points) |",
              "|---|" + "---|" * (len(models) + 2)]
    for label in sorted(summary_rank, key=lambda label: mean(summary_rank[label].values())):
        ranks = summary_rank[label]
        lines.append(f"| {label} | " + " | ".join(str(ranks.get(m, "—")) for m in models)
                     + f" | {mean(ranks.values()):.1f} | {100 * mean(gaps[label]):.2f} |")
    lines += ["", f"### The default ({DEFAULT}) against SpikingJelly's best mode at each T, and the ANN", "",
              "| model | ANN | " + " | ".join(f"T={T}: default / SJ best" for T in TS) + " |",
              "|---|---|" + "---|" * len(TS)]
    for model_name, ann, default, sj in default_rows:
        cells = [f"{100 * default[T]:.2f} / {100 * sj[T]:.2f}" + (" ✗" if default[T] <= sj[T] else "") for T in TS]
        lines.append(f"| {model_name} | {100 * ann:.2f} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    p = suite_arguments(__doc__, report="print the markdown tables of all results, run nothing")
    p.add_argument("--limit", type=int, default=None, help="test images (default: the whole test set)")
    p.add_argument("--calibration-images", type=int, default=1024)
    p.add_argument("--groups", default=",".join(GROUPS), help=f"rows to run, from {', '.join(GROUPS)}")
    p.add_argument("--fresh", action="store_true", help="re-run the rows of --groups already in the results file "
                                                           "(the other rows stay)")
    args = p.parse_args()
    if args.report:
        print(markdown(load_results()))
        return
    torch.manual_seed(0)
    for key in args.models.split(","):
        for seed in map(int, args.seeds.split(",")):
            run_model(args, args.dataset, key, seed)


if __name__ == "__main__":
    main()
