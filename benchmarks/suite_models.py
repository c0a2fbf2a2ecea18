"""The ReLU-conversion suite's models (BENCHMARKS.md §12): architectures that differ in ways
that matter for conversion, trained on Fashion-MNIST and on scikit-learn's digits, kept under
runs/ and reused.

    python benchmarks/suite_models.py --dataset fashion-mnist          # train (or reuse) them all
    python benchmarks/suite_models.py --dataset digits --seeds 0,1,2
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import trained  # noqa: E402



@dataclass(frozen=True)
class SuiteModel:
    key: str
    what: str
    model: str
    kwargs: dict = field(default_factory=dict)
    lr: float | None = None          # None: the recipe's 0.1
    max_pool: bool = False           # trained with max pooling, then average pooling in its place, fine-tuned
    trained_as: str | None = None    # the key of the suite model whose trained ANN this one is (its run directory)


MODELS = (
    SuiteModel("vgg", "plain deep VGG-style, 6 conv + 2 FC, BatchNorm, avg pooling, width 8 (narrow)",
               "vgg_small", {"width": 8}),
    SuiteModel("vgg-wide", "the same VGG at width 16 (2x channels, 4x MACs)", "vgg_small", {"width": 16}),
    SuiteModel("vgg-nobn", "the same VGG without BatchNorm (conv biases), width 8", "vgg_small",
               {"width": 8, "batchnorm": False}, lr=0.05),
    SuiteModel("vgg-maxpool", "the same VGG trained with max pooling, then avg pooling in its place, fine-tuned",
               "vgg_small", {"width": 8, "pool": "max"}, max_pool=True),
    SuiteModel("vgg-maxpool-kept", "the max-pooling VGG of vgg-maxpool as trained, its max pooling converted as it is",
               "vgg_small", {"width": 8, "pool": "max"}, trained_as="vgg-maxpool"),
    SuiteModel("resnet20", "ResNet-20 (widths 16/32/64, stride-2 stem), residual adds", "resnet20",
               {"width": 16, "stem_stride": 2}),
    SuiteModel("resnet20-maxpool", "ResNet-20 with torchvision's stem: 3x3 max pooling, stride 2, after it; converted "
               "with its max pooling", "resnet20", {"width": 16, "stem_pool": True}),
    SuiteModel("rescat", "pre-activation residual + DenseNet concatenation, BN after add/cat", "rescat",
               {"stem_stride": 2}),
    SuiteModel("mobilenetv2", "MobileNetV2 with ReLU, depthwise convs (width 0.35, stride-2 stem, 128-d head)",
               "mobilenetv2", {"width_mult": 0.35, "stem_stride": 2, "last_channel": 128}),
    # Held out: added after the default (network-level + FTBC) was chosen on the models above.
    SuiteModel("vgg-deep", "held out: the VGG at 4 convs per stage (12 conv + 2 FC, twice as deep), width 8",
               "vgg_small", {"width": 8, "convs": 4}),
    SuiteModel("mlp", "held out: an MLP, 3 hidden layers of 256, no convolution and no BatchNorm", "mlp"),
)
BY_KEY = {m.key: m for m in MODELS}

# dataset -> training settings
RECIPES = {
    "fashion-mnist": {"epochs": 3, "batch_size": 128, "augment": True},
    "digits": {"epochs": 40, "batch_size": 64, "augment": False},
}
# dataset -> epochs of fine-tuning with average pooling in place of max pooling (lr 0.01). The
# swap alone leaves 45.0% of 87.0% (Fashion-MNIST) and 21.6% of 98.8% (digits).
POOL_FINETUNE_EPOCHS = {"fashion-mnist": 1, "digits": 10}


def run_dir(runs: str, dataset: str, key: str, seed: int) -> str:
    return f"{runs}/{dataset}/{key}_s{seed}"


def suite_model(runs: str, dataset: str, key: str, seed: int = 0):
    """(ANN to convert, checkpoint): trained or reused; a max-pooling model is then fine-tuned
    with average pooling in place of its max pooling (what a user does before converting)."""
    m = BY_KEY[key]
    recipe = RECIPES[dataset]
    out = run_dir(runs, dataset, m.trained_as or key, seed)
    model, ckpt = trained(out, model=m.model, model_kwargs=dict(m.kwargs), dataset=dataset, levels=None, seed=seed,
                          lr=m.lr, **recipe)
    if m.max_pool:
        model, ckpt = trained(f"{out}/avg", init_from=f"{out}/last.pt", model_kwargs={"pool": "avg"}, dataset=dataset,
                              levels=None, seed=seed, lr=0.01,
                              **dict(recipe, epochs=POOL_FINETUNE_EPOCHS[dataset]))
    return model.eval(), ckpt


def suite_arguments(doc: str, report: str | None = None) -> argparse.ArgumentParser:
    """The options every suite script takes: which dataset, models and seeds, and where models
    live (and ``--report``, with help ``report``, where given: print stored results, run nothing).
    Also one torch thread, as every suite model was trained and every row made: the weights depend
    on it (digits vgg seed 0 trains to 99.80% on one thread and to 99.20% on two)."""
    torch.set_num_threads(1)
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="fashion-mnist", choices=sorted(RECIPES))
    p.add_argument("--models", default=",".join(BY_KEY))
    p.add_argument("--seeds", default="0")
    p.add_argument("--runs", default="runs/suite")
    if report is not None:
        p.add_argument("--report", action="store_true", help=report)
    return p


def main() -> None:
    args = suite_arguments(__doc__).parse_args()
    for key in args.models.split(","):
        for seed in map(int, args.seeds.split(",")):
            _, ckpt = suite_model(args.runs, args.dataset, key, seed)
            print(f"{args.dataset} {key} seed {seed}: ANN {100 * ckpt['metrics'][-1]['test_acc']:.2f}%", flush=True)


if __name__ == "__main__":
    main()
