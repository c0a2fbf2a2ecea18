"""`spikebridge report CKPT`: convert with several methods, simulate once each, and write
report.md, report.json and PNG plots (accuracy vs T, spike rates, energy, activations, AL)."""
from __future__ import annotations

from .common import add_data_arguments, add_device_argument, count_or_zero, int_list


def add_parser(subparsers) -> None:
    from ..conversion.registry import add_option_arguments

    p = subparsers.add_parser("report", help="tables, JSON and plots of accuracy, spikes and energy")
    p.add_argument("checkpoint", metavar="CKPT", help="checkpoint written by 'spikebridge train'")
    p.add_argument("--methods", default="qcfs,pasc,bitplane", help="comma-separated conversion methods (default: %(default)s)")
    p.add_argument("--T", default="1,2,4,8,16",
                   help="step counts for rate-coded methods and bit-plane; bit-plane also runs its own T (default: %(default)s)")
    p.add_argument("-o", "--output", default="report", metavar="DIR", help="folder to write (default: %(default)s)")
    p.add_argument("--al-images", type=count_or_zero, default=0, metavar="N",
                   help="also compute the AL metric per site on N training images (QCFS checkpoints)")
    add_option_arguments(p)
    add_data_arguments(p)
    add_device_argument(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from ..analysis.report import write_report
    from ..analysis.summary import analyse, summary_table
    from ..conversion.registry import get_method, options_for_methods
    from ..pipeline import convert_checkpoint, loader

    Ts = int_list(args.T)
    records = [get_method(m) for m in args.methods.split(",") if m]
    options = options_for_methods(args, records)
    snns, ann, ckpt = {}, None, None
    for record in records:
        ckpt, ann, snns[record.name] = convert_checkpoint(args.checkpoint, record.name, T=record.time.steps_for(Ts),
                                                          root=args.data_root, device=args.device,
                                                          **options[record.name])
    dataset, model = args.dataset or ckpt["dataset"], ckpt["model"]["name"]
    test = loader(dataset, model, "test", args.data_root, args.batch_size, args.limit)
    al_loader = loader(dataset, model, "train", args.data_root, args.batch_size) if args.al_images else None
    data = analyse(ann, snns, test, Ts, title=f"{model} on {dataset} ({args.checkpoint})",
                   al_loader=al_loader, al_images=args.al_images)
    path = write_report(args.output, data)
    print(f"{len(snns)} SNNs on {data['images']} test images, each at the steps its energy is given for "
          "(every T: report.md)")
    print(summary_table(data, every_T=False))
    print(f"report written to {path} (with report.json and the plots beside it)")
    return 0
