"""`spikebridge train`: train a QCFS ANN (or a plain ReLU ANN with --relu); torchrun-ready."""
from __future__ import annotations

import argparse

from ..errors import SpikeBridgeError
from .common import add_device_argument, count, count_or_zero, non_negative, positive


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "train", help="train a QCFS (or ReLU) ANN; resumable; multi-GPU via torchrun",
        description="Train a QCFS ANN (docs/methods.md §0 recipe). Writes OUT/last.pt after every epoch (atomically) "
                    "and OUT/metrics.jsonl. Multi-GPU/node: torchrun --nproc_per_node N -m spikebridge train ...",
    )
    p.add_argument("--model", default=None, help="model name (default: small_cnn, or the --init-from model)")
    p.add_argument("--model-option", action="append", default=[], metavar="KEY=VALUE", type=model_option,
                   help="an option of the model's constructor, e.g. --model-option activation=relu for vit_tiny "
                        "(VALUE read as a Python number, bool or string; repeat for several; default: none, the model's "
                        "defaults)")
    p.add_argument("--dataset", default="fashion-mnist", help="fashion-mnist, mnist, cifar10, cifar100, imagenet, digits, or a text task: "
                        "synthetic-sentiment, sst2, qnli, qqp (GLUE: --data-root holds train.tsv, dev.tsv, vocab.txt; "
                        "text tasks take --model bert_tiny) (default: %(default)s)")
    p.add_argument("--data-root", default=None, help="directory holding the dataset files")
    p.add_argument("--out", default="runs/train", help="run directory (default: runs/train)")
    p.add_argument("--levels", type=count, default=None, help="QCFS levels L at every site (default 8)")
    p.add_argument("--levels-file", default=None, help='per-site levels, JSON {"levels": {site: L}} (spikebridge al)')
    p.add_argument("--relu", "--float", dest="relu", action="store_true",
                   help="train the float model as written, without quantized sites: a plain ReLU ANN, or GELU/SiLU/... "
                        "for models that have them (--init-from it later to quantize)")
    p.add_argument("--epochs", type=count, default=3, help="training epochs (default: %(default)s)")
    p.add_argument("--batch-size", type=count, default=128, help="batch size per process (default: %(default)s)")
    p.add_argument("--lr", type=positive, default=None, help="initial learning rate (default 0.1; 0.02 for cifar100; 1e-3 (AdamW) for text models)")
    p.add_argument("--momentum", type=non_negative, default=0.9, help="SGD momentum (default: %(default)s)")
    p.add_argument("--optimizer", choices=("sgd", "adamw"), default=None,
                   help="sgd (with --momentum) or adamw (decoupled --weight-decay; e.g. --lr 1e-3 --weight-decay 0.05 "
                        "for vit_tiny) (default: sgd; adamw for text models)")
    p.add_argument("--weight-decay", type=non_negative, default=None, help="default 5e-4; 1e-4 for imagenet; 0.01 for text models")
    p.add_argument("--threshold", type=positive, default=8.0, help="initial QCFS threshold θ (default 8.0)")
    p.add_argument("--channel-wise", action="store_true", help="one threshold per channel")
    p.add_argument("--as-relu", default="", metavar="NAMES",
                   help="comma-separated activations (e.g. gelu) given QCFS (ReLU) sites instead of quantized "
                        "ones: the 001 A.6 recipe for BERT, convertible by rate-coded methods (default: none)")
    p.add_argument("--augment", action=argparse.BooleanOptionalAction, default=True,
                   help="random crop + flip (default: on)")
    p.add_argument("--cutout", action="store_true", help="Cutout (cifar10/cifar100)")
    p.add_argument("--autoaugment", action="store_true", help="AutoAugment (cifar10/cifar100)")
    p.add_argument("--seed", type=int, default=0, help="seed of the initial weights and the data order (default: %(default)s)")
    p.add_argument("--init-from", default=None, metavar="CKPT",
                   help="start from a trained checkpoint: a ReLU ANN (θ from its 99.9th-percentile activations) "
                        "or a QCFS ANN (θ kept, new levels); --model-option changes options of its model whose weights "
                        "still fit (e.g. pool=avg)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out with its recorded settings (other training options are ignored)")
    p.add_argument("--bit-l1", type=non_negative, default=0.0, metavar="LAMBDA",
                   help="add 001's bit regulariser: LAMBDA x the number of 1-bits of every hidden QCFS level "
                        "(docs/methods.md §3; surrogate gradient LAMBDA·T on 0 < a < θ); fewer spikes for bit-plane "
                        "SNNs. Default 0 (off); recorded in the checkpoint")
    p.add_argument("--bit-l1-normalize", choices=("sum", "mean"), default="sum",
                   help="sum: raw sum over neurons and the batch (001's form: 1e-8 CIFAR, 5e-10 ImageNet; "
                        "scales with batch and network size); mean: per neuron and image "
                        "(Fashion-MNIST small_cnn: 0.03 to 0.1; 0.03 kept accuracy with 1.35x fewer spikes, "
                        "0.1 gave 2.8x fewer for -1.6%%, see benchmarks/results/training_costs.md; default: %(default)s)")
    p.add_argument("--limit-train", type=count, default=None, metavar="N", help="use the first N training images")
    p.add_argument("--limit-test", type=count, default=None, metavar="N", help="use the first N test images")
    p.add_argument("--workers", type=count_or_zero, default=0, help="data loader worker processes (default: 0)")
    add_device_argument(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bars or per-epoch lines")
    p.set_defaults(func=run)


def model_option(text: str) -> tuple[str, object]:
    """KEY=VALUE with VALUE a Python literal (number, bool, None) or else a string."""
    import ast

    key, sep, value = text.partition("=")
    if not sep or not key.strip().isidentifier():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, e.g. activation=relu; got {text!r}")
    try:
        value = ast.literal_eval(value)
    except (ValueError, SyntaxError):
        pass  # a plain string
    return key.strip(), value


def run(args) -> int:
    from ..train import distributed
    from ..train.loop import TrainConfig, train

    if args.relu and (args.levels is not None or args.levels_file):
        raise SpikeBridgeError("--relu (--float) trains the float model without quantized sites; it cannot be "
                               "combined with --levels or --levels-file")
    if args.levels is not None and args.levels_file:
        raise SpikeBridgeError("give either --levels or --levels-file, not both")
    config = TrainConfig(
        model=args.model, dataset=args.dataset, out=args.out,
        levels=None if args.relu else (args.levels if args.levels is not None else 8),
        levels_file=args.levels_file, model_kwargs=dict(args.model_option), epochs=args.epochs,
        batch_size=args.batch_size, lr=args.lr,
        momentum=args.momentum, weight_decay=args.weight_decay, optimizer=args.optimizer, threshold=args.threshold,
        channel_wise=args.channel_wise, as_relu=[n for n in args.as_relu.split(",") if n], seed=args.seed,
        augment=args.augment, cutout=args.cutout,
        autoaugment=args.autoaugment, init_from=args.init_from, limit_train=args.limit_train,
        limit_test=args.limit_test, bit_l1=args.bit_l1, bit_l1_normalize=args.bit_l1_normalize,
        resume=args.resume, data_root=args.data_root, workers=args.workers, device=args.device,
    )
    try:
        _, history = train(config, progress=not args.no_progress)
        if distributed.is_main():
            print(f"test accuracy {100 * history[-1]['test_acc']:.2f}%; checkpoint {args.out}/last.pt")
    finally:
        distributed.cleanup()
    return 0
