"""`spikebridge finetune`: surrogate-gradient fine-tuning of a rate-coded SNN file
(docs/methods.md §4 "SNN calibration"; latency-increasing T schedule, resumable)."""
from __future__ import annotations

from .common import add_device_argument, count, count_or_zero, non_negative, positive


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "finetune", help="fine-tune a converted rate-coded SNN with surrogate gradients",
        description="Train the SNN's weights with surrogate gradients (thresholds fixed), first at the first T "
                    "of --T, then at the next from those weights (002 Sec. 8.2: T=1 for 50 epochs, then T=2,3,4 "
                    "for 20 each). OUT_DIR/finetune_last.pt is written after every epoch; --resume continues it.")
    p.add_argument("snn", metavar="SNN_FILE", help="a rate-coded SNN written by 'spikebridge convert'")
    p.add_argument("--dataset", default=None,
                   help="dataset (default: the one recorded in the SNN file, else fashion-mnist)")
    p.add_argument("--data-root", default=None, metavar="DIR", help="directory holding the dataset files")
    p.add_argument("--T", default="1,2,4", help="latency schedule, comma-separated (default: %(default)s)")
    p.add_argument("--epochs", default="5,2,2", help="epochs per T: one number, or one per T (default: %(default)s)")
    p.add_argument("--lr", type=positive, default=1e-3,
                   help="SGD learning rate (default: %(default)s, as 002's code; its paper: 5e-3)")
    p.add_argument("--momentum", type=non_negative, default=0.9, help="SGD momentum (default: %(default)s)")
    p.add_argument("--weight-decay", type=non_negative, default=5e-4, help="SGD weight decay (default: %(default)s)")
    p.add_argument("--batch-size", type=count, default=64, help="training batch size (default: %(default)s)")
    p.add_argument("--limit", type=count, default=None, metavar="N", help="use the first N training images (default: all)")
    p.add_argument("--test-limit", type=count_or_zero, default=None, metavar="N",
                   help="test accuracy after each stage on the first N test images (default: all; 0: skip it)")
    p.add_argument("--seed", type=int, default=0, help="seed of the data order (default: %(default)s)")
    p.add_argument("--out", default="runs/finetune", metavar="OUT_DIR", help="checkpoint directory (default: %(default)s)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="where to write the fine-tuned SNN")
    p.add_argument("--no-progress", action="store_true", help="no progress bars or per-epoch lines")
    add_device_argument(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from ..calibrate.finetune import finetune
    from ..export.snn_file import load, save
    from ..pipeline import loader
    from .common import int_list

    T_schedule, epochs = int_list(args.T), int_list(args.epochs)
    epochs = epochs[0] if len(epochs) == 1 else epochs
    snn = load(args.snn)
    model = (snn.info.get("model") or {}).get("name")  # recorded by 'spikebridge convert': its input padding
    dataset = args.dataset or snn.info.get("dataset") or "fashion-mnist"
    data = loader(dataset, model, "train", args.data_root, args.batch_size, args.limit, shuffle=True, seed=args.seed)
    test = (loader(dataset, model, "test", args.data_root, 256, args.test_limit)
            if args.test_limit != 0 else None)
    history = finetune(snn, data, T_schedule=T_schedule, epochs=epochs, lr=args.lr, momentum=args.momentum,
                       weight_decay=args.weight_decay, out=args.out, resume=args.resume,
                       progress=not args.no_progress, test_data=test, device=args.device)
    print(f"fine-tuning of {args.snn} on {dataset}, per stage:")
    for i, h in enumerate(history):
        if i + 1 == len(history) or history[i + 1]["stage"] != h["stage"]:  # the stage's last epoch
            test_acc = f"  test {100 * h['test_accuracy']:.2f}%" if "test_accuracy" in h else ""
            print(f"  T={h['T']}: {h['epoch']} epoch(s), loss {h['loss']:.4f}  train {100 * h['accuracy']:.2f}%"
                  f"{test_acc}")
    save(snn, args.output)
    print(f"fine-tuned SNN (T={snn.T}) written to {args.output}")
    return 0
