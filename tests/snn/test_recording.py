"""Spike and event counting (snn/engine.py ``nonzero_counts``) and the automatic time chunk
(snn/network.py ``auto_chunk``, ``ChunkTuner``)."""
from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import spikebridge as sb
from spikebridge.snn.engine import nonzero_counts
from spikebridge.snn.network import (CHUNK_TIMINGS, CHUNK_TRIES, MAX_AUTO_CHUNK, TUNED_WINDOW_BYTES, ChunkTuner,
                                     auto_chunk, window_steps_allowed)


@settings(max_examples=60, deadline=None)
@given(steps=st.integers(1, 6), batch=st.integers(1, 5), width=st.integers(1, 7), seed=st.integers(0, 2**16),
       dtype=st.sampled_from([torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.int64]))
def test_nonzero_counts_count_every_nonzero_entry_per_neuron(steps, batch, width, seed, dtype):
    g = torch.Generator().manual_seed(seed)
    values = torch.randint(-2, 3, (steps, batch, 3, width), generator=g)  # zeros, spikes, negative spikes
    train = (values * 0.37).to(dtype) if dtype.is_floating_point else values
    counts = nonzero_counts(train)
    assert counts.dtype == torch.int64 and counts.shape == (3, width)
    assert torch.equal(counts, (values != 0).sum((0, 1)))


@settings(max_examples=40, deadline=None)
@given(steps=st.integers(1, 4), batch=st.integers(1, 4), size=st.integers(1, 5), seed=st.integers(0, 2**16),
       layout=st.sampled_from(["contiguous", "channels-last", "permuted"]))
def test_nonzero_counts_are_the_same_in_every_memory_layout(steps, batch, size, seed, layout):
    """Counted in the train's memory order, the counts come back per neuron [C, H, W], contiguous."""
    g = torch.Generator().manual_seed(seed)
    values = torch.randint(-1, 2, (steps, batch, 3, size, size + 1), generator=g).float()
    train = {"contiguous": values,
             "channels-last": values.flatten(0, 1).contiguous(memory_format=torch.channels_last).unflatten(0, (steps, batch)),
             "permuted": values.permute(0, 1, 3, 4, 2).contiguous().permute(0, 1, 4, 2, 3)}[layout]
    counts = nonzero_counts(train)
    assert torch.equal(counts, (values != 0).sum((0, 1))) and counts.is_contiguous()


def test_auto_chunk_takes_one_step_for_large_inputs_and_more_for_small_ones():
    assert auto_chunk(torch.zeros(64, 3, 32, 32)) == 1
    assert auto_chunk(torch.zeros(1, 1, 28, 28)) == MAX_AUTO_CHUNK
    sizes = [auto_chunk(torch.zeros(b, 3, 16, 16)) for b in (1, 2, 4, 8, 16)]
    assert sizes == sorted(sizes, reverse=True) and all(1 <= c <= MAX_AUTO_CHUNK for c in sizes)


def test_the_automatic_chunk_gives_what_one_piece_gives():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
                              torch.nn.Linear(8 * 16 * 16, 5))
    x = torch.rand(32, 3, 16, 16)
    snn = sb.convert(net, "max-norm", T=9, calibration_data=[x])
    assert auto_chunk(x) < 9
    auto, whole = snn.simulate(x), snn.simulate(x, chunk=9)
    assert torch.equal(auto.logits, whole.logits)
    assert all(torch.equal(auto.spikes[k], whole.spikes[k]) for k in whole.spikes)
    assert all(torch.equal(auto.events[k], whole.events[k]) for k in whole.events)


@settings(max_examples=60, deadline=None)
@given(T=st.integers(2, 40), first=st.integers(1, 8),
       seconds=st.lists(st.floats(0.001, 10), min_size=4 * CHUNK_TIMINGS, max_size=4 * CHUNK_TIMINGS))
def test_the_chunk_tuner_warms_up_times_each_chunk_in_rounds_then_keeps_the_fastest(T, first, seconds):
    tuner, key = ChunkTuner(), ("shape", T)
    assert tuner.choose(key, T, first) == (first, False)           # the first run is a warm-up, not timed
    tries = list(dict.fromkeys(min(c, T) for c in CHUNK_TRIES))
    order = tries * CHUNK_TIMINGS                                  # interleaved rounds
    for chunk, s in zip(order, seconds):
        assert tuner.choose(key, T, first) == (chunk, True)
        tuner.measured(key, chunk, s)
    shortest = {c: min(s for c2, s in zip(order, seconds) if c2 == c) for c in tries}
    best = min(tries, key=shortest.get)
    assert tuner.choose(key, T, first) == (best, False) == tuner.choose(key, T, first)
    assert tuner.choose(("another shape", T), T, first) == (first, False)


