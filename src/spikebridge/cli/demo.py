"""`spikebridge demo`: the main job end to end on the default dataset (spikebridge.demo)."""
from __future__ import annotations

from .common import add_device_argument, count


def add_parser(subparsers) -> None:
    from .. import demo

    p = subparsers.add_parser(
        "demo", help="train a QCFS small CNN on Fashion-MNIST and run the pipeline end to end",
        description="Four phases, each announced before it starts: train (or reuse) a QCFS small_cnn (L=7) on "
                    "Fashion-MNIST, train a ReLU copy, convert both with every method and simulate each SNN on the "
                    "first --snn-images test images (one table: each SNN beside its source ANN on the same images), "
                    "write a report (tables, JSON, plots) to OUT/report. Long loops show progress: a bar on a "
                    "terminal, a line every 30 s in a log (SPIKEBRIDGE_PROGRESS_SECONDS).",
    )
    p.add_argument("--epochs", type=count, default=demo.DEMO_EPOCHS, help=f"training epochs (default {demo.DEMO_EPOCHS})")
    p.add_argument("--train-images", type=count, default=demo.DEMO_TRAIN_IMAGES,
                   help=f"use the first N training images (default {demo.DEMO_TRAIN_IMAGES})")
    p.add_argument("--out", default="runs/demo", help="run directory (default runs/demo)")
    p.add_argument("--data-root", default=None, help="directory holding the Fashion-MNIST IDX files")
    p.add_argument("--snn-images", type=count, default=demo.DEMO_SNN_IMAGES,
                   help=f"test images the SNNs are simulated on (default {demo.DEMO_SNN_IMAGES}; 10000 for all)")
    p.add_argument("--fresh", action="store_true", help="retrain even if --out holds a finished demo ANN")
    add_device_argument(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from ..demo import run_demo

    return run_demo(args)
