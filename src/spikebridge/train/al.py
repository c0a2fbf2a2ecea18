"""AL — adaptive layerwise levels (docs/methods.md §7; PASCAL Sec. 3.3, Alg. 3–4, Eq. 3–6, 8).

Per QCFS site: histogram H of output levels 0..L over ~3000 images; agreement A, skewness g
and kurtosis K of the level distribution given by H; metric M = A·(g² + 1)·K. Sites are
clustered by M with exact 1-D k-means and higher M gets fewer levels; T_eff = mean L_n.
"""
from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import SpikeBridgeError, check_levels, first_line
from ..ann.prepare import sites


@dataclass(frozen=True)
class SiteMetric:
    """AL statistics of one site: agreement A, skewness g, kurtosis K, M = A·(g²+1)·K."""

    site: str
    A: float
    g: float
    K: float
    M: float


def level_histograms(model: nn.Module, loader: Iterable, n_images: int = 3000) -> dict[str, torch.LongTensor]:
    """{site: H} with H[k] = number of outputs at level k (L+1 bins) over the first ``n_images``
    images of ``loader`` (batches of images or (images, labels)), model in eval mode, no grad
    (docs/methods.md §7, PASCAL Alg. 3 steps 1–2)."""
    found = sites(model)
    if not found:
        raise SpikeBridgeError("the model has no QCFS site; call spikebridge.prepare(model) first")
    hists = {name: torch.zeros(m.levels + 1, dtype=torch.long) for name, m in found.items()}

    def hook(name):
        def count(module, inputs, output):
            k = module.level(inputs[0]).long().flatten()
            hists[name] += torch.bincount(k, minlength=module.levels + 1).cpu()
        return count

    handles = [m.register_forward_hook(hook(name)) for name, m in found.items()]
    was_training = model.training
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    seen = 0
    try:
        model.eval()
        with torch.no_grad():
            for batch in loader:
                if seen >= n_images:
                    break
                x = batch[0] if isinstance(batch, (tuple, list)) else batch
                x = x[: n_images - seen]
                model(x.to(device))
                seen += len(x)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    if seen == 0:
        raise SpikeBridgeError("the data loader yielded no images for the AL histograms")
    return hists


def _counts(hist) -> np.ndarray:
    counts = np.asarray(hist.cpu() if isinstance(hist, torch.Tensor) else hist, dtype=np.float64)
    if counts.ndim != 1 or counts.size == 0 or (counts < 0).any() or counts.sum() <= 0:
        raise SpikeBridgeError("a level histogram must be a non-empty 1-D array of counts with a positive total")
    return counts


def agreement(hist, alpha: float) -> float:
    """Van der Eijk agreement A = 1 − (S − 1)/(K − 1) (PASCAL Eq. 3): K bins, S bins with
    count ≥ α·total. The modal bin always counts (S ≥ 1), so 0 ≤ A ≤ 1; K = 1 gives A = 1."""
    counts = _counts(hist)
    if not 0 < alpha < 1:
        raise SpikeBridgeError(f"alpha must lie in (0, 1), got {alpha}")
    k = counts.size
    if k == 1:
        return 1.0
    s = max(1, int((counts >= alpha * counts.sum()).sum()))
    return 1.0 - (s - 1) / (k - 1)


def _central_sums(hist, min_n: int) -> tuple[float, float, float, float]:
    """n and Σ(x − x̄)^p for p = 2, 3, 4 over the levels x = 0..L weighted by the counts."""
    counts = _counts(hist)
    n = counts.sum()
    if n < min_n:
        raise SpikeBridgeError(f"a level histogram needs at least {min_n} samples, got {int(n)}")
    x = np.arange(counts.size, dtype=np.float64)
    d = x - (counts @ x) / n
    return n, counts @ d**2, counts @ d**3, counts @ d**4


def skewness(hist) -> float:
    """g = m3/s³ (PASCAL Eq. 4): m3 = (1/n)Σ(x − x̄)³, s² = (1/(n−1))Σ(x − x̄)², over the level
    values x weighted by H (Joanes & Gill's b1 = g1·((n−1)/n)^{3/2}). Zero variance gives 0."""
    n, s2, s3, _ = _central_sums(hist, 2)
    if s2 == 0:
        return 0.0
    return (s3 / n) / (s2 / (n - 1)) ** 1.5


