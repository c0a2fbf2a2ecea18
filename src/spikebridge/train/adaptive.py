"""PASCAL Algorithm 4 (docs/methods.md §7): AL levels from a trained model, then retraining.

    out/stage_1_uniform/   step 1: train at uniform L_α for E epochs
    out/al/                step 2: AL metric per site on the first ``images`` training images
                           for stage_1_uniform's model → levels.json, al.json (metrics), al.png
    out/stage_2_uniform/   step 3: retrain *from the beginning* (same seed, so the same initial
                           weights: 000 Sec. 3.3.5's lottery-ticket argument) at uniform L_α for
                           p·E epochs, p ≈ 2/3
    out/stage_3_adaptive/  step 4: switch every site to its AL level, keeping stage_2_uniform's
                           weights and θ (``init_from``), and train on for E epochs (by default)

Each training stage is a resumable ``train`` run with its own cosine schedule: step 4 restarts
the learning rate, a warm restart in the spirit of the SGDR schedule 000 cites for step 3.
Running again after an interruption skips every finished stage and resumes the unfinished
one; a stage whose recorded settings differ from the requested ones is an error.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, fields, replace
from pathlib import Path

from . import distributed
from .al import SiteMetric, adaptive_levels, load_levels_file, plot_metric, save_levels_file, t_eff
from .checkpoint import atomic_write, load_checkpoint, model_from_checkpoint
from ..errors import SpikeBridgeError
from ..errors import check_levels
from .loop import RUNTIME_FIELDS, TrainConfig, _with_recipe_defaults, train

STAGE_1, AL, STAGE_2, STAGE_3 = "stage_1_uniform", "al", "stage_2_uniform", "stage_3_adaptive"
# TrainConfig fields each stage sets itself; the caller's other training options apply to all.
_STAGE_FIELDS = {"out", "levels", "levels_file", "epochs", "init_from", "resume"}
# Paths into ``out``: not compared on a re-run, so the same --out may be spelled differently.
_PATH_FIELDS = {"init_from", "levels_file"}


@dataclass
class Algorithm4Result:
    levels: dict[str, int]           # AL levels per site (stage 3)
    metrics: list[SiteMetric]        # AL statistics of stage 1's model
    t_eff: float                     # mean L_n (PASCAL Eq. 8)
    test_acc: dict[str, float]       # final test accuracy of each training stage
    checkpoints: dict[str, Path]     # last.pt of each training stage


def compute_al(checkpoint, clusters: int, levels: list[int], images: int = 3000, alpha: float | None = None,
               data_root=None, batch_size: int = 256, device=None) -> tuple[dict[str, int], list[SiteMetric]]:
    """PASCAL Alg. 3 + clustering on the first ``images`` training images (no augmentation)
    of the checkpoint's dataset. Returns ({site: L_n}, metrics)."""
    from ..device import resolve_device
    from ..pipeline import loader

    if images < 1:
        raise SpikeBridgeError(f"the AL metric needs at least 1 image, got {images}")
    ckpt = load_checkpoint(checkpoint)
    if not ckpt["levels"]:
        raise SpikeBridgeError(f"{checkpoint} is a ReLU ANN; the AL metric needs a QCFS ANN")
    model = model_from_checkpoint(ckpt).to(resolve_device(device))
    data = loader(ckpt["dataset"], ckpt["model"]["name"], "train", data_root, batch_size, images)
    return adaptive_levels(model, data, clusters, list(levels), images, alpha)


def al_table(metrics: list[SiteMetric], levels_by_site: dict[str, int]) -> str:
    """Text table: site, A, g, K, M, assigned L; then T_eff."""
    width = max(len("site"), *(len(m.site) for m in metrics))
    lines = [f"{'site':<{width}} {'A':>7} {'g':>8} {'K':>9} {'M':>10} {'L':>4}"]
    lines += [f"{m.site:<{width}} {m.A:>7.3f} {m.g:>8.3f} {m.K:>9.3f} {m.M:>10.3f} {levels_by_site[m.site]:>4}"
              for m in metrics]
    lines.append(f"T_eff = {t_eff(levels_by_site):.3f}")
    return "\n".join(lines)


