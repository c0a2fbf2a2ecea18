"""Data-driven threshold θ and initial potential v0 for ReLU → IF conversion (docs/methods.md §4).

Layer-wise constant-input model (002 Sec. 4.1): a positive activation a drives an IF neuron
(threshold θ, initial potential v0, soft reset) for T steps; its rate-coded output is

    ã = θ/T · clip(floor((T·a + v0)/θ), 0, T),

and the calibration cost is C_m(θ, v0) = Σ |a − ã|^m over the positive activations (zeros and
negatives are excluded; m = 1 in 002, m = 2 offered). All costs are sums, not means.

Facts used below (each checked against brute force in tests/test_thresholds.py):
  * For every T ≥ 1 and m ≥ 1, v0 = θ/2 is optimal for a given θ (002 Thm 4.3, and 4.1 for
    T = 1): ã always lies on the grid {jθ/T}, and v0 = θ/2 rounds every a to the nearest grid
    point. So C_m(θ, θ/2) = Σ min_j |a − jθ/T|^m and only θ has to be searched.
  * T = 1: the neurons that fire form a suffix a(n0..N) of the sorted activations, and for m = 1
    the best θ is its median a(n1), n1 = n0 + floor((N − n0)/2) (002 Thm 4.2); for m = 2 it is
    its mean. Scanning every n0 with prefix sums is exact and O(N) after sorting. (002's Alg. 1
    scans only n0 ≤ N − 2, and its "|a(n0) − a(n1)/2| minimal" is wrong: the firing boundary
    is the smallest a ≥ θ/2, not the a closest to θ/2; see `paper_algorithm1`.)
  * T > 1: for a candidate θ the cost is a sum over the T + 1 bins of the grid; bin j holds the
    a with (j − 1/2)θ/T ≤ a < (j + 1/2)θ/T (bin T is unbounded above), found by binary search,
    and its Σ|a − jθ/T|^m comes from prefix sums of a and a² (for m = 1 the bin is split at
    a = jθ/T). O(N log N + K·T·log N) for K candidates, vectorised over candidates; a
    branch and bound with a rigorous Lipschitz bound (`_exact_argmin`) skips most candidates
    and still returns the exact argmin over the candidate set.

Tie-break everywhere: among candidates whose cost is within 1e-12·Σa^m of the minimum, the
smallest θ wins. An empty site (no positive activation) gets θ = 1.0, v0 = 0.5, error 0: the
neuron stays silent, which is exact for an all-zero site.
"""
from __future__ import annotations

import math
import zlib
from typing import NamedTuple, Sequence

import numpy as np
import torch

from ..errors import InputError, OptionError, check_T

EMPTY_SITE_THETA = 1.0
_TIE_RTOL = 1e-12
_CHUNK = 1 << 22  # searchsorted queries per chunk
_STRIDE = 64  # branch and bound: one evaluated candidate per _STRIDE
_FLOAT_RTOL = 1e-8  # > N·eps for N up to ~10^8: rounding slack of the prefix-sum costs


class ThresholdResult(NamedTuple):
    theta: float
    v0: float
    error: float  # C_m(theta, v0), a sum over the positive activations


def _positive_sorted(a: torch.Tensor) -> torch.Tensor:
    """Flattened positive values of ``a`` in float64, sorted ascending."""
    a = torch.as_tensor(a).detach().reshape(-1).to("cpu")
    if not a.is_floating_point():
        a = a.to(torch.float64)
    if not torch.isfinite(a).all():
        raise OptionError("activations contain NaN or inf")
    return torch.sort(a[a > 0]).values.to(torch.float64)  # sorting before the cast is cheaper


def _check(T: int, m: int) -> None:
    check_T(T)
    if m not in (1, 2):
        raise OptionError(f"m must be 1 or 2, got {m}")


