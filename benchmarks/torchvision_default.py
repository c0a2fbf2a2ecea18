"""Issue 12: the default conversion of a ReLU ANN on every torchvision classifier, as a user
would call it on a model nobody wrote for spikebridge (BENCHMARKS.md §12, "The default on the
torchvision zoo").

For each name of ``torchvision.models.list_models(module=torchvision.models)``: the model as
``torchvision_sweep.random_model`` builds it (random weights and BatchNorm statistics, not
prepared: its ReLUs and its max pooling as they are) at the smallest square input it accepts;
``sb.convert(model, T=T, calibration_data=...)`` with no method, which picks the registry's
default for a ReLU ANN with its default options, on --calibration random images; then the
SNN simulated for --steps steps on --images other random images. Outcome: "simulated" (finite
logits; recorded after T and after --steps steps: the share of images whose SNN class is the
ANN's and ``image_correlation`` of the logits; how many classes the ANN gives those images, and
how much of its logits' spread the images make (``image_share``): with random weights it may
give one class to all, and then agreement says little, and where the images make almost none of
the spread (below float32's 1e-7) the correlation measures only the SNN's noise),
"refused: <reason>" (a ConversionError or UnsupportedActivationError: a GELU, SiLU or Hardswish
network is no ReLU ANN) or "crashed: <exception>" (a bug). A model with more than --max-params
parameters is skipped (memory). Results go to benchmarks/results/torchvision_default.json (or
--name's) after every model; --report prints the table.

    for m in $(python -c "import torchvision as t; print(*t.models.list_models(module=t.models))"); do
        (ulimit -v 14000000; python benchmarks/torchvision_default.py --models $m); done
    python benchmarks/torchvision_default.py --report
"""
from __future__ import annotations

import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from torchvision_sweep import random_model, reason, smallest_input, sweep, too_large  # noqa: E402

import spikebridge as sb  # noqa: E402


def default_row(name: str, T: int, steps: int, calibration: int, images: int, max_params: int,
                method: str | None = None) -> dict:
    row: dict = {"model": name}
    start = time.perf_counter()
    model = random_model(name)
    row["parameters"] = sum(p.numel() for p in model.parameters())
    if row["parameters"] > max_params:
        row["outcome"] = f"not run: more than {max_params:.0e} parameters"
        return row
    row["input"] = size = smallest_input(model)
    if size is None:
        row["outcome"] = "crashed: no input size runs the ANN"
        return row
    generator = torch.Generator().manual_seed(1)
    data = torch.randn(calibration + images, 3, size, size, generator=generator)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            snn = sb.convert(model, method, T=T, calibration_data=data[:calibration])
        row["method"] = snn.method
        with torch.no_grad():
            reference = model(data[calibration:])
            logits = snn.simulate(data[calibration:], T=max(T, steps), record=False).logits
        if not torch.isfinite(logits).all():
            row["outcome"] = "crashed: non-finite logits"
        else:
            row["outcome"] = "simulated"
            ann = reference.argmax(1)
            row["ann_classes"] = len(ann.unique())  # agreement says little where the ANN gives one class to all
            row["image_share"] = float((reference - reference.mean(0)).std() / reference.std())
            for t in sorted({T, steps}):
                row.setdefault("agreement", {})[t] = (logits[t - 1].argmax(1) == ann).float().mean().item()
                row.setdefault("correlation", {})[t] = image_correlation(reference, logits[t - 1])
            row["sites"] = len(snn.neurons())
    except (sb.ConversionError, sb.UnsupportedActivationError) as exc:
        row["outcome"] = "refused: " + reason(exc)
    except Exception as exc:  # noqa: BLE001  (a crash is what the sweep counts)
        row["outcome"] = "not run: out of memory here" if too_large(exc) else "crashed: " + reason(exc)
    row["seconds"] = time.perf_counter() - start
    return row


def image_correlation(ann: torch.Tensor, snn: torch.Tensor) -> float:
    """Correlation of the two networks' logits [N, classes] once each class's mean over the images
    is taken off: how well the SNN follows what the image changes, which the ANN's class alone
    does not show when it is the same for every image."""
    a, s = ann - ann.mean(0), snn - snn.mean(0)
    return float((a * s).sum() / (a.norm() * s.norm()))


def markdown(results: dict) -> str:
    rows = results["models"].values()
    lines = [f"{len(rows)} classifiers of torchvision {results['torchvision']} ({results['machine']}); "
             f"{results['settings']}; agreement and correlation after t steps, as t: value.", "",
             "| model | input | sites | outcome | the ANN's classes | image share | agreement with the ANN | "
             "correlation |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        agreement = ", ".join(f"{t}: {100 * v:.0f}%" for t, v in r.get("agreement", {}).items()) or "—"
        share = f"{r['image_share']:.1e}" if "image_share" in r else "—"
        correlation = ", ".join(f"{t}: {v:.2f}" for t, v in r.get("correlation", {}).items()) or "—"
        lines.append(f"| {r['model']} | {r.get('input')} | {r.get('sites', '—')} | {r['outcome']} | "
                     f"{r.get('ann_classes', '—')} | {share} | {agreement} | {correlation} |")
    outcomes = [r["outcome"].split(":")[0] for r in rows]
    lines += ["", ", ".join(f"{o}: {outcomes.count(o)}" for o in sorted(set(outcomes)))]
    return "\n".join(lines)


def main() -> None:
    row = lambda name, args: default_row(name, args.T, args.steps, args.calibration, args.images,  # noqa: E731
                                         int(args.max_params), args.method)
    sweep(__doc__, "torchvision_default", row, markdown,
          header=lambda args: {"settings": f"{args.method or 'the default'}, calibrated for T = {args.T} on "
                                           f"{args.calibration} random images, simulated for {args.steps} steps "
                                           f"on {args.images} others"},
          **{"--T": dict(type=int, default=4),
             "--steps": dict(type=int, default=64, help="steps simulated (the fidelity is also read at T)"),
             "--calibration": dict(type=int, default=32, help="random calibration images"),
             "--images": dict(type=int, default=32, help="other random images the SNN is simulated on"),
             "--max-params": dict(type=float, default=3e8),
             "--method": dict(default=None, help="a registered method in place of the default (max-norm, which "
                                                 "searches nothing, checks in a few steps' time where a slow "
                                                 "fidelity comes from)")})


if __name__ == "__main__":
    main()
