"""Training of QCFS (or plain ReLU) ANNs: a plain PyTorch loop (docs/methods.md §0).

Recipe: SGD with momentum 0.9, weight decay 5e-4 (1e-4 on ImageNet), lr 0.1 (0.02 on
CIFAR-100), cosine decay to 0 stepped after every batch (smoother than per epoch; the
schedule spans epochs × batches per epoch), random crop + flip, θ initialised to 8.0. Text
models (BERT) take AdamW instead, lr 1e-3, weight decay 0.01 (``momentum`` unused): with SGD
at lr 0.1 bert_tiny stayed at chance for 3 epochs of the synthetic sentiment task.
``optimizer="adamw"`` takes AdamW for an image model too, where SGD trains slowly: vit_tiny on
Fashion-MNIST reached 67.8% after 2 epochs of SGD at lr 0.1, 75.6% with AdamW at lr 1e-3
(BENCHMARKS.md §11).

Every finished epoch is kept: ``<out>/last.pt`` is rewritten atomically, then one JSON line
is appended to ``<out>/metrics.jsonl``. ``resume=True`` continues the run in ``out`` with
the settings recorded in its checkpoint, bit-exactly: the data order and augmentation depend
only on (seed, epoch) and the global RNG is re-seeded from (seed, epoch, rank) every epoch,
so a run killed at any point and resumed ends with the same weights as an uninterrupted one.

Fine-tuning a ReLU ANN into a QCFS ANN (``init_from``): its weights are loaded into the
prepared model and each site's θ is set to the 99.9th percentile of the positive outputs of
the site's float activation (ReLU, or GELU, SiLU, sigmoid, ... for other quantized sites)
at that site over the first ``init_images`` training images (no augmentation): the robust
maximum of Rueckauer et al., so a few outliers do not stretch the quantisation grid. From a
QCFS checkpoint, the trained θ are kept and only the levels change (PASCAL Alg. 4 step 4).

``bit_l1 = λ > 0`` adds 001's fine-grained ℓ1 bit regulariser (docs/methods.md §3) to the loss:
λ·(number of 1-bits of every hidden QCFS level), summed (``bit_l1_normalize="sum"``, 001's
form) or averaged per neuron and image (``"mean"``); see ``regularizer.BitL1Regularizer``.
Both are recorded in the checkpoint, so a resumed run keeps them.
"""
from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from . import distributed
from .. import models
from ..activations import FUNCTIONS
from .checkpoint import FORMAT, VERSION, load_checkpoint, save_checkpoint, thresholds_of
from ..data import calibration_subset, dataset_info, get_dataset, is_text, make_loader, model_args, set_epoch
from ..errors import SpikeBridgeError
from ..progress import progress as progress_bar
from ..ann.prepare import prepare, set_levels, sites
from ..errors import check_levels
from ..conversion.thresholds import ActivationStats
from ..ann.qcfs import keep_thresholds_positive
from ..ann.regularizer import BitL1Regularizer

# Fields that describe where and how this process runs, not the run itself: on resume they
# come from the caller, everything else from the checkpoint.
RUNTIME_FIELDS = ("out", "resume", "data_root", "workers", "extra_loss", "device")
OPTIMIZERS = ("sgd", "adamw")


