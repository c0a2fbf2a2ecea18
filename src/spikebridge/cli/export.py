"""`spikebridge export`: write a rate-coded IF SNN as a NIR graph for a target importer, check it
in the importer when it is installed, and predict what the importer will compute."""
from __future__ import annotations

from ..errors import SpikeBridgeError
from .common import add_device_argument

TARGET_NOTES = (
    "No importer has an initial potential: v0 is spread over the T steps as a bias v0/T (--v0 per-step, "
    "default) or dropped (--v0 zero). A hard reset discards the charge above the threshold; "
    "--threshold-scale L makes the neurons fire at L*theta (spikes still worth theta); defaults: {scales} "
    "(BENCHMARKS.md section 7). Every target folds the spike value theta into the next layer and flattens with "
    "negative dims. snnTorch and Norse install together: pip install 'spikebridge[nir]'; sinabs needs its own "
    "environment (it pins nir<=1.0.4). Feed the importer the analog input at every one of the T steps; the "
    "logits are the mean of the output over the steps.")


def target_help() -> str:
    """The epilog: each target's record, then what all share."""
    import textwrap

    from ..export.targets import TARGETS

    lines = ["targets (spikebridge's own neuron resets by subtraction, fires on v >= theta, starts at v0):"]
    for t in TARGETS.values():
        lines += textwrap.wrap(t.summary, 92, initial_indent=f"  {t.name:<9} ", subsequent_indent=" " * 12)
    scales = ", ".join(f"{t.name} {t.threshold_scale:g}" for t in TARGETS.values() if t.importer)
    return "\n".join(lines + textwrap.wrap(TARGET_NOTES.format(scales=scales), 94, break_on_hyphens=False))


def add_parser(subparsers) -> None:
    import argparse

    from ..export.targets import TARGETS

    p = subparsers.add_parser(
        "export", help="export a rate-coded IF SNN to NIR for snnTorch, Norse or sinabs",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Write an SNN file (spikebridge convert -o) as a NIR graph adapted to one importer, run it "
                    "in that importer when it is installed here, and predict the importer's accuracy by "
                    "simulating the SNN under its neuron semantics. Only rate-coded IF networks can be exported.",
        epilog=target_help(),
    )
    p.add_argument("snn", metavar="SNN", help="SNN file written by 'spikebridge convert -o'")
    p.add_argument("--nir", required=True, metavar="OUT", help="NIR file to write (HDF5)")
    p.add_argument("--target", default="generic", choices=list(TARGETS),
                   help="the importer whose conventions the graph follows (default: generic)")
    p.add_argument("--v0", default=None, choices=["per-step", "zero"],
                   help="importer targets: spread the initial potential v0 over the steps as a bias v0/T "
                        "(per-step, default) or drop it (zero)")
    p.add_argument("--threshold-scale", type=float, default=None, metavar="L",
                   help="importer targets: the exported neurons fire at L x the threshold (default: the target's)")
    p.add_argument("--input-shape", default=None, metavar="C,H,W",
                   help="shape of one input sample, e.g. 1,28,28 (default: recorded in the SNN, if it is)")
    p.add_argument("--allow-drop-ftbc", action="store_true",
                   help="export without the FTBC per-step biases (NIR cannot express them)")
    p.add_argument("--limit", type=int, default=None, metavar="N",
                   help="predict the importer's accuracy on the first N test images of the SNN's dataset "
                        "(the SNN's own accuracy next to it)")
    p.add_argument("--data-root", default=None, metavar="DIR", help="where the dataset files are")
    p.add_argument("--no-check", dest="check", action="store_false",
                   help="do not run the file in the target's importer (default: run it there when the importer "
                        "is installed)")
    add_device_argument(p)
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
    import torch

    from ..export.importers import IMPORTERS, check_here
    from ..export.nir import export_nir
    from ..export.snn_file import load
    from ..export.targets import emulate, get_target

    from ..device import resolve_device

    resolve_device(args.device)  # a device that is not here is refused before any work
    snn = load(args.snn)
    shape = parse_shape(args.input_shape) if args.input_shape else None
    target = get_target(args.target)
    graph = export_nir(snn, args.nir, shape, allow_drop_ftbc=args.allow_drop_ftbc, target=target.name, v0=args.v0,
                       threshold_scale=args.threshold_scale)
    neurons = sum(type(n).__name__ in ("IF", "LIF") for n in graph.nodes.values())
    semantics = target.semantics_for(args.v0, args.threshold_scale)
    print(f"wrote {args.nir}: {len(graph.nodes)} NIR nodes ({neurons} neuron nodes), target {target.name}, T={snn.T}")
    print(f"  the importer's neurons: {semantics.describe()}")
    emulated = emulate(snn, target.name, args.v0, args.threshold_scale)
    loader = _test_loader(snn, args) if args.limit else None
    if loader is not None:
        from ..analysis.evaluation import evaluate_snn

        own = evaluate_snn(snn, loader, [snn.T], progress=False, device=args.device).accuracy[snn.T]
        pred = evaluate_snn(emulated, loader, [snn.T], progress=False, reference=snn, device=args.device)
        print(f"  predicted accuracy on {pred.images} test images at T={snn.T}: {100 * pred.accuracy[snn.T]:.2f}% "
              f"under the target's neurons, {100 * own:.2f}% spikebridge's own SNN "
              f"({100 * pred.agreement[snn.T]:.2f}% of predictions equal)")
    if target.importer is None:
        print("  not run in an importer: no importer implements spikebridge's own neuron (reset by subtraction, v0)")
        return 0
    importer = IMPORTERS[target.importer]
    check = None
    if args.check:
        x = next(iter(loader))[0][:16] if loader is not None else torch.rand(8, *graph.nodes["input"].input_type["input"])
        check = check_here(importer.name, args.nir, emulated.cpu(), x.cpu())  # the importers run on the CPU
    if check is not None:
        print(f"  checked here against {check.line()}")
    else:
        why = "--no-check" if not args.check else f"{importer.label} is not installed here"
        print(f"  not run here ({why}); spikebridge's tests run this target in {importer.tested()}")
    return 0


def _test_loader(snn, args):
    from ..pipeline import loader

    dataset = snn.info.get("dataset")
    if dataset is None:
        raise SpikeBridgeError("--limit needs the SNN's dataset, which it does not record (convert it from a "
                               "checkpoint with 'spikebridge convert')")
    model = (snn.info.get("model") or {}).get("name")
    return loader(dataset, model, "test", args.data_root, batch_size=256, limit=args.limit)
