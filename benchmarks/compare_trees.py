"""Do two code trees compute the same SNNs? Saves the anytime logits of pasc, bitplane and
qcfs (T = 64) on the first N test images for QCFS checkpoints, with whichever spikebridge is
on PYTHONPATH; a second call with --compare reports equality against a saved file.

    PYTHONPATH=<old tree>/src python benchmarks/compare_trees.py runs/bench old.pt
    PYTHONPATH=<new tree>/src python benchmarks/compare_trees.py runs/bench new.pt --compare old.pt
"""
import argparse

import torch

import spikebridge as sb
from spikebridge import data

try:
    from spikebridge.train.checkpoint import load_checkpoint, model_from_checkpoint
except ImportError:  # trees before the stage subpackages
    from spikebridge.checkpoint import load_checkpoint, model_from_checkpoint


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", help="folder with qcfs_L<L>/last.pt checkpoints")
    p.add_argument("out", help="file to save the logits to")
    p.add_argument("--levels", default="7,8")
    p.add_argument("--images", type=int, default=1000)
    p.add_argument("--compare", default=None, help="a file saved by another tree")
    args = p.parse_args()
    torch.set_num_threads(1)
    ds = data.get_dataset("fashion-mnist", "test")
    x = torch.stack([ds[i][0] for i in range(args.images)])
    out = {}
    with torch.no_grad():
        for L in [int(v) for v in args.levels.split(",")]:
            ann = model_from_checkpoint(load_checkpoint(f"{args.runs}/qcfs_L{L}/last.pt")).eval()
            for method, T in (("pasc", None), ("bitplane", None), ("qcfs", 64)):
                snn = sb.convert(ann, method, T=T)
                out[f"L{L}-{method}"] = torch.cat([snn.simulate(xb).logits for xb in x.split(250)], 1)
    torch.save(out, args.out)
    if args.compare:
        other = torch.load(args.compare)
        for key, logits in out.items():
            same = torch.equal(logits, other[key])
            print(key, "identical" if same else f"max |difference| {(logits - other[key]).abs().max().item():.3g}")


if __name__ == "__main__":
    main()
