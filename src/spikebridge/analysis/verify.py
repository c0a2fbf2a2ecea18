"""verify(): how faithfully an SNN reproduces its ANN (docs/methods.md §2–3 "claim to verify").

Per input: do the predictions agree, and how far apart are the logits; per QCFS site: how
many neurons decode to a different level than the ANN's, level = round(value·L/θ) with the
site's value the sum (sum coding) or mean (rate coding) of its train. No inputs, or ANN logits
that are NaN or inf, are an InputError: a comparison with NaN is never reported as a number.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from ..device import place
from ..ann.prepare import sites
from ..errors import InputError, first_line
from ..inputs import batches
from ..snn.network import SpikingNetwork


@dataclass
class VerifyReport:
    images: int = 0
    agree: int = 0
    max_logit_diff: float = 0.0
    mismatches: dict[str, int] = field(default_factory=dict)
    neurons: dict[str, int] = field(default_factory=dict)

    @property
    def agreement(self) -> float:
        return self.agree / max(self.images, 1)

    def table(self) -> str:
        lines = [f"images: {self.images}   prediction agreement: {100 * self.agreement:.2f}%   "
                 f"max |logit difference|: {self.max_logit_diff:.3g}"]
        if self.mismatches:
            lines.append(f"{'site':<32} {'neurons':>12} {'level mismatches':>17}")
            lines += [f"{s:<32} {self.neurons[s]:>12} {m:>17}" for s, m in self.mismatches.items()]
        return "\n".join(lines)


@torch.no_grad()
def verify(ann: nn.Module, snn: SpikingNetwork, x, batch_size: int = 256, device=None) -> VerifyReport:
    """Compare ``ann`` and ``snn`` on a tensor of inputs or an iterable of (x, y) batches, on
    ``device`` (both networks are moved there) or, by default, the SNN's device."""
    ann.eval()
    snn.eval()
    device = place(snn, device)
    ann.to(device)
    qcfs_sites = {name: m for name, m in sites(ann).items() if name in snn.neurons()}
    report = VerifyReport(mismatches={s: 0 for s in qcfs_sites}, neurons={s: 0 for s in qcfs_sites})
    spec = snn.input_spec()
    for batch in batches(x, batch_size, "verify()"):
        spec.check(batch, "verify()")
        batch = batch.to(device)
        levels, hooks = {}, []
        for name, module in qcfs_sites.items():
            hooks.append(module.register_forward_hook(
                lambda m, inp, out, name=name: levels.__setitem__(name, m.level(inp[0]))))
        try:
            ann_logits = ann(batch)
        except (RuntimeError, ValueError, IndexError) as exc:
            raise InputError(f"verify(): the ANN cannot run on input of shape {tuple(batch.shape)} ({first_line(exc)}); "
                             f"the SNN takes {spec.describe()}") from None
        finally:
            for h in hooks:
                h.remove()
        if not torch.isfinite(ann_logits).all():
            raise InputError("the ANN's logits are NaN or inf for this input; check the ANN's weights and thresholds "
                             "(verify compares finite logits only)")
        res = snn.simulate(batch, values=bool(qcfs_sites))
        snn_logits = res.logits[-1]
        report.images += batch.shape[0]
        report.agree += int((ann_logits.argmax(1) == snn_logits.argmax(1)).sum())
        report.max_logit_diff = max(report.max_logit_diff, float((ann_logits - snn_logits).abs().max()))
        for name, module in qcfs_sites.items():
            value = res.values[name]
            snn_level = torch.round(value * module.levels / module.theta(value.dim()))
            report.mismatches[name] += int((snn_level != levels[name]).sum())
            report.neurons[name] += value.numel()
    if not report.images:
        raise InputError("verify() got no inputs: pass a non-empty tensor [N, ...] or iterable of batches")
    return report
