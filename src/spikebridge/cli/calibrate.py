"""`spikebridge calibrate ftbc`: FTBC biases for a rate-coded SNN file (docs/methods.md §5)."""
from __future__ import annotations

from .common import add_device_argument, count, count_or_zero, positive


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("calibrate", help="calibrate a converted SNN (FTBC)",
                              description="Calibrate a converted SNN file; the result goes to a new file.")
    methods = p.add_subparsers(dest="calibration", required=True, metavar="METHOD")
    f = methods.add_parser(
        "ftbc", help="forward temporal bias correction (rate-coded SNNs)",
        description="FTBC (docs/methods.md §5): per-(step, channel) biases of every IF neuron, calibrated forward, "
                    "layer by layer, against the ANN's activations on training images. Writes the calibrated "
                    "SNN to OUT and prints each site's per-step error before and after.")
    f.add_argument("snn", metavar="SNN_FILE", help="a rate-coded SNN written by 'spikebridge convert'")
    f.add_argument("--ckpt", required=True, metavar="ANN_CKPT", help="the ANN checkpoint the SNN was converted from")
    f.add_argument("--dataset", default=None, help="dataset (default: the one recorded in the SNN file, else fashion-mnist)")
    f.add_argument("--data-root", default=None, help="directory holding the dataset files")
    f.add_argument("--alpha", type=positive, default=0.5, help="bias step size α (003: 0.2-0.5; default: %(default)s)")
    f.add_argument("--batches", type=count, default=4,
                   help="calibration batches of training images (003: 1-10; default: %(default)s)")
    f.add_argument("--check-batches", type=count_or_zero, default=4,
                   help="further batches on which each step's biases must help, or are scaled down "
                        "(0: no check; default: %(default)s)")
    f.add_argument("--batch-size", type=count, default=64, help="images per calibration batch (default: %(default)s)")
    f.add_argument("-o", "--output", required=True, metavar="OUT", help="where to write the calibrated SNN")
    f.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_device_argument(f)
    f.set_defaults(func=run)


def run(args) -> int:
    from ..train.checkpoint import model_from_checkpoint
    from ..calibrate.ftbc import ftbc
    from ..export.snn_file import load, save
    from ..pipeline import loader

    snn = load(args.snn)
    ann = model_from_checkpoint(args.ckpt)
    dataset = args.dataset or snn.info.get("dataset") or "fashion-mnist"
    data = loader(dataset, ann.spikebridge_spec["name"], "train", args.data_root, args.batch_size,
                  (args.batches + args.check_batches) * args.batch_size)
    summary = ftbc(snn, ann, data, alpha=args.alpha, batches=args.batches, check_batches=args.check_batches,
                   progress=not args.no_progress, device=args.device)
    save(snn, args.output)
    print(f"FTBC, T={snn.T}, alpha={args.alpha}, {args.batches} batches of {args.batch_size}: "
          "per-step channel-mean |error| before -> after")
    for site, e in summary.items():
        before = " ".join(f"{v:.4f}" for v in e["error_before"])
        after = " ".join(f"{v:.4f}" for v in e["error_after"])
        print(f"  {site}: {before} -> {after}")
    if args.check_batches:
        kept = next(iter(summary.values()))["kept"]
        print(f"bias scale kept per step (checked on {args.check_batches} further batches): "
              + " ".join(f"{v:g}" for v in kept))
    print(f"calibrated SNN written to {args.output}")
    return 0
