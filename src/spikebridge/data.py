"""Datasets and loaders: Fashion-MNIST (default), MNIST, CIFAR-10/100, ImageNet, and
scikit-learn's 8x8 digits (offline; upsampled to 16x16, a fixed train/test split); and the text
tasks of ``spikebridge.text`` (token ids and labels), by the same names and loaders.

The MNIST-likes and CIFAR are held in memory as uint8 tensors and augmented a whole batch at
a time (random crop with 4-pixel zero padding, horizontal flip, Cutout, and AutoAugment),
so that training on a few CPU cores is not dominated by per-image PIL transforms. ImageNet is
an ImageFolder tree with the standard per-image transforms.

`make_loader` draws shuffling and augmentation randomness only from (seed, epoch, batch), never
from global RNG state, so a resumed training run sees exactly the batches an uninterrupted run
would: call `set_epoch(loader, epoch)` before each epoch.
"""
from __future__ import annotations

import contextlib
import functools
import gzip
import io
import os
import pickle
import socket
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler, Subset

from .device import single_thread
from .errors import DataError
from .randomness import cpu_seeded
from .text import TEXT_DATASETS, TextDataset, get_text_dataset, text_info

DATASETS = ("fashion-mnist", "mnist", "cifar10", "cifar100", "imagenet", "digits")
SYSTEM_ROOT = Path("/usr/share/datasets")
CACHE_ROOT = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "spikebridge"
CROP_PADDING = 4
CUTOUT_SIZE = 16


@dataclass(frozen=True)
class DatasetInfo:
    """Static facts about a dataset; image_size is the native side length (28, 32 or 224)."""

    num_classes: int
    in_channels: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]


_INFO = {
    "fashion-mnist": DatasetInfo(10, 1, 28, (0.2860,), (0.3530,)),
    "mnist": DatasetInfo(10, 1, 28, (0.1307,), (0.3081,)),
    "cifar10": DatasetInfo(10, 3, 32, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": DatasetInfo(100, 3, 32, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "imagenet": DatasetInfo(1000, 3, 224, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "digits": DatasetInfo(10, 1, 16, (0.3054,), (0.3758,)),
}
DIGITS_TEST = 500  # the last 500 images of a permutation seeded with 0 are the test split
_IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_TORCHVISION_FOLDER = {"fashion-mnist": "FashionMNIST", "mnist": "MNIST"}
_CIFAR_FILES = {
    "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"], "labels"),
    "cifar100": ("cifar-100-python", ["train"], ["test"], "fine_labels"),
}


def _key(name: str) -> str:
    return str(name).strip().lower().replace("_", "-")


def _canonical(name: str) -> str:
    key = _key(name)
    if key in TEXT_DATASETS:
        raise DataError(f"{key} is a text task, not images")
    if key not in _INFO:
        raise DataError(f"unknown dataset {name!r}; valid names: {', '.join(DATASETS + TEXT_DATASETS)}")
    return key


def is_text(name: str) -> bool:
    """Whether dataset ``name`` is a text task (of spikebridge.text)."""
    return _key(name) in TEXT_DATASETS


def model_args(name: str, root=None) -> dict:
    """What ``models.create`` takes from dataset ``name``: num_classes and in_channels for
    images; num_classes, vocab_size and max_len for a text task."""
    if is_text(name):
        info = text_info(_key(name), root)
        return {"num_classes": info.num_classes, "vocab_size": info.vocab_size, "max_len": info.max_len}
    info = dataset_info(name)
    return {"num_classes": info.num_classes, "in_channels": info.in_channels}


def dataset_info(name: str) -> DatasetInfo:
    """Return the DatasetInfo of `name` (one of DATASETS)."""
    return _INFO[_canonical(name)]


