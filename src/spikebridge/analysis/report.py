"""Experiment report: markdown tables, a JSON file and PNG plots (docs/methods.md §6, §7).

``write_report(folder, data)`` takes a dict (``summary.report_data`` and ``summary.analyse``
make one); every section is optional and skipped when absent:

    "title":        str
    "images":       int                            test images the SNNs (and their ANNs) ran on
    "anns":         {ann: {"accuracy": float, "images": int, "full_accuracy": float}}
                                                   each source ANN's accuracy (%) on those images
                                                   (full_accuracy: on the full test set, optional)
    "methods":      {method: {"ann": ann, "exact": bool, "coding": str, "steps": "T" or "T_eff",
                              "conversions": int}}   (conversions > 1: one per T, e.g. data-driven)
    "accuracy":     {method: {T: float}}           accuracy (%) after T steps
    "agreement":    {method: {T: float}}           % of the source ANN's predictions reproduced
    "timesteps":    {method: {"steps": T or T_eff, "pipeline_latency": int or None}}
    "spike_rates":  {method: {site: float}}        spikes / (neuron · step)
    "energy":       {method: {"T": int, "steps": T or T_eff, "accuracy": float, "spikes_per_image": float,
                              **EnergyReport.as_dict()}}   per image at T, with the accuracy (%) there
    "activations":  {ann: {site: {"hist": [count] * n, "edges": [float] * (n + 1),
                                  "thresholds": {label: float}}}}
    "al":           [{"site": str, "A": float, "g": float, "K": float, "M": float, "levels": int}]

It writes into ``folder``: ``report.md``; ``report.json``, the data with every number rounded
once as the tables show it (percentages to 2 decimals, other floats to 4 significant digits),
so each table cell is exactly its JSON number, plus ``"figures"``: what each plot draws (titles,
axis labels, every labelled line and bar series, the legend entries and whether a legend lies
over an axes' data area); and the plots ``accuracy.png``, ``spike_rates.png``, ``energy.png``,
``energy_<method>.png``, ``activations.png``, ``al.png``.
"""
from __future__ import annotations

import json
import math
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import FixedLocator, MaxNLocator, NullLocator  # noqa: E402

PERCENT_KEYS = {"accuracy", "agreement", "full_accuracy"}   # values in % (2 decimals)

_LAYER_COLUMNS = [("name", "layer"), ("analog", "analog"), ("macs", "MACs (ANN)"),
                  ("snn_macs", "MACs (SNN)"), ("acs_exact", "ACs exact"), ("acs_approx", "ACs approx"),
                  ("input_rate", "input spike rate"), ("e_ann_pj", "E_ANN (pJ)"),
                  ("e_snn_pj", "E_SNN (pJ)"), ("ratio", "E_ANN/E_SNN")]
_ANALOG_OP_COLUMNS = [("name", "node"), ("op", "op"), ("macs", "MACs (ANN)"), ("snn_macs", "MACs (SNN, every call)"),
                      ("e_ann_pj", "E_ANN (pJ)"), ("e_snn_pj", "E_SNN (pJ)")]
_SUMMARY_COLUMNS = [("e_ann_uj", "E_ANN (µJ)"), ("e_snn_uj", "E_SNN (µJ)"), ("ratio", "E_ANN/E_SNN")]
_DETAIL_COLUMNS = [("macs", "MACs (ANN)"), ("snn_macs", "MACs (SNN, analog layers)"),
                   ("acs_exact", "ACs (exact fan-out)"), ("acs_approx", "ACs (rate × MACs)"),
                   ("ratio_approx", "E_ANN/E_SNN (rate × MACs)"), ("paper_b", "mean input spike rate b"),
                   ("paper_c", "analog MAC share c"), ("paper_ratio", "000 Table 3: a·e_mac/(c·e_mac+(1−c)·b·e_ac)")]
_AL_COLUMNS = ["A", "g", "K", "M", "levels"]
_COLORS = plt.rcParams["axes.prop_cycle"].by_key()["color"]
_ANN_STYLES = [("black", "--"), ("0.45", ":"), ("tab:brown", "-.")]


# -- numbers -------------------------------------------------------------------------------

