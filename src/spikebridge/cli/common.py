"""What several subcommands share: reading checkpoints and SNN files, building loaders."""
from __future__ import annotations

from ..errors import CheckpointError, SpikeBridgeError


def int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise SpikeBridgeError(f"expected positive integers separated by commas, e.g. 1,2,4,8; got {text!r}")
    return values


def add_data_arguments(p, images_help: str = "use only the first N test images") -> None:
    p.add_argument("--dataset", default=None, help="dataset (default: the one the checkpoint was trained on)")
    p.add_argument("--data-root", default=None, metavar="DIR", help="where the dataset files are")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--limit", type=int, default=None, metavar="N", help=images_help)


def loader_for(dataset: str, model: str | None, split: str, root=None, batch_size: int = 256, limit=None,
               shuffle: bool = False, seed: int = 0):
    """A loader of ``split`` padded as ``model`` needs, its first ``limit`` items (shuffled per
    (seed, epoch) when asked)."""
    from .. import data, models

    pad_to = models.input_size(model) if model else None
    ds = data.get_dataset(dataset, split, root=root, pad_to=pad_to)
    if limit:
        ds = data.calibration_subset(ds, limit)
    return data.make_loader(ds, batch_size, shuffle=shuffle, seed=seed)


def load_checkpoint_model(path):
    """(checkpoint dict, ANN) from a training checkpoint."""
    from ..checkpoint import load_checkpoint, model_from_checkpoint

    ckpt = load_checkpoint(path)
    return ckpt, model_from_checkpoint(ckpt)


def convert_checkpoint(path, method: str, T=None, root=None, calibration_images: int = 2048,
                       batch_size: int = 256, **options):
    """Convert a training checkpoint; ReLU methods calibrate on its first training images.
    Returns (checkpoint, ANN, SNN); the SNN records its dataset, model and input shape."""
    from .. import data, models
    from ..convert import METHODS, convert

    ckpt, ann = load_checkpoint_model(path)
    dataset, name = ckpt["dataset"], ckpt["model"]["name"]
    if method in METHODS and METHODS[method].source == "relu":
        options["calibration_data"] = loader_for(dataset, name, "train", root, batch_size, calibration_images)
    snn = convert(ann, method, T=T, **options)
    info = data.dataset_info(dataset)
    size = models.input_size(name) or info.image_size
    snn.info.update(dataset=dataset, model=dict(ckpt["model"]), input_shape=[info.in_channels, size, size],
                    ann_checkpoint=str(path))
    return ckpt, ann, snn


def load_snn_or_convert(path, method: str | None, T=None, root=None):
    """An SNN file as it is, or a training checkpoint converted with ``method``."""
    from ..serialization import load

    try:
        return load(path)
    except CheckpointError as exc:
        if "not a spikebridge SNN" not in str(exc):
            raise
    if not method:
        raise SpikeBridgeError(f"{path} is an ANN checkpoint: pass --method to convert it first")
    return convert_checkpoint(path, method, T=T, root=root)[2]