@dataclass
class TrainConfig:
    """Everything ``train`` needs. ``levels=None`` trains a plain ReLU ANN; ``levels_file``
    (JSON {"levels": {site: L}}) takes precedence over ``levels``. ``lr`` and
    ``weight_decay`` default to the recipe's value for the dataset. ``extra_loss(model)``
    returns a tensor added to the loss at every step; it gets the plain model, also under DDP.
    ``bit_l1`` > 0 adds λ·popcount of the QCFS levels (docs/methods.md §3), normalised as
    ``bit_l1_normalize`` ("sum" or "mean") says."""

    model: str | None = None  # None: the init_from checkpoint's model, else "small_cnn"
    dataset: str = "fashion-mnist"
    out: str = "runs/train"
    levels: int | None = 8
    levels_file: str | None = None
    epochs: int = 3
    batch_size: int = 128
    lr: float | None = None
    momentum: float = 0.9
    weight_decay: float | None = None
    optimizer: str | None = None  # "sgd" (with momentum) or "adamw"; None: adamw for text models, else sgd
    threshold: float = 8.0
    channel_wise: bool = False
    as_relu: list[str] = field(default_factory=list)  # activations given QCFS (ReLU) sites (prepare's as_relu)
    seed: int = 0
    augment: bool = True
    cutout: bool = False
    autoaugment: bool = False
    model_kwargs: dict = field(default_factory=dict)
    init_from: str | None = None
    init_images: int = 512
    init_percentile: float = 99.9
    limit_train: int | None = None
    limit_test: int | None = None
    bit_l1: float = 0.0
    bit_l1_normalize: str = "sum"
    resume: bool = False
    data_root: str | None = None
    workers: int = 0
    extra_loss: Callable[[nn.Module], torch.Tensor] | None = None
    device: str | None = None  # None: CUDA (cuda:LOCAL_RANK under torchrun) when available, else the CPU

    def record(self) -> dict:
        """The run's settings as plain types (stored in the checkpoint as "args")."""
        return {f.name: copy.deepcopy(getattr(self, f.name)) for f in fields(self) if f.name not in RUNTIME_FIELDS}


def evaluate(model: nn.Module, loader, device: torch.device | str | None = None, progress: bool = False) -> float:
    """Top-1 accuracy (0..1) of ``model`` over ``loader``; summed over ranks under torchrun
    (give each rank its ``distributed.shard`` of the data)."""
    if device is None:
        device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    correct = total = 0
    with torch.no_grad():
        for x, y in progress_bar(loader, "test", enabled=progress):
            pred = model(x.to(device)).argmax(1).cpu()
            correct += int((pred == y).sum())
            total += len(y)
    model.train(was_training)
    correct, total = distributed.all_reduce_sum([correct, total], device)
    if total == 0:
        raise SpikeBridgeError("cannot evaluate on an empty dataset")
    return correct / total


def train(config: TrainConfig, progress: bool = True) -> tuple[nn.Module, list[dict]]:
    """Train (or resume) as ``config`` says; return (model in eval mode, per-epoch metrics).

    progress: progress bars (spikebridge.progress: periodic lines when stdout is not a terminal)
    and one summary line per epoch, rank 0 only.
    """
    device = distributed.init_from_env(config.device)
    main = distributed.is_main()
    out = Path(config.out)
    last = out / "last.pt"
    ckpt = None
    if last.exists():
        if not config.resume:
            raise SpikeBridgeError(f"{out} already holds a training run ({last.name}); "
                                   "pass --resume to continue it or choose another --out")
        ckpt = load_checkpoint(last)
        config = _resumed(config, ckpt)
    config = _with_recipe_defaults(config)
    _check(config)
    show = progress and main
    log = print if progress and main else (lambda *a, **k: None)

    pad_to = _pad_to(config)
    train_set = _dataset(config, "train", pad_to, augment=config.augment)
    test_set = _dataset(config, "test", pad_to, augment=False)

    torch.manual_seed(config.seed)
    if ckpt is not None:
        model = _build(ckpt["model"], ckpt["levels"], config)
        model.load_state_dict(ckpt["state_dict"])
    else:
        model = _initial_model(config, pad_to)
    spec = model.spikebridge_spec
    levels = {n: m.levels for n, m in sites(model).items()} or None
    model.to(device)
    net = distributed.wrap(model, device)
    extra_loss, regularizer = config.extra_loss, None
    if config.bit_l1 > 0:  # hooks on the plain model: DDP runs its forward, so they fire there too
        regularizer = BitL1Regularizer(model, config.bit_l1, config.bit_l1_normalize)
        extra_loss = _with_penalty(config.extra_loss, regularizer)

    loader = make_loader(train_set, config.batch_size, shuffle=True, seed=config.seed, distributed=True,
                         num_workers=config.workers)
    test_loader = make_loader(distributed.shard(test_set), config.batch_size, num_workers=config.workers)
    optimizer = _optimizer(model, config)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs * len(loader))
    history: list[dict] = []
    if ckpt is not None:
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        history = list(ckpt["metrics"])
        log(f"resuming {out} after epoch {ckpt['epoch']}/{config.epochs}")
    if main:
        out.mkdir(parents=True, exist_ok=True)
        _write_metrics(out / "metrics.jsonl", history)  # drops lines of epochs the checkpoint lacks

    for epoch in range(len(history), config.epochs):
        start = time.perf_counter()
        lr = optimizer.param_groups[0]["lr"]
        torch.manual_seed(_epoch_seed(config.seed, epoch, distributed.rank()))
        set_epoch(loader, epoch)
        train_loss, train_acc = _train_epoch(net, model, loader, optimizer, scheduler, device, extra_loss,
                                             f"epoch {epoch + 1}/{config.epochs}", show)
        _average_buffers(model)
        test_acc = evaluate(model, test_loader, device, show)
        record = {"epoch": epoch + 1, "train_loss": train_loss, "train_acc": train_acc, "test_acc": test_acc,
                  "lr": lr, "seconds": round(time.perf_counter() - start, 3)}
        history.append(record)
        if main:
            save_checkpoint(last, {
                "format": FORMAT, "version": VERSION, "model": spec, "dataset": config.dataset,
                "levels": levels, "thresholds": thresholds_of(model) if levels else {},
                "state_dict": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "epoch": epoch + 1, "args": config.record(),
                "metrics": history,
            })
            with open(out / "metrics.jsonl", "a") as f:
                f.write(json.dumps(record) + "\n")
        log(f"epoch {epoch + 1}/{config.epochs}  loss {train_loss:.4f}  train {100 * train_acc:.2f}%  "
            f"test {100 * test_acc:.2f}%  lr {lr:.4g}  {record['seconds']:.1f}s")
        distributed.barrier()
    if regularizer is not None:  # (on an exception the model is dropped, hooks and all)
        regularizer.remove()
    return model.eval(), history


