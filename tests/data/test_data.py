"""Tests of spikebridge.data on tiny IDX files, CIFAR pickles and ImageFolder trees."""
import gzip
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import Subset

from spikebridge import data
from spikebridge.errors import DataError

FMNIST = data.dataset_info("fashion-mnist")


def write_idx(path: Path, array: np.ndarray):
    """Write a uint8 array as an IDX file (gzipped when path ends in .gz)."""
    payload = bytes([0, 0, 8, array.ndim]) + np.array(array.shape, ">u4").tobytes() + array.astype(np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    with (gzip.open if path.suffix == ".gz" else open)(path, "wb") as f:
        f.write(payload)


def make_idx(directory: Path, n=20, gz=True, split="train", seed=0):
    """Tiny MNIST-like split whose ink lies inside the central 20x20 (so 4-pixel crops keep it)."""
    rng = np.random.default_rng(seed)
    images = np.zeros((n, 28, 28), np.uint8)
    images[:, 4:24, 4:24] = rng.integers(1, 256, (n, 20, 20))
    labels = np.arange(n) % 10
    prefix = "train" if split == "train" else "t10k"
    suffix = ".gz" if gz else ""
    write_idx(directory / f"{prefix}-images-idx3-ubyte{suffix}", images)
    write_idx(directory / f"{prefix}-labels-idx1-ubyte{suffix}", labels)
    return images, labels


@pytest.fixture
def offline(tmp_path, monkeypatch):
    """No system datasets, an empty cache and no network."""
    monkeypatch.setattr(data, "SYSTEM_ROOT", tmp_path / "no-system")
    monkeypatch.setattr(data, "CACHE_ROOT", tmp_path / "no-cache")
    monkeypatch.setattr(data, "_download", lambda download, dest: "URLError: offline")


def normalised(pixels, info=FMNIST):
    mean = torch.tensor(info.mean).view(-1, 1, 1)
    std = torch.tensor(info.std).view(-1, 1, 1)
    return (torch.as_tensor(pixels, dtype=torch.float32) / 255 - mean) / std


def test_names_and_info():
    assert data.DATASETS[0] == "fashion-mnist"
    assert set(data.DATASETS) == {"fashion-mnist", "mnist", "cifar10", "cifar100", "imagenet", "digits"}
    assert data.dataset_info("cifar100").num_classes == 100
    assert data.dataset_info("CIFAR10").in_channels == 3
    assert data.dataset_info("imagenet").image_size == 224
    assert (FMNIST.in_channels, FMNIST.image_size, FMNIST.num_classes) == (1, 28, 10)
    with pytest.raises(Exception):
        FMNIST.num_classes = 3


def test_unknown_name():
    with pytest.raises(DataError, match="valid names: fashion-mnist, mnist") as err:
        data.get_dataset("svhn")
    assert "\n" not in str(err.value)
    with pytest.raises(DataError):
        data.dataset_info("svhn")


@pytest.mark.parametrize("layout", ["", "fashion-mnist", "fashion-mnist/raw", "FashionMNIST/raw"])
@pytest.mark.parametrize("gz", [True, False])
def test_idx_layouts(tmp_path, offline, layout, gz):
    images, labels = make_idx(tmp_path / "root" / layout, gz=gz, split="test")
    ds = data.get_dataset("fashion-mnist", "test", root=tmp_path / "root")
    assert len(ds) == 20
    x, y = ds[3]
    assert x.shape == (1, 28, 28) and x.dtype == torch.float32
    assert isinstance(y, int) and y == labels[3]
    torch.testing.assert_close(x, normalised(images[3][None]))


def test_mnist_and_pad_to(tmp_path, offline):
    images, _ = make_idx(tmp_path / "MNIST" / "raw")
    ds = data.get_dataset("mnist", root=tmp_path, pad_to=32)
    x, _ = ds[0]
    assert x.shape == (1, 32, 32)
    info = data.dataset_info("mnist")
    torch.testing.assert_close(x[:, 2:30, 2:30], normalised(images[0][None], info))
    border = torch.ones(1, 32, 32, dtype=torch.bool)
    border[:, 2:30, 2:30] = False
    torch.testing.assert_close(x[border], torch.full((int(border.sum()),), -info.mean[0] / info.std[0]))


def test_augment_keeps_shape_and_content(tmp_path, offline):
    images, _ = make_idx(tmp_path)
    ds = data.get_dataset("fashion-mnist", root=tmp_path, augment=True, pad_to=32)
    plain = data.get_dataset("fashion-mnist", root=tmp_path, pad_to=32)
    batch, labels = next(iter(data.make_loader(ds, 20)))
    assert batch.shape == (20, 1, 32, 32) and labels.tolist() == list(range(10)) * 2
    moved = 0
    for i in range(20):
        # the ink fits inside every crop, so augmentation only moves and mirrors it
        a, p = batch[i].flatten().sort().values, plain[i][0].flatten().sort().values
        torch.testing.assert_close(a, p)
        moved += not torch.equal(batch[i], plain[i][0])
    assert moved > 10


def test_corrupt_idx(tmp_path, offline):
    make_idx(tmp_path)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(gzip.decompress(path.read_bytes())[:-5]))
    with pytest.raises(DataError, match="truncated or corrupt"):
        data.get_dataset("fashion-mnist", root=tmp_path)


