"""What a simulation reads off the graph (``SpikingNetwork.plan``) is found once and found
again whenever the graph, one of its modules or the method changes; each synaptic layer's
weight is stored in the layout its steps run in (``engine.weight_in``), values unchanged."""
from __future__ import annotations

import copy

import torch
from torch import nn

import spikebridge as sb
from spikebridge.snn.neurons import IFNeuron


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1, self.c2 = nn.Conv2d(2, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1)
        self.c3 = nn.Conv2d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8 * 4 * 4, 5)

    def forward(self, x):
        y = torch.relu(self.c1(x))
        y = torch.relu(self.c2(y)) + y
        z = torch.relu(self.c3(nn.functional.avg_pool2d(y, 4)))
        return self.fc(z.flatten(1))


def _snn():
    torch.manual_seed(0)
    x = torch.rand(8, 2, 16, 16)
    return sb.convert(_Net().eval(), "max-norm", T=4, calibration_data=[x]), x


def test_the_plan_is_kept_while_nothing_changes_and_matches_the_graph():
    snn, x = _snn()
    plan = snn.plan()
    snn.simulate(x)
    assert snn.plan() is plan
    calls = [n.target for n in snn.graph.graph.nodes if n.op == "call_module"]
    assert list(plan.modules) == list(dict.fromkeys(calls))
    assert list(plan.neurons) == [t for t in calls if isinstance(snn.graph.get_submodule(t), IFNeuron)]
    assert list(plan.synaptic) == ["c1", "c2", "c3", "fc"]
    assert set(plan.analog) == {"c1"}  # the only layer fed by the analog input
    assert {n.target for n in plan.constant if n.op == "call_module"} == {"c1"}
    assert snn.neurons() == plan.neurons and snn.neurons() is not plan.neurons  # callers get copies


def test_a_replaced_neuron_is_the_one_that_runs():
    snn, x = _snn()
    site = next(iter(snn.neurons()))
    before = snn.simulate(x)
    assert before.spikes[site].sum() > 0
    setattr(snn.graph, site, IFNeuron(torch.tensor(1e9), T=4))  # never fires
    after = snn.simulate(x)
    assert after.spikes[site].sum() == 0 and snn.neurons()[site].threshold == 1e9
    assert not torch.equal(after.logits, before.logits)


def test_an_edited_graph_gets_a_new_plan():
    snn, x = _snn()
    old = snn.plan()
    node = next(n for n in snn.graph.graph.nodes if n.op == "call_module" and n.target == "c3")
    site = next(iter(node.users))  # c3's neuron, bypassed: c3's output goes straight on
    site.replace_all_uses_with(node)
    snn.graph.graph.erase_node(site)
    snn.graph.recompile()
    assert snn.plan() is not old and site.target not in snn.neurons()
    assert site.target not in snn.simulate(x).spikes


def test_a_copy_has_a_plan_of_its_own_nodes_and_measures_the_same():
    snn, x = _snn()
    first = snn.simulate(x)
    twin = copy.deepcopy(snn)
    nodes = set(twin.graph.graph.nodes)
    assert twin.plan().constant and twin.plan().constant <= nodes and set(twin.plan().calls) <= nodes
    again = twin.simulate(x)
    assert torch.equal(again.logits, first.logits) and again.analog_steps == first.analog_steps
    assert all(torch.equal(again.events[k], first.events[k]) for k in first.events)


def test_weights_are_stored_in_the_layout_their_steps_run_in():
    snn, x = _snn()
    weights = {name: copy.deepcopy(layer.weight) for name, layer in snn.synaptic_layers().items()}
    params = {name: layer.weight for name, layer in snn.synaptic_layers().items()}
    first = snn.simulate(x)
    layers = snn.synaptic_layers()
    assert layers["c1"].weight.is_contiguous(memory_format=torch.channels_last)  # 16x16 steps: NHWC
    assert layers["c2"].weight.is_contiguous(memory_format=torch.channels_last)
    assert layers["c3"].weight.is_contiguous()  # 4x4 steps: NCHW
    for name, layer in layers.items():
        assert layer.weight is params[name] and torch.equal(layer.weight, weights[name])
    pointers = {name: layer.weight.data_ptr() for name, layer in layers.items()}
    again = snn.simulate(x)
    assert {name: layer.weight.data_ptr() for name, layer in layers.items()} == pointers  # converted once
    assert torch.equal(again.logits, first.logits)