def _sig(v: float) -> str:
    """4 significant digits, positional between 1e-4 and 1e7."""
    if v == 0 or not math.isfinite(v):
        return "0" if v == 0 else str(v)
    a = abs(v)
    if 1e-4 <= a < 1e7:
        return f"{v:.{max(0, 3 - math.floor(math.log10(a)))}f}"
    return f"{v:.3e}"


def _round(v: float, percent: bool) -> float:
    return round(v, 2) if percent else float(_sig(v))


def _normalise(x, percent: bool = False):
    """JSON-ready copy: EnergyReports as dicts, tensors/arrays as lists, floats rounded as shown."""
    if hasattr(x, "as_dict"):
        x = x.as_dict()
    if hasattr(x, "tolist"):
        x = x.tolist()
    if isinstance(x, dict):
        return {str(k): _normalise(v, percent or k in PERCENT_KEYS) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_normalise(v, percent) for v in x]
    if isinstance(x, float):
        return _round(x, percent)
    return x


def _cell(v, percent: bool = False) -> str:
    if v is None:
        return "—"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.2f}" if percent else _sig(v)
    return str(v)


def _table(header: list[str], rows: list[list], percent: bool = False) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(v, percent) for v in row) + " |" for row in rows]
    return lines + [""]


def _union(dicts) -> list:
    return list(dict.fromkeys(k for d in dicts for k in d))


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "_", name)


def _T_key(t) -> float:
    return float(t)


# -- figures -------------------------------------------------------------------------------

def _describe(fig) -> dict:
    """What a figure draws, for report.json: titles, axis labels, labelled lines and bar series,
    legend entries, and whether any legend overlaps an axes' data area."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    axes, boxes = [], []
    for ax in fig.axes:
        if not ax.axison:
            continue
        boxes.append(ax.get_window_extent(renderer))
        lines = [{"label": l.get_label(), "x": [float(v) for v in l.get_xdata()],
                  "y": [float(v) for v in l.get_ydata()], "marker": str(l.get_marker()),
                  "linestyle": str(l.get_linestyle())}
                 for l in ax.lines if not l.get_label().startswith("_")]
        bars = [{"label": c.get_label(), "values": [float(p.get_width() if c.orientation == "horizontal"
                                                          else p.get_height()) for p in c.patches]}
                for c in ax.containers if hasattr(c, "patches") and not c.get_label().startswith("_")]
        axes.append({"title": ax.get_title(), "xlabel": ax.get_xlabel(), "ylabel": ax.get_ylabel(),
                     "lines": lines, "bars": bars})
    legends = list(fig.legends) + [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None]
    texts = [t for t in [fig._suptitle] + [ax.title for ax in fig.axes if ax.axison] if t is not None and t.get_text()]
    over_data = any(leg.get_window_extent(renderer).overlaps(box) for leg in legends for box in boxes)
    over_text = any(leg.get_window_extent(renderer).overlaps(t.get_window_extent(renderer))
                    for leg in legends for t in texts)
    return {"title": fig._suptitle.get_text() if fig._suptitle else "", "axes": axes,
            "legend": [t.get_text() for leg in legends for t in leg.get_texts()],
            "legend_over_data": over_data, "legend_over_title": over_text}


def _save(fig, path: Path, figures: dict) -> str:
    figures[path.name] = _describe(fig)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path.name


def _legend_outside(fig, handles=None, labels=None, ncols: int = 2):
    """One legend for the figure, below its axes (constrained layout keeps it off the data and the title)."""
    kwargs = {"handles": handles, "labels": labels} if handles is not None else {}
    return fig.legend(loc="outside lower center", fontsize=8, ncols=ncols, **kwargs)


def _images(d) -> str:
    return f"the first {d['images']} test images" if d.get("images") else "the test images"


# -- sections ------------------------------------------------------------------------------

def _anns(d, folder, figures):
    anns = d["anns"]
    full = any("full_accuracy" in a for a in anns.values())
    md = ["## Source ANNs", "", f"Every SNN ran on {_images(d)} and is compared with the ANN it was converted "
          "from on the same images.", ""]
    header = ["ANN", "images", "accuracy (%)"] + (["accuracy on the full test set (%)"] if full else [])
    rows = [[label, a.get("images"), a.get("accuracy")] + ([a.get("full_accuracy")] if full else [])
            for label, a in anns.items()]
    return md + _table(header, rows, percent=True), []


def _method_x(d, method, T):
    """Where a (method, T) point sits on the time axis: T, or PASC's T_eff."""
    if (d.get("methods", {}).get(method, {}).get("steps") == "T_eff") and method in d.get("timesteps", {}):
        return float(d["timesteps"][method]["steps"])
    return float(T)


