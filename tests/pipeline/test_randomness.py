"""randomness.cpu_seeded: the body draws from the seeded CPU generator, and the caller's
random state, CPU and CUDA, is as it was (conversion's constant folding and the data loaders
seed one computation at a time)."""
import torch
from hypothesis import given, settings, strategies as st

from spikebridge.conversion.graph import constant_values
from spikebridge.randomness import cpu_seeded


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2 ** 62), before=st.integers(0, 2 ** 62))
def test_the_body_draws_from_the_seed_and_the_callers_cpu_state_is_kept(seed, before):
    torch.manual_seed(before)
    expected_after = torch.rand(4)
    torch.manual_seed(before)
    with cpu_seeded(seed):
        drawn = torch.rand(4)
    assert torch.equal(drawn, torch.rand(4, generator=torch.Generator().manual_seed(seed)))
    assert torch.equal(torch.rand(4), expected_after)


def test_no_cuda_generator_is_seeded(monkeypatch):
    """torch.manual_seed would seed every CUDA generator, or queue that seed in place of the
    caller's own until CUDA starts; fork_rng(devices=[]) restores neither."""
    seeded = []
    monkeypatch.setattr(torch.cuda, "manual_seed_all", seeded.append)
    torch.manual_seed(7)
    assert seeded == [7]  # what the caller's own seeding does, through the patched function
    with cpu_seeded(3):
        torch.rand(2)
    graph = torch.fx.Graph()
    graph.output(graph.call_function(torch.rand, (3,)))
    constant_values(torch.fx.GraphModule({}, graph))  # a random call, computed under two seeds
    assert seeded == [7]


def test_a_random_call_on_numbers_is_still_told_apart_from_a_constant():
    graph = torch.fx.Graph()
    random, ones = graph.call_function(torch.rand, (3,)), graph.call_function(torch.ones, (3,))
    graph.output((random, ones))
    values = constant_values(torch.fx.GraphModule({}, graph))
    assert random not in values and torch.equal(values[ones], torch.ones(3))
