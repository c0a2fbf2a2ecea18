"""AL — adaptive layerwise levels (METHODS.md §7, PASCAL Sec. 3.3, Eq. 3–6, 8)."""
import itertools
import json
import math

import numpy as np
import pytest
import scipy.stats
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from spikebridge import prepare, sites
from spikebridge.train.al import (
    SiteMetric, adaptive_levels, agreement, al_metrics, assign_levels, kmeans_1d, kurtosis, level_histograms,
    load_levels_file, plot_metric, save_levels_file, skewness, t_eff,
)
from spikebridge.errors import SpikeBridgeError


def small_model(levels=4):
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(),
        nn.Flatten(), nn.Linear(4 * 36, 10), nn.ReLU(), nn.Linear(10, 3),
    )
    return prepare(net, levels=levels, threshold=1.0)


def loader(n=20, batch=6):
    torch.manual_seed(1)
    x = torch.randn(n, 1, 6, 6)
    return [(x[i : i + batch], torch.zeros(len(x[i : i + batch]))) for i in range(0, n, batch)]


histograms_st = st.lists(st.integers(0, 50), min_size=2, max_size=17).filter(
    lambda h: sum(h) >= 4 and sum(1 for c in h if c) >= 2
)


# --- agreement (Eq. 3) ---

def test_agreement_known_histograms():
    assert agreement([0, 0, 100, 0, 0], 0.05) == 1.0  # all mass in one bin
    assert agreement([10] * 5, 0.01) == 0.0  # uniform, α small: every bin counts
    assert agreement([50, 30, 15, 4, 1], 0.1) == pytest.approx(1 - 2 / 4)  # 50, 30, 15 ≥ 10
    assert agreement([7], 0.1) == 1.0  # K = 1
    assert agreement([25, 25, 25, 25], 0.5) == 1.0  # no bin reaches α·total: the modal bin counts


@pytest.mark.parametrize("bad", [[], [0, 0], [1, -1, 3]])
def test_agreement_rejects_bad_histograms(bad):
    with pytest.raises(SpikeBridgeError):
        agreement(bad, 0.1)


# --- skewness (Eq. 4) and kurtosis (Eq. 5) on the level distribution ---

@settings(max_examples=80, deadline=None)
@given(histograms_st)
def test_skewness_matches_eq4_via_scipy(hist):
    x = np.repeat(np.arange(len(hist)), hist).astype(float)
    n = x.size
    # Eq. 4: m3 / s³ with s the (n−1) standard deviation = scipy's biased g1 · ((n−1)/n)^{3/2}
    expected = scipy.stats.skew(x, bias=True) * ((n - 1) / n) ** 1.5
    assert skewness(hist) == pytest.approx(expected, rel=1e-9, abs=1e-12)
    assert skewness(torch.tensor(hist)) == pytest.approx(expected, rel=1e-9, abs=1e-12)


@settings(max_examples=80, deadline=None)
@given(histograms_st)
def test_kurtosis_matches_eq5_via_scipy(hist):
    x = np.repeat(np.arange(len(hist)), hist).astype(float)
    n = x.size
    # Eq. 5 is Joanes & Gill's G2 (scipy fisher=True, bias=False) without its −3(n−1)²/((n−2)(n−3)).
    expected = scipy.stats.kurtosis(x, fisher=True, bias=False) + 3 * (n - 1) ** 2 / ((n - 2) * (n - 3))
    assert kurtosis(hist) == pytest.approx(expected, rel=1e-9)
    assert kurtosis(hist) > 0


def test_kurtosis_is_pearson_for_large_samples():
    hist = [4000, 2500, 1200, 300, 20]
    x = np.repeat(np.arange(len(hist)), hist).astype(float)
    assert kurtosis(hist) == pytest.approx(scipy.stats.kurtosis(x, fisher=False, bias=True), rel=1e-3)


def test_moments_of_a_single_level():
    assert skewness([0, 9, 0]) == 0.0
    assert kurtosis([0, 9, 0]) == math.inf
    with pytest.raises(SpikeBridgeError):
        kurtosis([1, 2, 0])  # n = 3 < 4


