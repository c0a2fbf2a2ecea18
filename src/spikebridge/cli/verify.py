"""`spikebridge verify CKPT --method M`: does the SNN reproduce the ANN, input by input?"""
from __future__ import annotations

from .common import add_data_arguments, add_device_argument, add_method_arguments, method_options


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "verify", help="compare an ANN checkpoint with its converted SNN",
        description="Convert CKPT with --method, run the ANN and the SNN on the test images, and print the share of "
                    "equal predictions, the largest logit difference and, per QCFS site, how many neurons decode "
                    "to another level than the ANN's (the exact methods pasc and bitplane: none in float64, "
                    "except an activation within rounding of a level boundary).")
    p.add_argument("checkpoint", metavar="CKPT", help="an ANN checkpoint written by 'spikebridge train'")
    add_method_arguments(p, method_required=False, method_help="conversion method (default: %(default)s)")
    p.set_defaults(method="pasc")
    p.add_argument("--float64", action="store_true",
                   help="simulate both in float64 (exact methods: equal predictions; a level mismatch only where "
                        "an activation lies within rounding of a level boundary)")
    add_data_arguments(p)
    add_device_argument(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from ..analysis.verify import verify
    from ..pipeline import convert_checkpoint, loader
    from ..progress import progress

    ckpt, ann, snn = convert_checkpoint(args.checkpoint, args.method, T=args.T, root=args.data_root,
                                        device=args.device, **method_options(args))
    if args.float64:
        ann, snn = ann.double(), snn.double()
    test = loader(args.dataset or ckpt["dataset"], ckpt["model"]["name"], "test", args.data_root,
                  args.batch_size, args.limit)
    batches = ((x.double() if args.float64 and x.is_floating_point() else x)  # token ids stay int64
               for x, _ in progress(test, f"verify {args.method}"))
    report = verify(ann, snn, batches)
    print(f"{args.method} vs the ANN of {args.checkpoint}")
    print(report.table())
    return 0
