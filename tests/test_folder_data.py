"""Tests of "bring your own" datasets: ``folder:PATH`` image folders and ``register_dataset``."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from kdtutor.data import (
    ArrayDataset,
    dataset_info,
    list_datasets,
    load_dataset,
    register_dataset,
    registry,
    unregister_dataset,
)
from kdtutor.errors import DataFormatError, DataNotFoundError, KDTutorError, UnknownNameError

CLASSES = ("cat", "dog", "eel")
SIZES = ((20, 30), (40, 40), (7, 9), (64, 48))  # (width, height) of the k-th image of a class


def _colour(split: str, label: int, k: int) -> tuple[int, int, int]:
    """A distinct constant colour per file (resizing a constant image keeps it exactly)."""
    return (40 * label + 10 * k + (5 if split == "test" else 0), 200 - 30 * k, 17 * label)


def _grey(split: str, label: int, k: int) -> int:
    return 30 * label + 7 * k + (3 if split == "test" else 0)


def make_folder(
    root: Path,
    classes: tuple[str, ...] = CLASSES,
    per_class: dict[str, int] | None = None,
    mode: str = "RGB",
) -> Path:
    """``root/{train,test}/<class>/<k>.png``: constant images of the sizes in SIZES."""
    per_class = per_class or {"train": 4, "test": 2}
    for split, n in per_class.items():
        for label, name in enumerate(classes):
            folder = root / split / name
            folder.mkdir(parents=True)
            for k in range(n):
                size = SIZES[k % len(SIZES)]
                value = _colour(split, label, k) if mode == "RGB" else _grey(split, label, k)
                Image.new(mode, size, value).save(folder / f"{k:03d}.png")
    return root


@pytest.fixture(autouse=True)
def _forget_registrations() -> Iterator[None]:
    """Unregister whatever a test registered, so the registry stays as it was."""
    before = set(list_datasets())
    yield
    for name in set(list_datasets()) - before:
        unregister_dataset(name)


# -- folder:PATH --------------------------------------------------------------------------------


def test_rgb_folder_labels_order_resizing_and_normalisation(tmp_path: Path):
    root = make_folder(tmp_path / "pets")
    (root / "train" / ".ipynb_checkpoints").mkdir()  # hidden folders are not classes
    (root / "train" / "cat" / "notes.txt").write_text("not an image")  # nor other files
    name = f"folder:{root}"
    train, test = load_dataset(name, "train"), load_dataset(name, "test")

    assert train.name == test.name == f"folder:{root.resolve()}"
    assert train.classes == test.classes == list(CLASSES)
    assert train.images.shape == (12, 3, 32, 32) and train.images.dtype == torch.uint8
    assert test.images.shape == (6, 3, 32, 32)
    # interleaved by class: the k-th image of every class before the (k+1)-th of any
    assert train.targets.tolist() == [0, 1, 2] * 4 and test.targets.tolist() == [0, 1, 2] * 2
    for split, data in (("train", train), ("test", test)):
        for i in range(len(data)):
            label, k = i % 3, i // 3
            expected = torch.tensor(_colour(split, label, k), dtype=torch.uint8).view(3, 1, 1)
            assert torch.equal(data.images[i], expected.expand(3, 32, 32)), (split, i)

    # both splits use the train split's statistics
    colours = np.array([_colour("train", i % 3, i // 3) for i in range(12)]) / 255.0
    np.testing.assert_allclose(train.mean, colours.mean(axis=0), atol=1e-9)
    np.testing.assert_allclose(train.std, colours.std(axis=0), atol=1e-9)
    assert test.mean == train.mean and test.std == train.std
    x, _ = train[0]
    np.testing.assert_allclose(
        x[:, 0, 0].numpy(), (colours[0] - colours.mean(axis=0)) / colours.std(axis=0), rtol=1e-5
    )

    assert load_dataset(name, "train") is train  # cached
    small = load_dataset(name, "train", size=6)
    assert small.class_counts() == [2, 2, 2] and small.mean == train.mean
    sixteen = load_dataset(name, "test", image_size=16)
    assert sixteen.images.shape == (6, 3, 16, 16)
    assert torch.equal(sixteen.images[:, :, 0, 0], test.images[:, :, 0, 0])
    with pytest.raises(KDTutorError, match="at most 6"):
        load_dataset(name, "test", size=7)
    with pytest.raises(TypeError, match="image_size"):
        load_dataset(name, "test", noise=0.1)
    with pytest.raises(ValueError, match="image_size"):
        load_dataset(name, "test", image_size=0)


def test_resizing_stretches_the_whole_image(tmp_path: Path):
    root = make_folder(tmp_path / "d", classes=("a", "b"), per_class={"train": 1, "test": 1})
    half = np.zeros((10, 40, 3), dtype=np.uint8)  # 40 wide, 10 high: left black, right white
    half[:, 20:] = 255
    Image.fromarray(half).save(root / "train" / "a" / "000.png")
    train = load_dataset(f"folder:{root}", "train", image_size=8)
    image = train.images[0]
    assert image.shape == (3, 8, 8)
    assert (image[:, :, :3] == 0).all() and (image[:, :, 5:] == 255).all()  # not cropped


def test_greyscale_folders_keep_one_channel(tmp_path: Path):
    root = make_folder(tmp_path / "grey", mode="L")
    info = dataset_info(f"folder:{root}")
    assert (info.num_classes, info.in_channels, info.image_size, info.offline) == (3, 1, 32, True)
    assert info.sizes == (12, 6) and info.name == f"folder:{root.resolve()}"
    train = load_dataset(f"folder:{root}", "train")
    assert train.images.shape == (12, 1, 32, 32)
    assert train.images[:, 0, 5, 5].tolist() == [_grey("train", i % 3, i // 3) for i in range(12)]

    # 16-bit greyscale is scaled to 8 bits, not clipped
    wide = make_folder(tmp_path / "wide", classes=("a", "b"), per_class={"train": 1, "test": 1})
    for label, value in enumerate((65535, 32896)):
        array = np.full((12, 12), value, dtype=np.uint16)
        Image.fromarray(array).save(wide / "train" / "ab"[label] / "000.png")
        Image.fromarray(array).save(wide / "test" / "ab"[label] / "000.png")
    assert Image.open(wide / "train" / "a" / "000.png").mode.startswith("I")
    assert dataset_info(f"folder:{wide}").in_channels == 1
    assert load_dataset(f"folder:{wide}", "test").images[:, 0, 0, 0].tolist() == [255, 128]


def test_one_colour_image_makes_the_folder_rgb(tmp_path: Path):
    root = make_folder(tmp_path / "mixed", mode="L")
    Image.new("RGB", (9, 9), (250, 0, 0)).save(root / "test" / "dog" / "000.png")
    assert dataset_info(f"folder:{root}").in_channels == 3
    train, test = load_dataset(f"folder:{root}", "train"), load_dataset(f"folder:{root}", "test")
    assert train.images.shape == (12, 3, 32, 32)
    grey = _grey("train", 0, 0)
    assert train.images[0, :, 3, 3].tolist() == [grey, grey, grey]  # grey replicated
    assert test.images[1, :, 3, 3].tolist() == [250, 0, 0]  # test/dog/000.png


def test_a_corrupt_file_is_named(tmp_path: Path):
    root = make_folder(tmp_path / "bad")
    bad = root / "train" / "dog" / "002.png"
    bad.write_bytes(b"this is not a png at all" * 10)
    for call in (lambda: dataset_info(f"folder:{root}"), lambda: load_dataset(f"folder:{root}")):
        with pytest.raises(DataFormatError) as info:
            call()
        assert str(bad) in str(info.value) and "corrupt" in str(info.value)
        assert "holds none" not in str(info.value)


def test_a_truncated_file_is_named_when_decoded(tmp_path: Path):
    root = make_folder(tmp_path / "cut")
    cut = root / "test" / "eel" / "001.png"
    noise = np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8)
    Image.fromarray(noise).save(cut)
    cut.write_bytes(cut.read_bytes()[:300])  # the header reads, the pixels do not
    assert dataset_info(f"folder:{root}").sizes == (12, 6)  # headers only
    with pytest.raises(DataFormatError, match="cannot read the image file") as info:
        load_dataset(f"folder:{root}", "train")  # decodes both splits
    assert str(cut) in str(info.value)
    assert isinstance(info.value, KDTutorError)


def test_missing_split_folders_explain_the_layout(tmp_path: Path):
    with pytest.raises(DataNotFoundError, match="does not exist") as info:
        load_dataset(f"folder:{tmp_path / 'nowhere'}")
    assert "/train/<class>/<image>" in str(info.value)

    flat = tmp_path / "flat"  # classes directly under PATH, no split folders
    for name in CLASSES:
        (flat / name).mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(flat / name / "0.png")
    with pytest.raises(DataNotFoundError) as info:
        dataset_info(f"folder:{flat}")
    message = str(info.value)
    assert "no train/ and no test/ subfolder" in message
    assert "cat, dog, eel" in message and "move them into train/ and test/" in message
    assert f"{flat}/test/<class>/<image>" in message

    only_train = make_folder(tmp_path / "half", per_class={"train": 2})
    with pytest.raises(DataNotFoundError, match="has no test/ subfolder"):
        load_dataset(f"folder:{only_train}", "train")

    with pytest.raises(DataNotFoundError, match="needs a path"):
        load_dataset("folder:")


def test_class_folders_must_match_between_splits(tmp_path: Path):
    root = make_folder(tmp_path / "m", per_class={"train": 2})
    make_folder(root, classes=("cat", "dog", "fox"), per_class={"test": 2})
    with pytest.raises(DataFormatError) as info:
        load_dataset(f"folder:{root}", "test")
    message = str(info.value)
    assert f"only in {root}/train: eel" in message and f"only in {root}/test: fox" in message


def test_empty_folders_are_clear_errors(tmp_path: Path):
    root = make_folder(tmp_path / "e", per_class={"test": 1})
    (root / "train").mkdir()
    with pytest.raises(DataNotFoundError, match="holds no class folders"):
        load_dataset(f"folder:{root}")

    root = make_folder(tmp_path / "f")
    for image in (root / "train" / "eel").iterdir():
        image.unlink()
    (root / "train" / "eel" / "readme.txt").write_text("no images here")
    with pytest.raises(DataNotFoundError) as info:
        dataset_info(f"folder:{root}")
    assert f"{root}/train/eel hold no images" in str(info.value)


# -- register_dataset ---------------------------------------------------------------------------


def _toy(split: str, size: int | None, classes: int = 2, n: int = 10) -> ArrayDataset:
    n = size or n
    images = torch.full((n, 1, 8, 8), 7 if split == "train" else 9, dtype=torch.uint8)
    images[:, 0, 0, 0] = torch.arange(n, dtype=torch.uint8)
    return ArrayDataset(images, torch.arange(n) % classes, ["a", "b", "c"][:classes], "toy", split)


def test_register_dataset_round_trip():
    calls: list[tuple[str, int | None]] = []

    def toy_loader(split: str, size: int | None) -> ArrayDataset:
        calls.append((split, size))
        return _toy(split, size)

    register_dataset(
        "My-Toy", toy_loader, num_classes=2, in_channels=1, image_size=8, description="tiny toy"
    )
    assert "my_toy" in list_datasets()
    assert list_datasets()[: len(registry._INFO)] == list(registry._INFO)  # built-ins first

    small = load_dataset("my-toy", "test", size=4)
    assert calls == [("test", 4)]
    assert small.images.shape == (4, 1, 8, 8) and int(small.images[0, 0, 1, 1]) == 9
    assert load_dataset("MY_TOY", "test", size=4) is small and calls == [("test", 4)]  # cached

    info = dataset_info("my_toy")  # no sizes given: both splits are loaded to count them
    assert (info.name, info.num_classes, info.in_channels, info.image_size) == ("my_toy", 2, 1, 8)
    assert info.sizes == (10, 10) and info.description == "tiny toy" and info.offline
    assert ("train", None) in calls and ("test", None) in calls

    with pytest.raises(ValueError, match=r"already registered .*toy_loader.*replace=True"):
        register_dataset("my_toy", toy_loader, num_classes=2, in_channels=1, image_size=8)
    register_dataset(
        "my_toy",
        lambda split, size: _toy(split, size, n=5),
        num_classes=2,
        in_channels=1,
        image_size=8,
        sizes=(5, 5),
        replace=True,
    )
    assert dataset_info("my_toy").sizes == (5, 5)
    assert len(load_dataset("my_toy", "train")) == 5  # the old cached split is forgotten
    assert load_dataset("my_toy", "train", size=3).images[:, 0, 0, 0].tolist() == [0, 1, 2]

    unregister_dataset("my_toy")
    assert "my_toy" not in list_datasets()
    with pytest.raises(UnknownNameError):
        load_dataset("my_toy")


def test_register_dataset_refuses_bad_names_and_loaders():
    with pytest.raises(ValueError, match="built-in"):
        register_dataset("shapes", _toy, num_classes=2, in_channels=1, image_size=8, replace=True)
    with pytest.raises(ValueError, match="':'"):
        register_dataset("folder:x", _toy, num_classes=2, in_channels=1, image_size=8)
    with pytest.raises(ValueError, match="num_classes"):
        register_dataset("toy_zero", _toy, num_classes=0, in_channels=1, image_size=8)
    with pytest.raises(TypeError, match="callable"):
        register_dataset("toy_none", None, num_classes=2, in_channels=1, image_size=8)

    def returns_a_list(split, size):
        return [1, 2, 3]

    register_dataset("toy_list", returns_a_list, num_classes=2, in_channels=1, image_size=8)
    with pytest.raises(DataFormatError, match=r"returns_a_list.*returned a list"):
        load_dataset("toy_list")

    def three_classes(split, size):
        return _toy(split, size, classes=3)

    register_dataset("toy_three", three_classes, num_classes=2, in_channels=1, image_size=8)
    with pytest.raises(DataFormatError) as info:
        load_dataset("toy_three", "train")
    assert "three_classes" in str(info.value) and "3 classes" in str(info.value)
    assert "num_classes=2" in str(info.value)

    register_dataset("toy_big", _toy, num_classes=2, in_channels=3, image_size=16)
    with pytest.raises(DataFormatError, match=r"1 channels.*in_channels=3.*8x8.*image_size=16"):
        load_dataset("toy_big", "test")

    register_dataset("toy_short", lambda s, n: _toy(s, None), num_classes=2, in_channels=1, image_size=8)  # fmt: skip
    with pytest.raises(KDTutorError, match="at most 10"):
        load_dataset("toy_short", size=11)


# -- command line ------------------------------------------------------------------------------


def test_registered_dataset_is_listed_by_the_cli(capsys: pytest.CaptureFixture[str]):
    from kdtutor.cli import main

    register_dataset(
        "toy_listed", _toy, num_classes=2, in_channels=1, image_size=8, sizes=(10, 10),
        description="listed by kdtutor datasets",
    )  # fmt: skip
    assert main(["datasets"]) == 0
    lines = capsys.readouterr().out.splitlines()
    line = next(text for text in lines if text.startswith("toy_listed"))
    assert "2 classes" in line and "1x8x8" in line and "listed by kdtutor datasets" in line


def test_cli_distils_on_a_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
):
    from kdtutor.cli import main

    monkeypatch.setenv("KDTUTOR_CACHE", str(tmp_path / "cache"))
    root = make_folder(tmp_path / "pets", mode="L")
    out = tmp_path / "r.json"
    argv = ["distill", "--dataset", f"folder:{root}", "--student", "cnn_tiny", "--method",
            "scratch", "--epochs", "1", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0, capsys.readouterr().err
    assert "scratch" in capsys.readouterr().out
    assert json.loads(out.read_text())["dataset"] == f"folder:{root}"