def test_al_metrics_combines_A_g_K():
    hists = {"a": [90, 5, 3, 2, 0], "b": [20, 20, 20, 20, 20], "c": [0, 0, 7, 0, 0]}
    ms = al_metrics(hists)  # α = 1/6
    assert [m.site for m in ms] == ["a", "b", "c"]
    for m in ms:
        assert m.A == agreement(hists[m.site], 1 / 6)
        assert m.g == skewness(hists[m.site]) and m.K == kurtosis(hists[m.site])
        assert m.M == m.A * (m.g**2 + 1) * m.K
    assert ms[0].A == 1.0 and ms[1].A == 0.0 and ms[2].M == math.inf
    assert al_metrics(hists, alpha=0.01)[0].A == pytest.approx(1 - 3 / 4)


# --- exact 1-D k-means ---

def partitions(items, k):
    """Every partition of ``items`` into exactly k non-empty groups (any grouping, not only
    contiguous ones)."""
    if k == 0:
        if not items:
            yield []
        return
    if len(items) < k:
        return
    first, rest = items[0], items[1:]
    for p in partitions(rest, k - 1):  # first alone
        yield [[first], *p]
    for p in partitions(rest, k):  # first joins one of the k groups
        for i in range(k):
            yield [g + [first] if j == i else g for j, g in enumerate(p)]


def brute_force_cost(values, k):
    return min(sum(((np.array(g) - np.mean(g)) ** 2).sum() for g in p) for p in partitions(list(values), k))


def test_partitions_enumerates_stirling_numbers():
    assert [len(list(partitions(list(range(7)), k))) for k in range(1, 8)] == [1, 63, 301, 350, 140, 21, 1]


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_kmeans_dp_matches_brute_force(data):
    values = data.draw(st.lists(st.floats(-100, 100, allow_nan=False), min_size=1, max_size=7))
    k = data.draw(st.integers(1, len(values)))
    labels, centers, cost = kmeans_1d(values, k)
    assert cost == pytest.approx(brute_force_cost(values, k), rel=1e-9, abs=1e-8)
    v = np.array(values)
    assert sorted(set(labels.tolist())) == list(range(k))
    assert np.allclose(centers, [v[labels == j].mean() for j in range(k)])
    assert list(centers) == sorted(centers)
    assert sum(((v[labels == j] - centers[j]) ** 2).sum() for j in range(k)) == pytest.approx(cost, abs=1e-8)


def test_kmeans_centers_of_equal_values_stay_sorted():
    # found by hypothesis: the float mean of 3 copies of this value is 2 ulp below the value
    x = 86.30355471168227
    _, centers, _ = kmeans_1d([0.0, 0.0, 0.0, x, x, x, x], 5)
    assert list(centers) == sorted(centers) and centers[-1] == x


def test_kmeans_rejects_bad_k():
    for k in (0, 4, 1.5, True):
        with pytest.raises(SpikeBridgeError):
            kmeans_1d([1.0, 2.0, 3.0], k)
    with pytest.raises(SpikeBridgeError):
        kmeans_1d([1.0, math.inf], 1)


# --- level assignment ---

def metrics_of(ms):
    return [SiteMetric(f"s{i}", 1.0, 0.0, m, m) for i, m in enumerate(ms)]


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_assign_levels_higher_M_gets_fewer_levels(data):
    ms = data.draw(st.lists(st.one_of(st.floats(0, 1000), st.just(math.inf)), min_size=1, max_size=12))
    distinct = len(set(ms))
    clusters = data.draw(st.integers(1, distinct))
    levels = data.draw(st.lists(st.integers(1, 16), min_size=clusters, max_size=clusters))
    metrics = metrics_of(ms)
    out = assign_levels(metrics, clusters, levels)
    assert set(out) == {m.site for m in metrics}
    assert set(out.values()) <= set(levels)
    if len(set(levels)) == clusters:
        assert len(set(out.values())) == clusters  # every group used once
    for a, b in itertools.combinations(metrics, 2):
        if a.M > b.M:
            assert out[a.site] <= out[b.site]
        if a.M == b.M:
            assert out[a.site] == out[b.site]