def _accuracy(d, folder, figures):
    acc, methods, anns = d["accuracy"], d.get("methods", {}), d.get("anns", {})
    Ts = sorted(_union(acc.values()), key=_T_key)
    md = ["## Accuracy (%)", "", f"On {_images(d)}; exact methods reproduce the QCFS ANN's levels "
          "(docs/methods.md §2–3).", ""]
    header = ["method", "from", "exact"] + [f"T={T}" for T in Ts]
    rows = [[m, methods.get(m, {}).get("ann"), methods.get(m, {}).get("exact")] + [row.get(T) for T in Ts]
            for m, row in acc.items()]
    md += _table(header, rows, percent=True)
    per_T = [m for m in acc if methods.get(m, {}).get("conversions", 1) > 1]
    if per_T:
        md += [f"{', '.join(per_T)}: one conversion per T (thresholds chosen for that T).", ""]
    fig, ax = plt.subplots(figsize=(8.4, 4.6), layout="constrained")
    handles, labels = [], []
    groups = list(anns) + [None]
    for i, ann in enumerate(groups):
        if ann is not None:
            color, style = _ANN_STYLES[i % len(_ANN_STYLES)]
            a = anns[ann]
            line = ax.axhline(a["accuracy"], color=color, linestyle=style, linewidth=1.2,
                              label=f"{ann}: {a['accuracy']:.2f}% (same {a.get('images', '?')} images)")
            handles.append(line)
            labels.append(line.get_label())
        for j, (method, row) in enumerate(acc.items()):
            info = methods.get(method, {})
            if info.get("ann") != ann and not (ann is None and info.get("ann") not in anns):
                continue
            ts = sorted(row, key=_T_key)
            exact = info.get("exact", False)
            label = (f"  {method}" + (" (exact)" if exact else "") + (" at T_eff" if info.get("steps") == "T_eff" else "")
                     + (" (converted per T)" if info.get("conversions", 1) > 1 else ""))
            (line,) = ax.plot([_method_x(d, method, t) for t in ts], [row[t] for t in ts],
                              marker="D" if exact else "o", markersize=8 if exact else 5,
                              linewidth=2.4 if exact else 1.4,
                              color=_COLORS[j % len(_COLORS)], zorder=3 if exact else 2, label=label)
            handles.append(line)
            labels.append(label)
    xs = sorted({_method_x(d, m, t) for m, row in acc.items() for t in row})
    if xs and max(xs) / max(min(xs), 1e-9) >= 4:
        ax.set_xscale("log", base=2)
        ax.xaxis.set_major_locator(FixedLocator(xs))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xticks(xs, [f"{x:g}" for x in xs])
    fig.suptitle(f"Accuracy vs. timesteps ({_images(d)})")
    ax.set(xlabel="timesteps T (PASC: T_eff = mean L)", ylabel="accuracy (%)")
    ax.grid(alpha=0.3)
    _legend_outside(fig, handles, labels, ncols=max(1, len(anns)))
    return md, [_save(fig, folder / "accuracy.png", figures)]


def _grouped_bars(ax, groups: list[str], series: dict[str, list]):
    width = 0.8 / len(series)
    for i, (label, values) in enumerate(series.items()):
        xs = [j + (i - (len(series) - 1) / 2) * width for j in range(len(groups))]
        ax.bar(xs, [math.nan if v is None else v for v in values], width, label=label,
               color=_COLORS[i % len(_COLORS)])
    ax.set_xticks(range(len(groups)), groups, rotation=60, ha="right", fontsize=8)


def _steps_label(d, method) -> str:
    e = d.get("energy", {}).get(method)
    if e is None:
        return method
    unit = "T_eff" if d.get("methods", {}).get(method, {}).get("steps") == "T_eff" else "T"
    return f"{method} ({unit}={e['steps']:g})"