class TensorImageDataset(Dataset):
    """In-memory uint8 images [N, C, H, W] with batch-level augmentation and normalisation.

    `images[i]` via __getitem__ gives one normalised float image and an int label (random
    augmentation then uses the global torch RNG); `batch(indices, generator)` does the same for
    many images at once with an explicit generator, which is what `make_loader` uses.
    Cutout zeroes one CUTOUT_SIZE square (centre uniform over the image, clipped at the border,
    as in DeVries & Taylor 2017) after normalisation; AutoAugment is torchvision's CIFAR10
    policy applied per image on uint8 tensors.
    """

    def __init__(self, images, labels, info: DatasetInfo, augment=False, cutout=False, autoaugment=False):
        self.images = images
        self.labels = labels
        self.info = info
        self.augment = augment
        self.cutout = cutout
        self.autoaugment = None
        if autoaugment:
            from torchvision.transforms import AutoAugment, AutoAugmentPolicy

            self.autoaugment = AutoAugment(AutoAugmentPolicy.CIFAR10)
        std = torch.tensor(info.std).view(1, -1, 1, 1)
        self._scale = 1.0 / (255.0 * std)
        self._shift = torch.tensor(info.mean).view(1, -1, 1, 1) / std

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, index):
        image, label = self.batch(torch.tensor([int(index)]), None)
        return image[0], int(label[0])

    def batch(self, indices: torch.Tensor, generator: torch.Generator | None):
        """Images [B, C, H, W] (float, augmented as configured) and labels [B] (int64). One thread:
        on a busy 2-core machine the intra-op pool made an epoch of augmentation 10-40x slower (measured)."""
        with single_thread():
            return self._batch(indices, generator)

    def _batch(self, indices, generator):
        x = self.images.index_select(0, indices)
        if self.augment:
            x = _random_crop(x, CROP_PADDING, generator)
            flip = torch.rand(len(x), generator=generator) < 0.5
            x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
        if self.autoaugment is not None:
            seed = int(torch.randint(2**62, (), generator=generator))
            with cpu_seeded(seed):
                x = torch.stack([self.autoaugment(image) for image in x])
        x = x.float() * self._scale - self._shift
        if self.cutout:
            x = _cutout(x, CUTOUT_SIZE, generator)
        return x, self.labels.index_select(0, indices)


def _random_crop(x, padding, generator):
    """Zero-pad by `padding` and crop each image back to its size at a random offset."""
    b, c, h, w = x.shape
    padded = F.pad(x, (padding,) * 4).reshape(b, c, -1)
    oy = torch.randint(2 * padding + 1, (b, 1, 1), generator=generator)
    ox = torch.randint(2 * padding + 1, (b, 1, 1), generator=generator)
    flat = (oy + torch.arange(h).view(1, h, 1)) * (w + 2 * padding) + ox + torch.arange(w).view(1, 1, w)
    return padded.gather(2, flat.view(b, 1, h * w).expand(b, c, h * w)).view(b, c, h, w)


def _cutout(x, size, generator):
    """Zero one size x size square per image, centred uniformly and clipped at the border."""
    b, _, h, w = x.shape
    cy = torch.randint(h, (b, 1, 1), generator=generator)
    cx = torch.randint(w, (b, 1, 1), generator=generator)
    ys = torch.arange(h).view(1, h, 1)
    xs = torch.arange(w).view(1, 1, w)
    half = size // 2
    hole = (ys >= cy - half) & (ys < cy + size - half) & (xs >= cx - half) & (xs < cx + size - half)
    return x.masked_fill(hole.unsqueeze(1), 0.0)