@settings(max_examples=60, deadline=None)
@given(T=st.integers(2, 40), most=st.integers(0, 9))
def test_the_chunk_tuner_tries_no_window_longer_than_memory_allows(T, most):
    tuner, key = ChunkTuner(), "shape"
    tuner.choose(key, T, 1, most)
    tried = []
    while (pick := tuner.choose(key, T, 1, most))[1]:
        tried.append(pick[0])
        tuner.measured(key, pick[0], 1.0)
    assert tried and 1 in tried and max(tried) <= max(1, min(most, T))
    assert set(tried) == {min(c, T) for c in CHUNK_TRIES if c <= max(1, most)}


def test_windows_tried_hold_at_most_the_budget_of_synaptic_output():
    x = torch.zeros(64, 3, 224, 224)
    assert window_steps_allowed(x, None) == 1                       # not yet known: one step
    assert window_steps_allowed(x, 64 * 112 * 112 * 4) == 1          # ImageNet-size ResNet stem: 205 MB a step
    small = torch.zeros(64, 3, 32, 32)
    steps = window_steps_allowed(small, 16 * 32 * 32 * 4)            # ResNet-20's widest step: 4 MiB
    assert steps >= MAX_AUTO_CHUNK and 64 * 16 * 32 * 32 * 4 * MAX_AUTO_CHUNK <= TUNED_WINDOW_BYTES


def test_tuning_runs_give_the_same_results_and_settle_on_the_fastest_chunk(monkeypatch):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
                              torch.nn.Linear(8 * 8 * 8, 5))
    x = torch.rand(6, 3, 8, 8)
    snn = sb.convert(net, "max-norm", T=8, calibration_data=[x])
    chunks, run = [], snn._run
    monkeypatch.setattr(snn, "_run", lambda piece, record, values, windows: chunks.append(
        windows[0][1] if windows[0] else 8) or run(piece, record, values, windows))
    whole = snn.simulate(x, chunk=8)
    runs = [snn.simulate(x) for _ in range(2 + 4 * CHUNK_TIMINGS)]
    assert chunks[1:-1] == [auto_chunk(x)] + [1, 2, 4, 8] * CHUNK_TIMINGS  # warm-up, the tries in rounds
    (key, timed), = snn._chunks.seconds.items()
    assert {c: len(s) for c, s in timed.items()} == {c: CHUNK_TIMINGS for c in (1, 2, 4, 8)}
    assert chunks[-1] == min(timed, key=lambda c: min(timed[c]))  # then the fastest, kept
    for res in runs:
        assert torch.equal(res.logits, whole.logits)
        assert all(torch.equal(res.spikes[k], whole.spikes[k]) for k in whole.spikes)
    snn.simulate(x, chunk=3)
    assert chunks[-1] == 3 and len(snn._chunks.seconds) == 1       # a chunk given is taken, and not timed


def test_counts_of_neurons_that_count_their_own_spikes_are_the_trains_nonzero_entries(monkeypatch):
    """IF neurons count their spikes as they run (``run(..., counts)``): the recorded counts
    are those ``nonzero_counts`` finds in their trains, in one window and in several."""
    from spikebridge.snn import engine

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 8, 3, padding=1),
                              torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(8 * 8 * 8, 5))
    x = torch.rand(6, 3, 8, 8)
    snn = sb.convert(net, "max-norm", T=6, calibration_data=[x])
    trains: dict = {}
    record_site = engine.TrainRunner.record_site

    def keep(self, site, out, tally=None):
        assert tally is not None  # the neuron counted
        trains.setdefault(site, []).append(out.clone())
        return record_site(self, site, out, tally)

    monkeypatch.setattr(engine.TrainRunner, "record_site", keep)
    for chunk in (6, 4, 1):
        trains.clear()
        result = snn.simulate(x, chunk=chunk)
        assert set(result.spikes) == set(trains) and len(trains) == 2
        for site, parts in trains.items():
            assert torch.equal(result.spikes[site], nonzero_counts(torch.cat(parts)))
            assert result.spikes[site].sum() > 0
