"""The pipeline's orchestration, shared by the CLI, the demo and the benchmarks:
datasets as loaders for a model, train-or-reuse a checkpoint, checkpoint → SNN.

    loader(dataset, model, split)          a DataLoader padded as the model needs
    train_or_reuse(config)                 the trained model of a run directory (trains,
                                           resumes or reuses; refuses other settings)
    convert_checkpoint(path, method, ...)  (checkpoint, ANN, SNN); ReLU-ANN methods calibrate
                                           on the checkpoint's first training images
    load_snn_or_convert(path, method)      an SNN file as it is, or a checkpoint converted
"""
from __future__ import annotations

from pathlib import Path

from . import data, models
from .conversion.converter import convert, default_for
from .conversion.registry import Source, get_method
from .device import resolve_device
from .errors import CheckpointError, SpikeBridgeError, check_int
from .export.snn_file import load
from .snn.network import SpikingNetwork
from .train.checkpoint import load_checkpoint, model_from_checkpoint


def loader(dataset: str, model: str | None, split: str, root=None, batch_size: int = 256, limit=None,
           shuffle: bool = False, seed: int = 0):
    """A loader of ``split`` padded as ``model`` needs, its first ``limit`` items (shuffled per
    (seed, epoch) when asked)."""
    pad_to = models.input_size(model) if model else None
    ds = data.get_dataset(dataset, split, root=root, pad_to=pad_to)
    if limit is not None:
        ds = data.calibration_subset(ds, check_int(limit, "the image limit"))
    return data.make_loader(ds, batch_size, shuffle=shuffle, seed=seed)


def train_or_reuse(config, fresh: bool = False, progress: bool = True, ignore=("lr", "weight_decay")):
    """Train ``config`` (a TrainConfig with ``out``) to its last epoch and return (model,
    checkpoint path, test accuracy 0..1): a finished run in ``config.out`` is reused, an
    unfinished one resumed, one with other settings (besides ``ignore``; an optimizer of None is
    the recipe's, a model of None the ``init_from`` checkpoint's or small_cnn) refused; ``fresh``
    starts over."""
    from .train.loop import train

    out = Path(config.out)
    last = out / "last.pt"
    if fresh:
        for name in ("last.pt", "metrics.jsonl"):
            (out / name).unlink(missing_ok=True)
    elif last.exists():
        ckpt = load_checkpoint(last)
        wanted = {k: v for k, v in config.record().items() if k not in ignore}
        if wanted.get("model", "") is None:  # recorded resolved, as training resolves it
            wanted["model"] = load_checkpoint(config.init_from)["model"]["name"] if config.init_from else "small_cnn"
        defaults = type(config)().record()  # a setting added after the run was recorded has its default there
        differs = sorted(k for k, v in wanted.items() if ckpt["args"].get(k, defaults[k]) != v
                         and not (k == "optimizer" and v is None))
        if differs:
            raise SpikeBridgeError(f"{out} holds a run with other settings ({', '.join(differs)}); "
                                   "pass --fresh to retrain there or choose another --out")
        if ckpt["epoch"] >= config.epochs:
            acc = ckpt["metrics"][-1]["test_acc"]
            if progress:
                print(f"reusing the trained ANN in {last} (test accuracy {100 * acc:.2f}%; --fresh retrains)")
            return model_from_checkpoint(ckpt), last, acc
    model, history = train(config, progress=progress)
    return model, last, history[-1]["test_acc"]


def load_ann(path):
    """(checkpoint dict, ANN) from a training checkpoint."""
    ckpt = load_checkpoint(path)
    return ckpt, model_from_checkpoint(ckpt)


def convert_checkpoint(path, method: str | None, T=None, root=None, calibration_images: int = 2048,
                       batch_size: int = 256, device=None, **options) -> tuple[dict, object, SpikingNetwork]:
    """Convert a training checkpoint with ``method`` (None: the registry's default for the
    model's kind); methods that convert a ReLU ANN calibrate on its first ``calibration_images``
    training images. Returns (checkpoint, ANN, SNN), both on ``device``; the SNN records its
    dataset, model and input shape."""
    ckpt, ann = load_ann(path)
    ann.to(resolve_device(device))
    dataset, name = ckpt["dataset"], ckpt["model"]["name"]
    record = get_method(method) if method else default_for(ann)
    if record.source is Source.RELU:
        options["calibration_data"] = loader(dataset, name, "train", root, batch_size, calibration_images)
    snn = convert(ann, record.name, T=T, **options)
    if data.is_text(dataset):
        shape = [ckpt["model"]["max_len"]]
    else:
        info = data.dataset_info(dataset)
        size = models.input_size(name) or info.image_size
        shape = [info.in_channels, size, size]
    snn.info.update(dataset=dataset, model=dict(ckpt["model"]), input_shape=shape, ann_checkpoint=str(path))
    return ckpt, ann, snn


def load_snn_or_convert(path, method: str | None, T=None, root=None, device=None, **options) -> SpikingNetwork:
    """An SNN file as it is, or a training checkpoint converted with ``method``, on ``device``."""
    try:
        return load(path, map_location=resolve_device(device))
    except CheckpointError as exc:
        if "not a spikebridge SNN" not in str(exc):
            raise
    if not method:
        raise SpikeBridgeError(f"{path} is an ANN checkpoint: pass --method to convert it first")
    return convert_checkpoint(path, method, T=T, root=root, device=device, **options)[2]
