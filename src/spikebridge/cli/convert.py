"""`spikebridge convert CKPT --method M -o SNN`: a trained ANN checkpoint to an SNN file."""
from __future__ import annotations

import argparse

from .common import add_device_argument, add_method_arguments, count


def add_parser(subparsers) -> None:
    from ..conversion.registry import methods

    p = subparsers.add_parser("convert", help="convert a trained ANN checkpoint into an SNN file",
                              description=f"Methods:\n{methods()}", formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", metavar="CKPT", help="checkpoint written by 'spikebridge train'")
    add_method_arguments(p, method_required=False,
                         method_help="conversion method (listed above; default: the one marked (default) for the "
                                     "checkpoint's kind, QCFS or ReLU ANN)")
    p.add_argument("-o", "--output", required=True, metavar="SNN", help="SNN file to write")
    p.add_argument("--data-root", default=None, metavar="DIR", help="where the dataset files are (methods for ReLU ANNs)")
    p.add_argument("--calibration-images", type=count, default=2048, metavar="N",
                   help="methods for ReLU ANNs: statistics from the first N training images (default: %(default)s)")
    add_device_argument(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from ..conversion.converter import default_for
    from ..conversion.registry import get_method, options_from_arguments
    from ..export.snn_file import save
    from ..pipeline import convert_checkpoint, load_ann
    from ..snn.codings import RATE

    record = get_method(args.method) if args.method else default_for(load_ann(args.checkpoint)[1])
    if not args.method:
        print(f"no --method: converting with {record.name!r}, the default for a {record.source.value}")
    _, _, snn = convert_checkpoint(args.checkpoint, record.name, T=args.T, root=args.data_root,
                                   calibration_images=args.calibration_images, device=args.device,
                                   **options_from_arguments(args, record))
    save(snn, args.output)
    steps = f"T_eff={snn.info['T_eff']:.2f}" if "T_eff" in snn.info else f"T={snn.T}"
    print(f"{snn.method} SNN ({steps}, {len(snn.neurons())} spiking sites) written to {args.output}")
    if snn.coding is RATE:  # FTBC applies to every rate-coded SNN; it keeps only the bias that helps
        print(f"recommended next: spikebridge calibrate ftbc {args.output} --ckpt {args.checkpoint} -o OUT "
              "(FTBC, docs/methods.md §5)")
    return 0

