"""Your own images: ``load_dataset("folder:PATH", split)`` reads a folder in torchvision's
``ImageFolder`` layout, one subfolder per split and one per class inside it::

    PATH/train/cat/001.png    PATH/test/cat/101.png
    PATH/train/dog/002.jpg    PATH/test/dog/102.jpg

torchvision's :class:`~torchvision.datasets.ImageFolder` finds the classes (the folder names,
sorted) and the images (``.png``, ``.jpg``, ``.jpeg``, ``.bmp``, ``.ppm``, ``.pgm``, ``.tif``,
``.tiff``, ``.webp``, any case, in nested folders too); names starting with ``.`` (such as
``.ipynb_checkpoints`` or macOS's ``._x.png``) are skipped. PIL decodes each image, which is
then resized to ``image_size`` x ``image_size`` pixels (bilinear, aspect ratio not kept) and
held in memory as uint8.

Channels: 1 when every image of both splits is greyscale (PIL modes ``L``, ``1``, ``LA``,
16-bit ``I;16`` scaled to 8 bits ...), otherwise 3 (RGB; alpha is dropped). Normalisation,
as for ``mnist5k`` and ``digits``: the per-channel mean / std of the train split, used by both
splits. Order: the k-th image (sorted by path) of every class comes before the (k+1)-th of any,
so ``size=`` keeps class-balanced prefixes.

The scan and the decoded arrays are kept in memory until :func:`kdtutor.data.clear_cache`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import DataFormatError, DataNotFoundError
from .arrays import ArrayDataset, channel_stats

__all__ = [
    "DEFAULT_IMAGE_SIZE",
    "PREFIX",
    "SPLITS",
    "FolderScan",
    "clear_cache",
    "is_folder_name",
    "load_folder",
    "resolve",
    "scan_folder",
]

#: Prefix of the dataset names read from a folder: ``"folder:PATH"``.
PREFIX = "folder:"

#: Side of the square images when ``image_size`` is not given.
DEFAULT_IMAGE_SIZE = 32

#: Subfolders of PATH, one per split.
SPLITS = ("train", "test")

_SCANS: dict[Path, FolderScan] = {}
_ARRAYS: dict[tuple[Path, int], dict[str, ArrayDataset]] = {}


@dataclass(frozen=True)
class FolderScan:
    """What a folder holds, found without decoding the images.

    Attributes:
        root: The resolved folder (it holds ``train/`` and ``test/``).
        classes: Class names (the class folder names, sorted).
        samples: For each split, ``(file, label)`` pairs in dataset order (interleaved by class).
        in_channels: 1 if every image is greyscale, else 3.
    """

    root: Path
    classes: tuple[str, ...]
    samples: dict[str, tuple[tuple[str, int], ...]]
    in_channels: int

    @property
    def name(self) -> str:
        """Dataset name: ``"folder:<root>"``."""
        return f"{PREFIX}{self.root}"

    @property
    def sizes(self) -> tuple[int, int]:
        """Number of images of the train and test splits."""
        return len(self.samples["train"]), len(self.samples["test"])


def is_folder_name(name: Any) -> bool:
    """Whether a dataset name is a ``folder:PATH`` name (the prefix in any case)."""
    return isinstance(name, str) and name[: len(PREFIX)].lower() == PREFIX


def resolve(name_or_path: str | os.PathLike[str]) -> Path:
    """The absolute folder of a ``"folder:PATH"`` name (or of a plain PATH), ``~`` expanded.

    Raises:
        DataNotFoundError: The name has no path after ``folder:``.
    """
    text = str(name_or_path)
    if is_folder_name(text):
        text = text[len(PREFIX) :]
    if not text.strip():
        raise DataNotFoundError(
            "a folder dataset needs a path: write folder:PATH, where PATH holds train/<class>/ "
            "and test/<class>/ subfolders of images (e.g. folder:~/data/pets)."
        )
    return Path(text).expanduser().resolve()


def _layout(root: Path) -> str:
    return (
        f"A folder dataset must have torchvision's ImageFolder layout with one subfolder per "
        f"split: {root}/train/<class>/<image> and {root}/test/<class>/<image> (for example "
        f"{root}/train/cat/001.png and {root}/test/cat/002.png), the same class folders in both."
    )


def _visible(name: str) -> bool:
    return not name.startswith(".")


def _image_folder(split_dir: Path) -> Any:
    """torchvision's ImageFolder over ``split_dir``, skipping hidden folders and files."""
    from torchvision.datasets import ImageFolder
    from torchvision.datasets.folder import IMG_EXTENSIONS, has_file_allowed_extension

    class _Visible(ImageFolder):
        @staticmethod
        def find_classes(directory: str | os.PathLike[str]) -> tuple[list[str], dict[str, int]]:
            with os.scandir(directory) as entries:
                classes = sorted(e.name for e in entries if e.is_dir() and _visible(e.name))
            if not classes:
                raise DataNotFoundError(
                    f"{directory} holds no class folders. {_layout(split_dir.parent)}"
                )
            return classes, {name: i for i, name in enumerate(classes)}

    def valid(path: str) -> bool:
        return _visible(os.path.basename(path)) and has_file_allowed_extension(path, IMG_EXTENSIONS)

    return _Visible(str(split_dir), is_valid_file=valid, allow_empty=True)


