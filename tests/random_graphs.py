"""Random networks built from the op table, for the property test (tests/conversion/
test_random_graphs.py) and the benchmark (benchmarks/random_graphs.py).

A network is a ``Spec``: a stem (conv → ReLU), blocks drawn from the kinds below, and a head
(flatten or spatial mean → linear, optionally plus a constant). Every block kind exercises
entries of the op table: convs with or without BatchNorm, residual adds with alpha, branches
joined by concatenation, average pooling (module and function), the AFFINE ops of issue #15
(constants added, subtracted, multiplied, divided; torch.add/sub/rsub with alpha; negation;
in-place forms), shape arithmetic, and ops that must be refused (products and quotients of
trains, rounding, nonlinear elementwise ops). ``expected_refusal`` says whether a spec holds
one of the latter.

Choices come from a ``Draw`` (hypothesis's ``draw`` or a seeded ``random.Random``), so the
same generator serves both. Numbers are drawn from continuous ranges and thresholds are random
per site, so that no pre-activation lies exactly on a level boundary, where float rounding
(not the conversion) would decide the level.
"""
from __future__ import annotations

import operator
import random
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

import spikebridge as sb

AFFINE_FORMS = ["add_c", "rsub_c", "sub_c_alpha", "add_alpha", "sub_alpha", "torch_rsub", "mul_c", "div_c",
                "neg", "mixed", "inplace_add", "inplace_mul", "shape_mul"]
ANALOG_FORMS = ["mul_trains", "div_trains", "softmax", "layer_norm", "matmul"]  # on decoded values (§8)
REFUSED_FORMS = ["clamp", "abs", "pow", "div_floor", "maximum"]
KINDS = ["conv", "conv_bn", "residual", "cat", "pool", "affine", "analog", "refused"]


class Draw:
    """The choices a generator makes: from hypothesis (``Draw(data.draw)``) or a Random."""

    def __init__(self, draw=None, rng: random.Random | None = None):
        self.draw, self.rng = draw, rng

    def choice(self, options):
        if self.rng is not None:
            return self.rng.choice(options)
        from hypothesis import strategies as st
        return self.draw(st.sampled_from(options))

    def integer(self, lo: int, hi: int) -> int:
        if self.rng is not None:
            return self.rng.randint(lo, hi)
        from hypothesis import strategies as st
        return self.draw(st.integers(lo, hi))

    def real(self, lo: float, hi: float) -> float:
        if self.rng is not None:
            return self.rng.uniform(lo, hi)
        from hypothesis import strategies as st
        return self.draw(st.floats(lo, hi, allow_nan=False, allow_infinity=False))


@dataclass
class Spec:
    blocks: list[tuple] = field(default_factory=list)
    channels: int = 3
    size: int = 8
    head: str = "flatten"
    tail: float | None = None      # a constant added to the logits
    levels: int = 4
    seed: int = 0

    @property
    def expected_refusal(self) -> bool:
        return any(b[0] == "refused" for b in self.blocks)


def draw_spec(d: Draw, max_blocks: int = 5) -> Spec:
    spec = Spec(channels=d.integer(1, 4), size=d.choice([4, 6, 8]), levels=d.integer(1, 7),
                seed=d.integer(0, 2 ** 31 - 1), head=d.choice(["flatten", "mean"]))
    size = spec.size
    for _ in range(d.integer(0, max_blocks)):
        kind = d.choice(KINDS)
        if kind == "pool" and size < 2:
            kind = "conv"
        if kind in ("conv", "conv_bn"):
            spec.blocks.append((kind, d.integer(1, 4), d.choice([True, False])))
        elif kind == "residual":
            spec.blocks.append((kind, d.choice(["add", "torch_add", "sub"]), d.real(-2, 2)))
        elif kind == "cat":
            spec.blocks.append((kind, d.integer(1, 3), d.integer(1, 3)))
        elif kind == "pool":
            spec.blocks.append((kind, d.choice(["module", "function", "adaptive"])))
            size = size // 2 if spec.blocks[-1][1] != "adaptive" else max(1, size // 2)
        elif kind == "affine":
            spec.blocks.append((kind, d.choice(AFFINE_FORMS), d.real(-2, 2), d.choice([0.25, -0.5, 1.7, d.real(-3, 3)]),
                                d.choice([True, False])))
        else:
            spec.blocks.append((kind, d.choice(ANALOG_FORMS if kind == "analog" else REFUSED_FORMS)))
    if d.choice([True, False]):
        spec.tail = d.real(-2, 2)
    return spec