def _optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """SGD with momentum (the image recipe), or AdamW (``config.optimizer``; text models' default)."""
    if config.optimizer == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                           weight_decay=config.weight_decay)


def _with_penalty(extra_loss, regularizer: BitL1Regularizer):
    """``extra_loss`` (or nothing) plus the regulariser's penalty of the latest forward pass."""
    if extra_loss is None:
        return lambda model: regularizer.penalty()
    return lambda model: extra_loss(model) + regularizer.penalty()


def _train_epoch(net, model, loader, optimizer, scheduler, device, extra_loss, desc, show):
    """One pass over ``loader``; returns (mean loss, accuracy) over all ranks."""
    net.train()
    loss_sum = correct = seen = 0.0
    bar = progress_bar(loader, desc, enabled=show)
    for x, y in bar:
        x, y = x.to(device), y.to(device)
        logits = net(x)
        loss = F.cross_entropy(logits, y)
        if extra_loss is not None:
            loss = loss + extra_loss(model)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        keep_thresholds_positive(model)
        scheduler.step()
        loss_sum += float(loss.detach()) * len(y)
        correct += int((logits.detach().argmax(1) == y).sum())
        seen += len(y)
        bar.set_postfix(loss=f"{loss_sum / seen:.4f}", acc=f"{100 * correct / seen:.1f}%")
    loss_sum, correct, seen = distributed.all_reduce_sum([loss_sum, correct, seen], device)
    return loss_sum / seen, correct / seen


def _average_buffers(model: nn.Module) -> None:
    """Average floating-point buffers (BatchNorm running statistics) over ranks, so that every
    rank holds the same model after an epoch (DDP syncs them only at the next forward)."""
    if not distributed.is_distributed():
        return
    world = distributed.world_size()
    for buf in model.buffers():
        if buf.is_floating_point():
            torch.distributed.all_reduce(buf, op=torch.distributed.ReduceOp.SUM)
            buf.div_(world)


def _epoch_seed(seed: int, epoch: int, rank: int) -> int:
    return (seed * 1_000_003 + epoch) * 1_009 + rank


def _resumed(config: TrainConfig, ckpt: dict) -> TrainConfig:
    """The checkpoint's recorded settings with this process's runtime fields."""
    known = {f.name for f in fields(TrainConfig)}
    recorded = TrainConfig(**{k: v for k, v in ckpt["args"].items() if k in known})
    return replace(recorded, **{k: getattr(config, k) for k in RUNTIME_FIELDS})


