"""Materialised splits of the application datasets, and the super-resolution pairs.

Chapter 8's procedural data (super-resolution pairs here, identities in
:mod:`kdtutor.data.faces`, action clips in :mod:`kdtutor.data.clips`, road scenes in
:mod:`kdtutor.data.roads`) is rendered once per split and kept as uint8 tensors, because
rendering on the fly would cost a good share of a small student's training step. This module
holds what the generators share:

* :data:`SPLITS` and :data:`SPLIT_STARTS`: every index-based generator draws the ``train``,
  ``validation`` and ``test`` splits from disjoint index ranges (``test`` starts at
  :data:`kdtutor.data.shapes.TEST_START`, as the shapes' test split does), so for a given
  ``seed`` no sample is in two splits and a smaller split is a prefix of a larger one;
* :class:`TensorSplit`: a read-only, map-style dataset of named tensors with a common first
  dimension, with ``fingerprint()`` (the teacher cache's key) and ``subset(n)``;
* a disk cache of the rendered arrays (an ``.npz`` under ``cache_dir()/<name>/``, written
  atomically, regenerated when unreadable), used for splits of at least
  :data:`DISK_CACHE_MIN` samples unless told otherwise.

**Super-resolution pairs** (:func:`sr_pairs`). HR images are
:func:`~kdtutor.data.shapes.make_shapes` at 64 x 64 pixels with the pixel noise switched off (textured backgrounds,
stripes with periods down to 4 px and anti-aliased edges are content worth
super-resolving; noise is not). The LR input is the HR image reduced x4 by bicubic
interpolation with antialiasing (``F.interpolate(..., mode="bicubic", antialias=True)``,
Pillow's filter), clamped and rounded to uint8, which is what saving the LR image as a PNG
would do (:func:`bicubic_downscale`). x4 is FAKD's headline scale, so LR images are 16 x 16.

>>> from kdtutor.data.tasks import sr_pairs
>>> pairs = sr_pairs("test", 4, cache=False)
>>> lr, hr = pairs[0]
>>> tuple(lr.shape), tuple(hr.shape), pairs.lr.dtype
((3, 16, 16), (3, 64, 64), torch.uint8)

**One entry point** for every split of chapter 8's data is
:func:`kdtutor.data.task_splits.task_split`, in a module of its own: it imports the generator
modules, which import this one.
"""

from __future__ import annotations

import copy
import hashlib
import json
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from . import shapes
from .arrays import channel_stats
from .diskcache import cache_dir, load_npz, save_npz

__all__ = [
    "DISK_CACHE_MIN",
    "SPLITS",
    "SPLIT_STARTS",
    "SR_GENERATOR_VERSION",
    "SR_SIZES",
    "SRPairs",
    "TensorSplit",
    "bicubic_downscale",
    "sr_benchmark",
    "sr_pairs",
]

#: The splits every application generator makes.
SPLITS: tuple[str, ...] = ("train", "validation", "test")

#: The first sample index of each split; the ranges never meet (a split of up to
#: 10,000,000 samples).
SPLIT_STARTS: dict[str, int] = {
    "train": 0,
    "test": shapes.TEST_START,
    "validation": 2 * shapes.TEST_START,
}

#: Splits of at least this many samples are kept on disk by default (``cache=None``).
DISK_CACHE_MIN = 1_000

#: Bumped whenever the super-resolution pairs change, so stale disk caches are never reused.
SR_GENERATOR_VERSION = 1

#: Default numbers of super-resolution pairs per split (the book's protocol).
SR_SIZES: dict[str, int] = {"train": 4_000, "validation": 500, "test": 2_000}

_SR_CHUNK = 512


# -- shared helpers --------------------------------------------------------------------------
def check_split(split: str, splits: Sequence[str] = SPLITS) -> str:
    """``split`` if it is one of ``splits``, else a ValueError naming them."""
    if split not in splits:
        names = ", ".join(repr(s) for s in splits)
        raise ValueError(f"split must be one of {names}; got {split!r}.")
    return split