def _spike_rates(d, folder, figures):
    rates = d["spike_rates"]
    sites = _union(rates.values())
    labels = {m: _steps_label(d, m) for m in rates}
    md = ["## Spike rate (spikes / neuron / step)", "", "At the T of each method's energy (below).", ""]
    md += _table(["site"] + [labels[m] for m in rates], [[s] + [r.get(s) for r in rates.values()] for s in sites])
    fig, ax = plt.subplots(figsize=(min(14.0, max(7.4, 0.25 * len(sites) * len(rates) + 3)), 4.4), layout="constrained")
    _grouped_bars(ax, sites, {labels[m]: [r.get(s) for s in sites] for m, r in rates.items()})
    fig.suptitle("Spike rate per site, each method at the steps in its label")
    ax.set(xlabel="site", ylabel="spike rate (spikes / neuron / step)")
    _legend_outside(fig, ncols=min(4, len(rates)))
    return md, [_save(fig, folder / "spike_rates.png", figures)]


def _energy_caption(d, method, e) -> str:
    unit = "T_eff" if d.get("methods", {}).get(method, {}).get("steps") == "T_eff" else "T"
    return f"{unit}={e['steps']:g}, accuracy {e['accuracy']:.2f}%"


def _energy(d, folder, figures):
    energy = d["energy"]
    costs = sorted({(r["e_mac"], r["e_ac"]) for r in energy.values()})
    one_cost = len(costs) == 1
    md = ["## Energy per image", "", "Each method at the steps of its (longest) simulation, with its accuracy there. "
          "E = e_mac·MACs + e_ac·ACs" + (f", e_mac = {costs[0][0]:g} pJ, e_ac = {costs[0][1]:g} pJ"
                                          if one_cost else "") +
          " (docs/methods.md §6). A ratio E_ANN/E_SNN means little where the SNN's accuracy is far below its ANN's.", ""]
    md += ["### Summary", ""]
    header = ["method", "from", "steps", "accuracy at these steps (%)", "spikes per image"] + [h for _, h in _SUMMARY_COLUMNS]
    rows = [[m, d.get("methods", {}).get(m, {}).get("ann"), _steps_label(d, m).removeprefix(m).strip(" ()"),
             r.get("accuracy"), r.get("spikes_per_image")] + [r["totals"][k] for k, _ in _SUMMARY_COLUMNS]
            for m, r in energy.items()]
    md += _summary_table(header, rows)
    md += ["### Details", "", "ACs (exact fan-out): one accumulate per (input event, synapse), border effects "
           "included; ACs (rate × MACs): 000 Eq. 7; b, c and the last column: 000 Table 3's estimate.", ""]
    header = ["method", "steps"] + ([] if one_cost else ["e_mac (pJ)", "e_ac (pJ)"]) + [h for _, h in _DETAIL_COLUMNS]
    rows = [[m, _steps_label(d, m).removeprefix(m).strip(" ()")] + ([] if one_cost else [r["e_mac"], r["e_ac"]])
            + [r["totals"][k] for k, _ in _DETAIL_COLUMNS] for m, r in energy.items()]
    md += _table(header, rows)
    plots = [_energy_overview(d, folder, figures)]
    for method, r in energy.items():
        caption = _energy_caption(d, method, r)
        md += [f"### Layers: {method} ({caption})", ""]
        md += _table([h for _, h in _LAYER_COLUMNS], [[l[k] for k, _ in _LAYER_COLUMNS] for l in r["layers"]])
        if r.get("analog_ops"):
            md += ["Still analog: ops computed on decoded values (docs/methods.md §8), counted as MACs:", ""]
            md += _table([h for _, h in _ANALOG_OP_COLUMNS], [[a[k] for k, _ in _ANALOG_OP_COLUMNS] for a in r["analog_ops"]])
        names = [l["name"] for l in r["layers"]]
        fig, ax = plt.subplots(figsize=(max(7.4, 0.55 * len(names) + 3), 4.4), layout="constrained")
        ann = d.get("methods", {}).get(method, {}).get("ann") or "ANN"
        _grouped_bars(ax, names, {ann: [l["e_ann_pj"] for l in r["layers"]],
                                  f"SNN ({caption})": [l["e_snn_pj"] for l in r["layers"]]})
        ax.set_yscale("log")
        fig.suptitle(f"Energy per layer and image: {method}, {caption}")
        ax.set(xlabel="layer", ylabel="energy (pJ)")
        _legend_outside(fig)
        plots.append(_save(fig, folder / f"energy_{_slug(method)}.png", figures))
    return md, plots


