"""The demo (`spikebridge demo`): the main job end to end on the embedded default (Fashion-MNIST,
small_cnn), in a few minutes on 2 CPU cores.

``run_demo`` runs the functions in ``STEPS`` in order; each takes (args, results) and adds
what it produced to ``results``:

1. train (or reuse) a QCFS small_cnn (width 16, L = 7 on every site, 2 epochs on the first
   30 000 training images, no augmentation, the recipe otherwise: SGD 0.1, cosine, θ₀ = 8).
   L = 7 = 2³ − 1 makes bit-plane exact in 3 steps with every code used; PASC runs T = 7;
2. train (or reuse) a ReLU copy of the same network the same way;
3. convert: qcfs at T = 1..16 (one anytime simulation), pasc, bitplane, qcfs + FTBC; from the
   ReLU copy max-norm and the default for a ReLU ANN, network-level, with and without FTBC
   (thresholds chosen per T); print one table of method, steps, accuracy and agreement with
   the ANN. The SNNs run on the
   first ``--snn-images`` test images (default 2000), the ANN accuracy is the full test set;
4. write a report (report.md, report.json, PNG plots) from those simulations.

``--epochs`` and ``--train-images`` trade time for accuracy.
"""
from __future__ import annotations

import time
from pathlib import Path

from .conversion.registry import Source

DEMO_MODEL = "small_cnn"
DEMO_WIDTH = 16
DEMO_DATASET = "fashion-mnist"
DEMO_LEVELS = 7
DEMO_EPOCHS = 2
DEMO_TRAIN_IMAGES = 30_000
DEMO_TS = (1, 2, 4, 8, 16)
DEMO_RELU_TS = (1, 2, 4, 8)
DEMO_CALIBRATION_IMAGES = 1024
DEMO_SNN_IMAGES = 2000


def train_demo_ann(out, epochs: int = DEMO_EPOCHS, train_images: int = DEMO_TRAIN_IMAGES, data_root=None,
                   fresh: bool = False, progress: bool = True, levels: int | None = DEMO_LEVELS):
    """Train the demo's ANN (QCFS with ``levels``, or ReLU for None) into ``out`` (or reuse the
    finished one there, or resume an unfinished one); returns (model, checkpoint path, ANN
    test accuracy 0..1)."""
    from .pipeline import train_or_reuse
    from .train.loop import TrainConfig

    config = TrainConfig(model=DEMO_MODEL, model_kwargs={"width": DEMO_WIDTH}, dataset=DEMO_DATASET,
                         levels=levels, epochs=epochs, limit_train=train_images, augment=False,
                         out=str(out), resume=True, data_root=data_root)
    return train_or_reuse(config, fresh=fresh, progress=progress)


def step_train(args, results: dict) -> None:
    """Step 1: the QCFS ANN."""
    start = time.perf_counter()
    model, path, acc = train_demo_ann(args.out, args.epochs, args.train_images, args.data_root, args.fresh)
    results.update(ann=model, checkpoint=path, ann_accuracy=acc)
    print(f"ANN (QCFS, L={DEMO_LEVELS}): test accuracy {100 * acc:.2f}%  "
          f"[{time.perf_counter() - start:.0f}s; checkpoint {path}]")


def step_relu(args, results: dict) -> None:
    """Step 2: a ReLU copy of the same network, trained the same way."""
    start = time.perf_counter()
    model, path, acc = train_demo_ann(Path(args.out) / "relu", args.epochs, args.train_images, args.data_root,
                                      args.fresh, levels=None)
    results.update(relu=model, relu_accuracy=acc)
    print(f"ANN (ReLU): test accuracy {100 * acc:.2f}%  [{time.perf_counter() - start:.0f}s; checkpoint {path}]")