def _pad_to(config: TrainConfig) -> int | None:
    """The side images are padded to for the model (None: as they are, or text)."""
    size = models.input_size(config.model)
    return size if size and not is_text(config.dataset) and size > dataset_info(config.dataset).image_size else None


def _with_recipe_defaults(config: TrainConfig) -> TrainConfig:
    if not is_text(config.dataset):
        dataset_info(config.dataset)  # a one-line DataError for an unknown name
    dataset = config.dataset.strip().lower().replace("_", "-")
    model = config.model
    if model is None:
        model = load_checkpoint(config.init_from)["model"]["name"] if config.init_from else "small_cnn"
    text = models.takes_text(model)
    lr = config.lr if config.lr is not None else (1e-3 if text else 0.02 if dataset == "cifar100" else 0.1)
    wd = config.weight_decay if config.weight_decay is not None else \
        (0.01 if text else 1e-4 if dataset == "imagenet" else 5e-4)
    optimizer = config.optimizer or ("adamw" if text else "sgd")
    return replace(config, dataset=dataset, lr=lr, weight_decay=wd, model=model, optimizer=optimizer)


def _check(config: TrainConfig) -> None:
    if is_text(config.dataset) != models.takes_text(config.model):
        kind = "a text task" if is_text(config.dataset) else "images"
        raise SpikeBridgeError(f"dataset {config.dataset} is {kind}; model {config.model} takes "
                               f"{'token ids' if models.takes_text(config.model) else 'images'}")
    if config.levels is not None and config.levels_file is None:
        check_levels(config.levels)
    for name in ("epochs", "batch_size", "init_images"):
        if getattr(config, name) < 1:
            raise SpikeBridgeError(f"{name.replace('_', ' ')} must be at least 1, got {getattr(config, name)}")
    for name in ("limit_train", "limit_test"):
        if getattr(config, name) is not None and getattr(config, name) < 1:
            raise SpikeBridgeError(f"{name.replace('_', ' ')} must be at least 1, got {getattr(config, name)}")
    if config.optimizer not in OPTIMIZERS:
        raise SpikeBridgeError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {config.optimizer!r}")
    if not config.lr > 0:
        raise SpikeBridgeError(f"learning rate must be positive, got {config.lr}")
    if not config.threshold > 0:
        raise SpikeBridgeError(f"initial threshold must be positive, got {config.threshold}")
    if not config.bit_l1 >= 0:
        raise SpikeBridgeError(f"the bit regulariser's lambda must be >= 0, got {config.bit_l1}")
    if config.bit_l1_normalize not in ("sum", "mean"):
        raise SpikeBridgeError(f"bit regulariser normalisation must be 'sum' or 'mean', "
                               f"got {config.bit_l1_normalize!r}")
    if config.bit_l1 > 0 and not (config.levels or config.levels_file):
        raise SpikeBridgeError("the bit regulariser needs a QCFS ANN; it cannot be used with a ReLU ANN")
    if not 0 < config.init_percentile <= 100:
        raise SpikeBridgeError(f"init percentile must be in (0, 100], got {config.init_percentile}")


def _dataset(config: TrainConfig, split: str, pad_to, augment: bool):
    kwargs = {"cutout": config.cutout, "autoaugment": config.autoaugment} if split == "train" and augment else {}
    ds = get_dataset(config.dataset, split, root=config.data_root, augment=augment, pad_to=pad_to, **kwargs)
    limit = config.limit_train if split == "train" else config.limit_test
    return calibration_subset(ds, limit) if limit else ds


def _target_levels(config: TrainConfig):
    """{site: L} from the levels file, one int, or None for a ReLU ANN."""
    if config.levels_file is not None:
        from .al import load_levels_file

        return load_levels_file(config.levels_file)
    return config.levels


def _build(spec: dict, levels, config: TrainConfig) -> nn.Module:
    """models.create(**spec), prepared with ``levels`` unless None; spec kept on the result."""
    model = models.create(**spec)
    if levels:
        model = prepare(model, levels=levels, threshold=config.threshold, channel_wise=config.channel_wise,
                        as_relu=config.as_relu)
    model.spikebridge_spec = dict(spec)
    return model