def run_algorithm4(out, *, epochs: int, clusters: int, levels: list[int], levels_uniform: int = 8,
                   stage2_epochs: int | None = None, stage3_epochs: int | None = None, images: int = 3000,
                   alpha: float | None = None, progress: bool = True, **train_options) -> Algorithm4Result:
    """PASCAL Alg. 4 into ``out`` (see the module docstring), resuming what a previous call left.

    epochs: E of stage 1; stage2_epochs defaults to round(2E/3) (≥ 1), stage3_epochs to E.
    train_options: further TrainConfig fields for every stage (model, dataset, batch_size,
    model_kwargs, limit_train, seed, ...)."""
    known = {f.name for f in fields(TrainConfig)}
    bad = sorted(set(train_options) - (known - _STAGE_FIELDS))
    if bad:
        raise SpikeBridgeError(f"run_algorithm4: {', '.join(bad)} is set per stage or is no training option")
    if len(levels) != clusters:  # checked now, not after stage 1's training
        raise SpikeBridgeError(f"{clusters} clusters need {clusters} levels values, got {len(levels)}: {list(levels)}")
    for L in (*levels, levels_uniform):
        check_levels(L)
    if images < 1:
        raise SpikeBridgeError(f"the AL metric needs at least 1 image, got {images}")
    stage2_epochs = max(1, round(2 * epochs / 3)) if stage2_epochs is None else stage2_epochs
    stage3_epochs = epochs if stage3_epochs is None else stage3_epochs
    out = Path(out)
    distributed.init_from_env()
    log = print if progress and distributed.is_main() else (lambda *a, **k: None)

    uniform = TrainConfig(levels=levels_uniform, **train_options)
    first = _stage(out / STAGE_1, replace(uniform, epochs=epochs), "1/4 train at uniform L", log, progress)
    levels_file = out / AL / "levels.json"
    by_site, metrics = _al_stage(first, out / AL, clusters, levels, images, alpha, uniform, log)
    log(al_table(metrics, by_site))
    second = _stage(out / STAGE_2, replace(uniform, epochs=stage2_epochs), "3/4 retrain at uniform L", log, progress)
    adaptive = replace(uniform, levels=None, levels_file=str(levels_file), init_from=str(second),
                       epochs=stage3_epochs)
    third = _stage(out / STAGE_3, adaptive, "4/4 train at the AL levels", log, progress)
    checkpoints = {STAGE_1: first, STAGE_2: second, STAGE_3: third}
    return Algorithm4Result(by_site, metrics, t_eff(by_site),
                            {k: load_checkpoint(p)["metrics"][-1]["test_acc"] for k, p in checkpoints.items()},
                            checkpoints)


def _stage(directory: Path, config: TrainConfig, title: str, log, progress: bool) -> Path:
    """Run (or resume, or skip if finished) one training stage; returns its last.pt."""
    last = directory / "last.pt"
    config = replace(config, out=str(directory), resume=True)
    if last.exists():
        ckpt = load_checkpoint(last)
        _check_recorded(directory, ckpt["args"], _with_recipe_defaults(config).record())
        if ckpt["epoch"] >= config.epochs:
            log(f"{title}: done ({directory})")
            return last
    log(f"{title}: {directory}")
    train(config, progress=progress)
    return last


def _check_recorded(directory: Path, recorded: dict, expected: dict) -> None:
    for key, value in expected.items():
        if key in recorded and key not in RUNTIME_FIELDS + tuple(_PATH_FIELDS) and recorded[key] != value:
            raise SpikeBridgeError(f"{directory} was trained with {key}={recorded[key]!r}, not {value!r}; "
                                   "use another --out for different settings")


def _al_stage(checkpoint: Path, directory: Path, clusters: int, levels: list[int], images: int,
              alpha: float | None, config: TrainConfig, log) -> tuple[dict[str, int], list[SiteMetric]]:
    """Step 2: AL levels of stage 1's model, computed once; al.json (written last) marks it done."""
    report = directory / "al.json"
    limit = config.limit_train
    settings = {"clusters": clusters, "levels": list(levels),
                "images": min(images, limit) if limit else images, "alpha": alpha}
    if report.exists():
        log(f"2/4 AL levels: done ({directory})")
    elif distributed.is_main():
        log(f"2/4 AL levels from {settings['images']} training images: {directory}")
        by_site, metrics = compute_al(checkpoint, clusters, levels, settings["images"], alpha,
                                      config.data_root, max(config.batch_size, 256))
        directory.mkdir(parents=True, exist_ok=True)
        atomic_write(directory / "levels.json", lambda p: save_levels_file(p, by_site))
        atomic_write(directory / "al.png", lambda p: plot_metric(metrics, p))
        payload = {"settings": settings, "t_eff": t_eff(by_site),
                   "metrics": [{"site": m.site, "A": m.A, "g": m.g, "K": m.K, "M": _json_float(m.M)}
                               for m in metrics]}
        atomic_write(report, lambda p: p.write_text(json.dumps(payload, indent=2) + "\n"))
    distributed.barrier()
    recorded = json.loads(report.read_text())
    if recorded["settings"] != settings:
        diff = {k: recorded["settings"].get(k) for k, v in settings.items() if recorded["settings"].get(k) != v}
        raise SpikeBridgeError(f"{directory} holds AL levels computed with {diff}; use another --out")
    metrics = [SiteMetric(m["site"], m["A"], m["g"], m["K"], float(m["M"])) for m in recorded["metrics"]]
    return load_levels_file(directory / "levels.json"), metrics


def _json_float(x: float):
    """JSON has no infinity: +inf (a single level used) is stored as the string "inf"."""
    return x if math.isfinite(x) else "inf"