def test_assign_levels_example_and_errors():
    metrics = metrics_of([1.0, 1.2, 50.0, 52.0, 9.0, math.inf])
    assert assign_levels(metrics, 4, [8, 1, 4, 2]) == {"s0": 8, "s1": 8, "s2": 2, "s3": 2, "s4": 4, "s5": 1}
    assert assign_levels(metrics, 1, [4]) == dict.fromkeys(["s0", "s1", "s2", "s3", "s4", "s5"], 4)
    with pytest.raises(SpikeBridgeError, match="need 3 levels"):
        assign_levels(metrics, 3, [1, 2])
    with pytest.raises(SpikeBridgeError):
        assign_levels(metrics_of([1.0, 1.0]), 2, [1, 2])
    with pytest.raises(SpikeBridgeError):
        assign_levels(metrics, 2, [0, 2])


def test_t_eff():
    assert t_eff({"a": 1, "b": 2, "c": 6}) == 3.0
    with pytest.raises(SpikeBridgeError):
        t_eff({})


# --- histograms on a model, levels file, plot, the whole analysis ---

def test_level_histograms_count_every_output_of_first_n_images():
    model = small_model(levels=4)
    model.train()
    data = loader(20, 6)
    hists = level_histograms(model, data, n_images=13)
    assert model.training
    found = sites(model)
    assert list(hists) == list(found)
    x = torch.cat([b[0] for b in data])[:13]
    ref = {}
    hooks = [m.register_forward_hook(lambda m, i, o, n=n: ref.__setitem__(n, m.level(i[0]))) for n, m in found.items()]
    model.eval()
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    for name, h in hists.items():
        assert h.dtype == torch.long and h.shape == (found[name].levels + 1,)
        assert h.tolist() == torch.bincount(ref[name].long().flatten(), minlength=5).tolist()
        assert h.sum() == ref[name].numel()


def test_level_histograms_accept_plain_tensor_batches():
    model = small_model(levels=2)
    hists = level_histograms(model, [torch.randn(4, 1, 6, 6)] * 3, n_images=100)
    assert all(h.sum() == 12 * h_numel for h, h_numel in zip(hists.values(), (4 * 36, 4 * 36, 10)))
    with pytest.raises(SpikeBridgeError):
        level_histograms(model, [])


def test_levels_file_round_trips_into_prepare(tmp_path):
    model = small_model()
    names = list(sites(model))
    levels = {n: L for n, L in zip(names, (1, 2, 4))}
    path = tmp_path / "levels.json"
    save_levels_file(path, levels)
    assert json.loads(path.read_text()) == {"levels": levels}
    loaded = load_levels_file(path)
    assert loaded == levels
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(),
        nn.Flatten(), nn.Linear(4 * 36, 10), nn.ReLU(), nn.Linear(10, 3),
    )
    prepared = prepare(net, levels=loaded)
    assert {n: m.levels for n, m in sites(prepared).items()} == levels


@pytest.mark.parametrize(
    "content",
    ["not json", "[1, 2]", '{"levels": {}}', '{"levels": {"a": 0}}', '{"levels": {"a": 2.5}}', '{"levels": {"a": true}}'],
)
def test_bad_levels_file_is_one_line_error(tmp_path, content):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(SpikeBridgeError) as e:
        load_levels_file(path)
    assert "\n" not in str(e.value)


def test_missing_levels_file(tmp_path):
    with pytest.raises(SpikeBridgeError, match="cannot read"):
        load_levels_file(tmp_path / "nope.json")


def test_plot_metric_writes_png(tmp_path):
    path = tmp_path / "al.png"
    plot_metric(metrics_of([1.0, 3.5, math.inf, 0.2]), path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_adaptive_levels_end_to_end():
    model = small_model(levels=8)
    levels_by_site, metrics = adaptive_levels(model, loader(20, 6), clusters=2, levels=[2, 6], n_images=20)
    assert [m.site for m in metrics] == list(sites(model))
    assert levels_by_site == assign_levels(metrics, 2, [2, 6])
    assert set(levels_by_site.values()) == {2, 6}
    assert t_eff(levels_by_site) in {10 / 3, 14 / 3}
