"""`spikebridge demo`: the main job end to end on the default dataset (spikebridge.demo)."""
from __future__ import annotations

from .common import count


def add_parser(subparsers) -> None:
    from .. import demo

    p = subparsers.add_parser(
        "demo", help="train a QCFS small CNN on Fashion-MNIST and run the pipeline end to end",
        description="Train (or reuse) a QCFS small_cnn on Fashion-MNIST, then run the conversion pipeline.",
    )
    p.add_argument("--epochs", type=count, default=demo.DEMO_EPOCHS, help=f"training epochs (default {demo.DEMO_EPOCHS})")
    p.add_argument("--train-images", type=count, default=demo.DEMO_TRAIN_IMAGES,
                   help=f"use the first N training images (default {demo.DEMO_TRAIN_IMAGES})")
    p.add_argument("--out", default="runs/demo", help="run directory (default runs/demo)")
    p.add_argument("--data-root", default=None, help="directory holding the Fashion-MNIST IDX files")
    p.add_argument("--snn-images", type=count, default=demo.DEMO_SNN_IMAGES,
                   help=f"test images the SNNs are simulated on (default {demo.DEMO_SNN_IMAGES}; 10000 for all)")
    p.add_argument("--fresh", action="store_true", help="retrain even if --out holds a finished demo ANN")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..demo import run_demo

    return run_demo(args)