def _interleave(samples: list[tuple[str, int]]) -> tuple[tuple[str, int], ...]:
    """Sort by (rank of the file within its class, class): balanced prefixes."""
    rank: dict[int, int] = {}
    keyed = []
    for path, label in samples:
        keyed.append((rank.get(label, 0), label, path))
        rank[label] = rank.get(label, 0) + 1
    return tuple((path, label) for _, label, path in sorted(keyed))


def _mode(path: str) -> str:
    from PIL import Image

    try:
        with Image.open(path) as image:
            return str(image.mode)
    except Exception as exc:  # UnidentifiedImageError, truncated headers, ...
        raise _corrupt(path, exc) from exc


def _corrupt(path: str, exc: BaseException) -> DataFormatError:
    return DataFormatError(
        f"cannot read the image file {path}: PIL says {type(exc).__name__}: {exc}. The file is "
        "corrupt or not an image: replace or delete it (every file with an image extension in a "
        "class folder is read)."
    )


def _is_grey(mode: str) -> bool:
    from PIL import Image

    return Image.getmodebase(mode) == "L"  # 1, L, LA, La, I, I;16..., F (not P, not RGB...)


def scan_folder(path: str | os.PathLike[str]) -> FolderScan:
    """Find the classes and images of a folder dataset, reading only image headers (cached).

    Args:
        path: The folder (or a ``"folder:PATH"`` name).

    Returns:
        The :class:`FolderScan`.

    Raises:
        DataNotFoundError: The folder, a split folder, class folders or images are missing.
        DataFormatError: The splits have different class folders, or a file is not an image.
    """
    root = resolve(path)
    if root in _SCANS:
        return _SCANS[root]
    if not root.exists():
        raise DataNotFoundError(f"folder dataset {root} does not exist. " + _layout(root))
    if not root.is_dir():
        raise DataNotFoundError(f"folder dataset {root} is a file, not a folder. " + _layout(root))
    missing = [s for s in SPLITS if not (root / s).is_dir()]
    if missing:
        with os.scandir(root) as entries:
            found = sorted(e.name for e in entries if e.is_dir() and _visible(e.name))
        head = (
            f"folder dataset {root} has no {' and no '.join(f'{s}/' for s in missing)} subfolder."
        )
        if found:
            head += f" It holds the subfolders {', '.join(found)}"
            head += (
                ": if these are the classes, move them into train/ and test/ (split the images)."
                if len(missing) == 2
                else "."
            )
        else:
            head += " It holds no subfolders."
        raise DataNotFoundError(f"{head} {_layout(root)}")

    folders = {split: _image_folder(root / split) for split in SPLITS}
    train_classes, test_classes = folders["train"].classes, folders["test"].classes
    if train_classes != test_classes:
        only_train = sorted(set(train_classes) - set(test_classes))
        only_test = sorted(set(test_classes) - set(train_classes))
        parts = [
            f"only in {root / split}: {', '.join(names)}"
            for split, names in (("train", only_train), ("test", only_test))
            if names
        ]
        raise DataFormatError(
            f"folder dataset {root}: train/ and test/ must hold the same class folders; "
            + "; ".join(parts)
            + ". Add the missing class folders (with images) or remove the extra ones."
        )
    for split, folder in folders.items():
        counts = np.bincount([label for _, label in folder.samples], minlength=len(folder.classes))
        empty = [folder.classes[k] for k in np.flatnonzero(counts == 0)]
        if empty:
            from torchvision.datasets.folder import IMG_EXTENSIONS

            raise DataNotFoundError(
                f"folder dataset {root}: the class folder(s) "
                + ", ".join(str(root / split / name) for name in empty)
                + f" hold no images (files ending in {', '.join(IMG_EXTENSIONS)}). Every class "
                "needs images in both train/ and test/."
            )
    samples = {split: _interleave(list(folder.samples)) for split, folder in folders.items()}
    # every header is read (not only until the first colour image), so that a file that is
    # not an image is reported here, before anything is decoded
    modes = {_mode(p) for split in SPLITS for p, _ in samples[split]}
    grey = all(_is_grey(mode) for mode in modes)
    scan = FolderScan(root, tuple(train_classes), samples, 1 if grey else 3)
    _SCANS[root] = scan
    return scan


