"""The demo (`spikebridge demo`): the main job end to end on the embedded default (Fashion-MNIST,
small_cnn), in a few minutes on 2 CPU cores.

``run_demo`` runs the functions in ``STEPS`` in order; each takes (args, results) and adds
what it produced to ``results``:

1. train (or reuse) a QCFS small_cnn (width 16, L = 7 on every site, 2 epochs on the first
   30 000 training images, no augmentation, the recipe otherwise: SGD 0.1, cosine, θ₀ = 8).
   L = 7 = 2³ − 1 makes bit-plane exact in 3 steps with every code used; PASC runs T = 7;
2. train (or reuse) a ReLU copy of the same network the same way;
3. convert: qcfs at T = 1..16 (one anytime simulation), pasc, bitplane, qcfs + FTBC; from the
   ReLU copy max-norm, data-driven and data-driven + FTBC, and the default for a ReLU ANN,
   network-level, with and without FTBC (thresholds chosen per T); print
   one table of method, steps, accuracy, its source ANN's accuracy and the agreement with it,
   all on the first ``--snn-images`` test images (default 2000; the ANNs' full-test-set
   accuracy is printed beside);
4. write a report (report.md, report.json, PNG plots) from those simulations.

Each step says what it does before it starts; long loops show their progress
(spikebridge.progress: periodic lines when the output goes to a log file).

``--epochs`` and ``--train-images`` trade time for accuracy.
"""
from __future__ import annotations

import copy
import time
from pathlib import Path

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
# Images per simulated batch. On a CPU, small batches keep each chunk of a spike train (8 steps
# x 25 images x 16 channels x 28 x 28 floats = 10 MB) below glibc's 32 MiB mmap threshold, so its
# memory is reused instead of mapped and zeroed anew. Measured: qcfs at T = 16 on 1000 test
# images took 3.9 s of CPU time in batches of 25 and 7.8 s in batches of 500.
DEMO_SIMULATION_BATCH = 25


def train_demo_ann(out, epochs: int = DEMO_EPOCHS, train_images: int = DEMO_TRAIN_IMAGES, data_root=None,
                   fresh: bool = False, progress: bool = True, levels: int | None = DEMO_LEVELS, device=None):
    """Train the demo's ANN (QCFS with ``levels``, or ReLU for None) into ``out`` (or reuse the
    finished one there, or resume an unfinished one) on ``device``; returns (model on that
    device, checkpoint path, ANN test accuracy 0..1)."""
    from .device import resolve_device
    from .pipeline import train_or_reuse
    from .train.loop import TrainConfig

    config = TrainConfig(model=DEMO_MODEL, model_kwargs={"width": DEMO_WIDTH}, dataset=DEMO_DATASET,
                         levels=levels, epochs=epochs, limit_train=train_images, augment=False,
                         out=str(out), resume=True, data_root=data_root, device=device)
    model, path, acc = train_or_reuse(config, fresh=fresh, progress=progress)
    return model.to(resolve_device(device)), path, acc


def _phase(args, text: str) -> None:
    """Say what the demo does next (flushed, so that it reaches a log file at once)."""
    print(text, flush=True)


def _clock(start: float) -> str:
    return f"{time.perf_counter() - start:.0f}s"


def step_train(args, results: dict) -> None:
    """Step 1: the QCFS ANN."""
    _phase(args, f"[1/4] training the QCFS ANN: {DEMO_MODEL} (width {DEMO_WIDTH}), L={DEMO_LEVELS} at every site, "
                 f"{args.epochs} epochs on the first {args.train_images} {DEMO_DATASET} training images")
    start = time.perf_counter()
    model, path, acc = train_demo_ann(args.out, args.epochs, args.train_images, args.data_root, args.fresh,
                                      device=args.device)
    results.update(ann=model, checkpoint=path, ann_accuracy=acc)
    print(f"QCFS ANN (L={DEMO_LEVELS}): {100 * acc:.2f}% on the full test set  [{_clock(start)}; checkpoint {path}]",
          flush=True)


def step_relu(args, results: dict) -> None:
    """Step 2: a ReLU copy of the same network, trained the same way."""
    _phase(args, "[2/4] training a ReLU copy of the same network the same way")
    start = time.perf_counter()
    model, path, acc = train_demo_ann(Path(args.out) / "relu", args.epochs, args.train_images, args.data_root,
                                      args.fresh, levels=None, device=args.device)
    results.update(relu=model, relu_accuracy=acc)
    print(f"ReLU ANN: {100 * acc:.2f}% on the full test set  [{_clock(start)}; checkpoint {path}]", flush=True)


QCFS_ANN, RELU_ANN = "QCFS ANN", "ReLU ANN"


