"""This checkout's spiking neurons against another commit's, in one process (issue 13).

``src/spikebridge/snn/neurons.py`` as it was at ``--base`` (``git show``) is loaded as a module
of its own beside the package's. For each method, model (random weights, as
benchmarks/speed.py builds them) and batch, the same converted network is simulated with its
neuron classes' methods as they are now ("new") and as they were at the base ("old": each
class's functions swapped in from the old module, which calls its own helpers), in interleaved
rounds with the ReLU ANN's forward (``fold_steps.versus``): new ÷ old, each ÷ the dense limit
(steps × the ANN's time), and whether the logits are the same bit for bit. One process, so the
machine's speed from hour to hour cancels in new ÷ old. For changes inside the neurons only:
the rest of the package is this checkout's in both.

    python benchmarks/neurons_versus.py --base HEAD~1 --methods pasc,bitplane --models resnet20,small_cnn --batches 64,256
"""
from __future__ import annotations

import copy
import subprocess
import sys
import types
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import measure_models, model_benchmark_parser  # noqa: E402
from fold_steps import versus  # noqa: E402
from speed import build  # noqa: E402

import spikebridge as sb  # noqa: E402
from spikebridge.snn import neurons  # noqa: E402

NEURONS = "src/spikebridge/snn/neurons.py"


def old_neurons(base: str) -> types.ModuleType:
    """neurons.py at commit ``base`` as a module in the package (its relative imports resolve)."""
    root = Path(__file__).resolve().parent.parent
    source = subprocess.run(["git", "show", f"{base}:{NEURONS}"], cwd=root, check=True, capture_output=True,
                            text=True).stdout
    module = types.ModuleType("spikebridge.snn._neurons_at_base")
    module.__package__ = "spikebridge.snn"
    sys.modules[module.__name__] = module  # dataclasses look their module up
    exec(compile(source, f"{base}:{NEURONS}", "exec"), module.__dict__)
    return module


def methods_of(cls: type) -> dict:
    return {name: value for name, value in vars(cls).items() if isinstance(value, types.FunctionType)}


class Swap:
    """Each neuron class of this checkout with its functions, or the old module's same-named
    class's in their place (``use(old)``)."""

    def __init__(self, old: types.ModuleType):
        self.pairs = [(cls, methods_of(cls), methods_of(getattr(old, name)))
                      for name, cls in vars(neurons).items()
                      if isinstance(cls, type) and issubclass(cls, neurons.SpikingNeuron) and hasattr(old, name)]

    def use(self, old: bool) -> None:
        for cls, new_methods, old_methods in self.pairs:
            for name in set(new_methods) | set(old_methods):
                chosen = old_methods if old else new_methods
                if name in chosen:
                    setattr(cls, name, chosen[name])
                elif name in vars(cls):  # a method only the other side has
                    delattr(cls, name)


def measure(swap: Swap, methods: list[str], name: str, batch: int, rounds: int) -> list[dict]:
    relu = build(name, 32, "cpu")
    x = torch.randn(batch, 3, 32, 32)
    rows = []
    for method in methods:
        levels, steps = {"pasc": (8, 8), "bitplane": (15, 4)}[method]
        snn = sb.convert(sb.prepare(copy.deepcopy(relu), levels=levels, threshold=1.0), method)
        logits = {}

        def run(old: bool) -> None:
            swap.use(old)
            logits[old] = snn.simulate(x, record=False).logits

        try:
            ratios, line = versus(("new", "old"), lambda: run(False), lambda: run(True), lambda: relu(x), steps,
                                  rounds)
        finally:
            swap.use(False)
        row = {"model": name, "batch": batch, "method": method, "levels": levels, "steps": steps, **ratios,
               "same_logits": bool(torch.equal(logits[False], logits[True]))}
        rows.append(row)
        print(name, f"batch {batch}, {method}: {line}, same logits {row['same_logits']}", flush=True)
    return rows


def main() -> None:
    p = model_benchmark_parser(__doc__, "neurons_versus", rounds=7, batches="64,256")
    p.add_argument("--base", required=True, help="the commit whose neurons.py is the baseline")
    p.add_argument("--methods", default="pasc,bitplane", help="pasc (L = 8), bitplane (4 bits, L = 15)")
    args = p.parse_args()
    swap = Swap(old_neurons(args.base))
    methods = args.methods.split(",")
    measure_models(args, lambda name, batch: measure(swap, methods, name, batch, args.rounds), base=args.base)


if __name__ == "__main__":
    main()
