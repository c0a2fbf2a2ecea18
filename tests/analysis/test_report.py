"""report.write_report: tables, JSON and plots agree (docs/methods.md §6), and the plots draw what they say."""
import json
import re
from dataclasses import dataclass, field

import pytest

import torch
from torch import nn

from spikebridge.analysis import energy as en
from spikebridge.analysis.report import write_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@dataclass
class FakeResult:
    events: dict
    analog_layers: set
    batch_size: int
    analog_steps: dict = field(default_factory=dict)
    analog_ops: dict = field(default_factory=dict)


def _energy(scale):
    torch.manual_seed(0)
    layers = {"conv1": nn.Conv2d(3, 8, 3, padding=1), "conv2": nn.Conv2d(8, 8, 3, padding=1),
              "fc": nn.Linear(8 * 8 * 8, 10)}
    g = torch.Generator().manual_seed(scale)
    events = {"conv1": torch.full((3, 8, 8), 8.0), "conv2": torch.randint(0, scale, (8, 8, 8), generator=g).float(),
              "fc": torch.zeros(512)}   # a silent layer: its E_ANN/E_SNN is undefined ("—", null)
    return en.energy_report(FakeResult(events, {"conv1"}, 2), layers)


def _energy_entry(scale, T, accuracy):
    return {"T": T, "steps": T, "accuracy": accuracy, "spikes_per_image": 1234.5678, **_energy(scale).as_dict()}


def _data():
    g = torch.Generator().manual_seed(0)
    acts = {}
    for ann, scale in (("QCFS ANN", 1.0), ("ReLU ANN", 1.5)):
        acts[ann] = {}
        for i, site in enumerate(["features.2", "features.5", "classifier.1"]):
            a = torch.relu(torch.randn(5000, generator=g)) * (i + 1) * scale
            hist, edges = torch.histogram(a, bins=30)
            top = a.max().item()
            thresholds = ({"pasc": top / 2, "qcfs": top / 2, "bitplane": top / 2} if ann == "QCFS ANN" else
                          {"max-norm": top, "data-driven (T=2)": a.quantile(0.9).item(),
                           "data-driven (T=4)": a.quantile(0.99).item()})
            acts[ann][site] = {"hist": hist, "edges": edges, "thresholds": thresholds}
    return {
        "title": "test report",
        "images": 2000,
        "anns": {"QCFS ANN": {"accuracy": 91.234567891, "images": 2000, "full_accuracy": 90.5},
                 "ReLU ANN": {"accuracy": 93.3, "images": 2000}},
        "methods": {"pasc": {"ann": "QCFS ANN", "exact": True, "coding": "sum", "steps": "T_eff"},
                    "qcfs": {"ann": "QCFS ANN", "exact": False, "coding": "rate", "steps": "T"},
                    "max-norm": {"ann": "ReLU ANN", "exact": False, "coding": "rate", "steps": "T", "conversions": 4}},
        "accuracy": {"pasc": {4: 91.2}, "qcfs": {1: 12.3456789, 4: 80.1, 8: 88.8, 16: 90.9},
                     "max-norm": {1: 10.0, 4: 20.0, 8: 25.55, 16: 33.5}},
        "agreement": {"pasc": {4: 100.0}, "qcfs": {1: 12.5, 16: 95.123}},
        "timesteps": {"pasc": {"steps": 4.0, "pipeline_latency": 19}, "qcfs": {"steps": 16, "pipeline_latency": None},
                      "max-norm": {"steps": 16, "pipeline_latency": None}},
        "spike_rates": {"pasc": {"features.2": 0.1234567, "features.5": 0.2}, "qcfs": {"features.2": 0.3}},
        "energy": {"pasc": _energy_entry(4, 4, 91.2), "qcfs": _energy_entry(6, 16, 90.9),
                   "max-norm": _energy_entry(5, 16, 33.5)},
        "activations": acts,
        "al": [{"site": "features.2", "A": 0.75, "g": 1.23456789, "K": 4.5, "M": 8.125, "levels": 4},
               {"site": "features.5", "A": 0.5, "g": -0.3, "K": 2.1, "M": 1.1, "levels": 8}],
    }


def _parse_cell(s):
    if s == "—":
        return None
    if s in ("yes", "no"):
        return s == "yes"
    for conv in (int, float):
        try:
            return conv(s)
        except ValueError:
            pass
    return s


def _tables(md):
    """{heading: [(header, rows)]} for every markdown table, rows parsed to Python values."""
    out, heading, block = {}, None, []
    for line in md.splitlines() + [""]:
        if line.startswith("|"):
            block.append([c.strip() for c in line.strip("|").split("|")])
            continue
        if block:
            out.setdefault(heading, []).append((block[0], [[_parse_cell(c) for c in r] for r in block[2:]]))
            block = []
        if line.startswith("#"):
            heading = line.lstrip("#").strip()
    return out


