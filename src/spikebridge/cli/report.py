"""`spikebridge report CKPT`: convert with several methods, simulate once each, and write
report.md, report.json and PNG plots (accuracy vs T, spike rates, energy, activations, AL)."""
from __future__ import annotations

from .common import add_data_arguments, convert_checkpoint, int_list, loader_for


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("report", help="tables, JSON and plots of accuracy, spikes and energy")
    p.add_argument("checkpoint", metavar="CKPT", help="checkpoint written by 'spikebridge train'")
    p.add_argument("--methods", default="qcfs,pasc,bitplane", help="comma-separated conversion methods")
    p.add_argument("--T", default="1,2,4,8,16", help="step counts for rate-coded methods and bit-plane")
    p.add_argument("-o", "--output", default="report", metavar="DIR", help="folder to write")
    p.add_argument("--al-images", type=int, default=0, metavar="N",
                   help="also compute the AL metric per site on N training images (QCFS checkpoints)")
    add_data_arguments(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from ..analysis import analyse
    from ..report import write_report

    Ts = int_list(args.T)
    snns, ann, ckpt = {}, None, None
    for method in [m for m in args.methods.split(",") if m]:
        ckpt, ann, snns[method] = convert_checkpoint(args.checkpoint, method, T=_steps(method, Ts), root=args.data_root)
    dataset, model = args.dataset or ckpt["dataset"], ckpt["model"]["name"]
    loader = loader_for(dataset, model, "test", args.data_root, args.batch_size, args.limit)
    al_loader = loader_for(dataset, model, "train", args.data_root, args.batch_size) if args.al_images else None
    data = analyse(ann, snns, loader, Ts, title=f"{model} on {dataset} ({args.checkpoint})",
                   al_loader=al_loader, al_images=args.al_images)
    path = write_report(args.output, data)
    print(f"report written to {path}")
    return 0


def _steps(method: str, Ts: list[int]):
    """Rate-coded methods run to the longest T; PASC and bit-plane choose their own length."""
    return None if method in ("pasc", "bitplane") else max(Ts)