def check_count(value: Any, what: str, minimum: int = 1) -> int:
    """``value`` as an int if it is an integer of at least ``minimum``, else a ValueError."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(f"{what} must be an integer of at least {minimum}, got {value!r}.")
    return int(value)


def generated_split(
    name: str,
    split: str,
    size: int | None,
    sizes: Mapping[str, int],
    *,
    seed: int,
    version: int,
    config_key: Any,
    render: Callable[[np.ndarray], dict[str, np.ndarray]],
    cache: bool | None,
) -> dict[str, np.ndarray]:
    """The arrays of one split of a procedural generator, rendered once and cached.

    Args:
        name: Generator name (the cache's sub-folder).
        split: ``"train"``, ``"val"`` or ``"test"``: its items are the indices from
            ``SPLIT_STARTS[split]`` on.
        size: Items in the split; ``sizes[split]`` when None.
        sizes: Default size per split.
        seed: The generator's seed.
        version: The generator's version (a new version never reads an old cache).
        config_key: JSON-serialisable key of the generator's configuration.
        render: Renders the arrays of the given item indices.
        cache: Keep the arrays on disk: True always, False never, None for at least
            ``DISK_CACHE_MIN`` items.

    Returns:
        The arrays by name, as ``render`` returns them.
    """
    check_split(split)
    n = sizes[split] if size is None else check_count(size, "size")
    start = SPLIT_STARTS[split]
    params = {"version": version, "n": n, "start": start, "seed": seed, "config": config_key}
    disk = n >= DISK_CACHE_MIN if cache is None else bool(cache)
    return cached_arrays(name, params, lambda: render(np.arange(start, start + n)), disk)


def cached_arrays(
    name: str,
    params: Mapping[str, Any],
    make: Callable[[], dict[str, np.ndarray]],
    disk: bool,
) -> dict[str, np.ndarray]:
    """``make()``, or the arrays an earlier call with the same ``params`` left on disk.

    Args:
        name: Generator name: the cache sub-folder and the file's prefix.
        params: JSON-serialisable parameters that determine the arrays (the generator's
            version included); their sha256 is the file's key.
        make: Renders the arrays.
        disk: Read and write the ``.npz`` file under ``cache_dir()/name`` (else just render).

    Returns:
        The arrays by name, as ``make`` returns them.
    """
    if not disk:
        return make()
    key = hashlib.sha256(json.dumps([name, dict(params)], sort_keys=True).encode()).hexdigest()
    path = cache_dir() / name / f"{name}-{key[:20]}.npz"
    arrays = load_npz(path, key)
    if arrays is None:
        arrays = make()
        save_npz(path, key, **arrays)
    return arrays


class TensorSplit(Dataset):
    """A materialised split: named tensors that share their first dimension, read-only.

    Subclasses define ``__getitem__`` (what a sample is); this class gives the length, the
    tensors by name (:meth:`tensor`), a content fingerprint (the teacher cache hashes it
    instead of reading every sample) and :meth:`subset`. Treat the tensors as read-only:
    subsets share their memory.

    Attributes:
        name: Dataset name (``"sr"``, ``"clips"``, ...), part of the fingerprint.
        split: ``"train"``, ``"validation"`` or ``"test"``, part of the fingerprint.
        meta: JSON-serialisable settings the data was made with (seed, configuration),
            part of the fingerprint.
        task: Name of the task the targets are for (``fit`` reads it).
    """

    task: ClassVar[str] = ""
    #: The tensor whose channel statistics :meth:`channel_stats` reports (the input).
    input_key: ClassVar[str] = ""

    def __init__(
        self, tensors: Mapping[str, Tensor], *, name: str, split: str, meta: Mapping[str, Any]
    ) -> None:
        """Hold ``tensors`` (made contiguous; not copied otherwise).

        Args:
            tensors: The split's tensors by name, all of one length.
            name: Dataset name.
            split: Split name.
            meta: JSON-serialisable settings the data was made with.

        Raises:
            ValueError: Tensors of different lengths.
        """
        lengths = {key: int(t.shape[0]) for key, t in tensors.items()}
        if len(set(lengths.values())) > 1:
            raise ValueError(f"the tensors of a split must have one length, got {lengths}.")
        self._tensors = {key: t.contiguous() for key, t in tensors.items()}
        self.name = name
        self.split = split
        self.meta = dict(meta)
        self._fingerprint: str | None = None

    def __len__(self) -> int:
        return next(iter(self._tensors.values())).shape[0] if self._tensors else 0

    def tensor(self, key: str) -> Tensor:
        """The stored tensor ``key`` (all samples)."""
        return self._tensors[key]

    def _check(self, index: int) -> int:
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"sample {index} of a {self.name} split of {n}")
        return index % n

    def fingerprint(self) -> str:
        """sha256 (hex) of name, split, settings and every tensor's shape, dtype and bytes.

        Two splits with the same fingerprint give the same samples, so it is safe as a cache
        key for anything computed from the data (e.g. a teacher's outputs).
        """
        if self._fingerprint is None:
            digest = hashlib.sha256()
            header = {
                "name": self.name,
                "split": self.split,
                "meta": self.meta,
                "class": type(self).__name__,
                "tensors": {k: [list(t.shape), str(t.dtype)] for k, t in self._tensors.items()},
            }
            digest.update(json.dumps(header, sort_keys=True, default=str).encode())
            for key in sorted(self._tensors):
                digest.update(np.ascontiguousarray(self._tensors[key].numpy()).data)
            self._fingerprint = digest.hexdigest()
        return self._fingerprint

    def subset(self, n_or_indices: int | Tensor | Sequence[int]) -> TensorSplit:
        """A smaller split of the same kind, name, split and settings.

        Args:
            n_or_indices: An int ``n`` for the first ``n`` samples (views, no copy), or the
                indices to keep (in that order).

        Returns:
            The new split (same class as this one).
        """
        if isinstance(n_or_indices, int | np.integer):
            n = int(n_or_indices)
            if not 0 <= n <= len(self):
                raise ValueError(f"subset size must be in [0, {len(self)}], got {n}.")
            tensors = {key: t[:n] for key, t in self._tensors.items()}
        else:
            idx = torch.as_tensor(n_or_indices, dtype=torch.int64)
            tensors = {key: t.index_select(0, idx) for key, t in self._tensors.items()}
        new = copy.copy(self)
        new._tensors = {key: t.contiguous() for key, t in tensors.items()}
        new._fingerprint = None
        return new

    def channel_stats(self, limit: int = 2_000) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """Per-channel mean and std, in [0, 1] units, of the first ``limit`` inputs.

        What a model's fixed input normalisation is built from (use the train split's).
        Clips count every frame.

        Returns:
            ``(mean, std)``, one float per channel each.
        """
        images = self._tensors[self.input_key][:limit]
        if images.ndim == 5:
            images = images.flatten(0, 1)
        return channel_stats(images)

    def __repr__(self) -> str:
        shapes_ = ", ".join(f"{k}={tuple(t.shape[1:])}" for k, t in self._tensors.items())
        return f"{type(self).__name__}(split={self.split!r}, n={len(self)}, {shapes_})"


def _as_float(images: Tensor) -> Tensor:
    return images.to(torch.float32).div_(255.0)


# -- super-resolution pairs ------------------------------------------------------------------
def bicubic_downscale(images: np.ndarray | Tensor, scale: int = 4) -> np.ndarray:
    """Reduce uint8 images by ``scale`` with antialiased bicubic interpolation, as uint8.

    ``F.interpolate(x / 255, scale_factor=1 / scale, mode="bicubic", antialias=True)``
    (Pillow's bicubic filter, ``a = -0.5``, widened by ``scale``), clamped to [0, 1] and
    rounded to the nearest of the 256 levels: the LR image a PNG would store.

    Args:
        images: uint8 ``(N, C, H, W)`` with ``H`` and ``W`` multiples of ``scale``.
        scale: Reduction factor (at least 1).

    Returns:
        uint8 ``(N, C, H / scale, W / scale)``.

    Raises:
        ValueError: Not uint8 ``(N, C, H, W)``, or sides that ``scale`` does not divide.
    """
    x = torch.as_tensor(images)
    scale = check_count(scale, "scale")
    if x.dtype != torch.uint8 or x.ndim != 4:
        raise ValueError(
            f"images must be uint8 (N, C, H, W), got {x.dtype} of shape {tuple(x.shape)}."
        )
    h, w = x.shape[-2:]
    if h % scale or w % scale:
        raise ValueError(f"image sides {h}x{w} must be multiples of scale={scale}.")
    if scale == 1:
        return x.numpy().copy()
    out = F.interpolate(_as_float(x), size=(h // scale, w // scale), mode="bicubic", antialias=True)
    return out.clamp_(0.0, 1.0).mul_(255.0).round_().to(torch.uint8).numpy()


class SRPairs(TensorSplit):
    """Super-resolution pairs: ``(lr, hr)`` float32 images in [0, 1].

    Samples are ``lr`` ``(3, S / scale, S / scale)`` (the network's input) and ``hr``
    ``(3, S, S)`` (the target), both float32 in [0, 1]; the stored tensors are uint8
    (:attr:`lr`, :attr:`hr`) with the shapes class of each HR image (:attr:`labels`, a
    nuisance here). ``task`` is ``"regression"`` (PSNR, SSIM), which ``fit`` can score today.

    Attributes:
        scale: The reduction factor.
    """

    task: ClassVar[str] = "regression"
    input_key: ClassVar[str] = "lr"

    def __init__(
        self,
        lr: Tensor,
        hr: Tensor,
        labels: Tensor,
        *,
        split: str,
        scale: int,
        meta: Mapping[str, Any],
    ) -> None:
        """Hold the pairs.

        Args:
            lr: uint8 ``(N, 3, S / scale, S / scale)`` inputs.
            hr: uint8 ``(N, 3, S, S)`` targets.
            labels: int64 ``(N,)`` shapes classes of the HR images.
            split: Split name.
            scale: The reduction factor.
            meta: JSON-serialisable settings the pairs were made with.
        """
        super().__init__({"lr": lr, "hr": hr, "labels": labels}, name="sr", split=split, meta=meta)
        self.scale = scale

    @property
    def lr(self) -> Tensor:
        """uint8 ``(N, 3, S / scale, S / scale)``: the network inputs."""
        return self._tensors["lr"]

    @property
    def hr(self) -> Tensor:
        """uint8 ``(N, 3, S, S)``: the targets."""
        return self._tensors["hr"]

    @property
    def labels(self) -> Tensor:
        """int64 ``(N,)``: the shapes class of each HR image (not a target)."""
        return self._tensors["labels"]

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        """``(lr, hr)``: float32 images in [0, 1]."""
        i = self._check(index)
        return _as_float(self.lr[i]), _as_float(self.hr[i])


def _sr_arrays(n: int, seed: int, start: int, hr_size: int, scale: int) -> dict[str, np.ndarray]:
    config = shapes.ShapesConfig(image_size=hr_size, noise_std_range=(0.0, 0.0))
    hr = np.empty((n, 3, hr_size, hr_size), np.uint8)
    lr = np.empty((n, 3, hr_size // scale, hr_size // scale), np.uint8)
    labels = np.empty(n, np.int64)
    for lo in range(0, n, _SR_CHUNK):
        hi = min(n, lo + _SR_CHUNK)
        hr[lo:hi], labels[lo:hi] = shapes.make_shapes(hi - lo, seed, start + lo, config)
        lr[lo:hi] = bicubic_downscale(hr[lo:hi], scale)
    return {"lr": lr, "hr": hr, "labels": labels}


def sr_pairs(
    split: str = "train",
    size: int | None = None,
    *,
    seed: int = 0,
    scale: int = 4,
    hr_size: int = 64,
    cache: bool | None = None,
) -> SRPairs:
    """Super-resolution pairs: shapes images at ``hr_size`` px and their bicubic reductions.

    What it models: single-image super-resolution x4 (FAKD's setting) on content with real
    high frequencies. HR: :func:`~kdtutor.data.shapes.make_shapes` at
    ``ShapesConfig(image_size=hr_size, noise_std_range=(0, 0))`` (textured backgrounds,
    stripes with periods down to 4 px at 32 px and twice that at 64, anti-aliased edges);
    pixel noise is off because it is not worth super-resolving. LR: :func:`bicubic_downscale`
    (antialiased bicubic, rounded to uint8, as a saved LR image). Pair ``i`` of a split is
    the shapes image of index ``SPLIT_STARTS[split] + i``, so splits are disjoint and a
    smaller split is a prefix of a larger one; the test split's HR images are the shapes'
    test images, drawn at ``hr_size``.

    Args:
        split: ``"train"``, ``"validation"`` or ``"test"``.
        size: Number of pairs; defaults to :data:`SR_SIZES` (4,000 / 500 / 2,000).
        seed: Seed of the image family.
        scale: Reduction factor; it must divide ``hr_size``.
        hr_size: Side of the HR images in pixels (at least 8).
        cache: Keep the arrays in an ``.npz`` under ``cache_dir()/sr``: True always, False
            never, None (default) for at least :data:`DISK_CACHE_MIN` pairs.

    Returns:
        An :class:`SRPairs` of ``(lr, hr)`` float32 samples in [0, 1].

    Raises:
        ValueError: An unknown split, a size below 1, or a scale that does not divide
            ``hr_size``.
    """
    check_split(split)
    n = SR_SIZES[split] if size is None else check_count(size, "size")
    scale = check_count(scale, "scale")
    hr_size = check_count(hr_size, "hr_size", minimum=8)
    if hr_size % scale:
        raise ValueError(f"scale={scale} must divide hr_size={hr_size}.")
    start = SPLIT_STARTS[split]
    params = {
        "version": SR_GENERATOR_VERSION,
        "shapes_version": shapes.GENERATOR_VERSION,
        "n": n,
        "seed": seed,
        "start": start,
        "hr_size": hr_size,
        "scale": scale,
    }
    disk = n >= DISK_CACHE_MIN if cache is None else bool(cache)
    arrays = cached_arrays("sr", params, lambda: _sr_arrays(n, seed, start, hr_size, scale), disk)
    return SRPairs(
        torch.from_numpy(arrays["lr"]),
        torch.from_numpy(arrays["hr"]),
        torch.from_numpy(arrays["labels"].astype(np.int64)),
        split=split,
        scale=scale,
        meta={k: v for k, v in params.items() if k not in ("n", "start")},
    )


def sr_benchmark(n: int = 2_048, seed: int = 0) -> float:
    """Super-resolution pairs per second that :func:`sr_pairs` renders on ONE core.

    Args:
        n: Number of pairs to render (after a warm-up of one chunk).
        seed: Seed of the images.

    Returns:
        Pairs per second (HR rendering and the LR reduction), torch limited to one thread.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _sr_arrays(64, seed, 0, 64, 4)
        t0 = time.perf_counter()
        _sr_arrays(n, seed, 64, 64, 4)
        return n / (time.perf_counter() - t0)
    finally:
        torch.set_num_threads(threads)
