"""`spikebridge export`: write a rate-coded IF SNN as a NIR graph (soft reset in the metadata)."""
from __future__ import annotations

from ..errors import SpikeBridgeError


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "export", help="export a rate-coded IF SNN to NIR",
        description="Write an SNN file (spikebridge convert -o) as a NIR graph. NIR's IF resets to v_reset; "
                    "spikebridge's resets by subtraction, which the IF nodes' metadata records (reset=subtract, "
                    "v_initial). Only rate-coded IF networks can be exported.",
    )
    p.add_argument("snn", metavar="SNN", help="SNN file written by 'spikebridge convert -o'")
    p.add_argument("--nir", required=True, metavar="OUT", help="NIR file to write (HDF5)")
    p.add_argument("--input-shape", default=None, metavar="C,H,W",
                   help="shape of one input sample, e.g. 1,28,28 (default: recorded in the SNN, if it is)")
    p.add_argument("--allow-drop-ftbc", action="store_true",
                   help="export without the FTBC per-step biases (NIR cannot express them)")
    p.set_defaults(func=run)


def parse_shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(s) for s in text.split(","))
    except ValueError:
        shape = ()
    if not shape or min(shape) < 1:
        raise SpikeBridgeError(f"--input-shape must be positive integers separated by commas, e.g. 1,28,28; got {text!r}")
    return shape


def run(args) -> int:
    from ..export.nir import export_nir
    from ..export.snn_file import load

    snn = load(args.snn)
    shape = parse_shape(args.input_shape) if args.input_shape else None
    graph = export_nir(snn, args.nir, shape, allow_drop_ftbc=args.allow_drop_ftbc)
    neurons = sum(type(n).__name__ == "IF" for n in graph.nodes.values())
    print(f"wrote {args.nir}: {len(graph.nodes)} NIR nodes ({neurons} IF, soft reset in metadata), T={snn.T}")
    return 0
