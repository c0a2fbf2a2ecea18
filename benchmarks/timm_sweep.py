"""Models nobody wrote for spikebridge: one timm model per family, prepared and converted
exactly, or refused with a reason (BENCHMARKS.md §13).

timm (installed on first use: ``pip install --no-deps timm`` plus huggingface_hub, safetensors,
pyyaml; it is not a spikebridge dependency) names 1371 models in 161 families (the name up to
its first digit or underscore). Per family the shortest name with a small-model tag (atto,
femto, pico, nano, tiny, small, xxs, xs, _050, _035, b0, 18, _s, mini, lite0, light), else its
shortest name. Each model, in its own process with --timeout seconds: random weights and
BatchNorm statistics, its default input size (``pretrained_cfg["input_size"]``),
``sb.prepare(levels=4, replace_maxpool=False, example_input=x)`` (the example resolves
branches on the input's shape), ``pasc`` with ``input_shape`` (tensors made from the input's
shape become constants: docs/methods.md §8), and ``sb.verify`` against the
prepared ANN in float64 on 2 random images. Outcomes: "exact" (agreement 100%, 0 level
mismatches), "inexact" (a bug), "refused: <reason>" (a ConversionError or an unsupported
activation: by design), "untraceable: <reason>" (torch.fx cannot trace the model),
"crashed: <exception>" (the model itself fails at that input, or a bug), "timeout".
Results go to benchmarks/results/timm_sweep.json after every model (done ones are skipped
unless --fresh); --report prints the summary.

    python benchmarks/timm_sweep.py                       # every family (about 40 minutes on one core)
    python benchmarks/timm_sweep.py --models resnet18,cspdarknet53 --fresh
    python benchmarks/timm_sweep.py --models samvit_base_patch16 --fresh --img-size 224
    python benchmarks/timm_sweep.py --report
"""
from __future__ import annotations

import argparse
import collections
import json
import re
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import RESULTS, machine  # noqa: E402

PATH = RESULTS / "timm_sweep.json"
SMALL = re.compile(r"(atto|femto|pico|nano|tiny|small|xxs|xs|_050|_035|b0|18|_s$|mini|lite0|light)")


def timm():
    try:
        import timm as module
    except ImportError:
        pip = [sys.executable, "-m", "pip", "install", "-q"]
        subprocess.run(pip + ["--no-deps", "timm"], check=True)
        subprocess.run(pip + ["huggingface_hub", "safetensors", "pyyaml"], check=True)
        import timm as module
    return module


def families() -> list[str]:
    """One model name per timm family (module docstring)."""
    by_family = collections.defaultdict(list)
    for name in timm().list_models():
        by_family[re.split(r"[_\d]", name)[0]].append(name)
    return [sorted([n for n in names if SMALL.search(n)] or names, key=len)[0]
            for _, names in sorted(by_family.items())]


def outcome(name: str, img_size: int | None = None) -> str:
    """Prepare, convert with PASC and verify one model (in this process); ``img_size``: built
    and run at that square size instead of its default (``create_model(img_size=...)``)."""
    import warnings

    import torch

    import spikebridge as sb
    warnings.filterwarnings("ignore")
    torch.manual_seed(0)
    try:
        size = {"img_size": img_size} if img_size else {}
        model = timm().create_model(name, pretrained=False, num_classes=10, **size).eval()
        with torch.no_grad():
            for m in model.modules():
                if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.running_var is not None:
                    m.running_mean.uniform_(-0.2, 0.2), m.running_var.uniform_(0.5, 2.0)
        shape = (3, img_size, img_size) if img_size else model.pretrained_cfg.get("input_size", (3, 224, 224))
        x = torch.randn(2, *shape, dtype=torch.float64)
        model.double()(x)
    except Exception as exc:
        return f"crashed: the model itself: {type(exc).__name__}: {str(exc)[:160]}"
    try:
        qann = sb.prepare(model, levels=4, replace_maxpool=False, example_input=x).double().eval()
        del model  # prepare copied it: two copies of aimv2_1b's 1.2 billion float64 weights besides the SNN's fill 24 GB
        report = sb.verify(qann, sb.convert(qann, "pasc", input_shape=x.shape[1:]).double(), x)
    except sb.SpikeBridgeError as exc:
        kind = "untraceable" if "could not trace" in str(exc) else "refused"
        return f"{kind}: {str(exc)[:200]}"
    except Exception as exc:
        return f"crashed: {type(exc).__name__}: {str(exc)[:200]}"
    exact = report.agreement == 1.0 and sum(report.mismatches.values()) == 0
    return f"exact ({len(sb.sites(qann))} sites)" if exact else f"inexact: {report.agreement}"


def run(names: list[str], timeout: int, fresh: bool, img_size: int | None = None) -> None:
    results = json.loads(PATH.read_text()) if PATH.exists() else {}
    results["_machine"], results["_timm"] = machine(), timm().__version__
    for name in names:
        if name in results and not fresh:
            continue
        start = time.time()
        try:
            size = ["--img-size", str(img_size)] if img_size else []
            done = subprocess.run([sys.executable, __file__, "--one", name, *size], capture_output=True, text=True,
                                  timeout=timeout, env={"OMP_NUM_THREADS": "1", **__import__("os").environ})
            lines = [line for line in done.stdout.splitlines() if line.startswith("OUTCOME ")]
            result = lines[-1].removeprefix("OUTCOME ") if lines else f"crashed: {done.stderr.strip()[-200:]}"
        except subprocess.TimeoutExpired:
            result = "timeout"
        results[name] = result
        print(f"{name}: {result} ({time.time() - start:.0f} s)", flush=True)
        PATH.write_text(json.dumps(results, indent=1))


def report() -> str:
    results = {k: v for k, v in json.loads(PATH.read_text()).items() if not k.startswith("_")}
    counts = collections.Counter(v.split(":")[0].split(" (")[0] for v in results.values())
    lines = [f"{len(results)} families: " + ", ".join(f"{k} {n}" for k, n in counts.most_common()), "",
             "| model | outcome |", "|---|---|"]
    lines += [f"| {name} | {outcome.replace('|', '/')} |" for name, outcome in sorted(results.items())]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", help="comma-separated timm names (default: one per family)")
    p.add_argument("--timeout", type=int, default=180, help="seconds per model")
    p.add_argument("--fresh", action="store_true")
    p.add_argument("--img-size", type=int, help="build and run the models at this square size (models whose "
                                                  "default size does not fit in memory)")
    p.add_argument("--report", action="store_true")
    p.add_argument("--one", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        at = f" [at {args.img_size}x{args.img_size}]" if args.img_size else ""
        print("OUTCOME " + outcome(args.one, args.img_size) + at, flush=True)
    elif args.report:
        print(report())
    else:
        run(args.models.split(",") if args.models else families(), args.timeout, args.fresh, args.img_size)


if __name__ == "__main__":
    main()
