""""network-level": each site's θ (and rule) chosen by the error it causes at the network's
output, on calibration images, with the SNN simulated (docs/methods.md §10).

A site's assignment is a threshold rule and a scale: θ = s·θ_rule, v0 = ``v0_fraction``·θ, with
θ_rule one of: the 99.9th percentile per channel or per site, the data-driven θ for this T per
channel (docs/methods.md §4), or the locally balanced θ per channel (§9, on the calibration
images in batches of 32); with ``channel_wise=False``, per site only: the percentile, the
data-driven or the balanced θ. The error of an assignment of every site is
E = Σ over the calibration images of KL(softmax(z_ANN) ‖ softmax(z)), z the SNN's logits after
T steps (the mean of the output over the steps), z_ANN the ANN's, on the first ``search_images``
calibration images (default min(512, 4096/T), at least 128: a search costs about the same for
every T ≥ 8; the rules' statistics use all of them).

1. Global: every site gets the same (rule, s), for every rule and every s of SCALES; the
   assignment with the least E is the start.
2. Site by site, in topological order, each with the sites before it already at their chosen
   assignment (spiking, as FTBC corrects biases one site after another) and the sites after it
   at the start: site k tries its current (rule, s), (rule, s·f) for every f of STEPS and
   every other rule at s, and keeps the one with the least E.
3. Stage 2 again, the sites after k now at their chosen assignment, until a pass changes no
   site or ``passes`` passes have run (coordinate descent on E).

E never increases: each try includes the current assignment (ties keep it). Unlike the
data-driven rule (§4), which minimises each site's own quantisation error for a constant input,
E sees what a site's spikes do downstream: the delay before the first spike, the uneven arrival
of spikes in later layers, and how much the output cares about each site.
Cost: per calibration batch, stage 1 runs the whole SNN once per (rule, scale); stage 2 runs
the part of the SNN from site k to the output once per try, after one run up to site k, per pass.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import fx

from ...errors import OptionError
from ...progress import progress as progress_bar
from ...snn.codings import RATE
from ...snn.engine import TrainRunner
from ...snn.network import SpikingNetwork
from ...snn.neurons import IFNeuron
from ..registry import ANY_T, CalibrationOptions, Method, Source, option, register
from .local_balancing import balanced_thresholds

NAME = "network-level"
RULES = ("percentile-channel", "percentile", "data-driven-channel", "balanced-channel")  # with channel_wise
LAYER_RULES = ("percentile", "data-driven", "balanced")                                 # without
BALANCING_BATCH = 32  # images per balancing step (the batch of local-balancing's paper code)
SCALES = (0.4, 0.5, 0.6, 0.7, 0.85, 1.0, 1.2, 1.5)                   # the global search
STEPS = (0.7, 0.85, 1.2, 1.4)                                        # the factors each site tries


@dataclass(frozen=True)
class NetworkLevelOptions(CalibrationOptions):
    channel_wise: bool = option(True, "per-channel rules among the candidates (False: one θ per site)")
    v0_fraction: float = option(0.5, "initial potential as a fraction of θ (0.5: half threshold)")
    search_images: int | None = option(None, "calibration images the output error is measured on (default: "
                                             "min(512, 4096/T), at least 128; the statistics use all)")
    passes: int = option(3, "passes of the site-by-site search at most; it stops after a pass that changes "
                            "no site")


def rule_thresholds(gm, sites: list[str], T: int, rule: str, calibration) -> dict[str, torch.Tensor]:
    """θ of ``rule`` at every site (float64, [C] or scalar) before scaling: a statistic of the
    site's activations (docs/methods.md §4) or the balanced θ (§9). Read before any neuron is placed."""
    kind, channel_wise = rule.removesuffix("-channel"), rule.endswith("-channel")
    if kind == "balanced":
        batches = [part for x in calibration.batches() for part in x.split(BALANCING_BATCH)]
        return balanced_thresholds(gm, sites, batches, channel_wise, rate=1.0)
    extra = {"T": T} if kind == "data-driven" else {}
    return {site: calibration.statistics.threshold(site, kind, channel_wise=channel_wise, **extra)[0]
            for site in sites}


def _run_nodes(runner: TrainRunner, nodes: list[fx.Node], env: dict, x: torch.Tensor):
    """Execute ``nodes`` in order on ``env`` (the live values of the nodes before them), freeing
    each value after its last use; returns the output's value if the output node is among them."""
    runner.env, runner.args_iter = env, iter([x])
    for node in nodes:
        env[node] = runner.run_node(node)
        for dead in runner.user_to_last_uses.get(node, []):
            env.pop(dead, None)
        if node.op == "output":
            return env[node]
    return None


