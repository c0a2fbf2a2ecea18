"""`spikebridge evaluate SNN_OR_CKPT --T 1,2,4,...`: test accuracy for each T from as few
simulations as the method's time policy allows."""
from __future__ import annotations

import json

from .common import add_data_arguments, add_device_argument, add_method_arguments, int_list, method_options


DEFAULT_TS = "1,2,4,8,16,32,64"


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "evaluate", help="accuracy of an SNN at several T (anytime, one simulation)",
        description="Test accuracy of an SNN file (or of an ANN checkpoint converted with --method) after each T "
                    "of --T: rate-coded methods read every T off one simulation, bit-plane runs once per T, and "
                    "PASC runs its own levels (one row, T_eff = mean L; --T does not apply to it).")
    p.add_argument("snn", metavar="SNN_OR_CKPT", help="SNN file, or an ANN checkpoint with --method")
    add_method_arguments(p, method_required=False, method_help="convert an ANN checkpoint with this method first",
                         single_T=False)
    p.add_argument("--T", default=None, help=f"comma-separated step counts (default: {DEFAULT_TS}; "
                                            "the SNN's own T for a method that runs once per T)")
    p.add_argument("--json", default=None, metavar="FILE", help="also write the table as JSON")
    add_data_arguments(p)
    add_device_argument(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from ..analysis.evaluation import evaluate_snn
    from ..conversion.registry import get_method
    from ..errors import SpikeBridgeError
    from ..pipeline import load_snn_or_convert, loader

    Ts = int_list(args.T or DEFAULT_TS)
    T = get_method(args.method).time.steps_for(Ts) if args.method else None
    snn = load_snn_or_convert(args.snn, args.method, T=T, root=args.data_root, device=args.device,
                              **method_options(args))
    time = snn.record.time
    if not time.accepts_T:
        if args.T:
            t_eff = f" (= {snn.info['T_eff']:.2f})" if "T_eff" in snn.info else ""
            print(f"note: --T {args.T} does not apply to {snn.method}: it runs for {time.description.split(';')[0]}"
                  f"{t_eff}; one row, labelled T_eff")
        Ts = None
    elif not time.anytime and not args.T:
        Ts = [snn.T]  # one run per T: by default only the network's own
    dataset = args.dataset or snn.info.get("dataset")
    if not dataset:
        raise SpikeBridgeError("this SNN does not record its dataset: pass --dataset")
    model = (snn.info.get("model") or {}).get("name")
    test = loader(dataset, model, "test", args.data_root, args.batch_size, args.limit)
    ev = evaluate_snn(snn, test, Ts)
    own_levels = not time.accepts_T
    print(f"{snn.method} on {dataset} ({ev.images} test images)")
    print(f"{'T_eff' if own_levels else 'T':>6}  accuracy")
    for steps, acc in ev.accuracy.items():
        shown = f"{snn.info['T_eff']:.2f}" if own_levels else str(steps)
        print(f"{shown:>6}  {100 * acc:7.2f}%")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"method": snn.method, "dataset": dataset, "images": ev.images,
                       "accuracy": {str(k): v for k, v in ev.accuracy.items()}, "info": _jsonable(snn.info)}, f, indent=2)
    return 0


def _jsonable(info: dict) -> dict:
    return json.loads(json.dumps(info, default=str))
