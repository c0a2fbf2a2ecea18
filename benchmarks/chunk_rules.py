"""Rules for the rate-coded time chunk: the steps per window that ``auto_chunk`` picks against
what a budget of twice its input bytes picks (issue 13, BENCHMARKS.md §9; ``ChunkTuner``).

For each model (random weights, CIFAR-style, as benchmarks/speed.py builds them), batch (16, 64)
and T where the two rules differ, in one process: ``simulate(x, record=False, chunk=c)`` of the
max-norm conversion with each rule's chunk, SpikingJelly 2.0's converted model (multi-step, as
speed.py runs it) and the ReLU ANN, medians of ``--rounds`` interleaved rounds after a warm-up,
one thread. No input-size rule won on every model; hence the measured choice (``ChunkTuner``).

    python benchmarks/chunk_rules.py
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import machine, model_benchmark_parser, save, spikingjelly  # noqa: E402
from fold_steps import interleaved  # noqa: E402
from speed import build  # noqa: E402

import spikebridge as sb  # noqa: E402
from spikebridge.snn.network import AUTO_CHUNK_INPUT_BYTES, MAX_AUTO_CHUNK  # noqa: E402


def chunk_for(x: torch.Tensor, budget: int) -> int:
    """``auto_chunk``'s rule with another input budget."""
    return max(1, min(MAX_AUTO_CHUNK, budget // (x.numel() * x.element_size())))


def rows(name: str, batch: int, rounds: int) -> list[dict]:
    relu = build(name, 32, "cpu")
    x = torch.randn(batch, 3, 32, 32)
    ann2snn, functional = spikingjelly()
    out = []
    for T in (4, 8, 32):
        now, doubled = chunk_for(x, AUTO_CHUNK_INPUT_BYTES), chunk_for(x, 2 * AUTO_CHUNK_INPUT_BYTES)
        if min(now, T) == min(doubled, T):
            continue
        snn = sb.convert(relu, "max-norm", T=T, calibration_data=[x])
        sj = ann2snn.FXConverter(recipe=ann2snn.recipes.RateCodingRecipe([x], mode="max")).convert(
            build(name, 32, "cpu")).eval()
        functional.set_step_mode(sj, "m")

        def run_sj():
            functional.reset_net(sj)
            return sj(x.unsqueeze(0).expand(T, *x.shape)).mean(0)

        with torch.no_grad():
            ms = interleaved({"auto_chunk": lambda: snn.simulate(x, record=False, chunk=now),
                              "twice the budget": lambda: snn.simulate(x, record=False, chunk=doubled),
                              "SpikingJelly": run_sj, "ANN": lambda: relu(x)}, rounds)
        row = {"model": name, "batch": batch, "T": T, "chunk": now, "chunk_twice_the_budget": doubled, "ms": ms,
               "twice_over_auto": ms["twice the budget"] / ms["auto_chunk"],
               "auto_over_sj": ms["auto_chunk"] / ms["SpikingJelly"],
               "twice_over_sj": ms["twice the budget"] / ms["SpikingJelly"]}
        print({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items() if k != "ms"}, flush=True)
        out.append(row)
    return out


def main() -> None:
    args = model_benchmark_parser(__doc__, "chunk_rules").parse_args()
    torch.set_num_threads(1)
    results = {"machine": machine(), "command": " ".join(sys.argv), "rows": []}
    for name in args.models.split(","):
        for batch in (16, 64):
            results["rows"] += rows(name, batch, args.rounds)
            save(args.name, results)
    print(f"results: {save(args.name, results)}")


if __name__ == "__main__":
    main()
