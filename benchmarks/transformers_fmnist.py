"""Issue 11 item 7: a small ViT and a small EfficientNet-style CNN on Fashion-MNIST
(BENCHMARKS.md §11).

For each model (trained or reused under --runs):

1. the float ANN, trained from scratch (``levels=None``: the model as written, GELU / SiLU /
   sigmoid, ReLU for the ReLU ViT);
2. the prepared ANN (``sb.prepare``: every activation a quantized site with L levels,
   docs/methods.md §8), fine-tuned from the float ANN (``init_from``: θ from the 99.9th
   percentile of each site's float activation);
3. PASC and bit-plane conversions of the prepared ANN: accuracy, prediction agreement with the
   prepared ANN, T_eff / T, spikes per image and energy per image with the analog ops counted
   (``energy_report`` of the evaluation's ``SimulationResult``); a float64 ``sb.verify`` on the
   first --verify-images test images (agreement, level mismatches);
4. the rate-coded ``qcfs`` at T = 1…64, read off one 64-step anytime run, where it applies (the
   ReLU ViT); for GELU / SiLU sites it refuses, and the refusal is recorded;
5. SpikingJelly 2.0's ann2snn recipes where they apply to the same weights: STATransformerRecipe
   (ViT; on a twin whose attention is an nn.MultiheadAttention with the same weights, the module
   type STA converts), TransformerTDEquivalentRecipe, RateCodingRecipe (99.9% channel-wise, half
   threshold); what each refuses is recorded with its message. The script installs SpikingJelly
   for itself (common.spikingjelly); it is not a spikebridge dependency.

Results go to benchmarks/results/transformers_fmnist.json after every row; a row already there
is not re-run (--fresh re-runs). --report prints the markdown tables.

    python benchmarks/transformers_fmnist.py                     # every model
    python benchmarks/transformers_fmnist.py --models vit,vit_relu
    python benchmarks/transformers_fmnist.py --report
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
from common import RESULTS, machine, spikingjelly, trained  # noqa: E402

import spikebridge as sb  # noqa: E402
from spikebridge.analysis.energy import energy_report, spike_rates  # noqa: E402
from spikebridge.analysis.evaluation import evaluate_snn  # noqa: E402
from spikebridge.pipeline import loader  # noqa: E402
from spikebridge.train.loop import evaluate  # noqa: E402

OUT = RESULTS / "transformers_fmnist.json"  # --name changes the file name
TS = [1, 2, 4, 8, 16, 32, 64]
STA_TS = [1, 2, 4, 8, 16]
SJ = "SpikingJelly"

# key -> the model, its options and its training recipe (float from scratch, then the prepared
# model fine-tuned from it at ``levels``)
ADAMW = {"optimizer": "adamw", "weight_decay": 0.05}
MODELS = {
    "vit": dict(what="vit_tiny (GELU MLP)", model="vit_tiny", kwargs={}, epochs=6, ft_epochs=2,
                train=dict(lr=1e-3, **ADAMW), finetune=dict(lr=2e-4, **ADAMW)),
    "vit_relu": dict(what="vit_tiny, activation=relu", model="vit_tiny", kwargs={"activation": "relu"}, epochs=6,
                     ft_epochs=2, train=dict(lr=1e-3, **ADAMW), finetune=dict(lr=2e-4, **ADAMW)),
    "effnet": dict(what="efficientnet_tiny (SiLU, squeeze-excitation)", model="efficientnet_tiny", kwargs={},
                   epochs=3, ft_epochs=2, train=dict(lr=0.1), finetune=dict(lr=0.01)),
}


def reason(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc).strip().splitlines()[0]}"


# -- SpikingJelly -----------------------------------------------------------------------------

class MHABlock(nn.Module):
    """A vit_tiny block whose attention is an nn.MultiheadAttention holding the same weights
    (qkv → in_proj, proj → out_proj: the same q/k/v split, heads and 1/√d scaling), so that
    SpikingJelly's transformer recipes, which convert nn.MultiheadAttention, can take it."""

    def __init__(self, block: nn.Module):
        super().__init__()
        dim, heads = block.norm1.normalized_shape[0], block.attention.heads
        self.norm1, self.norm2, self.mlp = block.norm1, block.norm2, block.mlp
        self.attention = nn.MultiheadAttention(dim, heads, batch_first=True)
        with torch.no_grad():
            self.attention.in_proj_weight.copy_(block.attention.qkv.weight)
            self.attention.in_proj_bias.copy_(block.attention.qkv.bias)
            self.attention.out_proj.weight.copy_(block.attention.proj.weight)
            self.attention.out_proj.bias.copy_(block.attention.proj.bias)

    def forward(self, x):
        h = self.norm1(x)
        attended, _ = self.attention(h, h, h, need_weights=False)  # the unpacking SJ's step-mode adapter accepts
        x = x + attended
        return x + self.mlp(self.norm2(x))