def kurtosis(hist) -> float:
    """K = (n+1)n/((n−1)(n−2)(n−3)) · Σ(x − x̄)⁴ / k2², k2 = Σ(x − x̄)²/(n−1), exactly as
    PASCAL Eq. 5 prints it: Joanes & Gill's G2 *without* its −3(n−1)²/((n−2)(n−3)) term, i.e. a
    plain (non-excess) kurtosis, ≈ Pearson's m4/m2² for large n and always > 0 (so M ≥ 0).
    Zero variance (all mass on one level) gives +inf: the limit of a vanishing second level."""
    n, s2, _, s4 = _central_sums(hist, 4)
    if s2 == 0:
        return math.inf
    k2 = s2 / (n - 1)
    return (n + 1) * n / ((n - 1) * (n - 2) * (n - 3)) * s4 / k2**2


def al_metrics(histograms: Mapping[str, object], alpha: float | None = None) -> list[SiteMetric]:
    """[SiteMetric] in site order with M = A·(g² + 1)·K (PASCAL Eq. 6); α defaults to
    1/(2·number of sites) (PASCAL Fig. 1)."""
    if not histograms:
        raise SpikeBridgeError("no level histograms to compute the AL metric from")
    alpha = 1 / (2 * len(histograms)) if alpha is None else alpha
    out = []
    for site, hist in histograms.items():
        a, g, k = agreement(hist, alpha), skewness(hist), kurtosis(hist)
        out.append(SiteMetric(site, a, g, k, a * (g * g + 1) * k))
    return out


def kmeans_1d(values, k: int) -> tuple[np.ndarray, np.ndarray, float]:
    """Exact 1-D k-means (minimum SSE into k non-empty clusters) by dynamic programming over
    the sorted values (optimal clusters are contiguous in sorted order): O(k·n²).

    Returns labels (in input order; label j is the j-th smallest center), centers ascending
    (each cluster's mean, kept within the cluster's range: a float mean of equal values can
    round past them, and past the next cluster's center), and the optimal SSE."""
    v = np.asarray(values, dtype=np.float64).ravel()
    n = v.size
    if not np.isfinite(v).all():
        raise SpikeBridgeError("k-means needs finite values")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= n:
        raise SpikeBridgeError(f"the number of clusters must be an integer in [1, {n}], got {k!r}")
    order = np.argsort(v, kind="stable")
    x = v[order]
    p1 = np.concatenate([[0.0], np.cumsum(x)])
    p2 = np.concatenate([[0.0], np.cumsum(x * x)])
    i, j = np.triu_indices(n + 1, 1)  # segment x[i:j]
    seg = np.full((n + 1, n + 1), np.inf)
    seg[i, j] = np.maximum(p2[j] - p2[i] - (p1[j] - p1[i]) ** 2 / (j - i), 0.0)
    # cost[c, m]: best SSE of x[:m] in c clusters; cut[c, m]: start of the last cluster
    cost = np.full((k + 1, n + 1), np.inf)
    cut = np.zeros((k + 1, n + 1), dtype=np.int64)
    cost[0, 0] = 0.0
    for c in range(1, k + 1):
        for m in range(c, n + 1):
            cand = cost[c - 1, :m] + seg[:m, m]
            cut[c, m] = int(np.argmin(cand))
            cost[c, m] = cand[cut[c, m]]
    labels_sorted = np.empty(n, dtype=np.int64)
    centers = np.empty(k)
    m = n
    for c in range(k, 0, -1):
        start = cut[c, m]
        labels_sorted[start:m] = c - 1
        centers[c - 1] = min(max(x[start:m].mean(), x[start]), x[m - 1])  # a rounded mean stays in its range
        m = start
    labels = np.empty(n, dtype=np.int64)
    labels[order] = labels_sorted
    return labels, centers, float(cost[k, n])