def _affine(form: str, h, g, c: float, a: float):
    """The issue's item-1 ops on trains h, g with a constant c and a coefficient a."""
    if form == "add_c":
        return h + c
    if form == "rsub_c":
        return c - h
    if form == "sub_c_alpha":
        return torch.sub(h, c, alpha=a)
    if form == "add_alpha":
        return torch.add(h, g, alpha=a)
    if form == "sub_alpha":
        return h.sub(g, alpha=a)
    if form == "torch_rsub":
        return torch.rsub(h, c, alpha=a)
    if form == "mul_c":
        return a * h
    if form == "div_c":
        return h / a  # a = 0 is refused ("divides by zero")
    if form == "neg":
        return -h + c
    if form == "mixed":
        return 2 * h - g / 3 + c
    if form == "inplace_add":
        h = h * 1.0
        h.add_(g, alpha=a)
        return h
    if form == "inplace_mul":
        h = h + 0.0
        h.mul_(a)
        return h
    if form == "shape_mul":
        return h * (h.size(1) // 2 + 1) + c
    raise ValueError(form)


def _analog(form: str, h, g):
    """Ops with no spiking form, computed on decoded values (exact under sum coding)."""
    if form == "mul_trains":
        return h * g
    if form == "div_trains":
        return h / (g + 1)
    if form == "softmax":
        return torch.softmax(h - g, 1)
    if form == "layer_norm":
        return F.layer_norm(h + g, h.shape[-2:])
    if form == "matmul":
        return h @ g.transpose(-2, -1)
    raise ValueError(form)


def _refused(form: str, h, g):
    if form == "clamp":
        return h.clamp(-1, 1)  # clamp(h, 0, c) would be a ReLU site
    if form == "abs":
        return torch.abs(h)
    if form == "pow":
        return h ** 2
    if form == "div_floor":
        return torch.div(h, 2, rounding_mode="floor")
    if form == "maximum":
        return torch.maximum(h, g)
    raise ValueError(form)


class RandomNet(nn.Module):
    """The network of a Spec, on inputs [B, 2, size, size]."""

    def __init__(self, spec: Spec):
        super().__init__()
        self.spec = spec
        c, size = spec.channels, spec.size
        self.stem = nn.Conv2d(2, c, 3, padding=1)
        self.layers = nn.ModuleList()
        for block in spec.blocks:
            kind = block[0]
            if kind in ("conv", "conv_bn"):
                out = block[1]
                mods = [nn.Conv2d(c, out, 3, padding=1)] + ([nn.BatchNorm2d(out)] if kind == "conv_bn" else [])
                self.layers.append(nn.Sequential(*mods))
                c = out
            elif kind == "residual":
                self.layers.append(nn.Conv2d(c, c, 3, padding=1))
            elif kind == "cat":
                self.layers.append(nn.ModuleList([nn.Conv2d(c, block[1], 1), nn.Conv2d(c, block[2], 3, padding=1)]))
                c = block[1] + block[2]
            elif kind == "pool":
                self.layers.append(nn.AvgPool2d(2) if block[1] == "module" else
                                   nn.AdaptiveAvgPool2d(max(1, size // 2)) if block[1] == "adaptive" else nn.Identity())
                size = max(1, size // 2)
            else:  # affine, analog and refused blocks get a second train g from their own conv
                self.layers.append(nn.Conv2d(c, c, 3, padding=1))
        self.fc = nn.Linear(c * size * size if spec.head == "flatten" else c, 3)

    def forward(self, x):
        h = F.relu(self.stem(x))
        for block, layer in zip(self.spec.blocks, self.layers):
            kind = block[0]
            if kind in ("conv", "conv_bn"):
                h = layer(h)
                h = F.relu(h) if block[2] else h
            elif kind == "residual":
                y = layer(h)
                if block[1] == "add":
                    h = F.relu(y + h)
                elif block[1] == "torch_add":
                    h = F.relu(torch.add(y, h, alpha=block[2]))
                else:
                    h = F.relu(operator.sub(y, h))
            elif kind == "cat":
                h = torch.cat([F.relu(layer[0](h)), F.relu(layer[1](h))], 1)
            elif kind == "pool":
                h = F.avg_pool2d(h, 2) if block[1] == "function" else layer(h)
            elif kind == "affine":
                g = F.relu(layer(h))
                h = _affine(block[1], h, g, block[2], block[3])
                h = F.relu(h) if block[4] else h
            elif kind == "analog":
                h = F.relu(_analog(block[1], h, F.relu(layer(h))))
            else:
                h = F.relu(_refused(block[1], h, F.relu(layer(h))))
        h = torch.flatten(h, 1) if self.spec.head == "flatten" else h.mean((2, 3))
        out = self.fc(h)
        return out + self.spec.tail if self.spec.tail is not None else out


def build(spec: Spec) -> nn.Module:
    """The QCFS ANN of a spec in float64: random weights, BatchNorm statistics and per-site
    thresholds (seeded by the spec)."""
    torch.manual_seed(spec.seed)
    net = RandomNet(spec).double().eval()
    gen = torch.Generator().manual_seed(spec.seed)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5, generator=gen)
            m.running_var.uniform_(0.5, 2.0, generator=gen)
    qann = sb.prepare(net, levels=spec.levels)
    with torch.no_grad():
        for site in sb.sites(qann).values():
            site.threshold.uniform_(0.3, 2.0, generator=gen)
    return qann


def inputs(spec: Spec, n: int = 8) -> torch.Tensor:
    gen = torch.Generator().manual_seed(spec.seed + 1)
    return torch.randn(n, 2, spec.size, spec.size, generator=gen, dtype=torch.float64)


def refusal_reason(message: str) -> str:
    """A short name for why a conversion was refused, for counting."""
    for key in ("divides by zero", "rounds its result", "nonlinear op", "unsupported node"):
        if key in message:
            return key
    return message[:60]


def check(spec: Spec, methods=("pasc", "bitplane")) -> str:
    """Convert a spec with each method in float64 and return "exact" or "refused: <reason>";
    anything else (an inexact result, a refusal of a network that should convert, an
    acceptance of one that should be refused, any other exception) raises AssertionError."""
    qann = build(spec)
    x = inputs(spec)
    outcomes = set()
    for method in methods:
        try:
            snn = sb.convert(qann, method)
        except sb.ConversionError as exc:
            assert spec.expected_refusal or "divides by zero" in str(exc), f"{method} refused {spec}: {exc}"
            assert "\n" not in str(exc)
            outcomes.add("refused: " + refusal_reason(str(exc)))
            continue
        assert not spec.expected_refusal, f"{method} accepted a network it must refuse: {spec}"
        report = sb.verify(qann, snn.double(), x)
        mismatches = sum(report.mismatches.values())
        assert report.agreement == 1.0 and mismatches == 0, f"{method} inexact on {spec}:\n{report.table()}"
        outcomes.add("exact")
    assert len(outcomes) == 1, f"the methods disagree on {spec}: {outcomes}"
    return outcomes.pop()