SUMMARY = {"E_ANN (µJ)": "e_ann_uj", "E_SNN (µJ)": "e_snn_uj", "E_ANN/E_SNN": "ratio"}
DETAIL = {"MACs (ANN)": "macs", "MACs (SNN, analog layers)": "snn_macs", "ACs (exact fan-out)": "acs_exact",
          "ACs (rate × MACs)": "acs_approx", "E_ANN/E_SNN (rate × MACs)": "ratio_approx",
          "mean input spike rate b": "paper_b", "analog MAC share c": "paper_c",
          "000 Table 3: a·e_mac/(c·e_mac+(1−c)·b·e_ac)": "paper_ratio"}
LAYER = {"layer": "name", "analog": "analog", "MACs (ANN)": "macs", "MACs (SNN)": "snn_macs",
         "ACs exact": "acs_exact", "ACs approx": "acs_approx", "input spike rate": "input_rate",
         "E_ANN (pJ)": "e_ann_pj", "E_SNN (pJ)": "e_snn_pj", "E_ANN/E_SNN": "ratio"}
PERCENT_CELL = re.compile(r"^\d+\.\d\d$")


def test_json_holds_exactly_the_numbers_of_the_tables(tmp_path):
    path = write_report(tmp_path, _data())
    assert path == tmp_path / "report.md"
    js = json.loads((tmp_path / "report.json").read_text())
    md = path.read_text()
    t = _tables(md)
    shown = 0

    def same(cell, value):
        nonlocal shown
        shown += 1
        assert cell == value and isinstance(cell, bool) == isinstance(value, bool), (cell, value)

    [(header, rows)] = t["Source ANNs"]
    assert header == ["ANN", "images", "accuracy (%)", "accuracy on the full test set (%)"]
    for row in rows:
        same(row[2], js["anns"][row[0]]["accuracy"])
        same(row[3], js["anns"][row[0]].get("full_accuracy"))
    assert js["anns"]["QCFS ANN"]["accuracy"] == 91.23          # percentages: 2 decimals everywhere
    assert "| QCFS ANN | 2000 | 91.23 | 90.50 |" in md

    [(header, rows)] = t["Accuracy (%)"]
    assert header[:3] == ["method", "from", "exact"]
    for row in rows:
        assert row[1] == js["methods"][row[0]]["ann"] and row[2] == js["methods"][row[0]]["exact"]
        for h, cell in zip(header[3:], row[3:]):
            same(cell, js["accuracy"][row[0]].get(h.removeprefix("T=")))
    assert "| qcfs | QCFS ANN | no | 12.35 | 80.10 | 88.80 | 90.90 |" in md
    assert "max-norm: one conversion per T (thresholds chosen for that T)." in md

    [(header, rows)] = t["Spike rate (spikes / neuron / step)"]
    assert header[1:] == ["pasc (T_eff=4)", "qcfs (T=16)"]     # each column says its steps
    for row in rows:
        for method, cell in zip(["pasc", "qcfs"], row[1:]):
            same(cell, js["spike_rates"][method].get(row[0]))
    assert js["spike_rates"]["pasc"]["features.2"] == 0.1235   # 4 significant digits

    [(header, rows)] = t["Summary"]
    assert header == ["method", "from", "steps", "accuracy at these steps (%)", "spikes per image",
                      "E_ANN (µJ)", "E_SNN (µJ)", "E_ANN/E_SNN"]
    assert [r[:4] for r in rows] == [["pasc", "QCFS ANN", "T_eff=4", 91.2], ["qcfs", "QCFS ANN", "T=16", 90.9],
                                     ["max-norm", "ReLU ANN", "T=16", 33.5]]
    for row in rows:
        e = js["energy"][row[0]]
        same(row[3], e["accuracy"])
        same(row[4], e["spikes_per_image"])
        for h, cell in zip(header[5:], row[5:]):
            same(cell, e["totals"][SUMMARY[h]])
    [(header, rows)] = t["Details"]
    for row in rows:
        for h, cell in zip(header[2:], row[2:]):
            same(cell, js["energy"][row[0]]["totals"][DETAIL[h]])
    for method, caption in (("pasc", "T_eff=4, accuracy 91.20%"), ("qcfs", "T=16, accuracy 90.90%"),
                            ("max-norm", "T=16, accuracy 33.50%")):
        [(header, rows)] = t[f"Layers: {method} ({caption})"]
        assert [r[0] for r in rows] == ["conv1", "conv2", "fc"]
        for row, layer in zip(rows, js["energy"][method]["layers"]):
            for h, cell in zip(header, row):
                same(cell, layer[LAYER[h]])
    assert js["energy"]["pasc"]["layers"][2]["ratio"] is None
    assert "e_mac = 4.6 pJ, e_ac = 0.9 pJ" in md

    for ann in ("QCFS ANN", "ReLU ANN"):
        [(header, rows)] = t[ann]
        for row in rows:
            for label, cell in zip(header[1:], row[1:]):
                same(cell, js["activations"][ann][row[0]]["thresholds"][label])

    [(header, rows)] = t["AL metric (000 Sec. 3.3)"]
    for row, al in zip(rows, js["al"]):
        for h, cell in zip(header, row):
            same(cell, al[h])
    assert shown > 100
    # percentages have two decimals in every table
    for line in md.splitlines():
        if line.startswith(("| qcfs | QCFS ANN |", "| max-norm | ReLU ANN |")):
            cells = [c.strip() for c in line.strip("|").split("|")]
            percent = cells[3:] if "T=" not in line else [cells[3]]
            assert all(PERCENT_CELL.match(c) for c in percent), line


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """One report of _data(), written once for the tests that only read it."""
    folder = tmp_path_factory.mktemp("report")
    write_report(folder, _data())
    return folder