def mha_twin(vit: nn.Module) -> nn.Module:
    twin = copy.deepcopy(vit)
    twin.blocks = nn.Sequential(*(MHABlock(block) for block in twin.blocks))
    return twin.eval()


def sj_convert(model: nn.Module, recipe) -> nn.Module:
    ann2snn, _ = spikingjelly()
    return ann2snn.Converter(recipe=recipe).convert(copy.deepcopy(model)).eval()


@torch.no_grad()
def sj_sequence_run(snn: nn.Module, test, T: int, reference: nn.Module) -> dict:
    """SpikingJelly's transformer protocol (examples/imagenet_vit_sta.py): multi-step mode, the
    image at step 1 and zeros after it, logits = the sum of the outputs over T steps. Also:
    agreement with ``reference`` (the float ANN), the largest |output| at steps 2..T, and the
    spikes of the STA encoders (|count| of each burst) per image."""
    _, functional = spikingjelly()
    from spikingjelly.activation_based.ann2snn.recipes.sta_transformer import _STASpikeEncoder

    functional.set_step_mode(snn, "m")
    encoders = [m for m in snn.modules() if isinstance(m, _STASpikeEncoder)]
    counts = []

    def count(module, inputs, output):
        theta = module.v_threshold.to(output.dtype).clamp_min(torch.finfo(output.dtype).eps)
        counts.append(float((output / theta).abs().round().sum()))

    hooks = [m.register_forward_hook(count) for m in encoders]
    correct = agree = images = 0
    late = 0.0
    try:
        for x, y in test:
            functional.reset_net(snn)
            seq = torch.zeros(T, *x.shape, dtype=x.dtype)
            seq[0] = x
            out = snn(seq)
            pred = out.sum(0).argmax(1)
            correct += int((pred == y).sum())
            agree += int((pred == reference(x).argmax(1)).sum())
            images += len(y)
            if T > 1:
                late = max(late, float(out[1:].abs().max()))
    finally:
        for h in hooks:
            h.remove()
    return {"accuracy": correct / images, "agreement": agree / images, "max_abs_output_after_step_1": late,
            "spikes_per_image": sum(counts) / images if encoders else None, "encoders": len(encoders)}


@torch.no_grad()
def sj_rate_run(snn: nn.Module, test, Ts: list[int]) -> dict[int, float]:
    """RateCodingRecipe's protocol: the image at every step, logits = the sum of the outputs
    over steps 1..T (one max(Ts)-step run gives every T)."""
    _, functional = spikingjelly()
    correct, images = dict.fromkeys(Ts, 0), 0
    for x, y in test:
        functional.reset_net(snn)
        outputs = torch.stack([snn(x) for _ in range(max(Ts))])
        for T in Ts:
            correct[T] += int((outputs[:T].sum(0).argmax(1) == y).sum())
        images += len(y)
    return {T: c / images for T, c in correct.items()}


# -- one model --------------------------------------------------------------------------------

def energy_summary(result, snn) -> dict:
    """Per image: E_ANN, E_SNN, their ratio, the SNN's MACs (analog layers and analog ops), ACs,
    and the share of E_SNN spent on MACs (what is still analog)."""
    report = energy_report(result, snn.synaptic_layers())
    t = report.totals
    mac_pj = (t["snn_macs"] + t["analog_op_snn_macs"]) * report.e_mac
    return {"e_ann_uj": t["e_ann_uj"], "e_snn_uj": t["e_snn_uj"], "ratio": t["ratio"],
            "ann_macs": t["macs"] + t["analog_op_macs"], "analog_op_macs_ann": t["analog_op_macs"],
            "snn_layer_macs": t["snn_macs"], "snn_analog_op_macs": t["analog_op_snn_macs"],
            "snn_acs": t["acs_exact"], "mac_share_of_e_snn": mac_pj / t["e_snn_pj"] if t["e_snn_pj"] else None,
            "analog_ops": len(report.analog_ops),
            "analog_layer_macs": {l.name: l.snn_macs for l in report.layers if l.analog},
            "layer_macs_ann": {l.name: l.macs for l in report.layers},
            "spiking_layers": [l.name for l in report.layers if not l.analog]}