def test_missing_idx_says_how_to_get_it(tmp_path, offline):
    with pytest.raises(DataError) as err:
        data.get_dataset("fashion-mnist")
    message = str(err.value)
    assert "apt-get install dataset-fashion-mnist" in message and "--data-root" in message
    assert "train-images-idx3-ubyte.gz" in message and "offline" in message and "\n" not in message
    with pytest.raises(DataError, match="--data-root"):
        data.get_dataset("mnist", "test")


def test_a_given_data_root_without_data_is_an_error_not_a_fall_back(tmp_path, monkeypatch):
    # the system dataset is installed (CI installs Fashion-MNIST), but a given root is the only place searched
    monkeypatch.setattr(data, "_download", lambda download, dest: pytest.fail("no download into a given root"))
    for root in (tmp_path, tmp_path / "missing"):
        for name in ("fashion-mnist", "cifar10"):
            with pytest.raises(DataError, match=f"{root}") as err:
                data.get_dataset(name, root=root)
            assert "\n" not in str(err.value)


def test_bad_options(tmp_path, offline):
    make_idx(tmp_path)
    with pytest.raises(DataError, match="cifar10/cifar100 only"):
        data.get_dataset("fashion-mnist", root=tmp_path, cutout=True)
    with pytest.raises(DataError, match="pad_to"):
        data.get_dataset("fashion-mnist", root=tmp_path, pad_to=20)
    with pytest.raises(DataError, match="split"):
        data.get_dataset("fashion-mnist", "validation", root=tmp_path)
    with pytest.raises(DataError, match="at least 1"):
        data.make_loader(data.get_dataset("fashion-mnist", root=tmp_path), 0)


def make_cifar(root: Path, name: str, n=6):
    """Tiny CIFAR-10/100 pickle batches; image i has every pixel equal to i, label i."""
    folder, train, test, label_key = data._CIFAR_FILES[name]
    for k, file in enumerate(train + test):
        values = np.arange(n) + 10 * k
        batch = {"data": np.repeat(values[:, None], 3072, axis=1).astype(np.uint8),
                 label_key: [int(v) % 100 for v in values], "batch_label": file}
        (root / folder).mkdir(parents=True, exist_ok=True)
        with open(root / folder / file, "wb") as f:
            pickle.dump(batch, f)


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar(tmp_path, offline, name):
    make_cifar(tmp_path, name)
    train = data.get_dataset(name, "train", root=tmp_path)
    test = data.get_dataset(name, "test", root=tmp_path)
    n_train = 30 if name == "cifar10" else 6
    assert (len(train), len(test)) == (n_train, 6)
    x, y = test[2]
    info = data.dataset_info(name)
    expected_label = 52 if name == "cifar10" else 12
    assert x.shape == (3, 32, 32) and y == expected_label
    torch.testing.assert_close(x, normalised(np.full((3, 32, 32), expected_label), info))
    augmented = data.get_dataset(name, "train", root=tmp_path, augment=True, cutout=True, autoaugment=True)
    batch, _ = next(iter(data.make_loader(augmented, 4, shuffle=True)))
    assert batch.shape == (4, 3, 32, 32)


def test_cutout_is_one_clipped_square(tmp_path, offline):
    make_cifar(tmp_path, "cifar10", n=20)
    ds = data.get_dataset("cifar10", "test", root=tmp_path, cutout=True)
    batch, _ = next(iter(data.make_loader(ds, 20)))
    for image in batch:
        hole = (image == 0).all(0)
        rows, cols = hole.any(1).nonzero().flatten(), hole.any(0).nonzero().flatten()
        assert 8 <= len(rows) <= 16 and 8 <= len(cols) <= 16
        assert hole.sum() == len(rows) * len(cols)
        assert hole[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1].all()


def test_missing_cifar(tmp_path, offline):
    with pytest.raises(DataError, match="--data-root DIR containing cifar-100-python/"):
        data.get_dataset("cifar100", root=tmp_path)


def make_imagefolder(root: Path):
    for split in ("train", "val"):
        for k, cls in enumerate(("cat", "dog")):
            (root / split / cls).mkdir(parents=True)
            for i in range(3):
                image = Image.new("RGB", (40 + 10 * i, 30), (80 * k, 20 * i, 100))
                image.save(root / split / cls / f"{i}.JPEG", "JPEG")


def test_imagenet(tmp_path):
    make_imagefolder(tmp_path)
    val = data.get_dataset("imagenet", "test", root=tmp_path)
    x, y = val[4]
    assert x.shape == (3, 224, 224) and y == 1
    train = data.get_dataset("imagenet", "train", root=tmp_path, augment=True)
    loader = data.make_loader(train, 4, shuffle=True, seed=3)
    state = torch.get_rng_state()
    first = [b for b, _ in loader]
    assert torch.equal(torch.get_rng_state(), state)
    second = [b for b, _ in loader]
    assert first[0].shape == (4, 3, 224, 224) and len(first) == 2
    assert all(torch.equal(a, b) for a, b in zip(first, second))
    with pytest.raises(DataError, match="train/<class>/"):
        data.get_dataset("imagenet", root=tmp_path / "nowhere")
    with pytest.raises(DataError, match="--data-root"):
        data.get_dataset("imagenet")