def _summary_table(header, rows):
    """A table whose 4th column is a percentage and the rest as usual."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [_cell(v, percent=(i == 3)) for i, v in enumerate(row)]
        lines.append("| " + " | ".join(cells) + " |")
    return lines + [""]


def _energy_overview(d, folder, figures) -> str:
    energy = d["energy"]
    methods = list(energy)
    labels = [f"{m}\n({_energy_caption(d, m, energy[m])})" for m in methods]
    fig, ax = plt.subplots(figsize=(8.4, 0.55 * len(methods) + 1.8), layout="constrained")
    ys = list(range(len(methods)))[::-1]
    ax.barh(ys, [energy[m]["totals"]["e_snn_uj"] for m in methods], color="tab:blue", label="SNN")
    ax.set_yticks(ys, labels, fontsize=8)
    by_value: dict[float, list[str]] = {}  # ANNs of equal energy (same MACs): one line
    for m in methods:
        ann = d.get("methods", {}).get(m, {}).get("ann") or "ANN"
        anns = by_value.setdefault(energy[m]["totals"]["e_ann_uj"], [])
        if ann not in anns:
            anns.append(ann)
    for i, (e_ann, anns) in enumerate(by_value.items()):
        color, style = _ANN_STYLES[i % len(_ANN_STYLES)]
        ax.axvline(e_ann, color=color, linestyle=style, label=f"{', '.join(anns)}: {_sig(e_ann)} µJ")
    fig.suptitle("Energy per image, each method at its steps (accuracy there in its label)")
    ax.set(xlabel="energy per image (µJ)")
    _legend_outside(fig)
    return _save(fig, folder / "energy.png", figures)


def _threshold_groups(thresholds: dict[str, float]) -> dict[float, list[str]]:
    """Labels that share one threshold value (to 6 significant digits): one line each."""
    groups: dict[float, list[str]] = {}
    for label, value in thresholds.items():
        groups.setdefault(float(f"{value:.6g}"), []).append(label)
    return groups


def _near(groups: list, gap: float) -> list[tuple[int, int]]:
    """For values in increasing order: (position within its cluster, cluster size), a cluster
    being a run of values less than ``gap`` apart."""
    clusters: list[list[int]] = []
    for i, (value, _) in enumerate(groups):
        if clusters and value - groups[clusters[-1][-1]][0] < gap:
            clusters[-1].append(i)
        else:
            clusters.append([i])
    return [(c.index(i), len(c)) for c in clusters for i in c]


def _activations(d, folder, figures):
    acts = d["activations"]
    md = ["## Activation thresholds", "", "θ of every SNN at each site (the mean over channels for channel-wise "
          "thresholds), beside the histogram of the positive activations of the ANN it was converted from.", ""]
    for ann, sites in acts.items():
        labels = _union(a["thresholds"] for a in sites.values())
        md += [f"### {ann}", ""]
        md += _table(["site"] + labels, [[s] + [a["thresholds"].get(k) for k in labels] for s, a in sites.items()])
    cols = max(len(s) for s in acts.values())
    rows = len(acts)
    fig, axes = plt.subplots(rows, cols, figsize=(3.3 * cols, 2.7 * rows + 1.2), squeeze=False, layout="constrained")
    colors: dict[tuple, str] = {}
    handles, names = [], []
    for r, (ann, sites) in enumerate(acts.items()):
        for c in range(cols):
            ax = axes[r][c]
            if c >= len(sites):
                ax.axis("off")
                continue
            site, a = list(sites.items())[c]
            hist = ax.stairs(a["hist"], a["edges"], fill=True, color="0.75", label="_activations")
            if not handles:
                handles.append(hist)
                names.append("positive activations of the source ANN")
            groups = sorted(_threshold_groups(a["thresholds"]).items())
            top = max([a["edges"][-1]] + [v for v, _ in groups])
            for (value, group), (k, m) in zip(groups, _near(groups, 0.02 * top)):
                key = tuple(group)
                label = f"θ: {', '.join(group)}"
                if key not in colors:
                    colors[key] = _COLORS[len(colors) % len(_COLORS)]
                    handles.append(Line2D([], [], color=colors[key], linewidth=2))
                    names.append(label)
                # lines of nearby values get interleaved dashes, so that each stays visible
                style = "-" if m == 1 else (3.0 * k, (3.0, 3.0 * (m - 1)))
                ax.axvline(value, color=colors[key], linestyle=style, linewidth=2, label=label)
            ax.set_xlim(0, 1.05 * top)
            ax.set_yscale("log")
            ax.set_title(f"{ann}: {site}", fontsize=9)
            ax.set(xlabel="activation value", ylabel="count")
    fig.suptitle("Activation histograms and thresholds")
    _legend_outside(fig, handles, names)
    return md, [_save(fig, folder / "activations.png", figures)]


def _al(d, folder, figures):
    al = d["al"]
    md = ["## AL metric (000 Sec. 3.3)", ""]
    md += _table(["site"] + _AL_COLUMNS, [[r["site"]] + [r[k] for k in _AL_COLUMNS] for r in al])
    sites = [r["site"] for r in al]
    fig, ax = plt.subplots(figsize=(max(7.4, 0.45 * len(sites) + 3), 4.4), layout="constrained")
    bars = ax.bar(range(len(sites)), [r["M"] for r in al], color="tab:blue", label="M = A·(g²+1)·K")
    ax.set_xticks(range(len(sites)), sites, rotation=60, ha="right", fontsize=8)
    fig.suptitle("AL metric and levels per site")
    ax.set(xlabel="site", ylabel="AL metric M (dimensionless)")
    ax2 = ax.twinx()
    (line,) = ax2.plot(range(len(sites)), [r["levels"] for r in al], "o", color="tab:red", label="levels L")
    ax2.set_ylabel("levels L (timesteps)")
    ax2.yaxis.set_major_locator(MaxNLocator(integer=True))
    _legend_outside(fig, [bars, line], [bars.get_label(), line.get_label()])
    return md, [_save(fig, folder / "al.png", figures)]


def _agreement(d, folder, figures):
    agree = {m: row for m, row in d["agreement"].items() if row}
    Ts = sorted(_union(agree.values()), key=_T_key)
    md = ["## Agreement with the source ANN (% of predictions equal)", ""]
    return md + _table(["method"] + [f"T={T}" for T in Ts], [[m] + [row.get(T) for T in Ts] for m, row in agree.items()],
                       percent=True), []


def _timesteps(d, folder, figures):
    md = ["## Timesteps", "", "steps: T, or T_eff = mean levels for PASC (000 Eq. 8); pipeline latency: steps from "
          "the input until PASC's last site has emitted (docs/methods.md §2).", ""]
    rows = [[m, f"{t['steps']:g}" if isinstance(t.get("steps"), float) else t.get("steps"), t.get("pipeline_latency")]
            for m, t in d["timesteps"].items()]
    return md + _table(["method", "steps", "pipeline latency"], rows), []


_SECTIONS = [("anns", _anns), ("accuracy", _accuracy), ("agreement", _agreement), ("timesteps", _timesteps),
             ("spike_rates", _spike_rates), ("energy", _energy), ("activations", _activations), ("al", _al)]


def write_report(folder, data: dict) -> Path:
    """Write report.md, report.json and the plots of ``data`` (schema: module docstring)
    into ``folder`` (created if needed); returns the path of report.md."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    d = _normalise(data)
    md, plots, figures = [f"# {d.get('title', 'spikebridge report')}", ""], [], {}
    for key, section in _SECTIONS:
        if key in d and d[key]:
            lines, files = section(d, folder, figures)
            md += lines
            plots += files
    md += ["## Plots", ""] + [f"![{p}]({p})\n" for p in plots]
    d["plots"] = plots
    d["figures"] = figures
    (folder / "report.json").write_text(json.dumps(d, indent=2, ensure_ascii=False))
    path = folder / "report.md"
    path.write_text("\n".join(md), encoding="utf-8")
    return path
