"""`spikebridge finetune`: surrogate-gradient fine-tuning of a rate-coded SNN file
(docs/methods.md §4 "SNN calibration"; latency-increasing T schedule, resumable)."""
from __future__ import annotations

from .common import add_device_argument, count, non_negative, positive


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "finetune", help="fine-tune a converted rate-coded SNN with surrogate gradients",
        description="Train the SNN's weights with surrogate gradients (thresholds fixed), first at the first T "
                    "of --T, then at the next from those weights (002 Sec. 8.2: T=1 for 50 epochs, then T=2,3,4 "
                    "for 20 each). OUT_DIR/finetune_last.pt is written after every epoch; --resume continues it.")
    p.add_argument("snn", metavar="SNN_FILE", help="a rate-coded SNN written by 'spikebridge convert'")
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--data-root", default=None, help="directory holding the dataset files")
    p.add_argument("--T", default="1,2,4", help="latency schedule, e.g. 1,2,4")
    p.add_argument("--epochs", default="5,2,2", help="epochs per T: one number, or one per T")
    p.add_argument("--lr", type=positive, default=1e-3, help="SGD learning rate (002's code: 1e-3; its paper: 5e-3)")
    p.add_argument("--momentum", type=non_negative, default=0.9)
    p.add_argument("--weight-decay", type=non_negative, default=5e-4)
    p.add_argument("--batch-size", type=count, default=64)
    p.add_argument("--limit", type=count, default=None, metavar="N", help="use the first N training images")
    p.add_argument("--seed", type=int, default=0, help="seed of the data order")
    p.add_argument("--out", default="runs/finetune", metavar="OUT_DIR", help="checkpoint directory")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="where to write the fine-tuned SNN")
    p.add_argument("--no-progress", action="store_true")
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
    data = loader(args.dataset, model, "train", args.data_root, args.batch_size, args.limit,
                  shuffle=True, seed=args.seed)
    history = finetune(snn, data, T_schedule=T_schedule, epochs=epochs, lr=args.lr, momentum=args.momentum,
                       weight_decay=args.weight_decay, out=args.out, resume=args.resume,
                       progress=not args.no_progress, device=args.device)
    for h in history:
        print(f"T={h['T']} epoch {h['epoch']}: loss {h['loss']:.4f}  train {100 * h['accuracy']:.2f}%  "
              f"lr {h['lr']:.3g}")
    save(snn, args.output)
    print(f"fine-tuned SNN (T={snn.T}) written to {args.output}")
    return 0
