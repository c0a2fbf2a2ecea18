"""Issue 14 benchmark: NIR files in snnTorch, Norse and sinabs against spikebridge's prediction.

For each trained checkpoint (train them first with `spikebridge train`, see BENCHMARKS.md §8):
convert with "qcfs" at T steps; simulate spikebridge's own SNN and, for each target, the
emulation of the importer (``export.targets.emulate``) on the first N test images; export the
file, run it in the importer (through ``python -m spikebridge.export.importers`` with the
Python of the environment that holds the importer, given by --python NAME=PATH) on the same
images, and count how often the importer's prediction equals the emulation's. Then the
conversions for the targets (v0 dropped or spread as a bias, threshold scale λ), emulated.

    python benchmarks/nir_importers.py --ckpt runs/nir/small_cnn/last.pt --images 1000 \\
        --ckpt runs/nir/resnet20/last.pt --images 200 --T 32 \\
        --python snntorch=/work/venvs/norse/bin/python --python norse=/work/venvs/norse/bin/python \\
        --python sinabs=/work/venvs/sinabs/bin/python
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import RESULTS, machine  # noqa: E402

from spikebridge.analysis.evaluation import evaluate_snn  # noqa: E402
from spikebridge.export.importers import compare  # noqa: E402
from spikebridge.export.nir import export_nir  # noqa: E402
from spikebridge.export.targets import TARGETS, emulate  # noqa: E402
from spikebridge.pipeline import convert_checkpoint, loader  # noqa: E402

SRC = Path(__file__).resolve().parents[1] / "src"
IMPORTER_TARGETS = [t for t in TARGETS.values() if t.importer]


def accuracy(snn, ld, T, reference=None) -> tuple[float, float | None]:
    e = evaluate_snn(snn, ld, [T], progress=False, reference=reference)
    return e.accuracy[T], e.agreement.get(T)


def in_importer(python: str, name: str, path: Path, x: torch.Tensor, T: int, work: Path) -> tuple[torch.Tensor, str]:
    np.save(work / "x.npy", x.numpy())
    env = dict(os.environ, PYTHONPATH=str(SRC), OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    done = subprocess.run([python, "-m", "spikebridge.export.importers", name, str(path), str(work / "x.npy"), str(T),
                           str(work / "out.npy"), "10"], capture_output=True, text=True, env=env)
    if done.returncode:
        raise RuntimeError(f"{name} failed: {done.stderr[-2000:]}")
    return torch.from_numpy(np.load(work / "out.npy")), done.stdout.strip()


def bench(ckpt: str, images: int, T: int, pythons: dict, work: Path) -> dict:
    _, ann, snn = convert_checkpoint(ckpt, "qcfs", T=T)
    ld = loader(snn.info["dataset"], snn.info["model"]["name"], "test", batch_size=100, limit=images)
    x = torch.cat([b[0] for b in ld])
    with torch.no_grad():
        ann_acc = float((ann(x).argmax(1) == torch.cat([b[1] for b in ld])).double().mean())
    own, _ = accuracy(snn, ld, T)
    row = {"checkpoint": ckpt, "model": snn.info["model"]["name"], "images": len(x), "T": T, "ann": ann_acc,
           "own": own, "targets": {}, "conversions": []}
    print(f"{row['model']}: ANN {100 * ann_acc:.2f}%, own SNN {100 * own:.2f}% (T={T}, {len(x)} images)", flush=True)
    for target in IMPORTER_TARGETS:
        emulated = emulate(snn, target.name)
        emu, agree_own = accuracy(emulated, ld, T, reference=snn)
        path = work / f"{row['model']}_{target.name}.nir"
        graph = export_nir(snn, path, target=target.name)
        entry = {"emulated": emu, "emulated_vs_own": agree_own, "nodes": len(graph.nodes),
                 "semantics": target.semantics_for().describe()}
        python = pythons.get(target.importer)
        if python:
            out, version = in_importer(python, target.importer, path, x, T, work)
            with torch.no_grad():
                check = compare(out, emulated.simulate(x, record=False).logits, version)
                labels = torch.cat([b[1] for b in ld])
                steps = torch.arange(1, T + 1, dtype=torch.float64).view(-1, 1, 1)
                imported = float(((out.double().cumsum(0) / steps)[-1].argmax(-1) == labels).double().mean())
            entry.update(importer=version, importer_acc=imported, agree=check.agree, max_diff=check.max_diff)
        row["targets"][target.name] = entry
        print(f"  {target.name}: emulated {100 * emu:.2f}%"
              + (f", {entry['importer']}: {100 * entry['importer_acc']:.2f}%, same prediction as the emulation on "
                 f"{entry['agree']}/{len(x)} images (max logit diff {entry['max_diff']:.1e})" if python else ""),
              flush=True)
    for target, v0, scale in [("snntorch", "zero", 1.0), ("snntorch", "per-step", 1.0), ("snntorch", "zero", 0.6),
                              ("snntorch", "per-step", 0.5),
                              ("sinabs", "zero", 1.0), ("sinabs", "per-step", 0.9)]:
        acc, agree = accuracy(emulate(snn, target, v0, scale), ld, T, reference=snn)
        row["conversions"].append({"target": target, "v0": v0, "threshold_scale": scale, "accuracy": acc,
                                   "agreement_with_own": agree})
        print(f"  conversion for {target}: v0 {v0}, λ {scale}: {100 * acc:.2f}% ({100 * agree:.1f}% of own predictions)",
              flush=True)
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ckpt", action="append", required=True)
    p.add_argument("--images", action="append", type=int, required=True, help="test images per --ckpt")
    p.add_argument("--T", type=int, default=32)
    p.add_argument("--python", action="append", default=[], metavar="IMPORTER=PATH")
    p.add_argument("--out", default=str(RESULTS / "nir_importers.json"))
    args = p.parse_args()
    pythons = dict(kv.split("=", 1) for kv in args.python)
    start = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        rows = [bench(c, n, args.T, pythons, Path(tmp)) for c, n in zip(args.ckpt, args.images)]
    result = {"machine": machine(), "seconds": round(time.time() - start), "rows": rows,
              "command": " ".join(sys.argv)}
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(f"wrote {args.out} ({result['seconds']} s)")


if __name__ == "__main__":
    main()
