"""One entry point for every split of chapter 8's data, for one task.

``task_split(dataset, task, split, size)`` (design note ``docs/design/applications.md``,
section 1.1) gives the split, its ``task`` a :class:`~kdtutor.tasks.Task` instance that
``fit`` uses as it is: the procedural scenes as :class:`SceneSplit` (detection,
segmentation, depth; materialised here, :func:`scene_split`), their top-down pose crops
(:class:`PoseCrops`), and the faces, SR pairs, clips and roads of their own modules.
:func:`split_stats` gives the per-channel statistics the networks' fixed normalisation
holds. The shared pieces (splits, index ranges, :class:`~kdtutor.data.tasks.TensorSplit`,
the disk cache) are :mod:`kdtutor.data.tasks`'; this module sits above the generators,
which import that one.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from .tasks import (
    SR_SIZES,
    TensorSplit,
    _as_float,
    check_count,
    check_split,
    generated_split,
    sr_pairs,
)

__all__ = [
    "DATASET_TASKS",
    "SCENE_KINDS",
    "SCENE_SPLIT_VERSION",
    "STATS_LIMIT",
    "TASK_SIZES",
    "PoseCrops",
    "SceneSplit",
    "TaskDataset",
    "scene_split",
    "split_stats",
    "task_split",
]

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
    (the teacher cache's key) and ``subset(n)`` are :class:`~kdtutor.data.tasks.TensorSplit`'s.

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
            least :data:`~kdtutor.data.tasks.DISK_CACHE_MIN` scenes.

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
    ``"sr"``          ``superres``                             :func:`~kdtutor.data.tasks.sr_pairs`
    ``"clips"``       ``classification``                       :func:`~kdtutor.data.clips.clips_dataset`
    ``"roads"``       ``lanes``                                :func:`~kdtutor.data.roads.roads_dataset`
    ================  =======================================  =============================

    Every split is drawn from its own index range
    (:data:`~kdtutor.data.tasks.SPLIT_STARTS`; the faces by identity), so the splits are disjoint and a smaller split is a prefix of a larger one;
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
            splits of at least :data:`~kdtutor.data.tasks.DISK_CACHE_MIN` samples.

    Returns:
        A map-style dataset of ``(input, target)`` pairs with ``task``, ``fingerprint()`` and
        ``subset(n)``.

    Raises:
        UnknownNameError: An unknown dataset, or a task the dataset does not serve.
        ValueError: An unknown split or a size below 1.

    Example:
        >>> from kdtutor.data.task_splits import task_split
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