def step_convert(args, results: dict) -> None:
    """Step 3: every method on the full test set, one simulation per SNN; one table."""
    import copy

    import spikebridge as sb
    from .analysis.evaluation import evaluate_snn
    from .pipeline import loader

    start = time.perf_counter()
    qann, relu = results["ann"], results["relu"]
    test = loader(DEMO_DATASET, DEMO_MODEL, "test", args.data_root, 500, args.snn_images)
    calib = loader(DEMO_DATASET, DEMO_MODEL, "train", args.data_root, 256, DEMO_CALIBRATION_IMAGES)
    # FTBC fits 4 batches and checks its biases on 4 more (docs/methods.md §5)
    ftbc_batches = [b for b, _ in zip(loader(DEMO_DATASET, DEMO_MODEL, "train", args.data_root, 128), range(8))]
    Ts, top = list(DEMO_TS), max(DEMO_TS)
    evals = {}

    def run(name, snn, ann, steps=None):
        evals.setdefault(name, []).append((snn, evaluate_snn(snn, test, steps, desc=name, reference=ann)))

    run("qcfs", sb.convert(qann, "qcfs", T=top), qann, Ts)
    run("pasc", sb.convert(qann, "pasc"), qann)
    run("bitplane", sb.convert(qann, "bitplane"), qann)
    snn = sb.convert(qann, "qcfs", T=top)
    sb.ftbc(snn, ann=qann, data=ftbc_batches, alpha=0.5, batches=4, check_batches=4, readouts=Ts, progress=False)
    run("qcfs + FTBC", snn, qann, Ts)
    run("max-norm", sb.convert(relu, "max-norm", T=top, calibration_data=calib), relu, Ts)
    for T in DEMO_RELU_TS:  # the default for a ReLU ANN (network-level) chooses its thresholds for one T
        snn = sb.convert(relu, T=T, calibration_data=calib)
        run(snn.method, snn, relu, [T])
        snn = copy.deepcopy(snn)
        sb.ftbc(snn, ann=relu, data=ftbc_batches, alpha=0.5, batches=4, check_batches=4, progress=False)
        run(snn.method + " + FTBC", snn, relu, [T])
    results["evaluations"] = evals
    print(f"SNNs on the first {args.snn_images} test images (ANN accuracy: full test set)")
    print(summary_table(evals, results))
    print(f"[{time.perf_counter() - start:.0f}s]")


def summary_table(evals: dict, results: dict) -> str:
    """method | ANN | timesteps | accuracy | agreement with its ANN, one row per (method, T)."""
    lines = [f"{'method':<20} {'ANN':>6} {'steps':>6} {'accuracy':>9} {'agreement':>10}"]
    for name, runs in evals.items():
        for snn, ev in runs:
            ann_acc = results["relu_accuracy"] if snn.record.source is Source.RELU else results["ann_accuracy"]
            for T, acc in ev.accuracy.items():
                steps = f"{snn.info['T_eff']:.2f}" if "T_eff" in snn.info else str(T)
                lines.append(f"{name:<20} {100 * ann_acc:>5.2f}% {steps:>6} {100 * acc:>8.2f}% {100 * ev.agreement[T]:>9.2f}%")
    return "\n".join(lines)


def step_report(args, results: dict) -> None:
    """Step 4: report.md, report.json and plots from the evaluations above (no new simulation)."""
    from .analysis.evaluation import Evaluation
    from .analysis.report import write_report
    from .analysis.summary import report_data
    from .pipeline import loader

    evals = {}
    for name, runs in results["evaluations"].items():
        snn, longest = runs[-1]
        merged = Evaluation({T: a for _, ev in runs for T, a in ev.accuracy.items()}, longest.result, longest.images,
                            dict(snn.info), {T: a for _, ev in runs for T, a in ev.agreement.items()})
        evals[name] = (snn, merged)
    sample = next(iter(loader(DEMO_DATASET, DEMO_MODEL, "test", args.data_root, 256)))[0]
    qcfs_methods = {k: v for k, v in evals.items() if v[0].record.source is Source.QCFS}
    data = report_data(results["ann"], qcfs_methods, sample, results["ann_accuracy"],
                       title=f"spikebridge demo: {DEMO_MODEL} on {DEMO_DATASET}")
    relu_data = report_data(results["relu"], {k: v for k, v in evals.items() if k not in qcfs_methods}, sample,
                            results["relu_accuracy"])
    for key in ("accuracy", "agreement", "timesteps", "spike_rates", "energy"):
        data[key].update(relu_data[key])
    path = write_report(Path(args.out) / "report", data)
    print(f"report: {path}")


STEPS = [step_train, step_relu, step_convert, step_report]


def run_demo(args) -> int:
    """Run every step of the demo in order (``args``: the parsed `spikebridge demo` arguments)."""
    results: dict = {}
    for step in STEPS:
        step(args, results)
    return 0

