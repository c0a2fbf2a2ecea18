"""Running a NIR file in the importers spikebridge targets, unpatched, through their public API,
and comparing what they compute with spikebridge's emulation (``export.targets.emulate``).

Each runner takes the file, analog inputs x [B, ...] and T, and returns the Output after every
step, [T, B, classes]: the input is presented at every step (rate coding), as in spikebridge.
``requirements`` are the versions the tests and BENCHMARKS.md ran; snnTorch and Norse install
together (``pip install 'spikebridge[nir]'``), sinabs pins nir <= 1.0.4 and needs its own
environment. ``python -m spikebridge.export.importers NAME FILE X.npy T OUT.npy`` runs one
importer in another environment (the tests and the benchmark use it).
"""
from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import io
import sys
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch


def run_snntorch(path: str, x: torch.Tensor, T: int) -> torch.Tensor:
    """snntorch.import_nir.import_from_nir (a nirtorch.nir_to_torch GraphModule); its neurons
    keep their membrane in the module, so they are reset before the run."""
    import nir
    from snntorch.import_nir import import_from_nir

    with contextlib.redirect_stdout(io.StringIO()):  # it prints its rnn-subgraph search
        net = import_from_nir(nir.read(path))
    for module in net.modules():
        if hasattr(module, "reset_mem"):
            module.reset_mem()
    state, out = None, []
    for _ in range(T):
        y, state = net(x, state)
        out.append(y)
    return torch.stack(out)


def run_norse(path: str, x: torch.Tensor, T: int) -> torch.Tensor:
    """norse.torch.from_nir (a nirtorch.load GraphExecutor), one call per step with its state."""
    import warnings

    import nir
    import norse.torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # nirtorch.load is deprecated upstream
        net = norse.torch.from_nir(nir.read(path))
    state, out = None, []
    for _ in range(T):
        y, state = net(x, state)
        out.append(y)
    return torch.stack(out)


def run_sinabs(path: str, x: torch.Tensor, T: int) -> torch.Tensor:
    """sinabs.from_nir (IAFSqueeze layers): all steps in one call, the batch and time squeezed
    into one dim, sample-major ([B·T, ...], step t of sample b at b·T + t)."""
    import nir
    from sinabs import from_nir

    net = from_nir(nir.read(path), batch_size=x.shape[0])
    y = net(x.repeat_interleave(T, 0))
    y = y[0] if isinstance(y, tuple) else y
    return y.reshape(x.shape[0], T, *y.shape[1:]).transpose(0, 1)


@dataclass(frozen=True)
class Importer:
    name: str
    label: str
    requirements: tuple[str, ...]
    run: Callable[[str, torch.Tensor, int], torch.Tensor]

    def installed(self) -> str | None:
        """'snnTorch 1.0.0 (nirtorch 2.6)' when importable here, else None."""
        if importlib.util.find_spec(self.name) is None:
            return None
        versions = [importlib.metadata.version(r.split("==")[0]) for r in self.requirements]
        return f"{self.label} {versions[0]}" + "".join(
            f", {r.split('==')[0]} {v}" for r, v in zip(self.requirements[1:], versions[1:]))

    def tested(self) -> str:
        return " + ".join(self.requirements)


IMPORTERS: dict[str, Importer] = {i.name: i for i in (
    Importer("snntorch", "snnTorch", ("snntorch==1.0.0", "nirtorch==2.6", "nir==1.0.8"), run_snntorch),
    Importer("norse", "Norse", ("norse==1.1.0", "nirtorch==2.6", "nir==1.0.8"), run_norse),
    Importer("sinabs", "sinabs", ("sinabs==3.1.3", "nirtorch==2.0.2", "nir==1.0.4"), run_sinabs),
)}


@dataclass
class Check:
    """How an importer's run compares with the emulation on the same inputs."""
    importer: str
    agree: int
    total: int
    max_diff: float

    def line(self) -> str:
        return (f"{self.importer}: loads and runs the file; its predictions equal the emulation's on "
                f"{self.agree}/{self.total} inputs (largest logit difference {self.max_diff:.2e})")


def compare(importer_out: torch.Tensor, emulated_logits: torch.Tensor, label: str) -> Check:
    """Compare an importer's per-step Output [T, B, C] with emulated anytime logits [T, B, C]."""
    steps = torch.arange(1, importer_out.shape[0] + 1, dtype=torch.float64).view(-1, 1, 1)
    logits = importer_out.double().cumsum(0) / steps
    final, emulated = logits[-1], emulated_logits[-1].detach().double()
    agree = int((final.argmax(-1) == emulated.argmax(-1)).sum())
    return Check(label, agree, final.shape[0], float((final - emulated).abs().max()))


def check_here(name: str, path: str, emulated, x: torch.Tensor) -> Check | None:
    """Run the file in importer ``name`` if it is installed in this environment; None if not."""
    importer = IMPORTERS[name]
    label = importer.installed()
    if label is None:
        return None
    with torch.no_grad():
        out = importer.run(str(path), x.float(), int(emulated.T))
        return compare(out, emulated.float().simulate(x.float(), record=False).logits, label)


def main(argv: list[str] | None = None) -> int:
    """NAME FILE X.npy T OUT.npy [BATCH]: run FILE in importer NAME on X for T steps, BATCH
    inputs at a time (default 16; a fresh network each batch), save the Output [T, B, C]."""
    name, path, x_path, T, out_path, *batch = argv or sys.argv[1:]
    importer, batch = IMPORTERS[name], int(batch[0]) if batch else 16
    x = torch.from_numpy(np.load(x_path)).float()
    with torch.no_grad():
        out = torch.cat([importer.run(path, chunk, int(T)) for chunk in x.split(batch)], dim=1)
    np.save(out_path, out.detach().numpy())
    print(importer.installed())
    return 0


if __name__ == "__main__":
    sys.exit(main())