def _initial_model(config: TrainConfig, pad_to) -> nn.Module:
    """A fresh model, or one initialised from ``config.init_from`` (its architecture, with the
    options of ``config.model_kwargs`` changed: e.g. pool="avg" fine-tunes a max-pooling
    network with average pooling; the weights must still fit)."""
    levels = _target_levels(config)
    if config.init_from is None:
        spec = models.create(config.model, **model_args(config.dataset, config.data_root),
                             **config.model_kwargs).spikebridge_spec
        return _build(spec, levels, config)
    source = load_checkpoint(config.init_from)
    if source["model"]["name"] != config.model:
        raise SpikeBridgeError(f"--init-from {config.init_from} holds model {source['model']['name']!r}, "
                               f"not {config.model!r}")
    spec = {**source["model"], **config.model_kwargs}
    if source["levels"] is None:
        model = _build(spec, levels, config)
        missing, unexpected = _load_fitting(model, source["state_dict"], config, strict=False)
        qcfs_keys = {f"{n}.{k}" for n in sites(model) for k in ("threshold", "_extra_state")}
        if unexpected or set(missing) - qcfs_keys:
            raise SpikeBridgeError(f"--init-from {config.init_from} does not fit {config.model!r} "
                                   f"(missing {sorted(set(missing) - qcfs_keys)[:3]}, unexpected {unexpected[:3]})")
        if levels:
            calib = calibration_subset(_dataset(config, "train", pad_to, augment=False), config.init_images)
            set_percentile_thresholds(model, make_loader(calib, config.batch_size), config.init_percentile)
        return model
    if not levels:
        raise SpikeBridgeError(f"--init-from {config.init_from} is a QCFS checkpoint; a ReLU ANN (--relu) "
                               "must start from a ReLU checkpoint")
    model = _build(spec, source["levels"], replace(config, channel_wise=any(
        isinstance(t, list) for t in source["thresholds"].values())))
    _load_fitting(model, source["state_dict"], config)
    set_levels(model, levels)
    return model


def _load_fitting(model: nn.Module, state_dict: dict, config: TrainConfig, strict: bool = True):
    """``model.load_state_dict``; weights of another shape (a changed model option) are a
    SpikeBridgeError naming the first mismatch."""
    try:
        return model.load_state_dict(state_dict, strict=strict)
    except RuntimeError as exc:
        detail = next((line.strip() for line in str(exc).splitlines()[1:] if line.strip()), str(exc))
        raise SpikeBridgeError(f"--init-from {config.init_from} does not fit {config.model!r} with options "
                               f"{config.model_kwargs or 'none'} ({detail[:160]})") from None


def set_percentile_thresholds(model: nn.Module, loader, percentile: float = 99.9) -> dict[str, list[float]]:
    """Set each quantized site's θ to the ``percentile`` of the positive outputs of its float
    activation f there (ReLU for QCFS; GELU, SiLU, sigmoid, ... for a QuantizedActivation), per
    channel for channel-wise θ, while the model runs as the original float network. The
    statistics and the percentile are the "percentile" conversion's (`thresholds.ActivationStats`,
    bounded memory; every rank sees the same images, so nothing is combined). Returns
    {site: [θ, ...]}."""
    found = sites(model)
    stats = ActivationStats(channel_wise=any(m.threshold.dim() for m in found.values()))

    def float_instead(name, module, inputs):
        a = FUNCTIONS[getattr(module, "function", "relu")](inputs[0])
        stats.update(name, a)
        return a

    handles = [m.register_forward_hook(lambda m, i, o, name=name: float_instead(name, m, i))
               for name, m in found.items()]
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    try:
        with torch.no_grad():
            for x, _ in loader:
                model(x.to(device))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    chosen = {}
    for name, m in found.items():
        theta, _ = stats.threshold(name, "percentile", channel_wise=bool(m.threshold.dim()), percentile=percentile)
        m.threshold.data.copy_(theta.reshape(m.threshold.shape).to(m.threshold))
        chosen[name] = theta.reshape(-1).tolist()
    return chosen


def _write_metrics(path: Path, history: list[dict]) -> None:
    """Rewrite metrics.jsonl to hold exactly ``history`` (atomically)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in history))
    tmp.replace(path)