def step_convert(args, results: dict) -> None:
    """Step 3: every method, one simulation per SNN (per T where its thresholds depend on T);
    one table, each SNN beside its source ANN on the same test images."""
    import spikebridge as sb
    from .analysis.evaluation import evaluate_snn
    from .analysis.summary import Run, report_data, summary_table
    from .pipeline import loader

    _phase(args, f"[3/4] converting with every method and simulating each SNN on the first {args.snn_images} "
                 "test images")
    start = time.perf_counter()
    qann, relu = results["ann"], results["relu"]
    test = loader(DEMO_DATASET, DEMO_MODEL, "test", args.data_root, DEMO_SIMULATION_BATCH, args.snn_images)
    calib = loader(DEMO_DATASET, DEMO_MODEL, "train", args.data_root, 256, DEMO_CALIBRATION_IMAGES)
    # FTBC fits 4 batches and checks its biases on 4 more (docs/methods.md §5)
    ftbc_batches = [b for b, _ in zip(loader(DEMO_DATASET, DEMO_MODEL, "train", args.data_root, 128), range(8))]
    Ts, top = list(DEMO_TS), max(DEMO_TS)
    runs = []

    def run(name, snn, ann, label, steps=None):
        t0 = time.perf_counter()
        ev = evaluate_snn(snn, test, steps, desc=f"simulate {name}", reference=ann)
        runs.append(Run(name, snn, ev, label))
        shown = f"T_eff={snn.info['T_eff']:g}" if "T_eff" in snn.info else f"T={snn.T}"
        print(f"  {name} ({shown}): simulated {ev.images} images  [{_clock(t0)}]", flush=True)

    run("qcfs", sb.convert(qann, "qcfs", T=top), qann, QCFS_ANN, Ts)
    run("pasc", sb.convert(qann, "pasc"), qann, QCFS_ANN)
    run("bitplane", sb.convert(qann, "bitplane"), qann, QCFS_ANN)
    snn = sb.convert(qann, "qcfs", T=top)
    sb.ftbc(snn, ann=qann, data=ftbc_batches, alpha=0.5, batches=4, progress=False)
    run("qcfs + FTBC", snn, qann, QCFS_ANN, Ts)
    print(f"  ReLU ANN: activation statistics on {DEMO_CALIBRATION_IMAGES} training images", flush=True)
    stats = sb.calibration_statistics(relu, calib, channel_wise=True)  # network-level's rules are per channel
    run("max-norm", sb.convert(relu, "max-norm", T=top, statistics=stats), relu, RELU_ANN, Ts)
    for T in DEMO_RELU_TS:  # data-driven thresholds are chosen for one T
        snn = sb.convert(relu, "data-driven", T=T, statistics=stats)
        run("data-driven", snn, relu, RELU_ANN, [T])
        snn = copy.deepcopy(snn)  # the row above keeps its SNN
        sb.ftbc(snn, ann=relu, data=ftbc_batches, alpha=0.5, batches=4, progress=False)
        run("data-driven + FTBC", snn, relu, RELU_ANN, [T])
    for T in DEMO_RELU_TS:  # convert's default for a ReLU ANN (network-level), which we recommend with FTBC
        snn = sb.convert(relu, T=T, calibration_data=calib, statistics=stats)
        run("network-level", snn, relu, RELU_ANN, [T])
        snn = copy.deepcopy(snn)  # the row above keeps its SNN; the search is not run twice
        sb.ftbc(snn, ann=relu, data=ftbc_batches, alpha=0.5, batches=4, progress=False)
        run("network-level + FTBC", snn, relu, RELU_ANN, [T])
    sample = next(iter(loader(DEMO_DATASET, DEMO_MODEL, "test", args.data_root, 256)))[0]
    data = report_data(runs, {QCFS_ANN: qann, RELU_ANN: relu}, sample,
                       title=f"spikebridge demo: {DEMO_MODEL} on {DEMO_DATASET}",
                       full_accuracy={QCFS_ANN: results["ann_accuracy"], RELU_ANN: results["relu_accuracy"]})
    results["report"] = data
    print(f"SNNs and their source ANNs on the first {args.snn_images} test images "
          f"(full test set: QCFS ANN {100 * results['ann_accuracy']:.2f}%, ReLU ANN {100 * results['relu_accuracy']:.2f}%)")
    print(summary_table(data))
    print(f"[{_clock(start)}]", flush=True)


def step_report(args, results: dict) -> None:
    """Step 4: report.md, report.json and plots from the evaluations above (no new simulation)."""
    from .analysis.report import write_report

    _phase(args, "[4/4] writing the report (tables and plots)")
    path = write_report(Path(args.out) / "report", results["report"])
    print(f"report: {path}", flush=True)


STEPS = [step_train, step_relu, step_convert, step_report]


def run_demo(args) -> int:
    """Run every step of the demo in order (``args``: the parsed `spikebridge demo` arguments)."""
    from .device import resolve_device

    resolve_device(args.device)  # a device that is not here is refused before any work
    start = time.perf_counter()
    results: dict = {}
    for step in STEPS:
        step(args, results)
    print(f"demo finished in {_clock(start)}")
    return 0