def test_calibration_subset(tmp_path, offline):
    make_idx(tmp_path)
    ds = data.get_dataset("fashion-mnist", root=tmp_path)
    sub = data.calibration_subset(ds, 5)
    assert isinstance(sub, Subset) and len(sub) == 5
    assert all(torch.equal(sub[i][0], ds[i][0]) for i in range(5))
    assert len(data.calibration_subset(ds, 100)) == 20
    with pytest.raises(DataError, match="at least 1"):
        data.calibration_subset(ds, 0)


def epoch_batches(loader, epoch):
    data.set_epoch(loader, epoch)
    return [(x.clone(), y.clone()) for x, y in loader]


def same(a, b):
    return len(a) == len(b) and all(torch.equal(x1, x2) and torch.equal(y1, y2) for (x1, y1), (x2, y2) in zip(a, b))


def test_shuffling_depends_only_on_seed_and_epoch(tmp_path, offline):
    make_idx(tmp_path, n=50)
    ds = data.get_dataset("fashion-mnist", root=tmp_path, augment=True)
    loader = data.make_loader(ds, 8, shuffle=True, seed=7)
    state = torch.get_rng_state()
    run = [epoch_batches(loader, e) for e in range(3)]
    assert torch.equal(torch.get_rng_state(), state)  # no global RNG consumed
    torch.manual_seed(123)  # a "resumed" run in a fresh loader, other global state
    resumed = data.make_loader(ds, 8, shuffle=True, seed=7)
    assert same(epoch_batches(resumed, 2), run[2])
    assert same(epoch_batches(resumed, 0), run[0])
    assert not same(run[0], run[1])
    assert not same(epoch_batches(data.make_loader(ds, 8, shuffle=True, seed=8), 0), run[0])
    assert sorted(torch.cat([y for _, y in run[1]]).tolist()) == sorted(ds.labels.tolist())
    assert len(run[0]) == len(loader) == 7
    assert len(data.make_loader(ds, 8, drop_last=True)) == 6


def test_loader_matches_items(tmp_path, offline):
    make_idx(tmp_path, n=30)
    ds = data.get_dataset("fashion-mnist", root=tmp_path, pad_to=32)
    sub = Subset(Subset(ds, list(range(29, -1, -1))), [0, 5, 7, 9])
    x, y = next(iter(data.make_loader(sub, 4)))
    assert y.dtype == torch.int64 and y.tolist() == [ds[i][1] for i in (29, 24, 22, 20)]
    torch.testing.assert_close(x, torch.stack([ds[i][0] for i in (29, 24, 22, 20)]))


def test_distributed_single_process_and_workers(tmp_path, offline):
    make_idx(tmp_path, n=40)
    ds = data.get_dataset("fashion-mnist", root=tmp_path, augment=True)
    reference = epoch_batches(data.make_loader(ds, 16, shuffle=True, seed=2), 1)
    assert same(epoch_batches(data.make_loader(ds, 16, shuffle=True, seed=2, distributed=True), 1), reference)
    assert same(epoch_batches(data.make_loader(ds, 16, shuffle=True, seed=2, num_workers=2), 1), reference)


def test_debian_fashion_mnist():
    """The Debian package's files (CI installs dataset-fashion-mnist)."""
    ds = data.get_dataset("fashion-mnist", "test")
    assert len(ds) == 10000 and ds.images.shape == (10000, 1, 28, 28)
    assert sorted(set(ds.labels.tolist())) == list(range(10))
    x = torch.stack([ds[i][0] for i in range(500)])
    assert abs(float(x.mean())) < 0.1 and abs(float(x.std()) - 1) < 0.1


def test_digits_fixed_split_upsampled_to_16x16():
    pytest.importorskip("sklearn")
    from sklearn.datasets import load_digits

    train, test = data.get_dataset("digits", "train"), data.get_dataset("digits", "test")
    assert (len(train), len(test)) == (1297, data.DIGITS_TEST)
    assert torch.equal(data.get_dataset("digits", "test").labels, test.labels)  # the split is fixed
    raw = load_digits()
    every = torch.cat([train.images, test.images])
    assert every.shape[1:] == (1, 16, 16) and every.dtype == torch.uint8
    assert torch.equal(every[:, :, ::2, ::2], every[:, :, 1::2, 1::2])  # each pixel repeated 2x2
    originals = {tuple(np.round(im * 255 / 16).astype(np.uint8).ravel()) for im in raw.images}
    assert all(tuple(im[0, ::2, ::2].ravel().tolist()) in originals for im in test.images[:50])
    assert torch.bincount(torch.cat([train.labels, test.labels])).tolist() == np.bincount(raw.target).tolist()
    x, y = data.get_dataset("digits", "train", pad_to=32)[0]
    assert x.shape == (1, 32, 32) and 0 <= y < 10