def run_model(args, key: str, results: dict) -> None:
    spec = MODELS[key]
    row = results.setdefault("models", {}).setdefault(key, {})
    row.update({"what": spec["what"], "model": spec["model"], "model_kwargs": spec["kwargs"], "levels": args.levels})
    runs = f"{args.runs}/{key}"
    torch.manual_seed(0)

    def save():
        """Write this model's row into the file as it is now (other processes may run other models)."""
        current = json.loads(OUT.read_text()) if OUT.exists() else {}
        current.setdefault("models", {})[key] = row
        current.setdefault("commands", {})[key] = {"command": " ".join(sys.argv), "machine": machine()}
        OUT.parent.mkdir(parents=True, exist_ok=True)
        tmp = OUT.with_suffix(".tmp")
        tmp.write_text(json.dumps(current, indent=1, default=str))
        tmp.replace(OUT)

    def done(label):
        return label in row and not args.fresh

    def log(label, text):
        print(f"{key} {label}: {text}", flush=True)

    start = time.perf_counter()
    epochs = args.epochs or spec["epochs"]
    ft_epochs = args.epochs or spec["ft_epochs"]
    limit_train = {"limit_train": args.limit_train} if args.limit_train else {}
    ann, ckpt = trained(f"{runs}/float", model=spec["model"], model_kwargs=spec["kwargs"], levels=None,
                        epochs=epochs, seed=0, **spec["train"], **limit_train)
    row["float_training"] = {"epochs": epochs, **spec["train"], "seconds": sum(m["seconds"] for m in ckpt["metrics"]),
                             "test_acc_per_epoch": [m["test_acc"] for m in ckpt["metrics"]]}
    qann, qckpt = trained(f"{runs}/L{args.levels}", model=spec["model"], init_from=f"{runs}/float/last.pt",
                          levels=args.levels, epochs=ft_epochs, seed=0, **spec["finetune"], **limit_train)
    row["prepared_training"] = {"epochs": ft_epochs, **spec["finetune"], "init_from": "float",
                                "seconds": sum(m["seconds"] for m in qckpt["metrics"]),
                                "test_acc_per_epoch": [m["test_acc"] for m in qckpt["metrics"]]}
    ann.eval(), qann.eval()
    test = loader("fashion-mnist", spec["model"], "test", batch_size=args.batch_size, limit=args.limit)
    row["test_images"] = sum(len(y) for _, y in test)
    if not done("float"):
        row["float"] = {"accuracy": evaluate(ann, test), "parameters": sum(p.numel() for p in ann.parameters())}
        save()
    if not done("prepared"):
        functions = sorted({getattr(s, "function", "relu") for s in sb.sites(qann).values()})
        row["prepared"] = {"accuracy": evaluate(qann, test), "sites": len(sb.sites(qann)), "functions": functions}
        save()
    log("ANN", f"float {100 * row['float']['accuracy']:.2f}%, prepared (L={args.levels}) "
               f"{100 * row['prepared']['accuracy']:.2f}% ({time.perf_counter() - start:.0f} s so far)")

    for method in ("pasc", "bitplane"):
        if done(method):
            continue
        t0 = time.perf_counter()
        snn = sb.convert(qann, method)
        ev = evaluate_snn(snn, test, progress=False, reference=qann)
        steps = next(iter(ev.accuracy))
        rates = spike_rates(ev.result)["overall"]
        verify_x = [x for x, _ in loader("fashion-mnist", spec["model"], "test", batch_size=250,
                                         limit=args.verify_images)]
        report = sb.verify(copy.deepcopy(qann).double(), copy.deepcopy(snn).double(),
                           [(x.double(), None) for x in verify_x])
        row[method] = {"accuracy": ev.accuracy[steps], "agreement": ev.agreement[steps],
                       "T": snn.T, "T_eff": snn.info.get("T_eff"), "spikes_per_image": rates["spikes_per_image"],
                       "energy": energy_summary(ev.result, snn),
                       "float64_verify": {"images": report.images, "agreement": report.agreement,
                                          "level_mismatches": sum(report.mismatches.values()),
                                          "max_logit_diff": report.max_logit_diff},
                       "seconds": time.perf_counter() - t0}
        log(method, f"{100 * ev.accuracy[steps]:.2f}%, agreement {100 * ev.agreement[steps]:.2f}%, "
                    f"float64 {100 * report.agreement:.2f}% / {sum(report.mismatches.values())} mismatches "
                    f"({row[method]['seconds']:.0f} s)")
        save()

    if not done("qcfs"):
        t0 = time.perf_counter()
        try:
            snn = sb.convert(qann, "qcfs", T=max(TS))
        except sb.ConversionError as exc:
            row["qcfs"] = {"refused": reason(exc)}
            log("qcfs", row["qcfs"]["refused"])
        else:
            ev = evaluate_snn(snn, test, TS, progress=False, reference=qann)
            row["qcfs"] = {"batch_size": args.batch_size, "accuracy": {str(T): a for T, a in ev.accuracy.items()},
                           "agreement": {str(T): a for T, a in ev.agreement.items()},
                           "spikes_per_image_T64": spike_rates(ev.result)["overall"]["spikes_per_image"],
                           "energy_T64": energy_summary(ev.result, snn), "seconds": time.perf_counter() - t0}
            log("qcfs", ", ".join(f"T={T} {100 * a:.2f}" for T, a in ev.accuracy.items())
                + f" ({row['qcfs']['seconds']:.0f} s)")
        save()

    if not args.no_spikingjelly:
        spikingjelly_rows(args, key, spec, ann, test, row, done, log, save)


