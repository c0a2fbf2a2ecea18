"""Experiment report: markdown tables, a JSON file and PNG plots (docs/methods.md §6, §7).

``write_report(folder, data)`` takes a dict; every section is optional and skipped when absent:

    "title":        str
    "ann_accuracy": float                          source ANN accuracy, %
    "accuracy":     {method: {T: float}}           accuracy (%) after T steps
    "agreement":    {method: {T: float}}           % of the ANN's predictions reproduced
    "timesteps":    {method: {"steps": T or T_eff, "pipeline_latency": int or None}}
    "spike_rates":  {method: {site: float}}        spikes / (neuron · step), e.g.
                                                   energy.spike_rates(res)["sites"][s]["rate"]
    "energy":       {method: EnergyReport | EnergyReport.as_dict()}   per image, pJ / µJ
    "activations":  {site: {"hist": [count] * n, "edges": [float] * (n + 1),
                            "thresholds": {label: float}}}
    "al":           [{"site": str, "A": float, "g": float, "K": float, "M": float,
                      "levels": int}]

It writes into ``folder``: ``report.md``; ``report.json``, the data with every float rounded
once to 6 significant digits, so each table cell is exactly its JSON number; and the plots
``accuracy.png``, ``spike_rates.png``, ``energy_<method>.png``, ``activations.png``, ``al.png``.
"""
from __future__ import annotations

import json
import math
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

_LAYER_COLUMNS = [("name", "layer"), ("analog", "analog"), ("macs", "MACs (ANN)"),
                  ("snn_macs", "MACs (SNN)"), ("acs_exact", "ACs exact"), ("acs_approx", "ACs approx"),
                  ("input_rate", "input spike rate"), ("e_ann_pj", "E_ANN (pJ)"),
                  ("e_snn_pj", "E_SNN (pJ)"), ("ratio", "E_ANN/E_SNN")]
_TOTAL_COLUMNS = [("macs", "MACs (ANN)"), ("snn_macs", "MACs (SNN)"), ("acs_exact", "ACs exact"),
                  ("e_ann_uj", "E_ANN (µJ)"), ("e_snn_uj", "E_SNN (µJ)"), ("ratio", "E_ANN/E_SNN"),
                  ("ratio_approx", "E_ANN/E_SNN (rate × MACs)"), ("paper_a", "a"), ("paper_b", "b"),
                  ("paper_c", "c"), ("paper_ratio", "a·e_mac/(c·e_mac+(1−c)·b·e_ac)")]
_AL_COLUMNS = ["A", "g", "K", "M", "levels"]


def _normalise(x):
    """JSON-ready copy: EnergyReports as dicts, tensors/arrays as lists, floats to 6 digits."""
    if hasattr(x, "as_dict"):
        x = x.as_dict()
    if hasattr(x, "tolist"):
        x = x.tolist()
    if isinstance(x, dict):
        return {str(k): _normalise(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_normalise(v) for v in x]
    if isinstance(x, float):
        return float(f"{x:.6g}")
    return x


def _cell(v) -> str:
    if v is None:
        return "—"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


def _table(header: list[str], rows: list[list]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return lines + [""]


def _union(dicts) -> list:
    return list(dict.fromkeys(k for d in dicts for k in d))


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "_", name)


def _save(fig, path: Path) -> str:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path.name


def _accuracy(d, folder):
    acc = d["accuracy"]
    Ts = sorted(_union(acc.values()), key=float)
    md = ["## Accuracy (%)", ""]
    md += _table(["method"] + [f"T={T}" for T in Ts], [[m] + [row.get(T) for T in Ts] for m, row in acc.items()])
    if "ann_accuracy" in d:
        md += _table(["ANN accuracy (%)"], [[d["ann_accuracy"]]])
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for method, row in acc.items():
        ts = sorted(row, key=float)
        ax.plot([float(t) for t in ts], [row[t] for t in ts], marker="o", label=method)
    if "ann_accuracy" in d:
        ax.axhline(d["ann_accuracy"], color="k", linestyle="--", label="ANN")
    if max(float(t) for t in Ts) / max(min(float(t) for t in Ts), 1e-9) >= 4:
        ax.set_xscale("log", base=2)
    ax.set(title="Accuracy vs. timesteps", xlabel="timesteps T", ylabel="accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend()
    return md, [_save(fig, folder / "accuracy.png")]


def _grouped_bars(ax, groups: list[str], series: dict[str, list]):
    width = 0.8 / len(series)
    for i, (label, values) in enumerate(series.items()):
        xs = [j + (i - (len(series) - 1) / 2) * width for j in range(len(groups))]
        ax.bar(xs, [math.nan if v is None else v for v in values], width, label=label)
    ax.set_xticks(range(len(groups)), groups, rotation=60, ha="right", fontsize=8)


def _spike_rates(d, folder):
    rates = d["spike_rates"]
    sites = _union(rates.values())
    md = ["## Spike rate (spikes / neuron / step)", ""]
    md += _table(["site"] + list(rates), [[s] + [r.get(s) for r in rates.values()] for s in sites])
    fig, ax = plt.subplots(figsize=(max(6.4, 0.45 * len(sites) * len(rates)), 4.2))
    _grouped_bars(ax, sites, {m: [r.get(s) for s in sites] for m, r in rates.items()})
    ax.set(title="Spike rate per site", xlabel="site", ylabel="spike rate (spikes / neuron / step)")
    ax.legend()
    return md, [_save(fig, folder / "spike_rates.png")]


def _energy(d, folder):
    energy = d["energy"]
    md = ["## Energy per image", "", "### Totals", ""]
    md += _table(["method", "e_mac (pJ)", "e_ac (pJ)"] + [h for _, h in _TOTAL_COLUMNS],
                 [[m, r["e_mac"], r["e_ac"]] + [r["totals"][k] for k, _ in _TOTAL_COLUMNS]
                  for m, r in energy.items()])
    plots = []
    for method, r in energy.items():
        md += [f"### Layers: {method}", ""]
        md += _table([h for _, h in _LAYER_COLUMNS], [[l[k] for k, _ in _LAYER_COLUMNS] for l in r["layers"]])
        names = [l["name"] for l in r["layers"]]
        fig, ax = plt.subplots(figsize=(max(6.4, 0.5 * len(names)), 4.2))
        _grouped_bars(ax, names, {"ANN": [l["e_ann_pj"] for l in r["layers"]],
                                  "SNN": [l["e_snn_pj"] for l in r["layers"]]})
        ax.set_yscale("log")
        ax.set(title=f"Energy per layer and image: {method}", xlabel="layer", ylabel="energy (pJ)")
        ax.legend()
        plots.append(_save(fig, folder / f"energy_{_slug(method)}.png"))
    return md, plots


def _activations(d, folder):
    acts = d["activations"]
    labels = _union(a["thresholds"] for a in acts.values())
    md = ["## Activation thresholds", ""]
    md += _table(["site"] + labels, [[s] + [a["thresholds"].get(k) for k in labels] for s, a in acts.items()])
    cols = min(4, len(acts))
    rows = math.ceil(len(acts) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 2.8 * rows), squeeze=False)
    colors = dict(zip(labels, plt.rcParams["axes.prop_cycle"].by_key()["color"][1:] * len(labels)))
    for ax, (site, a) in zip(axes.flat, acts.items()):
        ax.stairs(a["hist"], a["edges"], fill=True, color="0.6", label="activations")
        for label, value in a["thresholds"].items():
            ax.axvline(value, color=colors[label], linestyle="--", label=f"{label} = {_cell(value)}")
        ax.set_yscale("log")
        ax.set(title=site, xlabel="activation value", ylabel="count")
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(acts):]:
        ax.axis("off")
    fig.suptitle("Activation histograms and thresholds")
    return md, [_save(fig, folder / "activations.png")]


