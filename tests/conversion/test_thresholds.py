"""Tests of docs/methods.md §4: data-driven θ and v0, max/percentile thresholds, streaming statistics."""
import itertools

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from hypothesis import given, settings
from hypothesis import strategies as st

import spikebridge.conversion.thresholds as th
from spikebridge.conversion.thresholds import (
    ActivationStats, brute_force_search, candidate_thetas, max_threshold, model_cost, paper_algorithm1,
    paper_algorithm2, paper_candidates, percentile_threshold, search_threshold, search_threshold_channelwise,
)

# activations: floats, or small integers so that ties and duplicates are common; zeros/negatives mixed in
floats = st.floats(-1.0, 8.0, allow_nan=False, width=32)
ints = st.integers(-1, 6).map(float)
acts = st.one_of(st.lists(floats, max_size=40), st.lists(ints, max_size=40)).map(
    lambda v: torch.tensor(v, dtype=torch.float64))


def _same_optimum(fast, ref, a, T, m):
    """Same error, and the same θ up to exact ties (the brute-force cost at fast.theta is minimal)."""
    scale = max(float(a.clamp_min(0).pow(m).sum()), 1.0)
    assert fast.error == pytest.approx(ref.error, rel=1e-9, abs=1e-9 * scale)
    assert fast.v0 == fast.theta / 2
    if fast.theta != ref.theta:
        assert model_cost(a, fast.theta, fast.theta / 2, T, m) == pytest.approx(ref.error, abs=1e-9 * scale)


@settings(max_examples=150, deadline=None)
@given(a=acts, T=st.integers(1, 6), m=st.sampled_from([1, 2]), cand=st.sampled_from(["paper", "all", "global"]))
def test_fast_search_equals_brute_force(a, T, m, cand):
    if cand == "global" and m == 2:
        return
    _same_optimum(search_threshold(a, T, m, cand), brute_force_search(a, T, m, cand), a, T, m)


@pytest.mark.parametrize("m", [1, 2])
@pytest.mark.parametrize("T", [2, 3, 7])
def test_branch_and_bound_exact_on_larger_inputs(monkeypatch, T, m):
    g = torch.Generator().manual_seed(T * 10 + m)
    a = torch.cat([torch.randn(1500, generator=g).abs(), torch.randint(1, 20, (300,), generator=g) / 4.0])
    for stride in (64, 5):
        monkeypatch.setattr(th, "_STRIDE", stride)
        for cand in ("paper", "all") + (("global",) if m == 1 and T < 7 else ()):
            fast, ref = search_threshold(a, T, m, cand), brute_force_search(a, T, m, cand)
            assert fast.theta == ref.theta
            assert fast.error == pytest.approx(ref.error, rel=1e-10)


def _joint_brute_force_t1(a, m):
    """min over (θ, v0) of C_m for T = 1: θ over the activations and suffix means, firing boundary
    u = θ − v0 in every gap of the sorted activations (nobody fires / everybody fires included)."""
    a = torch.sort(a[a > 0]).values
    vals = torch.unique(a).tolist()
    bounds = [vals[0] / 2] + [(x + y) / 2 for x, y in zip(vals, vals[1:])] + [vals[-1] * 2]
    thetas = set(vals) | {float(a[i:].mean()) for i in range(a.numel())}
    return min(model_cost(a, t, t - u, 1, m) for t in thetas for u in bounds)


@settings(max_examples=80, deadline=None)
@given(a=acts, m=st.sampled_from([1, 2]))
def test_t1_is_joint_optimum_over_theta_and_v0(a, m):
    r = search_threshold(a, 1, m)
    if not (a > 0).any():
        assert r == (1.0, 0.5, 0.0)
        return
    best = _joint_brute_force_t1(a, m)
    assert r.error == pytest.approx(best, rel=1e-9, abs=1e-12)
    assert r.error == pytest.approx(model_cost(a, r.theta, r.v0, 1, m), rel=1e-9, abs=1e-12)