def spikingjelly_rows(args, key, spec, ann, test, row, done, log, save) -> None:
    """SpikingJelly 2.0's recipes on the float ANN (they take a float model and calibrate it)."""
    ann2snn, _ = spikingjelly()
    sj = row.setdefault("spikingjelly", {})
    calib = list(loader("fashion-mnist", spec["model"], "train", batch_size=128, limit=args.calibration_images))

    def attempt(label, model, make_recipe, run):
        if label in sj and not args.fresh:
            return
        t0 = time.perf_counter()
        try:
            snn = sj_convert(model, make_recipe())
        except Exception as exc:  # SpikingJelly raises ValueError, TypeError, NotImplementedError, ...
            sj[label] = {"refused": reason(exc)}
        else:
            try:
                sj[label] = {**run(snn), "seconds": time.perf_counter() - t0}
            except Exception as exc:
                sj[label] = {"failed when run": reason(exc)}
        log(f"{SJ} {label}", json.dumps({k: v for k, v in sj[label].items() if k != "runs"}))
        save()

    def sta_runs(model):
        def run(_snn):
            out = {}
            for T in STA_TS:
                recipe = ann2snn.STATransformerRecipe(calib, time_steps=T, mode="spiking_encoder", threshold_mode="mse",
                                                      threshold_scale=0.5)
                out[str(T)] = sj_sequence_run(sj_convert(model, recipe), test, T, ann)
                log(f"{SJ} STA spiking_encoder T={T}", json.dumps(out[str(T)]))
            return {"runs": out}
        return run

    def sequence(T):
        return lambda snn: sj_sequence_run(snn, test, T, ann)

    rate = lambda: ann2snn.RateCodingRecipe(calib, mode="99.9%", channel_wise=True, half_threshold=True)  # noqa: E731
    sta = lambda: ann2snn.STATransformerRecipe(time_steps=8)  # noqa: E731
    td = lambda: ann2snn.TransformerTDEquivalentRecipe(time_steps=8)  # noqa: E731
    attempt("RateCoding 99.9% channel-wise, half threshold", ann, rate, lambda s: {"accuracy": sj_rate_run(s, test, TS)})
    attempt("STA equivalent, T=8", ann, sta, sequence(8))
    attempt("TD-equivalent, T=8", ann, td, sequence(8))
    if spec["model"] == "vit_tiny":
        # the same weights with nn.MultiheadAttention, the attention module both recipes convert
        twin = mha_twin(ann)
        attempt("STA equivalent, T=8, MultiheadAttention twin", twin, sta, sequence(8))
        attempt("TD-equivalent, T=8, MultiheadAttention twin", twin, td, sequence(8))
        attempt("STA spiking_encoder (mse, threshold scale 0.5), MultiheadAttention twin", twin,
                lambda: ann2snn.STATransformerRecipe(calib, time_steps=1, mode="spiking_encoder",
                                                     threshold_mode="mse", threshold_scale=0.5), sta_runs(twin))
    else:
        # BatchNorm folded into the convolutions (torch.fx's fuse: the same function), which the recipes lack
        from torch.fx.experimental.optimization import fuse
        folded = fuse(copy.deepcopy(ann).eval())
        attempt("STA equivalent, T=8, BatchNorm folded", folded, sta, sequence(8))
        attempt("TD-equivalent, T=8, BatchNorm folded", folded, td, sequence(8))


