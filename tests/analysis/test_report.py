"""report.write_report: tables, JSON and plots agree (METHODS.md §6)."""
import json
from dataclasses import dataclass

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


def _energy(scale):
    torch.manual_seed(0)
    layers = {"conv1": nn.Conv2d(3, 8, 3, padding=1), "conv2": nn.Conv2d(8, 8, 3, padding=1),
              "fc": nn.Linear(8 * 8 * 8, 10)}
    g = torch.Generator().manual_seed(scale)
    events = {"conv1": torch.full((3, 8, 8), 8.0), "conv2": torch.randint(0, scale, (8, 8, 8), generator=g).float(),
              "fc": torch.zeros(512)}   # a silent layer: its E_ANN/E_SNN is undefined ("—", null)
    return en.energy_report(FakeResult(events, {"conv1"}, 2), layers)


def _data():
    g = torch.Generator().manual_seed(0)
    acts = {}
    for i, site in enumerate(["features.2", "features.5", "classifier.1"]):
        a = torch.relu(torch.randn(5000, generator=g)) * (i + 1)
        hist, edges = torch.histogram(a, bins=30)
        acts[site] = {"hist": hist, "edges": edges, "thresholds": {"max": a.max().item(),
                                                                   "99.9%": a.quantile(0.999).item()}}
    return {
        "title": "test report",
        "ann_accuracy": 91.234567891,
        "accuracy": {"pasc": {1: 10.0, 2: 55.5, 4: 91.2}, "qcfs": {1: 12.3456789, 4: 80.1, 8: 88.8, 16: 90.9}},
        "spike_rates": {"pasc": {"features.2": 0.1234567, "features.5": 0.2}, "qcfs": {"features.2": 0.3}},
        "energy": {"pasc": _energy(4), "qcfs": _energy(6).as_dict()},
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


TOTALS = {"e_mac (pJ)": "e_mac", "e_ac (pJ)": "e_ac"}
TOTALS_IN = {"MACs (ANN)": "macs", "MACs (SNN)": "snn_macs", "ACs exact": "acs_exact", "E_ANN (µJ)": "e_ann_uj",
             "E_SNN (µJ)": "e_snn_uj", "E_ANN/E_SNN": "ratio", "E_ANN/E_SNN (rate × MACs)": "ratio_approx",
             "a": "paper_a", "b": "paper_b", "c": "paper_c", "a·e_mac/(c·e_mac+(1−c)·b·e_ac)": "paper_ratio"}
LAYER = {"layer": "name", "analog": "analog", "MACs (ANN)": "macs", "MACs (SNN)": "snn_macs",
         "ACs exact": "acs_exact", "ACs approx": "acs_approx", "input spike rate": "input_rate",
         "E_ANN (pJ)": "e_ann_pj", "E_SNN (pJ)": "e_snn_pj", "E_ANN/E_SNN": "ratio"}


def test_json_holds_exactly_the_numbers_of_the_tables(tmp_path):
    path = write_report(tmp_path, _data())
    assert path == tmp_path / "report.md"
    js = json.loads((tmp_path / "report.json").read_text())
    t = _tables(path.read_text())
    shown = 0

    def same(cell, value):
        nonlocal shown
        shown += 1
        assert cell == value and isinstance(cell, bool) == isinstance(value, bool), (cell, value)

    (header, rows), (ann_header, ann_rows) = t["Accuracy (%)"]
    for row in rows:
        for h, cell in zip(header[1:], row[1:]):
            same(cell, js["accuracy"][row[0]].get(h.removeprefix("T=")))
    same(ann_rows[0][0], js["ann_accuracy"])
    assert js["ann_accuracy"] == 91.2346

    [(header, rows)] = t["Spike rate (spikes / neuron / step)"]
    for row in rows:
        for method, cell in zip(header[1:], row[1:]):
            same(cell, js["spike_rates"][method].get(row[0]))

    [(header, rows)] = t["Totals"]
    assert len(rows) == 2
    for row in rows:
        e = js["energy"][row[0]]
        for h, cell in zip(header[1:], row[1:]):
            same(cell, e[TOTALS[h]] if h in TOTALS else e["totals"][TOTALS_IN[h]])
    for method in ("pasc", "qcfs"):
        [(header, rows)] = t[f"Layers: {method}"]
        assert [r[0] for r in rows] == ["conv1", "conv2", "fc"]
        for row, layer in zip(rows, js["energy"][method]["layers"]):
            for h, cell in zip(header, row):
                same(cell, layer[LAYER[h]])
    assert js["energy"]["pasc"]["layers"][2]["ratio"] is None

    [(header, rows)] = t["Activation thresholds"]
    for row in rows:
        for label, cell in zip(header[1:], row[1:]):
            same(cell, js["activations"][row[0]]["thresholds"][label])

    [(header, rows)] = t["AL metric (000 Sec. 3.3)"]
    for row, al in zip(rows, js["al"]):
        for h, cell in zip(header, row):
            same(cell, al[h])
    assert shown > 100


def test_plots_written_and_linked(tmp_path):
    write_report(tmp_path, _data())
    plots = json.loads((tmp_path / "report.json").read_text())["plots"]
    assert sorted(plots) == sorted(["accuracy.png", "spike_rates.png", "energy_pasc.png", "energy_qcfs.png",
                                    "activations.png", "al.png"])
    md = (tmp_path / "report.md").read_text()
    for p in plots:
        data = (tmp_path / p).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 5000
        assert f"]({p})" in md


def test_missing_sections_are_skipped(tmp_path):
    write_report(tmp_path, {"accuracy": {"bitplane": {"3": 90.0}}})
    md = (tmp_path / "report.md").read_text()
    assert "Accuracy" in md and "Energy" not in md and "AL metric" not in md
    assert sorted(p.name for p in tmp_path.glob("*.png")) == ["accuracy.png"]
    js = json.loads((tmp_path / "report.json").read_text())
    assert set(js) == {"accuracy", "plots"}