def _figure(tmp_path, name):
    return json.loads((tmp_path / "report.json").read_text())["figures"][name]


def test_plots_written_linked_and_described(report):
    tmp_path = report
    js = json.loads((tmp_path / "report.json").read_text())
    plots = js["plots"]
    assert sorted(plots) == sorted(["accuracy.png", "spike_rates.png", "energy.png", "energy_pasc.png",
                                    "energy_qcfs.png", "energy_max-norm.png", "activations.png", "al.png"])
    md = (tmp_path / "report.md").read_text()
    for p in plots:
        data = (tmp_path / p).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 5000
        assert f"]({p})" in md
        assert js["figures"][p]["legend_over_data"] is False, p   # every legend sits beside the data
        assert js["figures"][p]["legend_over_title"] is False, p


def test_accuracy_plot_draws_each_source_ann_on_the_same_images(report):
    tmp_path = report
    [ax] = _figure(tmp_path, "accuracy.png")["axes"]
    lines = {l["label"].strip(): l for l in ax["lines"]}
    assert "2000" in _figure(tmp_path, "accuracy.png")["title"]
    qcfs_ann = lines["QCFS ANN: 91.23% (same 2000 images)"]
    relu_ann = lines["ReLU ANN: 93.30% (same 2000 images)"]
    assert set(qcfs_ann["y"]) == {91.23} and set(relu_ann["y"]) == {93.3}
    assert qcfs_ann["linestyle"] != relu_ann["linestyle"]
    exact = lines["pasc (exact) at T_eff"]
    assert exact["x"] == [4.0] and exact["y"] == [91.2]
    assert exact["marker"] != lines["qcfs"]["marker"]              # exact methods are marked apart
    assert lines["qcfs"]["x"] == [1.0, 4.0, 8.0, 16.0] and lines["max-norm (converted per T)"]["y"][-1] == 33.5
    legend = [t.strip() for t in _figure(tmp_path, "accuracy.png")["legend"]]
    # each ANN is followed by the methods converted from it
    assert legend.index("QCFS ANN: 91.23% (same 2000 images)") < legend.index("qcfs") < \
        legend.index("ReLU ANN: 93.30% (same 2000 images)") < legend.index("max-norm (converted per T)")


def test_energy_plots_state_T_and_the_accuracy_there(report):
    tmp_path = report
    fig = _figure(tmp_path, "energy_max-norm.png")
    assert "T=16" in fig["title"] and "33.50%" in fig["title"]
    assert [b["label"] for b in fig["axes"][0]["bars"]] == ["ReLU ANN", "SNN (T=16, accuracy 33.50%)"]
    fig = _figure(tmp_path, "energy_pasc.png")
    assert "T_eff=4" in fig["title"] and "91.20%" in fig["title"]
    [ax] = _figure(tmp_path, "energy.png")["axes"]
    assert len(ax["bars"][0]["values"]) == 3
    # both ANNs cost the same (same MACs): one line that names both
    assert [l["label"].split(":")[0] for l in ax["lines"]] == ["QCFS ANN, ReLU ANN"]


def test_activation_plot_has_every_source_and_one_line_per_threshold_value(report):
    tmp_path = report
    fig = _figure(tmp_path, "activations.png")
    titles = [ax["title"] for ax in fig["axes"]]
    assert titles == [f"{ann}: {site}" for ann in ("QCFS ANN", "ReLU ANN")
                      for site in ("features.2", "features.5", "classifier.1")]
    for ax in fig["axes"]:
        xs = [l["x"][0] for l in ax["lines"]]
        assert len(xs) == len(set(xs))                             # identical thresholds: one line
    qcfs_lines = fig["axes"][0]["lines"]
    assert [l["label"] for l in qcfs_lines] == ["θ: pasc, qcfs, bitplane"]
    relu_labels = {l["label"] for l in fig["axes"][3]["lines"]}
    assert relu_labels == {"θ: max-norm", "θ: data-driven (T=2)", "θ: data-driven (T=4)"}
    assert "θ: max-norm" in fig["legend"] and "θ: pasc, qcfs, bitplane" in fig["legend"]


def test_missing_sections_are_skipped(tmp_path):
    write_report(tmp_path, {"accuracy": {"bitplane": {"3": 90.0}}})
    md = (tmp_path / "report.md").read_text()
    assert "Accuracy" in md and "Energy" not in md and "AL metric" not in md
    assert sorted(p.name for p in tmp_path.glob("*.png")) == ["accuracy.png"]
    js = json.loads((tmp_path / "report.json").read_text())
    assert set(js) == {"accuracy", "plots", "figures"}