def _al(d, folder):
    al = d["al"]
    md = ["## AL metric (000 Sec. 3.3)", ""]
    md += _table(["site"] + _AL_COLUMNS, [[r["site"]] + [r[k] for k in _AL_COLUMNS] for r in al])
    sites = [r["site"] for r in al]
    fig, ax = plt.subplots(figsize=(max(6.4, 0.45 * len(sites)), 4.2))
    bars = ax.bar(range(len(sites)), [r["M"] for r in al], color="tab:blue", label="M = A·(g²+1)·K")
    ax.set_xticks(range(len(sites)), sites, rotation=60, ha="right", fontsize=8)
    ax.set(title="AL metric and levels per site", xlabel="site", ylabel="AL metric M (dimensionless)")
    ax2 = ax.twinx()
    (line,) = ax2.plot(range(len(sites)), [r["levels"] for r in al], "o", color="tab:red", label="levels L")
    ax2.set_ylabel("levels L (timesteps)")
    ax2.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(handles=[bars, line])
    return md, [_save(fig, folder / "al.png")]


def _agreement(d, folder):
    agree = {m: row for m, row in d["agreement"].items() if row}
    Ts = sorted(_union(agree.values()), key=float)
    md = ["## Agreement with the ANN (% of predictions equal)", ""]
    return md + _table(["method"] + [f"T={T}" for T in Ts], [[m] + [row.get(T) for T in Ts] for m, row in agree.items()]), []


def _timesteps(d, folder):
    md = ["## Timesteps", "", "steps: T, or T_eff = mean levels for PASC (000 Eq. 8); pipeline latency: steps from "
          "the input until PASC's last site has emitted (docs/methods.md §2).", ""]
    rows = [[m, t.get("steps"), t.get("pipeline_latency")] for m, t in d["timesteps"].items()]
    return md + _table(["method", "steps", "pipeline latency"], rows), []


_SECTIONS = [("accuracy", _accuracy), ("agreement", _agreement), ("timesteps", _timesteps),
             ("spike_rates", _spike_rates), ("energy", _energy),
             ("activations", _activations), ("al", _al)]


def write_report(folder, data: dict) -> Path:
    """Write report.md, report.json and the plots of ``data`` (schema: module docstring)
    into ``folder`` (created if needed); returns the path of report.md."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    d = _normalise(data)
    md, plots = [f"# {d.get('title', 'spikebridge report')}", ""], []
    for key, section in _SECTIONS:
        if key in d:
            lines, files = section(d, folder)
            md += lines
            plots += files
    md += ["## Plots", ""] + [f"![{p}]({p})\n" for p in plots]
    d["plots"] = plots
    (folder / "report.json").write_text(json.dumps(d, indent=2, ensure_ascii=False))
    path = folder / "report.md"
    path.write_text("\n".join(md), encoding="utf-8")
    return path
