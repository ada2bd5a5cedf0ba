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

**One entry point** (:func:`task_split`, design note ``docs/design/applications.md``,
section 1.1): ``task_split(dataset, task, split, size)`` gives any split of chapter 8's data
for one task, its ``task`` a :class:`~kdtutor.tasks.Task` instance that ``fit`` uses as it is:
the procedural scenes as :class:`SceneSplit` (detection, segmentation, depth; materialised
here, :func:`scene_split`), their top-down pose crops (:class:`PoseCrops`), and the faces,
SR pairs, clips and roads of their own modules. :func:`split_stats` gives the per-channel
statistics the networks' fixed normalisation holds. The generator modules are imported
inside the functions, because they import this module.
"""

from __future__ import annotations

import copy
import functools
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
    "DATASET_TASKS",
    "DISK_CACHE_MIN",
    "SCENE_KINDS",
    "SCENE_SPLIT_VERSION",
    "SPLITS",
    "SPLIT_STARTS",
    "SR_GENERATOR_VERSION",
    "SR_SIZES",
    "STATS_LIMIT",
    "TASK_SIZES",
    "PoseCrops",
    "SRPairs",
    "SceneSplit",
    "TaskDataset",
    "TensorSplit",
    "bicubic_downscale",
    "scene_split",
    "split_stats",
    "sr_benchmark",
    "sr_pairs",
    "task_split",
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


# -- one entry point for chapter 8's splits ---------------------------------------------------
#: The datasets :func:`task_split` serves and the tasks of each (``"pose"`` is accepted for
#: the scenes' ``"keypoints"``: the pose crops).
DATASET_TASKS: dict[str, tuple[str, ...]] = {
    "scenes": ("detection", "segmentation", "depth", "keypoints"),
    "faces": ("retrieval",),
    "sr": ("superres",),
    "clips": ("classification",),
    "roads": ("lanes",),
}

#: Default split sizes per dataset (the design note's protocol, section 4.2); the scenes'
#: sizes count scenes, also for the pose crops (about two crops per scene). Equal to the
#: generators' own defaults for faces, SR pairs, clips and roads.
TASK_SIZES: dict[str, dict[str, int]] = {
    "scenes": {"train": 4_000, "validation": 1_000, "test": 2_000},
    "faces": {"train": 20_000, "validation": 1_000, "test": 2_000},
    "sr": dict(SR_SIZES),
    "clips": {"train": 8_000, "validation": 1_000, "test": 2_000},
    "roads": {"train": 4_000, "validation": 1_000, "test": 2_000},
}

#: Bumped whenever the stored scene splits change, so stale disk caches are never reused.
SCENE_SPLIT_VERSION = 1

#: The scene splits :func:`scene_split` stores (``"pose"``: the scenes that
#: :class:`PoseCrops` cuts).
SCENE_KINDS: tuple[str, ...] = ("detection", "segmentation", "depth", "pose")

#: Inputs whose channel statistics :func:`split_stats` reports (the first of the train split).
STATS_LIMIT = 2_000

_TASK_ALIASES = {"pose": "keypoints"}


def _images_uint8(image: np.ndarray) -> np.ndarray:
    """A float image in [0, 1] rounded to the nearest of the 256 levels."""
    return np.rint(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)


class TaskDataset(TensorSplit):
    """A materialised split for one task: ``(input, target)`` samples, the :class:`Task` that
    scores them, and the output count a network needs.

    ``task`` is a :class:`~kdtutor.tasks.Task` *instance*: ``fit`` reads a dataset's ``task``
    and passes an instance through :func:`~kdtutor.tasks.get_task` unchanged. ``fingerprint()``
    (the teacher cache's key) and ``subset(n)`` are :class:`TensorSplit`'s.

    Attributes:
        task: The task the targets are for (``None`` for a split that is only material for
            another, as the scenes :class:`PoseCrops` cuts).
        num_classes: Outputs per location a network needs: classes with the background for
            detection and segmentation (torchvision's count), 1 for depth, the keypoint
            slots for pose.
        classes: Class names (``None`` where the outputs are not classes).
    """

    input_key: ClassVar[str] = "images"

    def __init__(
        self,
        tensors: Mapping[str, Tensor],
        *,
        name: str,
        split: str,
        meta: Mapping[str, Any],
        task: Any,
        num_classes: int,
        classes: Sequence[str] | None = None,
    ) -> None:
        """Hold the split.

        Args:
            tensors: The split's tensors by name, all of one length.
            name: Dataset name.
            split: Split name.
            meta: JSON-serialisable settings the data was made with.
            task: A :class:`~kdtutor.tasks.Task` instance (or ``None``).
            num_classes: Outputs per location a network needs.
            classes: Class names, or ``None``.
        """
        super().__init__(tensors, name=name, split=split, meta=meta)
        self.task = task  # type: ignore[misc]  # an instance where TensorSplit has a name
        self.num_classes = int(num_classes)
        self.classes = list(classes) if classes is not None else None


class SceneSplit(TaskDataset):
    """A split of the procedural scenes (:mod:`kdtutor.data.scenes`) for one task.

    Stored tensors: ``images`` uint8 ``(N, 3, S, S)`` (the scenes' float images rounded to
    the nearest of 256 levels: at most 1/510 from :class:`~kdtutor.data.scenes.ScenesDataset`'s),
    and, by ``kind``: ``mask`` uint8 ``(N, S, S)`` (segmentation); ``depth`` float32
    ``(N, S, S)`` (depth); ``count`` int64 ``(N,)``, ``boxes`` float32 ``(N, M, 4)`` and
    ``labels`` int64 ``(N, M)`` padded with zeros to ``M = max_objects`` (detection and pose),
    and ``keypoints`` float32 ``(N, M, 4, 3)`` (pose). Boxes are integer pixel edges, so the
    padded layout gives them back exactly.

    Samples are the image float32 ``(3, S, S)`` in [0, 1] and, by ``kind``:
    ``{"boxes" (n, 4), "labels" (n,)}`` (detection), the class mask ``(S, S)`` int64
    (segmentation), the depth ``(1, S, S)`` float32 (depth), ``{"boxes", "labels",
    "keypoints" (n, 4, 3)}`` (pose: what :class:`PoseCrops` cuts; its ``task`` is ``None``).

    Attributes:
        kind: One of :data:`SCENE_KINDS`.
    """

    def __init__(
        self, tensors: Mapping[str, Tensor], *, kind: str, split: str, meta: Mapping[str, Any]
    ) -> None:
        """Hold a scene split (see the class docstring for the tensors of each ``kind``).

        Raises:
            ValueError: An unknown kind, or a tensor the kind needs missing.
        """
        from ..tasks import get_task
        from .scenes import NUM_KEYPOINTS, SCENE_CLASSES

        if kind not in SCENE_KINDS:
            names = ", ".join(repr(k) for k in SCENE_KINDS)
            raise ValueError(f"kind must be one of {names}; got {kind!r}.")
        need = {
            "detection": ("images", "count", "boxes", "labels"),
            "segmentation": ("images", "mask"),
            "depth": ("images", "depth"),
            "pose": ("images", "count", "boxes", "labels", "keypoints"),
        }[kind]
        missing = [key for key in need if key not in tensors]
        if missing:
            raise ValueError(f"a {kind} scene split needs the tensors {missing}.")
        task = None if kind == "pose" else get_task(kind)
        num_classes = {"depth": 1, "pose": NUM_KEYPOINTS}.get(kind, len(SCENE_CLASSES))
        classes = SCENE_CLASSES if kind in ("detection", "segmentation") else None
        super().__init__(
            tensors, name="scenes", split=split, meta=meta, task=task,
            num_classes=num_classes, classes=classes,
        )  # fmt: skip
        self.kind = kind

    @property
    def images(self) -> Tensor:
        """uint8 ``(N, 3, S, S)``."""
        return self.tensor("images")

    def objects(self, index: int) -> dict[str, Tensor]:
        """The boxes, labels (and keypoints, for pose) of scene ``index``, unpadded copies."""
        i = self._check(index)
        n = int(self.tensor("count")[i])
        keys = ("boxes", "labels", "keypoints") if self.kind == "pose" else ("boxes", "labels")
        return {key: self.tensor(key)[i, :n].clone() for key in keys}

    def __getitem__(self, index: int) -> tuple[Tensor, Any]:
        """``(image, target)`` as the class docstring says."""
        i = self._check(index)
        x = _as_float(self.images[i])
        if self.kind == "segmentation":
            return x, self.tensor("mask")[i].to(torch.int64)
        if self.kind == "depth":
            return x, self.tensor("depth")[i].unsqueeze(0)
        return x, self.objects(i)


def _scene_arrays(
    indices: np.ndarray, seed: int, kind: str, size: int, max_objects: int
) -> dict[str, np.ndarray]:
    from .scenes import NUM_KEYPOINTS, render_scene, scene_annotations

    n = len(indices)
    out: dict[str, np.ndarray] = {"images": np.empty((n, 3, size, size), np.uint8)}
    if kind == "segmentation":
        out["mask"] = np.empty((n, size, size), np.uint8)
    elif kind == "depth":
        out["depth"] = np.empty((n, size, size), np.float32)
    else:
        out["count"] = np.zeros(n, np.int64)
        out["boxes"] = np.zeros((n, max_objects, 4), np.float32)
        out["labels"] = np.zeros((n, max_objects), np.int64)
        if kind == "pose":
            out["keypoints"] = np.zeros((n, max_objects, NUM_KEYPOINTS, 3), np.float32)
    for i, index in enumerate(indices.tolist()):
        if kind in ("detection", "segmentation"):
            image, mask, boxes, labels = render_scene(index, seed, size, max_objects)
            scene = {"image": image, "mask": mask, "boxes": boxes, "labels": labels}
        else:
            scene = scene_annotations(index, seed, size, max_objects)
        out["images"][i] = _images_uint8(scene["image"])
        if kind == "segmentation":
            out["mask"][i] = scene["mask"]
        elif kind == "depth":
            out["depth"][i] = scene["depth"]
        else:
            m = len(scene["labels"])
            out["count"][i] = m
            out["boxes"][i, :m] = scene["boxes"]
            out["labels"][i, :m] = scene["labels"]
            if kind == "pose":
                out["keypoints"][i, :m] = scene["keypoints"]
    return out


def scene_split(
    split: str = "train",
    size: int | None = None,
    kind: str = "detection",
    *,
    seed: int = 0,
    image_size: int = 64,
    max_objects: int = 3,
    cache: bool | None = None,
) -> SceneSplit:
    """A split of the procedural scenes, rendered once and kept as tensors.

    Scene ``k`` of a split is scene ``SPLIT_STARTS[split] + k`` of the family ``seed``
    (index ranges, as the faces, clips and roads split; the design note's seeds 0/1/2 per
    split were the alternative), so the splits never share a scene and a smaller split is a
    prefix of a larger one. Rendering costs about 0.5 ms (detection, segmentation) to
    0.7 ms (depth, pose) per 64-px scene; the arrays of a split are kept in an ``.npz``
    under ``cache_dir()/scenes`` (keyed by :data:`SCENE_SPLIT_VERSION`, kind, seed, sizes).

    Args:
        split: ``"train"``, ``"validation"`` or ``"test"``.
        size: Number of scenes; defaults to ``TASK_SIZES["scenes"]`` (4,000 / 1,000 / 2,000).
        kind: What is stored: one of :data:`SCENE_KINDS`.
        seed: Seed of the scene family.
        image_size: Side of the scenes in pixels (at least 8).
        max_objects: At most this many shapes per scene (the padded width of the boxes).
        cache: Keep the arrays on disk: True always, False never, None (default) for at
            least :data:`DISK_CACHE_MIN` scenes.

    Returns:
        A :class:`SceneSplit`.

    Raises:
        ValueError: An unknown split or kind, or a size, image size or count out of range.
    """
    if kind not in SCENE_KINDS:
        names = ", ".join(repr(k) for k in SCENE_KINDS)
        raise ValueError(f"kind must be one of {names}; got {kind!r}.")
    image_size = check_count(image_size, "image_size", minimum=8)
    max_objects = check_count(max_objects, "max_objects")
    config = {"kind": kind, "image_size": image_size, "max_objects": max_objects}
    arrays = generated_split(
        "scenes", split, size, TASK_SIZES["scenes"], seed=seed, version=SCENE_SPLIT_VERSION,
        config_key=config,
        render=lambda idx: _scene_arrays(idx, seed, kind, image_size, max_objects),
        cache=cache,
    )  # fmt: skip
    meta = {"version": SCENE_SPLIT_VERSION, "seed": seed, "config": config}
    tensors = {key: torch.from_numpy(np.ascontiguousarray(a)) for key, a in arrays.items()}
    return SceneSplit(tensors, kind=kind, split=split, meta=meta)


class PoseCrops(TaskDataset):
    """Top-down pose samples: one square crop around each boxed object of a scene split.

    For every box (the visible part of an object), a square of side ``max(expand * max(w,
    h), min_side)`` pixels centred on the box is resampled to ``crop_size`` x ``crop_size``
    by ``torchvision.ops.roi_align(aligned=True)`` (bin ``q`` of the crop covers
    ``[x0 + q s, x0 + (q + 1) s]`` in the scenes' continuous pixels, ``s = side /
    crop_size``; parts outside the image read as 0). A keypoint ``(x, y)`` of the scene maps
    to ``((x - x0) h / side - 1/2, (y - y0) h / side - 1/2)`` in heatmap pixels (``h =
    heatmap_size``; integers at pixel centres, the ``keypoints`` task's convention). Each
    target heatmap is the Gaussian ``exp(-((u - x)^2 + (v - y)^2) / 2 sigma^2)`` sampled at
    the heatmap's pixel centres ``(u, v)``, centred on the unrounded keypoint (pytorch-pose
    rounds the centre and cuts the Gaussian at 3 sigma; ours is not rounded, so its argmax is
    the keypoint's nearest pixel), FPD's sigma 1. ``weight`` is 0 for the triangle's empty
    slot (visibility 0) and for a keypoint outside the crop (its heatmap is then all zeros,
    as pytorch-pose's ``target_weight``); occluded keypoints (visibility 1) are trained and
    scored, as MPII labels occluded joints. ``scale`` is the box side ``max(w, h)`` in heatmap
    pixels (PCK@0.2 of it).

    Samples: the crop float32 ``(3, c, c)`` in [0, 1] and ``{"heatmaps" (4, h, h),
    "keypoints" (4, 3) (x, y in heatmap pixels, visibility), "weight" (4,), "scale" ()}``,
    the ``keypoints`` task's targets. Stored: ``crops`` uint8, ``heatmaps``, ``keypoints``,
    ``weight``, ``scale`` float32, and where each crop comes from: ``scene`` and ``object``
    int64 (the scene's index in the split, the box's index in the scene) and ``box`` float32
    ``(4,)`` (the crop's square in the scene's pixels).

    Args:
        scenes: A :class:`SceneSplit` of kind ``"pose"``.
        crop_size: Side of the crops in pixels (32).
        heatmap_size: Side of the heatmaps (16: the pose networks predict at 1/2).
        sigma: The Gaussian's standard deviation in heatmap pixels.
        expand: Crop side over the box's longer side.
        min_side: The smallest crop side in scene pixels.

    Raises:
        ValueError: Scenes without keypoints, or sizes out of range.
    """

    input_key: ClassVar[str] = "crops"

    def __init__(
        self,
        scenes: SceneSplit,
        crop_size: int = 32,
        heatmap_size: int = 16,
        sigma: float = 1.0,
        expand: float = 1.25,
        min_side: float = 12.0,
    ) -> None:
        from ..tasks import get_task
        from .scenes import NUM_KEYPOINTS

        if not isinstance(scenes, SceneSplit) or scenes.kind != "pose":
            raise ValueError(
                "PoseCrops cuts a scene split of kind 'pose' (scene_split(split, kind='pose')), "
                f"got {scenes!r}."
            )
        crop_size = check_count(crop_size, "crop_size")
        heatmap_size = check_count(heatmap_size, "heatmap_size")
        if not (sigma > 0 and expand > 0 and min_side > 0):
            raise ValueError(
                f"sigma, expand and min_side must be positive; got {sigma}, {expand}, {min_side}."
            )
        settings = {
            "crop_size": crop_size,
            "heatmap_size": heatmap_size,
            "sigma": float(sigma),
            "expand": float(expand),
            "min_side": float(min_side),
        }
        tensors = _pose_crops(scenes, **settings)
        super().__init__(
            tensors, name="scenes", split=scenes.split,
            meta={**scenes.meta, "crops": settings}, task=get_task("keypoints"),
            num_classes=NUM_KEYPOINTS,
        )  # fmt: skip
        self.settings = settings

    @property
    def crops(self) -> Tensor:
        """uint8 ``(N, 3, c, c)``."""
        return self.tensor("crops")

    def __getitem__(self, index: int) -> tuple[Tensor, dict[str, Tensor]]:
        """``(crop, target)`` as the class docstring says."""
        i = self._check(index)
        target = {key: self.tensor(key)[i] for key in ("heatmaps", "keypoints", "weight", "scale")}
        return _as_float(self.crops[i]), target


def _pose_crops(
    scenes: SceneSplit,
    *,
    crop_size: int,
    heatmap_size: int,
    sigma: float,
    expand: float,
    min_side: float,
    chunk: int = 512,
) -> dict[str, Tensor]:
    from torchvision.ops import roi_align

    count = scenes.tensor("count")
    scene = torch.repeat_interleave(torch.arange(len(scenes)), count)
    obj = torch.cat([torch.arange(int(c)) for c in count]) if len(scenes) else scene
    boxes = scenes.tensor("boxes")[scene, obj].double()
    points = scenes.tensor("keypoints")[scene, obj].double()  # (M, J, 3)
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    longer = torch.maximum(w, h)
    side = torch.clamp(expand * longer, min=min_side)
    cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
    square = torch.stack([cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2], 1)
    crops = torch.empty((len(scene), 3, crop_size, crop_size), dtype=torch.uint8)
    images = scenes.images
    for lo in range(0, len(scenes), chunk):
        hi = min(len(scenes), lo + chunk)
        rows = torch.nonzero((scene >= lo) & (scene < hi)).flatten()
        if not len(rows):
            continue
        rois = torch.cat([(scene[rows] - lo).double()[:, None], square[rows]], 1).float()
        out = roi_align(_as_float(images[lo:hi]), rois, crop_size, 1.0, -1, aligned=True)
        crops[rows] = out.clamp_(0.0, 1.0).mul_(255.0).round_().to(torch.uint8)
    unit = heatmap_size / side[:, None]  # heatmap pixels per scene pixel
    x = (points[..., 0] - square[:, None, 0]) * unit - 0.5
    y = (points[..., 1] - square[:, None, 1]) * unit - 0.5
    labelled = points[..., 2] > 0
    inside = (x >= -0.5) & (x <= heatmap_size - 0.5) & (y >= -0.5) & (y <= heatmap_size - 0.5)
    weight = (labelled & inside).double()
    x, y = torch.where(labelled, x, 0.0), torch.where(labelled, y, 0.0)
    grid = torch.arange(heatmap_size, dtype=torch.float64)
    gx = torch.exp(-((grid - x[..., None]) ** 2) / (2 * sigma**2))
    gy = torch.exp(-((grid - y[..., None]) ** 2) / (2 * sigma**2))
    heatmaps = gy[..., :, None] * gx[..., None, :] * weight[..., None, None]
    keypoints = torch.stack([x, y, points[..., 2]], -1)
    return {
        "crops": crops,
        "heatmaps": heatmaps.float(),
        "keypoints": keypoints.float(),
        "weight": weight.float(),
        "scale": (longer * unit[:, 0]).float(),
        "scene": scene,
        "object": obj,
        "box": square.float(),
    }


def _task_name(dataset: str, task: str) -> tuple[str, str]:
    if dataset not in DATASET_TASKS:
        from ..errors import unknown_name

        raise unknown_name("application dataset", dataset, DATASET_TASKS)
    name = _TASK_ALIASES.get(task, task) if dataset == "scenes" else task
    if name not in DATASET_TASKS[dataset]:
        from ..errors import unknown_name

        raise unknown_name(f"task of the {dataset!r} data", task, DATASET_TASKS[dataset])
    return dataset, name


def task_split(
    dataset: str,
    task: str,
    split: str = "train",
    size: int | None = None,
    *,
    seed: int | None = None,
    cache: bool | None = None,
) -> Any:
    """One split of chapter 8's data for one task: the one entry point to every generator.

    ================  =======================================  =============================
    ``dataset``       ``task``                                 returns
    ================  =======================================  =============================
    ``"scenes"``      ``detection``, ``segmentation``,         :class:`SceneSplit`
                      ``depth``
    ``"scenes"``      ``keypoints`` (or ``pose``)              :class:`PoseCrops` of the
                                                               split's scenes
    ``"faces"``       ``retrieval``                            :func:`~kdtutor.data.faces.faces_dataset`
    ``"sr"``          ``superres``                             :func:`sr_pairs`
    ``"clips"``       ``classification``                       :func:`~kdtutor.data.clips.clips_dataset`
    ``"roads"``       ``lanes``                                :func:`~kdtutor.data.roads.roads_dataset`
    ================  =======================================  =============================

    Every split is drawn from its own index range (:data:`SPLIT_STARTS`; the faces by
    identity), so the splits are disjoint and a smaller split is a prefix of a larger one;
    each is rendered once and kept as an ``.npz`` under ``cache_dir()``. The returned dataset's
    ``task`` is the :class:`~kdtutor.tasks.Task` *instance* named here (set on the faces'
    :class:`~kdtutor.data.ArrayDataset` and the SR pairs too, whose own default is
    ``"regression"``), so ``fit`` scores it without being told. The faces' images come
    standardised by the train split's statistics (an ArrayDataset's convention); every other
    input is in [0, 1].

    Args:
        dataset: ``"scenes"``, ``"faces"``, ``"sr"``, ``"clips"`` or ``"roads"``.
        task: A task of the dataset (table above).
        split: ``"train"``, ``"validation"`` or ``"test"``.
        size: Samples (scenes for the pose crops); default ``TASK_SIZES[dataset][split]``.
        seed: Seed of the data family (default 0).
        cache: Keep the arrays on disk: True always, False never, None (default) for
            splits of at least :data:`DISK_CACHE_MIN` samples.

    Returns:
        A map-style dataset of ``(input, target)`` pairs with ``task``, ``fingerprint()`` and
        ``subset(n)``.

    Raises:
        UnknownNameError: An unknown dataset, or a task the dataset does not serve.
        ValueError: An unknown split or a size below 1.

    Example:
        >>> from kdtutor.data.tasks import task_split
        >>> test = task_split("scenes", "detection", "test", 4, cache=False)
        >>> image, target = test[0]
        >>> tuple(image.shape), sorted(target), test.task.name, test.num_classes
        ((3, 64, 64), ['boxes', 'labels'], 'detection', 4)
    """
    from ..tasks import get_task

    dataset, name = _task_name(dataset, task)
    check_split(split)
    n = TASK_SIZES[dataset][split] if size is None else check_count(size, "size")
    seed = 0 if seed is None else check_count(seed, "seed", minimum=0)
    if dataset == "scenes":
        if name == "keypoints":
            return PoseCrops(scene_split(split, n, "pose", seed=seed, cache=cache))
        return scene_split(split, n, name, seed=seed, cache=cache)
    if dataset == "faces":
        from .faces import faces_dataset

        data: Any = faces_dataset(split, n, seed, cache=cache)
    elif dataset == "sr":
        data = sr_pairs(split, n, seed=seed, cache=cache)
    elif dataset == "clips":
        from .clips import clips_dataset

        data = clips_dataset(split, n, seed, cache=cache)
    else:
        from .roads import roads_dataset

        data = roads_dataset(split, n, seed, cache=cache)
    data.task = get_task(name)  # an instance: fit passes it through get_task unchanged
    return data


def split_stats(
    dataset: str, task: str | None = None, *, seed: int | None = None
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of the inputs a network of ``dataset`` is given, for the
    fixed ``Normalize`` of :mod:`kdtutor.models.dense`'s networks.

    The statistics, in the units :func:`task_split` serves them ([0, 1]), of the first
    :data:`STATS_LIMIT` inputs of the train split (a prefix of every train split, so a
    network's normalisation does not depend on how much it trains on): the scenes' images
    (the same for detection, segmentation and depth), the pose crops (``task`` ``keypoints``
    or ``pose``), the SR pairs' LR images, every frame of the clips, the roads. The faces are
    already standardised by the train split's statistics when served (an
    :class:`~kdtutor.data.ArrayDataset`), so theirs are 0 and 1 exactly. Computed once per
    process (the split itself is kept on disk).

    Args:
        dataset: A dataset of :data:`DATASET_TASKS`.
        task: Which inputs for ``"scenes"`` (default: the images; ``"keypoints"``: the crops).
        seed: Seed of the data family (default 0).

    Returns:
        ``(mean, std)``, one float per channel each.
    """
    if task is None:
        task = DATASET_TASKS.get(dataset, ("",))[0]
    dataset, name = _task_name(dataset, task)
    if dataset == "faces":
        return (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    if dataset == "scenes" and name != "keypoints":
        name = "detection"  # the images are the same for every scene task: render the cheapest
    seed = 0 if seed is None else seed
    return _split_stats(dataset, name, seed, min(STATS_LIMIT, TASK_SIZES[dataset]["train"]))


@functools.lru_cache(maxsize=64)
def _split_stats(
    dataset: str, task: str, seed: int, n: int
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    return task_split(dataset, task, "train", n, seed=seed).channel_stats(STATS_LIMIT)