class _Search:
    """The SNN under calibration: IF neurons at every site whose θ and v0 are set in place from
    assignments {site: (rule, s)}, and E of candidate assignments on the calibration batches."""

    def __init__(self, gm, sites, T, bases, v0_fraction, batches):
        self.bases, self.v0_fraction, self.batches = bases, v0_fraction, batches
        self.reference = [gm(x) for x in batches]  # the ANN's logits, before any neuron is placed
        self.neurons = {}
        for site in sites:
            theta = next(iter(bases.values()))[site]
            self.neurons[site] = IFNeuron(theta, v0_fraction * theta, T)
            gm.add_submodule(site, self.neurons[site])
        self.snn = SpikingNetwork(gm, NAME, T)
        self.order = list(gm.graph.nodes)
        self.position = {n.target: i for i, n in enumerate(self.order) if n.op == "call_module"}

    def assign(self, assignment: dict) -> None:
        for site, (rule, scale) in assignment.items():
            theta = scale * self.bases[rule][site]
            self.neurons[site].threshold.copy_(theta)
            self.neurons[site].v0.copy_(self.v0_fraction * theta)

    def errors(self, site: str, candidates: list[dict]) -> list[float]:
        """E of each candidate assignment (of ``site`` and possibly later sites), the sites
        before ``site`` as assigned: one run up to ``site`` per batch, then the rest per candidate."""
        p = self.position[site]
        total = [0.0] * len(candidates)
        for x, reference in zip(self.batches, self.reference):
            runner = TrainRunner(self.snn, None)
            env: dict = {}
            _run_nodes(runner, self.order[:p], env, x)
            start = runner.snapshot()
            for i, candidate in enumerate(candidates):
                self.assign(candidate)
                # every candidate from the same point: the state of the ANALOG ops (max pooling's
                # running sums) and the live trains, which a run may write into (``sum_into``)
                runner.restore(start)
                live = {node: fx.node.map_aggregate(value, _clone) for node, value in env.items()}
                logits = _run_nodes(runner, self.order[p:], live, x).mean(0)
                total[i] += output_error(logits, reference)
        return total


def _clone(value):
    return value.clone() if isinstance(value, torch.Tensor) else value


def output_error(logits: torch.Tensor, reference: torch.Tensor) -> float:
    """Σ over the batch of KL(softmax(reference) ‖ softmax(logits)), in float64."""
    target = F.log_softmax(reference.double(), 1)
    return float(F.kl_div(F.log_softmax(logits.double(), 1), target, log_target=True, reduction="sum"))


def _label(choice: tuple[str, float]) -> str:
    return f"{choice[0]}×{choice[1]:.4g}"


@torch.no_grad()
def build(gm, sites, T, options: NetworkLevelOptions, calibration) -> dict:
    search_images = max(128, min(512, 4096 // T)) if options.search_images is None else options.search_images
    if not 0 <= options.v0_fraction <= 1 or search_images < 1 or options.passes < 1:
        raise OptionError(f"v0_fraction must lie in [0, 1], search_images and passes be positive, got "
                          f"{options.v0_fraction}, {search_images} and {options.passes}")
    rules = RULES if options.channel_wise else LAYER_RULES
    dtype = torch.get_default_dtype()
    channels = {site: calibration.statistics.channel_max(site).numel() for site in sites}
    bases = {rule: {site: theta.expand(channels[site]).to(calibration.device, dtype)  # statistics: on the CPU
                    for site, theta in rule_thresholds(gm, sites, T, rule, calibration).items()} for rule in rules}
    batches, images = [], 0
    for x in calibration.batches():  # the first search_images images
        if images >= search_images:
            break
        batches.append(x[:search_images - images])
        images += batches[-1].shape[0]
    search = _Search(gm, sites, T, bases, options.v0_fraction, batches)
    sites = sorted(sites, key=search.position.__getitem__)  # topological order
    uniform = [(rule, s) for rule in rules for s in SCALES]
    chosen, history, passes = {}, [], 0

    def steps():
        nonlocal passes
        yield None
        for passes in range(1, options.passes + 1):
            before = dict(chosen)
            yield from sites
            if chosen == before:
                return

    for step in progress_bar(steps(), f"network-level search (T={T})", total=1 + options.passes * len(sites),
                             unit="steps"):
        if step is None:  # stage 1: one (rule, s) at every site
            tries = [dict.fromkeys(sites, choice) for choice in uniform]
        else:             # stage 2: site `step` tries other scales and rules, the other sites as chosen so far
            rule, s = chosen[step]
            tries = [{step: choice} for choice in [(rule, s)] + [(rule, s * f) for f in STEPS]
                     + [(other, s) for other in rules if other != rule]]
        errors = search.errors(sites[0] if step is None else step, tries)
        best = min(range(len(tries)), key=lambda i: (errors[i], i))
        chosen.update(tries[best])
        search.assign(tries[best])
        history.append(errors[best] / images)
    return {"T": T, "thresholds": {s: n.threshold.tolist() for s, n in search.neurons.items()},
            "chosen": {site: _label(c) for site, c in chosen.items()}, "output_error": history, "passes": passes}


register(Method(
    name=NAME, summary="θ per site by the error at the network's output, SNN simulated, sites in order",
    coding=RATE, source=Source.RELU, time=ANY_T, options=NetworkLevelOptions, build=build, default=True,
    reference="docs/methods.md §10"))
