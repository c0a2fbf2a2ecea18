"""`spikebridge convert CKPT --method M -o SNN`: a trained ANN checkpoint to an SNN file."""
from __future__ import annotations

from .common import convert_checkpoint


def add_parser(subparsers) -> None:
    from ..convert import methods

    listing = "; ".join(f"{k}: {v}" for k, v in methods().items())
    p = subparsers.add_parser("convert", help="convert a trained ANN checkpoint into an SNN file",
                              description=f"Methods — {listing}")
    p.add_argument("checkpoint", metavar="CKPT", help="checkpoint written by 'spikebridge train'")
    p.add_argument("--method", required=True, help="conversion method (see 'spikebridge convert -h')")
    p.add_argument("--T", type=int, default=None, help="steps for rate-coded methods / bit-plane")
    p.add_argument("-o", "--output", required=True, metavar="SNN", help="SNN file to write")
    p.add_argument("--data-root", default=None, metavar="DIR")
    p.add_argument("--calibration-images", type=int, default=2048, metavar="N",
                   help="ReLU methods: statistics from the first N training images")
    p.add_argument("--channel-wise", action="store_true", help="ReLU methods: one threshold per channel")
    p.add_argument("--percentile", type=float, default=99.9, help="percentile method: which percentile")
    p.add_argument("--m", type=int, default=1, choices=(1, 2), help="data-driven: error power")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..convert import METHODS
    from ..serialization import save

    options = {}
    if args.method in METHODS and METHODS[args.method].source == "relu":
        options = {"channel_wise": args.channel_wise, "percentile": args.percentile, "m": args.m}
    _, _, snn = convert_checkpoint(args.checkpoint, args.method, T=args.T, root=args.data_root,
                                   calibration_images=args.calibration_images, **options)
    save(snn, args.output)
    steps = f"T_eff={snn.info['T_eff']:.2f}" if "T_eff" in snn.info else f"T={snn.T}"
    print(f"{args.method} SNN ({steps}, {len(snn.neurons())} spiking sites) written to {args.output}")
    return 0
