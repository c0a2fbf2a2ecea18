"""`spikebridge al`: AL levels per QCFS site (docs/methods.md §7), or all of PASCAL Alg. 4 with --train.

    spikebridge al CKPT --levels 1,2,4 [--clusters 3] [--images 3000] [--alpha A] [-o levels.json] [--plot al.png]
    spikebridge al --train --levels 2,4,8 --levels-uniform 8 --epochs E [--model ...] --out runs/al
"""
from __future__ import annotations

from ..errors import SpikeBridgeError
from .common import add_device_argument, count, count_or_zero, int_list, positive

# --train options: (flag, dest, argparse kwargs); None by default so that misuse is detected.
_TRAIN_ONLY = [
    ("--out", dict(metavar="DIR", help="run directory of the four stages (default: runs/al)")),
    ("--model", dict(help="model name (default: small_cnn)")),
    ("--dataset", dict(help="dataset (default: fashion-mnist)")),
    ("--levels-uniform", dict(type=count, metavar="L",
                              help="uniform L_α of stage_1_uniform and stage_2_uniform (default 8)")),
    ("--epochs", dict(type=count, metavar="E", help="epochs of stage_1_uniform (default 3)")),
    ("--stage2-epochs", dict(type=count, metavar="N", help="epochs of stage_2_uniform (default round(2E/3))")),
    ("--stage3-epochs", dict(type=count, metavar="N", help="epochs of stage_3_adaptive, at the AL levels (default E)")),
    ("--lr", dict(type=positive, help="initial learning rate of every stage (default: the recipe's)")),
    ("--seed", dict(type=int, help="seed of every stage (so stage_2_uniform starts from stage_1_uniform's "
                                   "initial weights; default 0)")),
    ("--limit-train", dict(type=count, metavar="N", help="use the first N training images")),
    ("--limit-test", dict(type=count, metavar="N", help="use the first N test images")),
    ("--workers", dict(type=count_or_zero, help="data loader worker processes (default 0)")),
]


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "al", help="AL: adaptive levels per QCFS site (PASCAL Alg. 3), or Alg. 4 end to end with --train",
        description="Compute the AL metric M = A·(g²+1)·K per QCFS site on the first training images of the "
                    "checkpoint's dataset, cluster the sites by M and give higher M fewer levels (docs/methods.md §7). "
                    "With --train (no CKPT): PASCAL Alg. 4 in OUT/stage_1_uniform, OUT/al, OUT/stage_2_uniform "
                    "(retrained from the same initial weights for ~2/3 of the epochs), OUT/stage_3_adaptive "
                    "(stage_2_uniform's weights and θ at the AL levels); run it again to resume after an "
                    "interruption.",
    )
    p.add_argument("checkpoint", nargs="?", metavar="CKPT", help="QCFS checkpoint (spikebridge train)")
    p.add_argument("--levels", type=int_list, required=True, metavar="L1,L2,...",
                   help="the levels of the clusters; the cluster with the highest M gets the smallest")
    p.add_argument("--clusters", type=count, default=None, metavar="χ",
                   help="number of clusters (default: how many --levels)")
    p.add_argument("--images", type=count, default=3000, metavar="N",
                   help="training images for the histograms (default 3000)")
    p.add_argument("--alpha", type=positive, default=None, help="agreement cut-off α (default 1/(2·number of sites))")
    p.add_argument("-o", "--output", default=None, metavar="FILE",
                   help='levels file {"levels": {site: L}} for train --levels-file (default: levels.json)')
    p.add_argument("--plot", default=None, metavar="PNG", help="also save a bar plot of M per site")
    p.add_argument("--data-root", default=None, metavar="DIR", help="where the dataset files are")
    p.add_argument("--batch-size", type=count, default=None, help="default 256 for the AL pass, 128 for --train")
    g = p.add_argument_group("PASCAL Alg. 4 (--train)")
    g.add_argument("--train", action="store_true", help="run Alg. 4: train, AL, retrain, train at the AL levels")
    for flag, kwargs in _TRAIN_ONLY:
        g.add_argument(flag, default=None, **kwargs)
    g.add_argument("--no-progress", action="store_true", help="no progress bars or per-epoch lines")
    add_device_argument(p)
    p.set_defaults(func=run)


def run(args) -> int:
    clusters = len(args.levels) if args.clusters is None else args.clusters
    if args.train:
        return _train(args, clusters)
    given = [flag for flag, _ in _TRAIN_ONLY if getattr(args, flag[2:].replace("-", "_")) is not None]
    if args.checkpoint is None:
        raise SpikeBridgeError("give a QCFS checkpoint, or --train to run PASCAL Alg. 4")
    if given:
        raise SpikeBridgeError(f"{', '.join(given)} only apply with --train")
    from ..train.adaptive import al_table, compute_al
    from ..train.al import plot_metric, save_levels_file

    by_site, metrics = compute_al(args.checkpoint, clusters, args.levels, args.images, args.alpha,
                                  args.data_root, args.batch_size or 256, device=args.device)
    print(al_table(metrics, by_site))
    output = args.output or "levels.json"
    save_levels_file(output, by_site)
    print(f"levels file {output}")
    if args.plot:
        plot_metric(metrics, args.plot)
        print(f"plot {args.plot}")
    return 0


def _train(args, clusters: int) -> int:
    from ..train import distributed
    from ..train.adaptive import STAGE_3, run_algorithm4

    if args.checkpoint is not None:
        raise SpikeBridgeError("--train trains its own stage-1 model; give no CKPT (or drop --train)")
    if args.output or args.plot:
        raise SpikeBridgeError("--train writes OUT/al/levels.json and OUT/al/al.png; -o and --plot are for a CKPT")
    options = {k: getattr(args, k) for k in ("model", "dataset", "lr", "seed", "limit_train", "limit_test",
                                             "workers", "data_root", "batch_size", "device")
               if getattr(args, k) is not None}
    out = args.out or "runs/al"
    try:
        result = run_algorithm4(out, epochs=args.epochs or 3, clusters=clusters, levels=args.levels,
                                levels_uniform=args.levels_uniform or 8, stage2_epochs=args.stage2_epochs,
                                stage3_epochs=args.stage3_epochs, images=args.images, alpha=args.alpha,
                                progress=not args.no_progress, **options)
        if distributed.is_main():
            accs = "  ".join(f"{stage} {100 * acc:.2f}%" for stage, acc in result.test_acc.items())
            print(f"test accuracy: {accs}")
            print(f"T_eff {result.t_eff:.3f}; checkpoint {result.checkpoints[STAGE_3]}")
    finally:
        distributed.cleanup()
    return 0
