"""Tests of kdtutor.data: shapes generator, datasets, loader, transforms, caches, registry."""

from __future__ import annotations

import hashlib
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from kdtutor.data import (
    ArrayDataset,
    BatchLoader,
    Identity,
    RandomCropFlip,
    ShapesConfig,
    build_augment,
    cache_dir,
    dataset_info,
    list_datasets,
    load_dataset,
    make_shapes,
    real,
    registry,
    shapes,
    shapes_dataset,
)
from kdtutor.errors import DataNotFoundError, UnknownNameError


@pytest.fixture(scope="module", autouse=True)
def _private_cache(tmp_path_factory: pytest.TempPathFactory):
    """Keep every disk cache of this module in a temporary folder, never in ~/.cache."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("KDTUTOR_CACHE", str(tmp_path_factory.mktemp("kdtutor_cache")))
        yield


def _row_hashes(images: np.ndarray) -> set[bytes]:
    return {hashlib.sha256(row.tobytes()).digest() for row in images}


# -- shapes generator ------------------------------------------------------------------------


def test_make_shapes_shapes_dtypes_ranges():
    images, labels = make_shapes(60, seed=3)
    assert images.shape == (60, 3, 32, 32) and images.dtype == np.uint8
    assert labels.dtype == np.int64
    np.testing.assert_array_equal(labels, np.arange(60) % 10)
    assert images.min() < 40 and images.max() > 215  # uses most of the range
    # every image has a visible shape: pixel values vary well beyond the noise
    assert (images.reshape(60, -1).std(axis=1) > 8).all()


def test_make_shapes_is_a_function_of_seed_and_index():
    full, full_labels = make_shapes(20, seed=7)
    part, part_labels = make_shapes(10, seed=7, start=5)
    np.testing.assert_array_equal(part, full[5:15])
    np.testing.assert_array_equal(part_labels, full_labels[5:15])
    np.testing.assert_array_equal(make_shapes(20, seed=7)[0], full)  # repeatable
    # across the internal chunk boundary, too
    big = make_shapes(shapes._CHUNK + 20, seed=7)[0]
    np.testing.assert_array_equal(make_shapes(30, seed=7, start=shapes._CHUNK - 10)[0], big[-30:])


def test_make_shapes_different_seeds_differ():
    a = make_shapes(40, seed=0)[0]
    b = make_shapes(40, seed=1)[0]
    assert not any((a[i] == b[i]).all() for i in range(40))


def test_make_shapes_knobs():
    with pytest.raises(UnknownNameError, match="noise_std_range"):
        make_shapes(2, noise_std=(0.0, 0.0))
    with pytest.raises(ValueError):
        ShapesConfig(contrast_range=(0.5, 0.1))
    with pytest.raises(ValueError):
        ShapesConfig(aspect_split=1.01)  # the overlap band would leave [1, aspect_max]
    clean, _ = make_shapes(20, noise_std_range=(0.0, 0.0), texture_strength=0.0, shading=0.0)
    # without noise and texture, the background is flat: the 4 corners share one colour
    corners = clean[:, :, [0, 0, -1, -1], [0, -1, 0, -1]].astype(int)
    assert (np.ptp(corners, axis=2) <= 1).all()
    cfg = ShapesConfig()
    ranges = cfg.attribute_ranges()
    assert ranges["circle"][1] > ranges["ellipse"][0]  # the pair ranges overlap
    assert ranges["plus"][1] > ranges["x_cross"][0]
    assert 0 < cfg.label_noise()["mean"] < 0.06
    assert ShapesConfig(overlap=0.0).label_noise()["mean"] == 0.0
    assert ShapesConfig(overlap=0.0).key() != cfg.key()


def test_shapes_dataset_balance_and_normalisation(tiny_data):
    train, test = tiny_data  # shapes_dataset through load_dataset, 200 and 100 images
    assert train.class_counts() == [20] * 10 and test.class_counts() == [10] * 10
    assert train.classes == shapes.CLASSES and train.num_classes == 10
    assert (train.in_channels, train.image_size) == (3, 32)
    assert train.mean == test.mean and train.std == test.std
    x, y = train.batch(torch.arange(200))
    assert x.dtype == torch.float32 and y.dtype == torch.int64
    assert x.mean().abs() < 0.2 and 0.8 < x.std() < 1.2
    with pytest.raises(ValueError, match="split"):
        shapes_dataset("val")


def test_shapes_train_test_disjoint():
    train = make_shapes(1000)[0]
    test = make_shapes(1000, start=shapes.TEST_START)[0]
    assert not _row_hashes(train) & _row_hashes(test)
    assert len(_row_hashes(train)) == 1000


# -- disk cache --------------------------------------------------------------------------------


def _clear_memory() -> None:
    registry.clear_cache()


def test_shapes_disk_cache_round_trip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("KDTUTOR_CACHE", str(tmp_path))
    assert cache_dir() == tmp_path
    _clear_memory()
    first = shapes_dataset("train", size=30, seed=5, cache=True)
    files = sorted((tmp_path / "shapes").glob("*.npz"))
    assert files and not list((tmp_path / "shapes").glob(".*.tmp"))  # atomic: no leftovers
    _clear_memory()

    def fail(*args, **kwargs):
        raise AssertionError("regenerated instead of read from the disk cache")

    monkeypatch.setattr(shapes, "make_shapes", fail)
    second = shapes_dataset("train", size=30, seed=5, cache=True)
    assert torch.equal(first.images, second.images) and torch.equal(first.targets, second.targets)
    assert first.fingerprint() == second.fingerprint()


def test_shapes_corrupt_cache_file_is_regenerated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("KDTUTOR_CACHE", str(tmp_path))
    _clear_memory()
    first = shapes_dataset("test", size=40, seed=2, cache=True)
    key = shapes._cache_key("images", 40, 2, shapes.TEST_START, ShapesConfig())
    path = tmp_path / "shapes" / f"shapes-v{shapes.GENERATOR_VERSION}-{key[:20]}.npz"
    assert path.is_file()
    path.write_bytes(b"not a zip file at all")
    _clear_memory()
    with pytest.warns(RuntimeWarning, match="unreadable cache file"):
        second = shapes_dataset("test", size=40, seed=2, cache=True)
    assert torch.equal(first.images, second.images)
    with np.load(path) as data:  # rewritten, readable again
        assert data["images"].shape == (40, 3, 32, 32)


# -- ArrayDataset ------------------------------------------------------------------------------


def _tiny(n: int = 12, split: str = "train") -> ArrayDataset:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 3, 4, 4), generator=g, dtype=torch.uint8)
    return ArrayDataset(images, torch.arange(n) % 3, ["a", "b", "c"], "tiny", split)


def test_array_dataset_reading_and_fingerprint():
    ds = _tiny()
    x0, y0 = ds[5]
    x, y = ds.batch(torch.tensor([5, 1]))
    assert torch.allclose(x[0], x0) and int(y[0]) == y0 == 2
    raw = ds.images.double() / 255
    std = raw.std(dim=(0, 2, 3), unbiased=False)
    assert torch.allclose(torch.tensor(ds.std, dtype=torch.float64), std, atol=1e-6)
    assert torch.allclose(ds.denormalize(x0), ds.images[5].float() / 255, atol=1e-5)
    fp = ds.fingerprint()
    assert len(fp) == 64 and ds.fingerprint() == fp
    assert _tiny().fingerprint() == fp
    assert _tiny(split="test").fingerprint() != fp
    sub = ds.subset(4)
    assert len(sub) == 4 and sub.mean == ds.mean and sub.fingerprint() != fp
    picked = ds.subset(torch.tensor([3, 0]))
    assert torch.equal(picked.images, ds.images[[3, 0]])
    with pytest.raises(ValueError):
        ArrayDataset(ds.images.float(), ds.targets, ds.classes, "bad")
    with pytest.raises(ValueError):
        ArrayDataset(ds.images, ds.targets + 5, ds.classes, "bad")


# -- loader ------------------------------------------------------------------------------------


def test_loader_covers_every_index_once():
    ds = _tiny(50)
    loader = BatchLoader(ds, batch_size=7, shuffle=True, seed=1)
    assert len(loader) == 8
    seen = torch.cat([b.index for b in loader.set_epoch(0)])
    assert sorted(seen.tolist()) == list(range(50))
    for batch in loader:
        x, y = ds.batch(batch.index)
        assert torch.equal(batch.x, x) and torch.equal(batch.y, y)
    dropping = BatchLoader(ds, batch_size=7, shuffle=True, drop_last=True)
    batches = list(dropping)
    assert len(dropping) == len(batches) == 7 and all(len(b.index) == 7 for b in batches)
    assert len(set(torch.cat([b.index for b in batches]).tolist())) == 49
    plain = torch.cat([b.index for b in BatchLoader(ds, batch_size=16)])
    assert torch.equal(plain, torch.arange(50))
    for bad in (0, -1, 2.5):
        with pytest.raises(ValueError, match="batch_size"):
            BatchLoader(ds, batch_size=bad)


def test_loader_deterministic_per_seed_and_epoch_and_global_rng_free():
    ds = _tiny(40)

    def order(seed: int, epoch: int, augment=None) -> tuple[torch.Tensor, torch.Tensor]:
        loader = BatchLoader(ds, batch_size=8, shuffle=True, seed=seed, augment=augment)
        batches = list(loader.set_epoch(epoch))
        return torch.cat([b.index for b in batches]), torch.cat([b.x for b in batches])

    torch.manual_seed(0)
    a, xa = order(3, 0, "crop_flip")
    torch.manual_seed(12345)
    torch.rand(100)
    b, xb = order(3, 0, "crop_flip")
    assert torch.equal(a, b) and torch.equal(xa, xb)
    assert not torch.equal(a, order(3, 1)[0])  # a new order each epoch
    assert not torch.equal(a, order(4, 0)[0])  # and each seed
    assert not torch.equal(xa, order(3, 0)[1])  # the augmentation changed the images
    loader = BatchLoader(ds, batch_size=8, shuffle=True, seed=3)
    loader.set_epoch(5)
    assert torch.equal(loader.order(), order(3, 5)[0])


# -- transforms --------------------------------------------------------------------------------


def test_random_crop_flip():
    x = torch.randn(16, 3, 8, 8)
    t = RandomCropFlip()
    assert not t.deterministic and t.describe() == "RandomCropFlip(padding=4,flip=True)"
    out1 = t(x, torch.Generator().manual_seed(0))
    out2 = t(x, torch.Generator().manual_seed(0))
    assert out1.shape == x.shape and torch.equal(out1, out2)
    assert not torch.equal(out1, t(x, torch.Generator().manual_seed(1)))
    with pytest.raises(ValueError, match="Generator"):
        t(x)

    flip_only = RandomCropFlip(padding=0, flip=True)
    out = flip_only(x, torch.Generator().manual_seed(4))
    _, _, flipped = flip_only.sample(16, torch.Generator().manual_seed(4))
    assert 0 < int(flipped.sum()) < 16
    for i in range(16):
        expected = x[i, :, :, torch.arange(7, -1, -1)] if flipped[i] else x[i]  # by hand
        assert torch.equal(out[i], expected)

    crop = RandomCropFlip(padding=2, flip=False)
    zeros = torch.zeros(16, dtype=torch.int64)
    no_flip = torch.zeros(16, dtype=torch.bool)
    assert torch.equal(crop.apply(x, zeros + 2, zeros + 2, no_flip), x)  # centred crop
    shifted = crop.apply(x, zeros, zeros, no_flip)  # top-left crop: image moves down-right
    assert torch.equal(shifted[:, :, 2:, 2:], x[:, :, :-2, :-2])
    assert (shifted[:, :, :2] == 0).all() and (shifted[:, :, :, :2] == 0).all()


def test_build_augment():
    assert isinstance(build_augment(None), Identity) and build_augment("none").deterministic
    assert build_augment("crop_flip").describe() == "RandomCropFlip(padding=4,flip=True)"
    assert build_augment("flip").describe() == "RandomCropFlip(padding=0,flip=True)"
    assert Identity().describe() == "Identity()"
    with pytest.raises(UnknownNameError, match="crop_flip"):
        build_augment("crop_flp")


# -- real datasets -----------------------------------------------------------------------------


def test_mnist5k_split():
    train = load_dataset("mnist5k", "train")
    test = load_dataset("mnist5k", "test")
    assert (len(train), len(test)) == (4000, 1000)
    assert train.class_counts() == [400] * 10 and test.class_counts() == [100] * 10
    assert train.images.shape[1:] == (1, 28, 28) and train.images.dtype == torch.uint8
    assert train.mean == test.mean
    assert load_dataset("mnist5k", "train") is train  # cached
    assert load_dataset("mnist5k", size=50).class_counts() == [5] * 10  # stratified prefix
    labels = real._mnist5k_arrays()[1]
    tr, te = real._stratified_split(labels, [100] * 10, real.SPLIT_SEED)
    assert not set(tr.tolist()) & set(te.tolist()) and len(tr) + len(te) == 5000


def test_digits_shapes():
    train = load_dataset("digits", "train")
    test = load_dataset("digits", "test")
    assert (len(train), len(test)) == (1438, 359)
    assert train.images.shape[1:] == (1, 8, 8) and int(train.images.max()) == 255
    assert dataset_info("digits").image_size == 8


def test_cifar10_missing_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    with pytest.raises(DataNotFoundError) as info:
        load_dataset("cifar10", root=tmp_path)
    message = str(info.value)
    assert "KDTUTOR_DATA" in message and "cifar-10-batches-py" in message
    assert "data_batch_1" in message and str(tmp_path) in message
    assert isinstance(info.value, FileNotFoundError)
    monkeypatch.delenv("KDTUTOR_DATA", raising=False)
    with pytest.raises(DataNotFoundError, match="KDTUTOR_DATA is not set"):
        load_dataset("cifar100", "test")


def _write_idx(path: Path, array: np.ndarray) -> None:
    code = 0x08  # unsigned byte
    header = struct.pack(">HBB", 0, code, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def test_folder_datasets_from_local_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 30), ("t10k", 10)):
        _write_idx(raw / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)))
        _write_idx(raw / f"{prefix}-labels-idx1-ubyte", np.arange(n) % 10)
    monkeypatch.setenv("KDTUTOR_DATA", str(tmp_path))
    test = load_dataset("mnist", "test")
    assert test.images.shape == (10, 1, 28, 28) and test.targets.tolist() == list(range(10))
    assert test.mean == (0.1307,)

    import torchvision.datasets.cifar as tv_cifar

    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    data = rng.integers(0, 256, (4, 3072)).astype(np.uint8)
    for name in [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"]:
        (folder / name).write_bytes(pickle.dumps({"data": data, "labels": [0, 1, 2, 3]}))
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": list("abcdefghij")}))
    with pytest.raises(DataNotFoundError, match="corrupt"):  # md5 sums do not match
        load_dataset("cifar10", "test")
    monkeypatch.setattr(tv_cifar, "check_integrity", lambda *args, **kwargs: True)
    cifar = load_dataset("cifar10", "test", root=tmp_path)
    assert cifar.images.shape == (4, 3, 32, 32)
    assert torch.equal(cifar.images[1], torch.from_numpy(data[1].reshape(3, 32, 32)))
    assert cifar.classes == list("abcdefghij")


# -- registry ----------------------------------------------------------------------------------


def test_registry():
    assert {"shapes", "mnist5k", "digits", "cifar10", "cifar100", "mnist", "fashion_mnist"} <= set(
        list_datasets()
    )
    info = dataset_info("cifar100")
    assert (info.num_classes, info.in_channels, info.image_size, info.offline) == (
        100,
        3,
        32,
        False,
    )
    assert dataset_info("shapes").offline and dataset_info("Fashion-MNIST").name == "fashion_mnist"
    with pytest.raises(UnknownNameError, match="Did you mean 'mnist5k'"):
        load_dataset("mnist5")
    with pytest.raises(UnknownNameError, match="shapes"):
        dataset_info("shape")
    with pytest.raises(ValueError, match="split"):
        load_dataset("digits", "validation")
    with pytest.raises(ValueError, match="size"):
        load_dataset("digits", size=0)
    with pytest.raises(TypeError, match="no options"):
        load_dataset("digits", noise=0.1)
    small = load_dataset("shapes", size=30, cache=False)
    assert len(small) == 30 and load_dataset("shapes", size=30, cache=False) is small
    other = load_dataset("shapes", size=30, seed=1, cache=False)
    assert not torch.equal(small.images, other.images)
