"""`spikebridge evaluate SNN_OR_CKPT --T 1,2,4,...`: test accuracy for each T from one simulation."""
from __future__ import annotations

import json

from .common import add_data_arguments, int_list, load_snn_or_convert, loader_for


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("evaluate", help="accuracy of an SNN at several T (anytime, one simulation)")
    p.add_argument("snn", metavar="SNN_OR_CKPT", help="SNN file, or an ANN checkpoint with --method")
    p.add_argument("--method", default=None, help="convert an ANN checkpoint with this method first")
    p.add_argument("--T", default="1,2,4,8,16,32,64", help="comma-separated step counts")
    p.add_argument("--json", default=None, metavar="FILE", help="also write the table as JSON")
    add_data_arguments(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from ..errors import SpikeBridgeError
    from ..evaluation import evaluate_snn

    Ts = int_list(args.T)
    snn = load_snn_or_convert(args.snn, args.method, T=max(Ts) if args.method else None, root=args.data_root)
    dataset = args.dataset or snn.info.get("dataset")
    if not dataset:
        raise SpikeBridgeError("this SNN does not record its dataset: pass --dataset")
    model = (snn.info.get("model") or {}).get("name")
    loader = loader_for(dataset, model, "test", args.data_root, args.batch_size, args.limit)
    ev = evaluate_snn(snn, loader, Ts)
    label = "T_eff" if snn.method == "pasc" else "T"
    print(f"{snn.method} on {dataset} ({ev.images} test images)")
    print(f"{label:>6}  accuracy")
    for T, acc in ev.accuracy.items():
        shown = f"{snn.info['T_eff']:.2f}" if snn.method == "pasc" else str(T)
        print(f"{shown:>6}  {100 * acc:7.2f}%")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"method": snn.method, "dataset": dataset, "images": ev.images,
                       "accuracy": {str(k): v for k, v in ev.accuracy.items()}, "info": _jsonable(snn.info)}, f, indent=2)
    return 0


def _jsonable(info: dict) -> dict:
    return json.loads(json.dumps(info, default=str))