def _decode(path: str, mode: str, image_size: int) -> np.ndarray:
    """One image as uint8 (H, W) for mode ``L`` or (H, W, 3) for ``RGB``, resized."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            image.load()
            if image.mode.startswith("I;16"):  # 16-bit grey: scale, do not clip, to 8 bits
                wide = np.asarray(image, dtype=np.uint32)
                image = Image.fromarray(((wide + 128) // 257).astype(np.uint8), "L")
            image = image.convert(mode)
            if image.size != (image_size, image_size):
                image = image.resize((image_size, image_size), Image.Resampling.BILINEAR)
            return np.asarray(image, dtype=np.uint8)
    except Exception as exc:  # truncated or otherwise undecodable files
        raise _corrupt(path, exc) from exc


def load_folder(
    path: str | os.PathLike[str], split: str = "train", image_size: int = DEFAULT_IMAGE_SIZE
) -> ArrayDataset:
    """Decode a folder dataset's split (both splits are decoded and kept on the first call).

    Prefer ``load_dataset("folder:PATH", split, size=..., image_size=...)``, which also keeps
    prefixes.

    Args:
        path: The folder (or a ``"folder:PATH"`` name).
        split: ``"train"`` or ``"test"``.
        image_size: Side of the square images after resizing.

    Returns:
        The split as an :class:`ArrayDataset` named ``"folder:<resolved path>"``, normalised
        with the train split's mean / std.

    Raises:
        DataNotFoundError, DataFormatError: As :func:`scan_folder`; a file that cannot be
            decoded is named in the message.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}.")
    if isinstance(image_size, bool) or int(image_size) != image_size or image_size < 1:
        raise ValueError(f"image_size must be a positive integer, got {image_size!r}.")
    image_size = int(image_size)
    scan = scan_folder(path)
    key = (scan.root, image_size)
    if key not in _ARRAYS:
        mode = "L" if scan.in_channels == 1 else "RGB"
        images: dict[str, torch.Tensor] = {}
        for s in SPLITS:
            stack = np.stack([_decode(p, mode, image_size) for p, _ in scan.samples[s]])
            stack = stack[:, None] if stack.ndim == 3 else stack.transpose(0, 3, 1, 2)
            images[s] = torch.from_numpy(np.ascontiguousarray(stack))
        mean, std = channel_stats(images["train"])
        _ARRAYS[key] = {
            s: ArrayDataset(
                images[s],
                torch.tensor([label for _, label in scan.samples[s]], dtype=torch.int64),
                scan.classes,
                scan.name,
                s,
                mean=mean,
                std=std,
            )
            for s in SPLITS
        }
    return _ARRAYS[key][split]


def clear_cache() -> None:
    """Forget every scanned and decoded folder."""
    _SCANS.clear()
    _ARRAYS.clear()
