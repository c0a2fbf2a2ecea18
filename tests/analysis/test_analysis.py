"""analyse(): from an ANN and its SNNs to the report's numbers, one simulation per SNN."""
import json

import torch
from torch import nn

import spikebridge as sb
from spikebridge.analysis.summary import analyse
from spikebridge.analysis.report import write_report


def test_analyse_and_report_hold_the_same_numbers(tmp_path):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.AvgPool2d(2),
                        nn.Conv2d(4, 6, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(6 * 16, 3)).eval()
    qann = sb.prepare(net, levels=4, threshold=1.0).eval()
    x = torch.randn(40, 1, 8, 8)
    loader = [(x[i:i + 20], torch.randint(0, 3, (20,))) for i in (0, 20)]
    pasc = sb.convert(qann, "pasc")
    snns = {"pasc": pasc, "qcfs": sb.convert(qann, "qcfs", T=4), "bitplane": sb.convert(qann, "bitplane")}
    data = analyse(qann, snns, loader, [1, 2, 4], al_loader=loader, al_images=40, al_levels=(2, 4), al_clusters=2,
                   progress=False)
    assert data["agreement"]["pasc"] == {4: 100.0}            # exact conversion
    assert data["timesteps"]["pasc"] == {"steps": 4.0, "pipeline_latency": pasc.info["pipeline_latency"]}
    assert set(data["accuracy"]["qcfs"]) == {1, 2, 4}
    assert set(data["accuracy"]["bitplane"]) == {1, 2, 3, 4}   # its own T = ceil(log2(4 + 1)) runs too
    assert data["energy"]["bitplane"]["T"] == 3 and data["energy"]["qcfs"]["T"] == 4
    assert data["energy"]["qcfs"]["accuracy"] == data["accuracy"]["qcfs"][4]
    assert set(data["spike_rates"]["pasc"]) == set(sb.sites(qann))
    # the ANN's accuracy on the same images as its SNNs, and which methods are exact
    labels = torch.cat([y for _, y in loader])
    ann_correct = sum(int((qann(x).argmax(1) == y).sum()) for x, y in loader)
    assert data["anns"] == {"QCFS ANN": {"accuracy": 100 * ann_correct / len(labels), "images": 40}}
    assert {m: v["exact"] for m, v in data["methods"].items()} == {"pasc": True, "qcfs": False, "bitplane": True}
    assert all(v["ann"] == "QCFS ANN" for v in data["methods"].values())
    assert data["accuracy"]["pasc"] == {4: data["anns"]["QCFS ANN"]["accuracy"]}  # exact: the ANN's accuracy
    assert set(data["activations"]["QCFS ANN"]) == set(sb.sites(qann))
    first = next(iter(sb.sites(qann)))
    assert data["activations"]["QCFS ANN"][first]["thresholds"] == {"pasc": 1.0, "qcfs": 1.0, "bitplane": 1.0}
    assert {row["site"] for row in data["al"]} == set(sb.sites(qann))
    energy = data["energy"]["pasc"]["totals"]
    assert energy["e_snn_uj"] > 0 and energy["e_ann_uj"] > 0

    md = write_report(tmp_path, data).read_text()
    saved = json.loads((tmp_path / "report.json").read_text())
    assert "## Timesteps" in md and "## Agreement with the source ANN" in md
    assert saved["timesteps"]["pasc"]["pipeline_latency"] == pasc.info["pipeline_latency"]
    assert f"| pasc | 4 | {pasc.info['pipeline_latency']} |" in md