def assign_levels(metrics: list[SiteMetric], clusters: int, levels: list[int]) -> dict[str, int]:
    """{site: L_n}: cluster the sites by M into χ = ``clusters`` groups (exact 1-D k-means) and
    give the group with the highest center the fewest levels (PASCAL Sec. 3.3.5): clusters
    sorted by center descending get ``levels`` sorted ascending.

    Equal M always share a group, so χ may not exceed the number of distinct M values.
    Sites with M = +inf (a single level used) form the top group; the rest fill χ − 1 groups."""
    levels = list(levels)
    if len(levels) != clusters:
        raise SpikeBridgeError(f"{clusters} clusters need {clusters} levels values, got {len(levels)}: {levels}")
    for L in levels:
        check_levels(L)
    distinct = sorted({m.M for m in metrics})
    if not 1 <= clusters <= len(distinct):
        raise SpikeBridgeError(
            f"clusters must be between 1 and the number of distinct AL metric values ({len(distinct)}), got {clusters}"
        )
    finite = [v for v in distinct if math.isfinite(v)]
    if clusters == 1:
        group = dict.fromkeys(distinct, 0)
    else:  # groups numbered by ascending M; an infinite M is the last group on its own
        n_finite_groups = clusters - (len(finite) < len(distinct))
        group = dict(zip(finite, kmeans_1d(finite, n_finite_groups)[0].tolist()))
        group[math.inf] = clusters - 1
    ascending = sorted(levels)
    return {m.site: ascending[clusters - 1 - group[m.M]] for m in metrics}


def t_eff(levels_by_site: Mapping[str, int]) -> float:
    """T_eff = mean over sites of L_n (PASCAL Eq. 8)."""
    if not levels_by_site:
        raise SpikeBridgeError("T_eff needs at least one site")
    return sum(levels_by_site.values()) / len(levels_by_site)


def save_levels_file(path, levels_by_site: Mapping[str, int]) -> None:
    """Write {"levels": {site: L}} as JSON (read by ``load_levels_file``)."""
    Path(path).write_text(json.dumps({"levels": {str(s): int(L) for s, L in levels_by_site.items()}}, indent=2) + "\n")


def load_levels_file(path) -> dict[str, int]:
    """Read a levels file {"levels": {site: L}}; the result can be passed to
    ``prepare(model, levels=...)``. Any problem is a one-line SpikeBridgeError."""
    try:
        data = json.loads(Path(path).read_text())
    except OSError as e:
        raise SpikeBridgeError(f"cannot read levels file {path}: {e.strerror or e}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise SpikeBridgeError(f"levels file {path} is not valid JSON: {first_line(e)}") from None
    levels = data.get("levels") if isinstance(data, dict) else None
    if not isinstance(levels, dict) or not levels:
        raise SpikeBridgeError(f'levels file {path} must hold {{"levels": {{site: L, ...}}}} with at least one site')
    bad = [s for s, L in levels.items() if isinstance(L, bool) or not isinstance(L, int) or L < 1]
    if bad:
        raise SpikeBridgeError(f"levels file {path}: levels must be integers >= 1, bad site(s) {bad}")
    return dict(levels)


def plot_metric(metrics: list[SiteMetric], path) -> None:
    """Bar plot of the AL metric M per site (as PASCAL Fig. 1), saved as PNG at ``path``.
    Infinite M (a single level used) is drawn at the top of the axis and hatched."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    values = np.array([m.M for m in metrics], dtype=np.float64)
    finite = values[np.isfinite(values)]
    top = (finite.max() if finite.size else 1.0) * 1.1 or 1.0
    fig = Figure(figsize=(max(6.0, 0.4 * len(metrics)), 4.0))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    bars = ax.bar(range(len(metrics)), np.where(np.isfinite(values), values, top))
    for bar, v in zip(bars, values):
        if not math.isfinite(v):
            bar.set_hatch("//")
    ax.set_xticks(range(len(metrics)), [m.site for m in metrics], rotation=90, fontsize=7)
    ax.set_xlabel("QCFS site")
    ax.set_ylabel("AL metric M = A·(g²+1)·K")
    ax.set_title("AL metric per site (higher M → fewer levels)")
    fig.tight_layout()
    fig.savefig(path, format="png")


def adaptive_levels(
    model: nn.Module, loader: Iterable, clusters: int, levels: list[int], n_images: int = 3000, alpha: float | None = None
) -> tuple[dict[str, int], list[SiteMetric]]:
    """PASCAL Alg. 3 plus the clustering of Alg. 4 step 2: histograms over ``n_images`` images,
    AL metrics, then per-site levels. Returns ({site: L_n}, metrics)."""
    metrics = al_metrics(level_histograms(model, loader, n_images), alpha)
    return assign_levels(metrics, clusters, levels), metrics
