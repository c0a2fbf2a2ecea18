"""`spikebridge demo`: the main job end to end on the embedded default (Fashion-MNIST,
small_cnn), in a few minutes on 2 CPU cores.

``run_demo`` runs the functions in ``STEPS`` in order; each takes (args, results) and adds
what it produced to the ``results`` dict, so later stages (conversion, evaluation, report)
are appended as further steps.

Demo ANN: small_cnn of width 16 with QCFS at L = 7 levels on every site, trained for 2 epochs
on the first 30 000 training images (no augmentation, the recipe otherwise: SGD 0.1, cosine,
θ₀ = 8). L = 7 = 2³ − 1 makes the bit-plane conversion exact in 3 steps with every code used
(L = 8 would need 4 steps and leave 7 codes unused); PASC then runs T = 7. The size keeps
training to about a minute and a half on 2 idle cores; ``--epochs`` and ``--train-images``
trade time for accuracy.
"""
from __future__ import annotations

import time
from pathlib import Path

from ..errors import SpikeBridgeError

DEMO_MODEL = "small_cnn"
DEMO_WIDTH = 16
DEMO_DATASET = "fashion-mnist"
DEMO_LEVELS = 7
DEMO_EPOCHS = 2
DEMO_TRAIN_IMAGES = 30_000


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "demo", help="train a QCFS small CNN on Fashion-MNIST and run the pipeline end to end",
        description="Train (or reuse) a QCFS small_cnn on Fashion-MNIST, then run the conversion pipeline.",
    )
    p.add_argument("--epochs", type=int, default=DEMO_EPOCHS, help=f"training epochs (default {DEMO_EPOCHS})")
    p.add_argument("--train-images", type=int, default=DEMO_TRAIN_IMAGES,
                   help=f"use the first N training images (default {DEMO_TRAIN_IMAGES})")
    p.add_argument("--out", default="runs/demo", help="run directory (default runs/demo)")
    p.add_argument("--data-root", default=None, help="directory holding the Fashion-MNIST IDX files")
    p.add_argument("--fresh", action="store_true", help="retrain even if --out holds a finished demo ANN")
    p.set_defaults(func=run_demo)


def train_demo_ann(out, epochs: int = DEMO_EPOCHS, train_images: int = DEMO_TRAIN_IMAGES, data_root=None,
                   fresh: bool = False, progress: bool = True):
    """Train the demo's QCFS ANN into ``out`` (or reuse the finished one there, or resume an
    unfinished one); returns (model, checkpoint path, ANN test accuracy 0..1)."""
    from ..checkpoint import load_checkpoint, model_from_checkpoint
    from ..train import TrainConfig, train

    out = Path(out)
    last = out / "last.pt"
    config = TrainConfig(model=DEMO_MODEL, model_kwargs={"width": DEMO_WIDTH}, dataset=DEMO_DATASET,
                         levels=DEMO_LEVELS, epochs=epochs, limit_train=train_images, augment=False,
                         out=str(out), resume=True, data_root=data_root)
    if fresh:
        for name in ("last.pt", "metrics.jsonl"):
            (out / name).unlink(missing_ok=True)
    elif last.exists():
        ckpt = load_checkpoint(last)
        wanted = {k: v for k, v in config.record().items() if k not in ("lr", "weight_decay")}
        differs = sorted(k for k, v in wanted.items() if ckpt["args"].get(k) != v)
        if differs:
            raise SpikeBridgeError(f"{out} holds a run with other settings ({', '.join(differs)}); "
                                   "pass --fresh to retrain there or choose another --out")
        if ckpt["epoch"] >= epochs:
            acc = ckpt["metrics"][-1]["test_acc"]
            if progress:
                print(f"reusing the trained ANN in {last} (test accuracy {100 * acc:.2f}%; --fresh retrains)")
            return model_from_checkpoint(ckpt), last, acc
    model, history = train(config, progress=progress)
    return model, last, history[-1]["test_acc"]


def step_train(args, results: dict) -> None:
    """Step 1: the QCFS ANN."""
    start = time.perf_counter()
    model, path, acc = train_demo_ann(args.out, args.epochs, args.train_images, args.data_root, args.fresh)
    results.update(ann=model, checkpoint=path, ann_accuracy=acc)
    print(f"ANN (QCFS, L={DEMO_LEVELS}): test accuracy {100 * acc:.2f}%  "
          f"[{time.perf_counter() - start:.0f}s; checkpoint {path}]")


STEPS = [step_train]


def run_demo(args) -> int:
    """Run every step of the demo in order."""
    results: dict = {}
    for step in STEPS:
        step(args, results)
    return 0