def model_output(a: torch.Tensor, theta: float, v0: float, T: int) -> torch.Tensor:
    """ã = θ/T · clip(floor((T·a + v0)/θ), 0, T) (closed form of the constant-input IF neuron)."""
    return theta / T * torch.clamp(torch.floor((T * a + v0) / theta), 0, T)


def model_cost(a: torch.Tensor, theta: float, v0: float, T: int, m: int = 1) -> float:
    """C_m(θ, v0) = Σ |a − ã|^m over the positive entries of ``a`` (direct O(N) evaluation)."""
    a = _positive_sorted(a)
    return float((a - model_output(a, theta, v0, T)).abs().pow(m).sum())


def _prefix(a: torch.Tensor, m: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    zero = a.new_zeros(1)
    p1 = torch.cat([zero, torch.cumsum(a, 0)])
    p2 = torch.cat([zero, torch.cumsum(a * a, 0)]) if m == 2 else None
    return p1, p2


def _costs(a: torch.Tensor, p1: torch.Tensor, p2, thetas: torch.Tensor, T: int, m: int) -> torch.Tensor:
    """C_m(θ, θ/2) for every θ in ``thetas`` via binary search + prefix sums (docs/methods.md §4)."""
    n = a.numel()
    frac = torch.arange(1, 2 * T + 1, dtype=torch.float64) / (2 * T)  # boundaries (odd) and levels (even)
    out = torch.empty_like(thetas)
    step = max(1, _CHUNK // (2 * T))
    for s in range(0, thetas.numel(), step):
        th = thetas[s:s + step]
        pts = th[:, None] * frac  # [k, 2T]: (2j−1)θ/(2T) and jθ/T
        idx = torch.searchsorted(a, pts)  # number of a < pt
        lo = idx[:, 0::2]  # first index of bin j = 1..T
        hi = torch.cat([lo[:, 1:], torch.full_like(lo[:, :1], n)], 1)
        q = pts[:, 1::2]  # level jθ/T
        if m == 1:
            c = idx[:, 1::2]
            cost = (q * (c - lo) - (p1[c] - p1[lo])) + ((p1[hi] - p1[c]) - q * (hi - c))
            bin0 = p1[lo[:, 0]]
        else:
            cost = (p2[hi] - p2[lo]) - 2 * q * (p1[hi] - p1[lo]) + q * q * (hi - lo)
            bin0 = p2[lo[:, 0]]
        out[s:s + step] = bin0 + cost.sum(1)
    return out


def _argmin_first(err: torch.Tensor, scale: float) -> int:
    """First index whose cost is within 1e-12·scale of the minimum (candidates sorted by θ)."""
    return int(torch.nonzero(err <= err.min() + _TIE_RTOL * scale)[0, 0])


def _lipschitz(a: torch.Tensor, p1: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, T: int, m: int) -> torch.Tensor:
    """Bound on |dC_m(θ, θ/2)/dθ| for θ in [lo, hi]. Each term min_j |a − jθ/T|^m is a minimum of
    functions with slope ≤ j/T ≤ 1 (m = 1) or ≤ 2·(distance to the nearest level) (m = 2); points
    with a < lo/(2T) stay in bin 0 (slope 0) and the nearest-level distance is ≤ hi/(2T) or a − lo."""
    n = a.numel()
    active = n - torch.searchsorted(a, lo / (2 * T))
    if m == 1:
        return active.to(torch.float64)
    k = torch.searchsorted(a, lo)
    return 2 * (active * hi / (2 * T) + (p1[n] - p1[k]) - (n - k) * lo)


def _exact_argmin(a, p1, p2, thetas: torch.Tensor, T: int, m: int, scale: float) -> tuple[int, float]:
    """Exact argmin of C_m(θ, θ/2) over sorted ``thetas`` by branch and bound: evaluate every
    _STRIDE-th candidate, bound each block between two evaluated ones with the Lipschitz bound
    (C_L + C_R − L·(θ_R − θ_L))/2, and evaluate every candidate of the blocks that can still win."""
    k = thetas.numel()
    grid = torch.unique(torch.cat([torch.arange(0, k, _STRIDE), torch.tensor([k - 1])]))
    err = torch.full((k,), math.inf, dtype=torch.float64)
    err[grid] = _costs(a, p1, p2, thetas[grid], T, m)
    lo, hi = thetas[grid[:-1]], thetas[grid[1:]]
    bound = (err[grid[:-1]] + err[grid[1:]] - _lipschitz(a, p1, lo, hi, T, m) * (hi - lo)) / 2
    margin = _TIE_RTOL * scale + _FLOAT_RTOL * scale  # prefix-sum rounding, so the bound stays safe
    keep = torch.nonzero(bound <= err[grid].min() + margin)[:, 0]
    if keep.numel():
        inner = torch.cat([torch.arange(int(grid[b]) + 1, int(grid[b + 1])) for b in keep.tolist()])
        if inner.numel():
            err[inner] = _costs(a, p1, p2, thetas[inner], T, m)
    i = _argmin_first(err, scale)
    return i, float(err[i])


def paper_candidates(a_sorted: torch.Tensor) -> torch.Tensor:
    """002 Alg. 2 / App. 8.3 candidates θ = a(n), n = N/2 … N − 5 (1-based, N/2 rounded down).

    The range is empty for N ≤ 8; then every activation is a candidate.
    """
    n = a_sorted.numel()
    start, end = max(n // 2, 1), n - 5
    return a_sorted[start - 1:end] if end >= start else a_sorted


def candidate_thetas(a_sorted: torch.Tensor, T: int, candidates: str, m: int) -> torch.Tensor:
    """Sorted candidate θ: "paper" (002's range), "all" (every a), "global" (m = 1 only).

    "global" is {T·a/j : a, j = 1..T}. For m = 1 it contains the exact minimiser over all θ > 0:
    C_1(θ, θ/2) = Σ min_j |a − jθ/T| is piecewise linear in θ, concave wherever an a changes
    bin and convex only at the kinks a = jθ/T.
    """
    if candidates == "paper":
        return paper_candidates(a_sorted)
    if candidates == "all":
        return a_sorted
    if candidates == "global":
        if m != 1:
            raise OptionError("candidates='global' is exact only for m = 1")
        j = torch.arange(1, T + 1, dtype=torch.float64)
        return torch.unique(T * a_sorted[:, None] / j)
    raise OptionError(f"candidates must be 'paper', 'all' or 'global', got {candidates!r}")


def _search_t1(a: torch.Tensor, m: int) -> float:
    """Exact T = 1 optimum θ: scan every firing suffix a(n0..N) (002 Thm 4.2, all n0)."""
    n = a.numel()
    p1, p2 = _prefix(a, m)
    n0 = torch.arange(n)
    if m == 1:
        n1 = n0 + (n - 1 - n0) // 2  # 0-based median of the suffix
        th = a[n1]
        err = p1[n0] + (th * (n1 - n0) - (p1[n1] - p1[n0])) + ((p1[n] - p1[n1]) - th * (n - n1))
    else:
        size = (n - n0).to(torch.float64)
        th = (p1[n] - p1[n0]) / size
        err = p2[n0] + (p2[n] - p2[n0]) - size * th * th
    best = torch.nonzero(err <= err.min() + _TIE_RTOL * float(p1[n] if m == 1 else p2[n]))
    return float(th[best[:, 0]].min())


def search_threshold(a: torch.Tensor, T: int, m: int = 1, candidates: str = "paper") -> ThresholdResult:
    """argmin over θ of C_m(θ, θ/2) for the positive entries of ``a`` (docs/methods.md §4).

    T = 1: exact over all (θ, v0) (``candidates`` is ignored). T > 1: exact argmin over the
    ``candidates`` set (see `candidate_thetas`); v0 = θ/2 (002 Thm 4.3). Returns
    ThresholdResult(theta, v0, error) with error = C_m(θ, θ/2).
    """
    _check(T, m)
    a = _positive_sorted(a)
    if a.numel() == 0:
        return ThresholdResult(EMPTY_SITE_THETA, EMPTY_SITE_THETA / 2, 0.0)
    p1, p2 = _prefix(a, m)
    if T == 1:
        thetas = torch.tensor([_search_t1(a, m)], dtype=torch.float64)
    else:
        thetas = candidate_thetas(a, T, candidates, m)
    i, err = _exact_argmin(a, p1, p2, thetas, T, m, float(p1[-1] if m == 1 else p2[-1]))
    theta = float(thetas[i])
    return ThresholdResult(theta, theta / 2, err)


def brute_force_search(a: torch.Tensor, T: int, m: int = 1, candidates: str = "paper") -> ThresholdResult:
    """Reference for tests: the closed-form C_m(θ, θ/2) of every candidate, O(K·N) (docs/methods.md §4).

    For T = 1 the candidates are all activations (m = 1) or all suffix means (m = 2).
    """
    _check(T, m)
    a = _positive_sorted(a)
    if a.numel() == 0:
        return ThresholdResult(EMPTY_SITE_THETA, EMPTY_SITE_THETA / 2, 0.0)
    if T == 1:
        suffix_means = torch.flip(torch.cumsum(torch.flip(a, [0]), 0), [0]) / torch.arange(a.numel(), 0, -1)
        thetas = a if m == 1 else torch.sort(suffix_means).values
    else:
        thetas = candidate_thetas(a, T, candidates, m)
    step = max(1, (1 << 24) // a.numel())
    err = torch.cat([
        (a - model_output(a, th[:, None], th[:, None] / 2, T)).abs().pow(m).sum(1)
        for th in thetas.split(step)
    ])
    i = _argmin_first(err, float(a.pow(m).sum()))
    return ThresholdResult(float(thetas[i]), float(thetas[i]) / 2, float(err[i]))


def paper_algorithm1(a: torch.Tensor) -> ThresholdResult:
    """002 Alg. 1 (T = 1, m = 1) as intended: θ = a(n1), v0 = a(n1) − a(n0), n1 = n0 + ⌊(N − n0)/2⌋,
    scanning n0 = 1 … N − 2 (1-based) as the paper does, keeping the first strict minimum.

    The paper's incremental update formulas contain typos, so each E(n0) is computed exactly.
    Kept as a reference: its n0 range misses optima with n0 ∈ {N − 1, N} (e.g. [1, 1, 1, 100]).
    """
    a = _positive_sorted(a)
    n = a.numel()
    if n == 0:
        return ThresholdResult(EMPTY_SITE_THETA, EMPTY_SITE_THETA / 2, 0.0)
    best = None
    for n0 in range(max(1, n - 2)):  # 0-based n0 = 0 … N − 3
        n1 = n0 + (n - 1 - n0) // 2
        e = float(a[:n0].sum() + (a[n0:] - a[n1]).abs().sum())
        if best is None or e < best[0]:
            best = (e, n0, n1)
    e, n0, n1 = best
    return ThresholdResult(float(a[n1]), float(a[n1] - a[n0]), e)


def paper_algorithm2(a: torch.Tensor, T: int) -> ThresholdResult:
    """002 Alg. 2 / App. 8.3, faithfully: for each θ = a(i), i = N/2 … N − 5, pass every activation
    through the IF neuron (v0 = θ/2, T steps, soft reset) and take E(i) = Σ |a − θ·rate|; keep the
    first strict minimum. O(N) per candidate, O(N²) overall (docs/methods.md §4). m = 1 as in 002.
    """
    a = _positive_sorted(a)
    if a.numel() == 0:
        return ThresholdResult(EMPTY_SITE_THETA, EMPTY_SITE_THETA / 2, 0.0)
    best = None
    for theta in paper_candidates(a).tolist():
        v = torch.full_like(a, theta / 2)
        count = torch.zeros_like(a)
        for _ in range(T):
            v += a
            s = (v >= theta).to(a.dtype)
            v -= theta * s
            count += s
        e = float((a - theta * count / T).abs().sum())
        if best is None or e < best[0]:
            best = (e, theta)
    return ThresholdResult(best[1], best[1] / 2, best[0])


def search_threshold_channelwise(acts, T: int, m: int = 1, candidates: str = "paper"):
    """`search_threshold` per channel: ``acts`` is [N, C] or a list of C 1-D tensors.

    Returns (theta[C], v0[C], error[C]) as float64 tensors (docs/methods.md §4, channel-wise variant).
    """
    if isinstance(acts, torch.Tensor):
        if acts.dim() != 2:
            raise OptionError(f"expected [N, C] activations, got shape {tuple(acts.shape)}")
        acts = list(acts.T)
    res = [search_threshold(x, T, m, candidates) for x in acts]
    return tuple(torch.tensor([r[k] for r in res], dtype=torch.float64) for k in range(3))


def max_threshold(a: torch.Tensor) -> float:
    """θ = max of the activations (Diehl et al. 2015); EMPTY_SITE_THETA if none is positive."""
    a = _positive_sorted(a)
    return float(a[-1]) if a.numel() else EMPTY_SITE_THETA


def percentile_threshold(a: torch.Tensor, p: float = 99.9) -> float:
    """θ = p-th percentile of the positive activations (Rueckauer et al. 2017, zeros excluded).

    Definition: linear interpolation between order statistics, x[⌊h⌋] + (h − ⌊h⌋)(x[⌊h⌋+1] − x[⌊h⌋])
    with h = (n − 1)·p/100 (numpy's and torch.quantile's default); exact, no size limit.
    """
    if not 0 <= p <= 100:
        raise OptionError(f"percentile must be in [0, 100], got {p}")
    a = _positive_sorted(a)
    n = a.numel()
    if n == 0:
        return EMPTY_SITE_THETA
    h = (n - 1) * p / 100
    lo = min(int(math.floor(h)), n - 1)
    hi = min(lo + 1, n - 1)
    return float(a[lo] + (h - lo) * (a[hi] - a[lo]))


class _Reservoir:
    """All values up to ``cap``, then a uniform sample of size ``cap`` (Algorithm R, batched)."""

    def __init__(self, cap: int, seed: int):
        self.cap, self.seen, self.chunks = cap, 0, []
        self.buf: torch.Tensor | None = None
        self.gen = torch.Generator().manual_seed(seed)

    @property
    def subsampled(self) -> bool:
        return self.seen > self.cap

    def values(self) -> torch.Tensor:
        if self.buf is not None:
            return self.buf
        return torch.cat(self.chunks) if self.chunks else torch.zeros(0)

    def add(self, x: torch.Tensor) -> None:
        x = x.reshape(-1).to("cpu")
        free = self.cap - self.seen
        if self.buf is None:
            take = x[:max(free, 0)]
            if take.numel():
                self.chunks.append(take.clone())
            self.seen += take.numel()
            x = x[take.numel():]
            if not x.numel():
                return
            self.buf, self.chunks = torch.cat(self.chunks) if self.chunks else torch.zeros(0), []
        # item at 0-based stream position t replaces slot r ~ U{0..t} when r < cap
        t = torch.arange(self.seen, self.seen + x.numel(), dtype=torch.float64)
        r = (torch.rand(x.numel(), dtype=torch.float64, generator=self.gen) * (t + 1)).long()
        keep = r < self.cap
        slots, vals = r[keep].flip(0), x[keep].flip(0)  # later items must win: keep the last write
        if slots.numel():
            _, first = np.unique(slots.numpy(), return_index=True)
            first = torch.from_numpy(first)
            self.buf[slots[first]] = vals[first]
        self.seen += x.numel()

    def load(self, values: torch.Tensor, seen: int) -> None:
        self.seen, self.chunks = seen, []
        self.buf = values if seen > self.cap else None
        if self.buf is None:
            self.chunks = [values]


def _merge(parts: Sequence[tuple[torch.Tensor, int]], cap: int, seed: int) -> tuple[torch.Tensor, int]:
    """Uniform sample of size ≤ cap of the union of per-rank reservoirs (multivariate
    hypergeometric share per rank, then a uniform pick inside each rank's reservoir)."""
    seen = [s for _, s in parts]
    total = sum(seen)
    if total <= cap:
        return torch.cat([v for v, _ in parts]), total
    rng = np.random.default_rng(seed)
    share = rng.multivariate_hypergeometric(seen, cap, method="marginals")
    picks = [v[torch.from_numpy(rng.permutation(v.numel())[:k])] for (v, _), k in zip(parts, share)]
    return torch.cat(picks), total


class ActivationStats:
    """Streaming per-site statistics of post-ReLU activations with bounded memory (docs/methods.md §4).

    ``update(site, x)`` with x of shape [B, C, ...]. Kept per site: exact max (layer and per
    channel; 0 if nothing positive was seen), the number of positive values seen, and the
    positive values themselves up to ``max_samples`` (per channel: ``max_samples_per_channel``,
    only if ``channel_wise``); beyond that a uniform reservoir sample (seeded by ``seed`` and the
    site name), flagged by ``subsampled(site)``. Percentile and data-driven thresholds are exact
    over the calibration data unless the site is subsampled.
    """

    def __init__(self, max_samples: int = 2_000_000, channel_wise: bool = False,
                 max_samples_per_channel: int = 200_000, seed: int = 0):
        self.max_samples, self.channel_wise = max_samples, channel_wise
        self.max_samples_per_channel, self.seed = max_samples_per_channel, seed
        self._max: dict[str, float] = {}
        self._cmax: dict[str, torch.Tensor] = {}
        self._res: dict[str, _Reservoir] = {}
        self._cres: dict[str, list[_Reservoir]] = {}
        self.input_shape: tuple[int, ...] | None = None  # one sample's shape, as the data showed it

    @property
    def sites(self) -> list[str]:
        return list(self._res)

    def _seed(self, site: str, channel: int = -1) -> int:
        return (self.seed * 1_000_003 + zlib.crc32(site.encode()) + 7919 * (channel + 1)) % (1 << 63)

    def update(self, site: str, x: torch.Tensor) -> None:
        x = x.detach().to("cpu")
        if x.dim() < 2:
            raise OptionError(f"site {site!r}: expected [B, C, ...] activations, got shape {tuple(x.shape)}")
        if not torch.isfinite(x).all():
            raise InputError(f"the activations at site {site!r} contain NaN or inf; check the calibration data "
                             "and the model's weights")
        per_channel = x.transpose(0, 1).reshape(x.shape[1], -1)
        cmax = per_channel.amax(1).clamp_min(0).to("cpu", torch.float64)
        if site not in self._res:
            self._max[site], self._cmax[site] = 0.0, torch.zeros_like(cmax)
            self._res[site] = _Reservoir(self.max_samples, self._seed(site))
            if self.channel_wise:
                self._cres[site] = [_Reservoir(self.max_samples_per_channel, self._seed(site, c))
                                    for c in range(x.shape[1])]
        if cmax.shape != self._cmax[site].shape:
            raise OptionError(f"site {site!r}: channel count changed from {self._cmax[site].numel()} to {cmax.numel()}")
        self._cmax[site] = torch.maximum(self._cmax[site], cmax)
        self._max[site] = float(self._cmax[site].max())
        self._res[site].add(x[x > 0])
        if self.channel_wise:
            for c, res in enumerate(self._cres[site]):
                row = per_channel[c]
                res.add(row[row > 0])

    def max(self, site: str) -> float:
        return self._max[site]

    def channel_max(self, site: str) -> torch.Tensor:
        return self._cmax[site].clone()

    def count(self, site: str) -> int:
        """Number of positive activations seen at ``site``."""
        return self._res[site].seen

    def samples(self, site: str) -> torch.Tensor:
        return self._res[site].values()

    def channel_samples(self, site: str) -> list[torch.Tensor]:
        self._need_channels(site)
        return [r.values() for r in self._cres[site]]

    def subsampled(self, site: str) -> bool:
        """True if any sample kept for ``site`` (layer or channel) is a subsample."""
        return self._res[site].subsampled or any(r.subsampled for r in self._cres.get(site, []))

    def _need_channels(self, site: str) -> None:
        if site not in self._cres:
            raise OptionError("channel-wise statistics need ActivationStats(channel_wise=True)")

    def threshold(self, site: str, rule: str = "max", T: int | None = None, m: int = 1,
                  channel_wise: bool = False, percentile: float = 99.9, v0_fraction: float | None = None,
                  candidates: str = "paper") -> tuple[torch.Tensor, torch.Tensor]:
        """(θ, v0) for ``site`` as float64 tensors, scalar or [C] (docs/methods.md §4).

        rule "max" or "percentile": v0 = v0_fraction·θ, default 0 (vanilla rate coding; QCFS
        uses 0.5). rule "data-driven": `search_threshold` with T, m, candidates; v0 = θ/2.
        """
        if site not in self._res:
            raise KeyError(f"no statistics for site {site!r}")
        if channel_wise:
            self._need_channels(site)
        if rule == "data-driven":
            if T is None:
                raise OptionError("the data-driven rule needs T")
            if v0_fraction is not None:
                raise OptionError("the data-driven rule sets v0 = θ/2 itself")
            if channel_wise:
                theta, v0, _ = search_threshold_channelwise(self.channel_samples(site), T, m, candidates)
                return theta, v0
            r = search_threshold(self.samples(site), T, m, candidates)
            return torch.tensor(r.theta, dtype=torch.float64), torch.tensor(r.v0, dtype=torch.float64)
        if rule == "max":
            if channel_wise:
                cm = self._cmax[site]
                theta = torch.where(cm > 0, cm, torch.full_like(cm, EMPTY_SITE_THETA))
            else:
                theta = torch.tensor(self._max[site] or EMPTY_SITE_THETA, dtype=torch.float64)
        elif rule == "percentile":
            if channel_wise:
                theta = torch.tensor([percentile_threshold(s, percentile) for s in self.channel_samples(site)],
                                     dtype=torch.float64)
            else:
                theta = torch.tensor(percentile_threshold(self.samples(site), percentile), dtype=torch.float64)
        else:
            raise OptionError(f"rule must be 'max', 'percentile' or 'data-driven', got {rule!r}")
        return theta, theta * (v0_fraction or 0.0)

    def reduce_distributed(self) -> None:
        """Combine the statistics of all ranks in place (no-op unless torch.distributed is
        initialised): max over ranks; samples merged into one uniform sample of the union,
        identical on every rank. Every rank must have seen the same sites."""
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            return
        mine = {s: (self._max[s], self._cmax[s], self._res[s].values(), self._res[s].seen,
                    [(r.values(), r.seen) for r in self._cres.get(s, [])]) for s in self._res}
        gathered: list = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, mine)
        names = [sorted(g) for g in gathered]
        if any(n != names[0] for n in names):
            raise OptionError("reduce_distributed: ranks saw different sites")
        for s in names[0]:
            per_rank = [g[s] for g in gathered]
            self._max[s] = max(p[0] for p in per_rank)
            self._cmax[s] = torch.stack([p[1] for p in per_rank]).amax(0)
            self._res[s].load(*_merge([(p[2], p[3]) for p in per_rank], self.max_samples, self._seed(s)))
            for c, res in enumerate(self._cres.get(s, [])):
                res.load(*_merge([p[4][c] for p in per_rank], self.max_samples_per_channel, self._seed(s, c)))