@settings(max_examples=80, deadline=None)
@given(a=acts)
def test_t1_matches_theorem_4_2_pair(a):
    """Thm 4.2 (m = 1): an optimum has θ = a(n1), v0 = a(n1) − a(n0), n1 = n0 + ⌊(N − n0)/2⌋ for some n0."""
    s = torch.sort(a[a > 0]).values
    if s.numel() == 0:
        return
    n = s.numel()
    pairs = [(float(s[n0 + (n - 1 - n0) // 2]), float(s[n0])) for n0 in range(n)]
    thm = min(model_cost(s, t, t - u, 1, 1) for t, u in pairs)
    r = search_threshold(a, 1, 1)
    assert r.error == pytest.approx(thm, rel=1e-9, abs=1e-12)
    assert r.theta in {t for t, _ in pairs}


def test_theorem_4_2_characterisation_and_algorithm_1_counterexamples():
    # "n0 with |a(n0) − a(n1)/2| minimal" is wrong: [1, 3] is optimal with θ = 3 (only 3 fires,
    # C = 1), but 1 is closer to 3/2 than 3 is; the pair the characterisation picks costs 2.
    a = torch.tensor([1.0, 3.0])
    assert search_threshold(a, 1) == (3.0, 1.5, 1.0)
    assert model_cost(a, 1.0, 0.0, 1) == 2.0
    # Alg. 1 scans n0 ≤ N − 2 only and misses a lone outlier: θ = 100 gives C = 3, Alg. 1 gives 99.
    a = torch.tensor([1.0, 1.0, 1.0, 100.0])
    assert search_threshold(a, 1) == (100.0, 50.0, 3.0)
    assert paper_algorithm1(a).error == 99.0
    # m = 2: the optimal θ is the mean of the firing suffix, not an activation value.
    assert search_threshold(torch.tensor([1.0, 2.0]), 1, m=2) == (1.5, 0.75, 0.5)


@settings(max_examples=60, deadline=None)
@given(a=acts, T=st.integers(1, 5), m=st.sampled_from([1, 2]), frac=st.floats(0.01, 10.0))
def test_theorem_4_3_half_theta_is_optimal_v0(a, T, m, frac):
    """For any θ, v0 = θ/2 is at least as good as any v0 in [0, θ] (ã = nearest level jθ/T)."""
    theta = frac * max(float(a.max()) if a.numel() else 1.0, 1e-3)
    best = model_cost(a, theta, theta / 2, T, m)
    for v0 in np.linspace(0, theta, 23):
        assert best <= model_cost(a, theta, float(v0), T, m) + 1e-9 * (1 + best)


def test_global_candidates_are_exact_for_m1():
    """candidates="global" beats or matches a dense θ grid and every other candidate set."""
    g = torch.Generator().manual_seed(3)
    a = torch.randn(60, generator=g).abs()
    for T in (2, 3, 4):
        r = search_threshold(a, T, 1, "global")
        grid = torch.linspace(0.01, 4 * float(a.max()), 20001, dtype=torch.float64)[:, None]
        dense = (a.double() - th.model_output(a.double(), grid, grid / 2, T)).abs().sum(1)
        assert r.error <= float(dense.min()) + 1e-9
        assert r.error <= search_threshold(a, T, 1, "paper").error + 1e-9
    with pytest.raises(ValueError):
        search_threshold(a, 2, 2, "global")


def test_paper_algorithm2_matches_fast_search():
    g = torch.Generator().manual_seed(0)
    for T in (2, 3, 4, 5):
        a = torch.rand(300, generator=g) ** 2
        p, f = paper_algorithm2(a, T), search_threshold(a, T, 1, "paper")
        assert p.theta == f.theta
        assert p.error == pytest.approx(f.error, rel=1e-12)


def test_paper_candidate_range_and_small_n():
    s = torch.arange(1.0, 21.0)
    assert paper_candidates(s).tolist() == list(range(10, 16))  # a(N/2) … a(N − 5), 1-based
    assert paper_candidates(torch.arange(1.0, 10.0)).tolist() == [4.0]  # N = 9: a(4) only
    small = torch.arange(1.0, 9.0)  # N = 8: empty range → every activation
    assert torch.equal(candidate_thetas(small, 4, "paper", 1), small)
    assert search_threshold(torch.tensor([0.0, 2.5, -1.0]), 4) == (2.5, 1.25, 0.0)  # single value: exact
    # 002's range drops the top five activations: with five outliers it cannot reach θ = 100
    outliers = torch.tensor([1.0] * 15 + [100.0] * 5)
    assert search_threshold(outliers, 4) == (1.0, 0.5, 495.0)
    assert search_threshold(outliers, 4, candidates="all") == (100.0, 50.0, 15.0)


@pytest.mark.parametrize("fn", [lambda a: search_threshold(a, 4), lambda a: search_threshold(a, 1, 2),
                                paper_algorithm1, lambda a: paper_algorithm2(a, 3)])
def test_empty_site(fn):
    for a in (torch.zeros(10), -torch.ones(5), torch.zeros(0)):
        assert tuple(fn(a)) == (1.0, 0.5, 0.0)
    assert max_threshold(torch.zeros(3)) == 1.0 and percentile_threshold(torch.zeros(3)) == 1.0


def test_bad_inputs():
    with pytest.raises(ValueError):
        search_threshold(torch.tensor([1.0, float("nan")]), 2)
    with pytest.raises(ValueError):
        search_threshold(torch.ones(3), 0)
    with pytest.raises(ValueError):
        search_threshold(torch.ones(3), 2, m=3)


def test_channelwise_identical_channels_equals_layerwise():
    g = torch.Generator().manual_seed(1)
    col = torch.relu(torch.randn(400, generator=g))
    acts2 = col[:, None].repeat(1, 3)
    for T, m in itertools.product((1, 2, 4), (1, 2)):
        ref = search_threshold(col, T, m)
        for theta, v0, err in (search_threshold_channelwise(acts2, T, m),
                               search_threshold_channelwise(list(acts2.T), T, m)):
            assert theta.tolist() == [ref.theta] * 3 and v0.tolist() == [ref.v0] * 3
            assert err.tolist() == [ref.error] * 3


def test_percentile_definition_matches_numpy_and_torch():
    g = torch.Generator().manual_seed(2)
    a = torch.relu(torch.randn(5001, generator=g))
    pos = a[a > 0].double()
    for p in (0.0, 50.0, 99.0, 99.9, 99.99, 100.0):
        want = float(torch.quantile(pos, p / 100))
        assert percentile_threshold(a, p) == pytest.approx(want, rel=1e-12)
        assert percentile_threshold(a, p) == pytest.approx(np.percentile(pos.numpy(), p), rel=1e-12)
    assert max_threshold(a) == float(a.max())


def _batches(seed, n=5, shape=(8, 4, 5, 5)):
    g = torch.Generator().manual_seed(seed)
    return [torch.relu(torch.randn(*shape, generator=g)) * (1 + torch.arange(shape[1])).view(1, -1, 1, 1)
            for _ in range(n)]


def test_activation_stats_exact_over_batches():
    batches = _batches(0)
    stats = ActivationStats(channel_wise=True)
    for b in batches:
        stats.update("s", b)
    full = torch.cat(batches)
    per_channel = full.transpose(0, 1).reshape(4, -1)
    pos = full[full > 0].double()
    assert not stats.subsampled("s") and stats.count("s") == pos.numel()
    assert stats.max("s") == float(full.max())
    assert torch.equal(stats.channel_max("s"), per_channel.amax(1).double())
    theta, v0 = stats.threshold("s", "percentile", percentile=99.9)
    assert float(theta) == pytest.approx(float(torch.quantile(pos, 0.999)), rel=1e-12) and float(v0) == 0
    theta, v0 = stats.threshold("s", "max", channel_wise=True, v0_fraction=0.5)
    assert torch.equal(theta, per_channel.amax(1).double()) and torch.equal(v0, theta / 2)
    theta, _ = stats.threshold("s", "percentile", channel_wise=True, percentile=99.0)
    want = [float(torch.quantile(r[r > 0].double(), 0.99)) for r in per_channel]
    assert theta.tolist() == pytest.approx(want, rel=1e-12)
    theta, v0 = stats.threshold("s", "data-driven", T=4)
    assert (float(theta), float(v0)) == search_threshold(full, 4)[:2]
    theta, v0 = stats.threshold("s", "data-driven", T=2, m=2, channel_wise=True)
    assert torch.equal(theta, search_threshold_channelwise(list(per_channel), 2, 2)[0])
    with pytest.raises(ValueError):
        stats.threshold("s", "data-driven")
    layer_only = ActivationStats()
    layer_only.update("x", batches[0])
    with pytest.raises(ValueError):
        layer_only.threshold("x", "max", channel_wise=True)


def test_reservoir_bounded_uniform_and_flagged():
    stats = ActivationStats(max_samples=1000, channel_wise=True, max_samples_per_channel=300, seed=7)
    stream = torch.arange(1, 20001, dtype=torch.float32)
    for chunk in stream.split(1500):
        stats.update("s", chunk.view(-1, 1))
    sample = stats.samples("s")
    assert sample.numel() == 1000 and stats.channel_samples("s")[0].numel() == 300
    assert stats.subsampled("s") and stats.count("s") == 20000 and stats.max("s") == 20000.0
    assert torch.unique(sample).numel() == 1000 and bool(torch.isin(sample, stream).all())
    # uniform over the whole stream: mean ≈ 10000.5 (sd of the mean ≈ 180), each quarter ≈ 250
    assert abs(float(sample.mean()) - 10000.5) < 800
    quarters = torch.bincount(((sample - 1) // 5000).long(), minlength=4)
    assert bool((quarters > 180).all() and (quarters < 320).all())
    small = ActivationStats(max_samples=1000)
    small.update("s", stream[:999].view(-1, 1))
    assert not small.subsampled("s") and torch.equal(small.samples("s"), stream[:999])


def _dist_worker(rank, world, path, out):
    dist.init_process_group("gloo", init_method=f"file://{path}", rank=rank, world_size=world)
    stats = ActivationStats(max_samples=10_000, channel_wise=True)
    for b in _batches(100 + rank, n=3):
        stats.update("s", b)
    stats.reduce_distributed()
    theta, _ = stats.threshold("s", "percentile", percentile=99.5)
    torch.save({"max": stats.max("s"), "cmax": stats.channel_max("s"), "theta": float(theta),
                "sample": torch.sort(stats.samples("s")).values, "sub": stats.subsampled("s")}, f"{out}.{rank}")
    dist.destroy_process_group()


def test_reduce_distributed_two_ranks(tmp_path):
    out = str(tmp_path / "res")
    mp.spawn(_dist_worker, args=(2, str(tmp_path / "store"), out), nprocs=2)
    res = [torch.load(f"{out}.{r}") for r in range(2)]
    full = torch.cat(_batches(100, n=3) + _batches(101, n=3))
    pos = full[full > 0]
    for r in res:
        assert r["max"] == float(full.max()) and not r["sub"]
        assert torch.equal(r["cmax"], full.transpose(0, 1).reshape(4, -1).amax(1).double())
        assert torch.equal(r["sample"], torch.sort(pos).values)
        assert r["theta"] == pytest.approx(float(torch.quantile(pos.double(), 0.995)), rel=1e-12)


def test_merge_of_reservoirs_is_uniform():
    a, b = torch.arange(0, 1000.0), torch.arange(1000.0, 1100.0)  # rank 0 saw 9000, rank 1 saw 1000
    merged, seen = th._merge([(a, 9000), (b, 1000)], 1000, seed=0)
    assert seen == 10000 and merged.numel() == 1000
    share = int((merged >= 1000).sum())
    assert 60 < share < 140  # expected 100
    assert len(set(merged.tolist())) == 1000


def test_reduce_distributed_is_noop_without_process_group():
    stats = ActivationStats()
    stats.update("s", torch.ones(2, 3))
    stats.reduce_distributed()
    assert stats.max("s") == 1.0 and stats.samples("s").numel() == 6