# -- the report -------------------------------------------------------------------------------

def training(t: dict) -> str:
    optimizer = "AdamW" if t.get("optimizer") == "adamw" else "SGD"
    decay = f", weight decay {t['weight_decay']}" if "weight_decay" in t else ""
    return (f"{t['epochs']} epochs, {optimizer} lr {t['lr']}{decay} ({t['seconds']:.0f} s; test accuracy per epoch "
            + ", ".join(f"{100 * a:.2f}" for a in t["test_acc_per_epoch"]) + ")")


def pct(v):
    return "—" if v is None else f"{100 * v:.2f}"


def markdown(results: dict) -> str:
    lines = []
    models = {k: results["models"][k] for k in MODELS if k in results.get("models", {})}
    lines += ["| model | params | float ANN | prepared ANN (L) | sites | method | T / T_eff | accuracy | agreement "
              "| float64 verify | spikes / image | E_ANN µJ | E_SNN µJ | E_ANN/E_SNN | MAC share of E_SNN |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for key, r in models.items():
        if "prepared" not in r:
            continue
        for method in ("pasc", "bitplane"):
            if method not in r:
                continue
            m, e = r[method], r[method]["energy"]
            v = m["float64_verify"]
            steps = f"{m['T_eff']:.0f} (T_eff)" if m.get("T_eff") else f"{m['T']}"
            lines.append(
                f"| {r['what']} | {r['float']['parameters']:,} | {pct(r['float']['accuracy'])} "
                f"| {pct(r['prepared']['accuracy'])} ({r['levels']}) | {r['prepared']['sites']} "
                f"({', '.join(r['prepared']['functions'])}) | {method} | {steps} | {pct(m['accuracy'])} "
                f"| {pct(m['agreement'])}% | {pct(v['agreement'])}%, {v['level_mismatches']} mismatches "
                f"({v['images']} images) | {m['spikes_per_image']:,.0f} | {e['e_ann_uj']:.2f} | {e['e_snn_uj']:.2f} "
                f"| {e['ratio']:.2f} | {100 * e['mac_share_of_e_snn']:.1f}% |")
    lines += ["", "Energy per image (docs/methods.md §6, 4.6 pJ per MAC, 0.9 pJ per AC): MACs of the ANN "
              "(layers + analog ops) and, in the SNN, MACs of analog layers (the first layer, layers fed by an "
              "analog op), MACs of the analog ops, and ACs.", "",
              "| model | method | ANN MACs | of which analog ops | SNN layer MACs | SNN analog-op MACs | SNN ACs | analog ops |",
              "|---|---|---|---|---|---|---|---|"]
    for key, r in models.items():
        for method in ("pasc", "bitplane"):
            if method in r:
                e = r[method]["energy"]
                lines.append(f"| {r['what']} | {method} | {e['ann_macs']:,.0f} | {e['analog_op_macs_ann']:,.0f} "
                             f"| {e['snn_layer_macs']:,.0f} | {e['snn_analog_op_macs']:,.0f} | {e['snn_acs']:,.0f} "
                             f"| {e['analog_ops']} |")
        q = r.get("qcfs", {})
        if "energy_T64" in q:
            e = q["energy_T64"]
            lines.append(f"| {r['what']} | qcfs, T=64 | {e['ann_macs']:,.0f} | {e['analog_op_macs_ann']:,.0f} "
                         f"| {e['snn_layer_macs']:,.0f} | {e['snn_analog_op_macs']:,.0f} | {e['snn_acs']:,.0f} "
                         f"| {e['analog_ops']} |")
    lines += ["", "Synaptic layers that receive spikes (ACs); every other one is analog-fed (MACs), and an analog-fed "
              "layer charged more MACs than the ANN's (a train of several steps):", ""]
    for key, r in models.items():
        for method in ("pasc", "bitplane"):
            e = r.get(method, {}).get("energy", {})
            if "spiking_layers" not in e:
                continue
            more = [f"{name} {macs:,.0f}" for name, macs in e["analog_layer_macs"].items()
                    if macs > r[method]["energy"]["layer_macs_ann"].get(name, macs)]
            lines.append(f"- {r['what']}, {method}: {', '.join(e['spiking_layers'])}"
                         + (f"; more MACs than the ANN: {', '.join(more)}" if more else ""))
    lines += ["", "Rate-coded `qcfs` (accuracy after T steps; agreement with the prepared ANN in brackets; one 64-step "
              "run; spikes and energy per image at T = 64):", "",
              "| model | " + " | ".join(f"T={T}" for T in TS) + " | spikes / image | E_SNN µJ | E_ANN/E_SNN | MAC share |",
              "|---|" + "---|" * (len(TS) + 4)]
    refused = []
    for key, r in models.items():
        q = r.get("qcfs")
        if q is None:
            continue
        if "refused" in q:
            refused.append(f"- {r['what']}: refused, {q['refused']}")
            continue
        e = q["energy_T64"]
        lines.append(f"| {r['what']} | " + " | ".join(
            f"{pct(q['accuracy'][str(T)])} ({pct(q['agreement'][str(T)])})" for T in TS)
            + f" | {q['spikes_per_image_T64']:,.0f} | {e['e_snn_uj']:.2f} | {e['ratio']:.3f} "
            f"| {100 * e['mac_share_of_e_snn']:.1f}% |")
    lines += [""] + refused
    lines += ["", f"{SJ} 2.0 on the float ANNs (same weights):", "", "| model | recipe | result |", "|---|---|---|"]
    sweeps = []
    for key, r in models.items():
        for label, s in r.get("spikingjelly", {}).items():
            if "refused" in s:
                text = f"refused: {s['refused']}"
            elif "runs" in s:
                text = "converted; below"
                sweeps.append((r["what"], label, s["runs"]))
            elif isinstance(s.get("accuracy"), dict):
                text = ", ".join(f"T={T} {pct(a)}" for T, a in s["accuracy"].items())
            elif "failed when run" in s:
                text = f"converted; failed when run: {s['failed when run']}"
            elif "accuracy" in s:
                text = (f"{pct(s['accuracy'])}% (agreement with the float ANN {pct(s['agreement'])}%, "
                        f"largest output magnitude after step 1: {s['max_abs_output_after_step_1']:.3g})")
            else:
                text = "converted"
            lines.append(f"| {r['what']} | {label} | {text} |")
    for what, label, runs in sweeps:
        lines += ["", f"{what}, {SJ} {label} (the image at step 1, zeros after it; logits summed over T steps):", "",
                  "| T | accuracy | agreement with the float ANN | spikes / image | largest output magnitude after step 1 |",
                  "|---|---|---|---|---|"]
        lines += [f"| {T} | {pct(v['accuracy'])} | {pct(v['agreement'])}% | {v['spikes_per_image']:,.0f} "
                  f"| {v['max_abs_output_after_step_1']:.3g} |" for T, v in runs.items()]
    lines += ["", "Training (1 torch thread): " + "; ".join(
        f"{r['what']}: float {training(r['float_training'])}, prepared (from it) {training(r['prepared_training'])}"
        for r in models.values() if "float_training" in r)]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default=",".join(MODELS), help=f"from {', '.join(MODELS)}")
    p.add_argument("--runs", default="runs/transformers")
    p.add_argument("--levels", type=int, default=7, help="L of every site of the prepared models")
    p.add_argument("--limit", type=int, default=None, help="test images (default: the whole test set)")
    p.add_argument("--batch-size", type=int, default=500,
                   help="test images per simulated batch (the ReLU ViT's 64-step qcfs run took 9.5 GB at 500)")
    p.add_argument("--verify-images", type=int, default=500, help="test images of the float64 verify")
    p.add_argument("--calibration-images", type=int, default=1024, help="SpikingJelly's calibration images")
    p.add_argument("--epochs", type=int, default=None, help="train every model this many epochs (a quick check)")
    p.add_argument("--limit-train", type=int, default=None, help="training images (default: all 60 000)")
    p.add_argument("--name", default="transformers_fmnist", help="results file benchmarks/results/NAME.json")
    p.add_argument("--no-spikingjelly", action="store_true")
    p.add_argument("--fresh", action="store_true", help="re-run rows already in the results file")
    p.add_argument("--report", action="store_true", help="print the markdown tables, run nothing")
    args = p.parse_args()
    global OUT
    OUT = RESULTS / f"{args.name}.json"
    results = json.loads(OUT.read_text()) if OUT.exists() else {}
    if args.report:
        print(markdown(results))
        return
    torch.set_num_threads(1)
    for key in args.models.split(","):
        run_model(args, key, results)


if __name__ == "__main__":
    main()
