""""local-balancing": local threshold balancing (Bu, Li and Yu, CVPR 2025; docs/methods.md §9).

Each site's threshold starts at 0 and follows one gradient step per calibration batch on the
clipping error of that site, E[((a − θ)⁺)²], with the ANN clipped at the thresholds reached so
far: for every batch, in one forward pass of the ReLU graph, at each site in turn

    θ ← θ + 2c · mean((a − θ)⁺),   the site's output becomes min(a, θ),

where a is the ReLU output, the mean runs over the batch and positions (and over channels
unless ``channel_wise``), and c is the step size (1 in the paper's code). The sites after a
site see its clipped output, so each threshold is balanced against the network as clipped
upstream ("local": no gradient crosses sites). The neurons are rate-coded IF with
v0 = ``v0_fraction``·θ (the paper: θ/2). A channel that never fired keeps θ = 1 (silent).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ...errors import OptionError
from ...inputs import input_spec, run_on
from ...snn.codings import RATE
from ...snn.neurons import IFNeuron
from ..registry import ANY_T, CalibrationOptions, Method, Source, option, register
from ..thresholds import EMPTY_SITE_THETA


@dataclass(frozen=True)
class LocalBalancingOptions(CalibrationOptions):
    channel_wise: bool = option(True, "one threshold per channel instead of per site")
    rate: float = option(1.0, "step size c of the balancing update θ += 2c·mean((a − θ)⁺)")
    passes: int = option(1, "passes over the calibration batches (one update per batch and pass)")
    v0_fraction: float = option(0.5, "initial potential as a fraction of θ (0.5: half threshold)")


@torch.no_grad()
def balanced_thresholds(gm, sites: list[str], batches, channel_wise: bool, rate: float,
                        passes: int = 1) -> dict[str, torch.Tensor]:
    """The balanced θ of every site (float64, [C] or scalar) after ``passes`` passes over ``batches``
    of the ReLU graph ``gm``, clipping each site's output at its current θ (module docstring)."""
    theta: dict[str, torch.Tensor] = {}

    def balance(name):
        def hook(_module, _inputs, a):
            dims = [d for d in range(a.dim()) if d != 1] if channel_wise else list(range(a.dim()))
            old = theta.get(name, a.new_zeros(a.shape[1] if channel_wise else (), dtype=torch.float64))
            view = old.view(1, -1, *([1] * (a.dim() - 2))) if channel_wise else old
            overflow = (a.double() - view).clamp_min(0).mean(dims)
            theta[name] = old + 2 * rate * overflow
            new = theta[name].view(1, -1, *([1] * (a.dim() - 2))) if channel_wise else theta[name]
            return torch.minimum(a, new.to(a.dtype))
        return hook

    hooks = [gm.get_submodule(name).register_forward_hook(balance(name)) for name in sites]
    spec = input_spec(gm)
    try:
        for _ in range(passes):
            for x in batches:
                run_on(gm, x, spec)
    finally:
        for h in hooks:
            h.remove()
    return {name: torch.where(t > 0, t, torch.full_like(t, EMPTY_SITE_THETA)) for name, t in theta.items()}


def build(gm, sites, T, options: LocalBalancingOptions, calibration) -> dict:
    if not options.rate > 0 or options.passes < 1:
        raise OptionError(f"rate must be positive and passes at least 1, got {options.rate} and {options.passes}")
    thetas = balanced_thresholds(gm, sites, calibration.batches(), options.channel_wise, options.rate, options.passes)
    dtype = torch.get_default_dtype()
    for name in sites:
        theta = thetas[name].to(dtype)
        gm.add_submodule(name, IFNeuron(theta, options.v0_fraction * theta, T))
    return {"T": T, "thresholds": {n: t.tolist() for n, t in thetas.items()}, "channel_wise": options.channel_wise}


register(Method(
    name="local-balancing", summary="θ by local threshold balancing on the clipped ANN, v0 = θ/2 (Bu et al. 2025)",
    coding=RATE, source=Source.RELU, time=ANY_T, options=LocalBalancingOptions, build=build,
    reference="docs/methods.md §9"))