def get_dataset(name="fashion-mnist", split="train", root=None, augment=False, pad_to=None,
                cutout=False, autoaugment=False) -> Dataset:
    """Return dataset `name` ("train" or "test" split) yielding (normalised [C,H,W] float, int label),
    or for a text task (token ids [S], int label).

    pad_to zero-pads (in pixel space, before normalisation) 28x28 images to pad_to x pad_to;
    augment adds random crop (4-pixel padding) + horizontal flip (ImageNet: RandomResizedCrop
    224 + flip; text: nothing); cutout and autoaugment are for cifar10/cifar100.
    """
    if is_text(name):
        if pad_to is not None or cutout or autoaugment:
            raise DataError(f"{_key(name)} is a text task: pad_to, cutout and autoaugment are for images")
        return get_text_dataset(_key(name), split, root)
    key = _canonical(name)
    info = _INFO[key]
    if split not in ("train", "test"):
        raise DataError(f"unknown split {split!r}; use 'train' or 'test'")
    if (cutout or autoaugment) and key not in _CIFAR_FILES:
        raise DataError(f"cutout and autoaugment are available for cifar10/cifar100 only, not {key}")
    if pad_to is not None and pad_to != info.image_size:
        if info.in_channels != 1 or pad_to < info.image_size:
            raise DataError(f"pad_to={pad_to} is not possible for {key} ({info.image_size}x{info.image_size} images)")
    if key == "imagenet":
        return _imagenet(split, root, augment, info)
    if key in _CIFAR_FILES:
        images, labels = _load_cifar(key, split, root)
    elif key == "digits":
        images, labels = _load_digits(split)
    else:
        images, labels = _load_idx(key, split, root)
    if pad_to is not None and pad_to > info.image_size:
        extra = pad_to - info.image_size
        images = F.pad(images, (extra // 2, extra - extra // 2, extra // 2, extra - extra // 2))
    return TensorImageDataset(images, labels, info, augment, cutout, autoaugment)


def _search_bases(root):
    """The directories a given root stands for; a root that is not a directory is an error."""
    if root is None:
        return []
    base = Path(root).expanduser()
    if not base.is_dir():
        raise DataError(f"data root {base} does not exist or is not a directory; pass --data-root DIR holding the "
                        "dataset files")
    return [base]


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


def _download(download, dest: Path) -> str | None:
    """Run a torchvision download into dest; return None on success or the reason it failed."""
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(30)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            download(str(dest))
        return None
    except Exception as exc:  # torchvision raises many kinds; the user gets one line
        return _first_line(exc)
    finally:
        socket.setdefaulttimeout(previous)


# --- Fashion-MNIST / MNIST: IDX files -------------------------------------------------------

def _idx_dirs(key, root):
    """Where the IDX files may be: under a given root only (a root that holds no data is an
    error, never a fall-back to another copy), else the system dataset and the cache."""
    dirs = []
    for base in _search_bases(root):
        dirs += [base, base / key, base / key / "raw", base / _TORCHVISION_FOLDER[key] / "raw"]
    if root is None:
        dirs += [SYSTEM_ROOT / key, CACHE_ROOT / _TORCHVISION_FOLDER[key] / "raw"]
    return dirs


def _find_idx(directory: Path, split):
    found = []
    for stem in _IDX_FILES[split]:
        path = next((p for p in (directory / stem, directory / f"{stem}.gz") if p.is_file()), None)
        if path is None:
            return None
        found.append(path)
    return found


def _load_idx(key, split, root):
    dirs = _idx_dirs(key, root)
    files = next((f for f in (_find_idx(d, split) for d in dirs) if f), None)
    stems = ", ".join(f"{s}.gz" for s in _IDX_FILES["train"] + _IDX_FILES["test"])
    if files is None and root is not None:
        raise DataError(f"{key} {split} data not found under --data-root {root} (searched {', '.join(map(str, dirs))}); "
                        f"put {stems} there, or omit --data-root to use the installed dataset")
    reason = None
    if files is None:
        import torchvision.datasets as tvd

        cls = tvd.FashionMNIST if key == "fashion-mnist" else tvd.MNIST
        reason = _download(lambda d: cls(d, train=split == "train", download=True), CACHE_ROOT)
        files = _find_idx(CACHE_ROOT / _TORCHVISION_FOLDER[key] / "raw", split)
    if files is None:
        how = "apt-get install dataset-fashion-mnist, or " if key == "fashion-mnist" else ""
        raise DataError(
            f"{key} {split} data not found (searched {', '.join(map(str, dirs))}; download failed: "
            f"{reason}); {how}pass --data-root DIR containing {stems}")
    images = _read_idx(str(files[0]), files[0].stat().st_mtime_ns)
    labels = _read_idx(str(files[1]), files[1].stat().st_mtime_ns)
    if images.dim() != 3 or labels.dim() != 1 or len(images) != len(labels):
        raise DataError(f"IDX files {files[0]} and {files[1]} do not hold matching images and labels")
    return images.unsqueeze(1), labels.long()


@functools.lru_cache(maxsize=8)
def _read_idx(path: str, mtime_ns: int) -> torch.Tensor:
    """Read a (possibly gzipped) IDX file of unsigned bytes into a uint8 tensor."""
    try:
        with (gzip.open if path.endswith(".gz") else open)(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as exc:
        raise DataError(f"cannot read IDX file {path}: {_first_line(exc)}") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DataError(f"{path} is not an IDX file of unsigned bytes")
    header = 4 + 4 * raw[3]
    shape = tuple(int(d) for d in np.frombuffer(raw[4:header], ">u4")) if len(raw) >= header else None
    if shape is None or len(raw) != header + int(np.prod(shape)):
        raise DataError(f"IDX file {path} is truncated or corrupt")
    data = np.frombuffer(raw, np.uint8, offset=header).reshape(shape)
    return torch.from_numpy(data.copy())


# --- digits: scikit-learn's bundled 8x8 images ---------------------------------------------

def _load_digits(split):
    """scikit-learn's 1797 8x8 digit images (values 0..16, shipped with the package, no
    download), each pixel repeated 2x2 to 16x16 and scaled to 0..255. Fixed split: a
    permutation seeded with 0, its last DIGITS_TEST images are the test set (1297 train)."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise DataError("the digits dataset needs scikit-learn: pip install scikit-learn") from None
    bunch = load_digits()
    images = np.round(bunch.images * 255 / 16).astype(np.uint8).repeat(2, 1).repeat(2, 2)
    order = np.random.default_rng(0).permutation(len(images))
    pick = order[:-DIGITS_TEST] if split == "train" else order[-DIGITS_TEST:]
    return torch.from_numpy(images[pick]).unsqueeze(1), torch.from_numpy(bunch.target[pick]).long()


# --- CIFAR-10 / CIFAR-100: python pickle batches ---------------------------------------------

def _load_cifar(key, split, root):
    folder, train_files, test_files, label_key = _CIFAR_FILES[key]
    names = train_files if split == "train" else test_files
    bases = []
    for base in _search_bases(root):
        bases += [base, base / key]
    if root is None:  # a given root is the only place searched
        bases += [SYSTEM_ROOT / key, CACHE_ROOT]

    def find():
        return next((b / folder for b in bases if all((b / folder / n).is_file() for n in names)), None)

    directory = find()
    reason = "not tried: --data-root was given" if root is not None else None
    if directory is None and root is None:
        import torchvision.datasets as tvd

        cls = tvd.CIFAR10 if key == "cifar10" else tvd.CIFAR100
        reason = _download(lambda d: cls(d, train=split == "train", download=True), CACHE_ROOT)
        directory = find()
    if directory is None:
        raise DataError(
            f"{key} data not found (searched {', '.join(str(b / folder) for b in bases)}; download failed: "
            f"{reason}); pass --data-root DIR containing {folder}/ ({', '.join(train_files + test_files)})")
    images, labels = [], []
    for n in names:
        path = directory / n
        try:
            with open(path, "rb") as f:
                entry = pickle.load(f, encoding="latin1")
            images.append(np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
            labels.extend(entry[label_key])
        except Exception as exc:  # unpickling errors come in many types
            raise DataError(f"cannot read CIFAR batch {path}: {_first_line(exc)}") from None
    return torch.from_numpy(np.concatenate(images)), torch.tensor(labels, dtype=torch.long)


# --- ImageNet: ImageFolder tree --------------------------------------------------------------

def _imagenet(split, root, augment, info):
    from torchvision import datasets as tvd
    from torchvision import transforms as T

    sub = "train" if split == "train" else "val"
    bases = [Path(root).expanduser()] if root is not None else []  # a missing root: the error below
    candidates = [b / sub for base in bases for b in (base, base / "imagenet")]
    directory = next((c for c in candidates if c.is_dir()), None)
    if directory is None:
        where = f"{root}/{sub}" if root is not None else "(no --data-root given)"
        raise DataError(f"imagenet {sub} folder not found at {where}; pass --data-root DIR containing "
                        f"train/<class>/*.JPEG and val/<class>/*.JPEG")
    crop = [T.RandomResizedCrop(info.image_size), T.RandomHorizontalFlip()] if augment else \
        [T.Resize(256), T.CenterCrop(info.image_size)]
    transform = T.Compose(crop + [T.ToTensor(), T.Normalize(info.mean, info.std)])
    try:
        return tvd.ImageFolder(str(directory), transform=transform)
    except (OSError, RuntimeError) as exc:
        raise DataError(f"cannot read imagenet folder {directory}: {_first_line(exc)}") from None


# --- Loaders ---------------------------------------------------------------------------------

def calibration_subset(dataset: Dataset, n: int) -> Subset:
    """The first n items of dataset (all of it when shorter), deterministically."""
    if n < 1:
        raise DataError(f"calibration subset size must be at least 1, got {n}")
    return Subset(dataset, range(min(int(n), len(dataset))))


class _Batch:
    """Key for one batch: dataset indices and the seed of its augmentation randomness."""

    __slots__ = ("indices", "seed")

    def __init__(self, indices, seed):
        self.indices = indices
        self.seed = seed


class EpochBatchSampler(Sampler):
    """Yields _Batch keys whose order and seeds depend only on (seed, epoch, rank, batch number)."""

    def __init__(self, dataset, batch_size, shuffle, seed, distributed, drop_last):
        self.num_samples = len(dataset)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.drop_last = drop_last
        self.epoch = 0
        self.rank = 0
        self.distributed = None
        if distributed:
            dist = torch.distributed
            world, self.rank = 1, 0
            if dist.is_available() and dist.is_initialized():
                world, self.rank = dist.get_world_size(), dist.get_rank()
            self.distributed = DistributedSampler(dataset, num_replicas=world, rank=self.rank,
                                                  shuffle=shuffle, seed=seed * 1000)

    def set_epoch(self, epoch: int):
        self.epoch = int(epoch)
        if self.distributed is not None:
            self.distributed.set_epoch(self.epoch)

    def _indices(self):
        if self.distributed is not None:
            return torch.tensor(list(self.distributed), dtype=torch.long)
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 1000 + self.epoch)
            return torch.randperm(self.num_samples, generator=g)
        return torch.arange(self.num_samples)

    def __iter__(self):
        indices = self._indices()
        seeds = torch.Generator().manual_seed((self.seed * 1000 + self.epoch) * 4099 + self.rank)
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            yield _Batch(indices[start:start + self.batch_size], int(torch.randint(2**62, (), generator=seeds)))

    def __len__(self):
        n = len(self.distributed) if self.distributed is not None else self.num_samples
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)


class _BatchView(Dataset):
    """Maps a _Batch key to a collated (inputs, labels) batch of `dataset`; in-memory datasets
    (and Subsets of them) give theirs with ``batch(indices, generator)``."""

    def __init__(self, dataset):
        self.dataset = dataset
        self.base, self.index = dataset, None
        while isinstance(self.base, Subset):
            sub = torch.as_tensor(self.base.indices, dtype=torch.long)
            self.index = sub if self.index is None else sub[self.index]
            self.base = self.base.dataset

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, key: _Batch):
        if isinstance(self.base, (TensorImageDataset, TextDataset)):
            indices = key.indices if self.index is None else self.index[key.indices]
            return self.base.batch(indices, torch.Generator().manual_seed(key.seed))
        with cpu_seeded(key.seed):
            items = [self.dataset[int(i)] for i in key.indices]
        return torch.utils.data.default_collate(items)


def _no_collate(batch):
    return batch


def make_loader(dataset: Dataset, batch_size: int, shuffle=False, seed=0, distributed=False,
                num_workers=0, drop_last=False) -> DataLoader:
    """A DataLoader of (images, labels) batches, reproducible from (seed, epoch) alone.

    In-memory datasets (and Subsets of them) are fetched and augmented a batch at a time.
    distributed=True shards with DistributedSampler (rank/world from torch.distributed when
    initialised, else a single replica). The loader's `sampler` is an EpochBatchSampler and
    its `batch_size` attribute is None; call set_epoch(loader, epoch) before each epoch.
    """
    if batch_size < 1:
        raise DataError(f"batch size must be at least 1, got {batch_size}")
    sampler = EpochBatchSampler(dataset, int(batch_size), shuffle, int(seed), distributed, drop_last)
    return DataLoader(_BatchView(dataset), batch_size=None, sampler=sampler, num_workers=num_workers,
                      collate_fn=_no_collate, generator=torch.Generator().manual_seed(int(seed)))


def set_epoch(loader: DataLoader, epoch: int) -> None:
    """Make the next pass over loader the given epoch's (shuffling, sharding, augmentation)."""
    for sampler in (getattr(loader, "sampler", None), getattr(loader, "batch_sampler", None)):
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)
