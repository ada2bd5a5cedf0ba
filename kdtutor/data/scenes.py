"""Procedural scenes: several shapes per image, with the targets of five vision tasks.

The smallest scene data that exercises detection, segmentation, depth and pose estimation
through the same ``fit``: each image of ``size`` x ``size`` pixels holds 1 to ``max_objects``
shapes (square, disk, triangle; class ids 1-3, 0 is the background) of random colour, size
and position over a noisy background. Scenes are deterministic per ``(index, seed)``, drawn
with numpy when read (about 1 ms for a 64-pixel scene with every annotation).

Every scene carries these annotations (:func:`scene_annotations` returns them all):

* **boxes and labels** of the visible part of each shape (a shape hidden but for fewer than
  four pixels has none), ``xyxy`` pixels, as torchvision's detection models take them;
* a **semantic mask**: the class that owns each pixel;
* **instance masks** ``(n, H, W)`` bool, the visible pixels of each boxed shape, aligned with
  the boxes (Mask R-CNN's ``masks``); they partition the mask's foreground;
* a **depth map** ``(H, W)`` float32 in metres-like units (see *Depth* below);
* **keypoints** ``(n, 4, 3)`` float32, ``(x, y, visibility)`` per shape
  (see *Keypoints* below), Keypoint R-CNN's ``keypoints``.

**Depth.** The camera looks down at a ground plane whose horizon lies half an image above
the top row, so the ground's depth is ``6 / (y / size + 0.5)`` at row ``y``
(:func:`ground_depth`: 4 at the bottom edge, 12 at the top). Each shape stands upright on
the ground where its lowest point touches it, at the ground's depth there (objects lower in
the image are nearer: the "height in the visual field" cue). Shapes are drawn in a fixed
order and a later shape covers an earlier one where they overlap; a later shape that is not
at least 5% nearer than every shape it overlaps is brought forward to 95% of the nearest
one's depth. So wherever two shapes overlap, the one drawn on top is strictly nearer, each
pixel belongs to the nearest shape that covers it, and the image is exactly what painting
from far to near would give (occlusion is consistent with the depth map). The ground never
hides a shape: a shape is nowhere farther than the ground behind it. What a network can
read: the shapes' footing, their occlusions and the fixed ground plane. The shading does not
change with depth, so that the images, masks and boxes stay those the scenes had before they
had depth (see below).

**Keypoints.** Four slots per shape, clockwise from the top (:data:`KEYPOINT_NAMES`): a
square's corners (top-left, top-right, bottom-right, bottom-left), a disk's compass points
(top, right, bottom, left) and a triangle's vertices (apex, bottom-right, bottom-left; its
fourth slot is ``(0, 0, 0)``, "not labelled"). Coordinates are continuous pixels (pixel
``(i, j)`` covers ``[j, j + 1] x [i, i + 1]``, as the boxes). Visibility follows COCO: 2 when
the shape still owns the pixel of its silhouette nearest the keypoint, 1 when a nearer shape
covers that pixel ("labelled but occluded": torchvision trains on every keypoint with
visibility > 0; zero the 1s to train on visible ones only), 0 for the triangle's empty slot.

Why the shapes' own points rather than articulated stick figures: stick figures would be a
fourth class with new pixels, so every scene's image, mask, boxes and labels would change,
and the detection and segmentation data would no longer be what they were. With the shapes'
points every boxed object has keypoints (Keypoint R-CNN's one set per instance holds with no
extra class), occlusion hides some of them, a corner is a local image feature while a disk's
compass points are defined by the whole outline (as a hip is under clothes), and a
triangle's missing slot is the "joint not labelled" case, all at no cost.

``ScenesDataset(task=...)`` yields, per scene, the image ``(3, H, W)`` float32 in [0, 1] and:

================  ==============================================================
``task``          target
================  ==============================================================
``detection``     ``{"boxes", "labels"}``
``segmentation``  the semantic mask ``(H, W)`` int64
``instance``      ``{"boxes", "labels", "masks"}`` (masks ``(n, H, W)`` bool)
``depth``         the depth map ``(1, H, W)`` float32
``pose``          ``{"boxes", "labels", "keypoints"}`` (``(n, 4, 3)`` float32)
================  ==============================================================

The detection and segmentation targets and the images are exactly those of the scenes before
depth, instances and keypoints were added (the same random draws, in the same order).

>>> from kdtutor.data.scenes import ScenesDataset, scene_annotations
>>> image, target = ScenesDataset(4, task="detection")[0]
>>> tuple(image.shape), sorted(target)
((3, 64, 64), ['boxes', 'labels'])
>>> scene = scene_annotations(0)
>>> scene["depth"].shape, scene["keypoints"].shape[1:], scene["masks"].dtype
((64, 64), (4, 3), dtype('bool'))
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from ._random import mix_seed

__all__ = [
    "KEYPOINT_NAMES",
    "NUM_KEYPOINTS",
    "SCENE_CLASSES",
    "TASKS",
    "ScenesDataset",
    "ground_depth",
    "render_scene",
    "scene_annotations",
]

#: Class names by class id; 0 is the background.
SCENE_CLASSES = ("background", "square", "disk", "triangle")

#: The tasks :class:`ScenesDataset` makes targets for.
TASKS = ("detection", "segmentation", "instance", "depth", "pose")

#: Keypoint slots per object (torchvision's ``K``); a class with fewer points leaves the last
#: slots unlabelled (visibility 0).
NUM_KEYPOINTS = 4

#: The name of each keypoint slot, per class, clockwise from the top.
KEYPOINT_NAMES: dict[str, tuple[str, ...]] = {
    "square": ("top-left", "top-right", "bottom-right", "bottom-left"),
    "disk": ("top", "right", "bottom", "left"),
    "triangle": ("apex", "bottom-right", "bottom-left"),
}

_HORIZON = 0.5  # the horizon lies this fraction of the image side above the top row
_GROUND_SCALE = 6.0  # ground depth = _GROUND_SCALE / (y / size + _HORIZON)
_FORWARD = 0.95  # a shape drawn over a nearer-footed one is brought to this fraction of its depth
_MIN_PIXELS = 4  # a shape with fewer visible pixels has no box, mask or keypoints


def ground_depth(y: Any, size: int) -> np.ndarray:
    """Depth of the ground plane at image row ``y`` (continuous pixels from the top).

    ``6 / (y / size + 0.5)``: 12 at the top edge, 4 at the bottom edge, whatever the size.

    Args:
        y: Row coordinate(s) in pixels (a pixel centre of row ``i`` is ``i + 0.5``).
        size: Image side in pixels.

    Returns:
        The depth, float64, of ``y``'s shape.
    """
    return _GROUND_SCALE / (np.asarray(y, dtype=np.float64) / size + _HORIZON)


def _draw(
    index: int, seed: int, size: int, max_objects: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[tuple[int, float, float, float, np.ndarray]]]:
    """Image (unclipped), semantic mask, owner map (-1: background) and the drawn shapes
    ``(cls, cx, cy, r, silhouette)`` in drawing order. The random draws and their order are
    those of the original scenes, which keeps their images, masks and boxes unchanged."""
    rng = np.random.default_rng(mix_seed(seed, index, 7))
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    image = np.empty((3, size, size), np.float32)
    image[:] = rng.uniform(0.0, 0.4, (3, 1, 1)) + rng.normal(0, 0.05, (3, size, size))
    mask = np.zeros((size, size), np.int64)
    owner = np.full((size, size), -1, np.int64)
    shapes = []
    for k in range(int(rng.integers(1, max_objects + 1))):
        cls = int(rng.integers(1, len(SCENE_CLASSES)))
        r = rng.uniform(0.1, 0.22) * size
        cx, cy = rng.uniform(r, size - r, 2)
        if cls == 1:
            inside = (np.abs(xx - cx) <= r) & (np.abs(yy - cy) <= r)
        elif cls == 2:
            inside = (xx - cx) ** 2 + (yy - cy) ** 2 <= r**2
        else:  # an upward triangle inside the square of half-side r
            inside = (yy <= cy + r) & (np.abs(xx - cx) <= (yy - (cy - r)) / 2)
        image[:, inside] = rng.uniform(0.5, 1.0, (3, 1))
        mask[inside] = cls
        owner[inside] = k
        shapes.append((cls, float(cx), float(cy), float(r), inside))
    return image, mask, owner, shapes


def _visible(owner: np.ndarray, count: int) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """``(k, ys, xs)`` of the visible pixels of each shape with at least ``_MIN_PIXELS``."""
    out = []
    for k in range(count):
        ys, xs = np.nonzero(owner == k)
        if len(xs) >= _MIN_PIXELS:  # fully occluded shapes have no box
            out.append((k, ys, xs))
    return out


def _box(ys: np.ndarray, xs: np.ndarray) -> list[int]:
    return [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]


def render_scene(
    index: int, seed: int = 0, size: int = 64, max_objects: int = 3
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One scene's image and detection and segmentation targets.

    Args:
        index: Scene index.
        seed: Seed of the scene family.
        size: Image side in pixels.
        max_objects: At most this many shapes.

    Returns:
        float32 image ``(3, size, size)`` in [0, 1], int64 mask ``(size, size)``, float32
        boxes ``(n, 4)`` (``xyxy`` pixels, of the visible part) and int64 labels ``(n,)``.
    """
    image, mask, owner, shapes = _draw(index, seed, size, max_objects)
    visible = _visible(owner, len(shapes))
    return (
        np.clip(image, 0.0, 1.0),
        mask,
        np.asarray([_box(ys, xs) for _, ys, xs in visible], np.float32).reshape(-1, 4),
        np.asarray([shapes[k][0] for k, _, _ in visible], np.int64),
    )


def _points(cls: int, cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    """The keypoints of a shape, clockwise from the top (:data:`KEYPOINT_NAMES`)."""
    if cls == 1:
        return [(cx - r, cy - r), (cx + r, cy - r), (cx + r, cy + r), (cx - r, cy + r)]
    if cls == 2:
        return [(cx, cy - r), (cx + r, cy), (cx, cy + r), (cx - r, cy)]
    return [(cx, cy - r), (cx + r, cy + r), (cx - r, cy + r)]


def scene_annotations(
    index: int, seed: int = 0, size: int = 64, max_objects: int = 3
) -> dict[str, np.ndarray]:
    """Every annotation of one scene, e.g. to draw it (:mod:`kdtutor.analysis.scenes`).

    Args:
        index: Scene index.
        seed: Seed of the scene family.
        size: Image side in pixels.
        max_objects: At most this many shapes.

    Returns:
        A dict of numpy arrays; ``n`` boxed (visible) shapes, ``m >= n`` drawn ones:

        * ``image`` ``(3, H, W)`` float32 in [0, 1]; ``mask`` ``(H, W)`` int64 class ids;
        * ``boxes`` ``(n, 4)`` float32 ``xyxy``; ``labels`` ``(n,)`` int64;
        * ``masks`` ``(n, H, W)`` bool, the visible pixels of each boxed shape;
        * ``depth`` ``(H, W)`` float32; ``depths`` ``(n,)`` float32, each boxed shape's;
        * ``keypoints`` ``(n, 4, 3)`` float32 ``(x, y, visibility)``;
        * ``object_labels`` ``(m,)``, ``object_geometry`` ``(m, 3)`` (centre x, centre y,
          half-size r in pixels), ``object_depths`` ``(m,)`` and ``object_kept`` ``(m,)``
          bool: every drawn shape in drawing order, boxed or not.
    """
    image, mask, owner, shapes = _draw(index, seed, size, max_objects)
    m = len(shapes)
    object_depths = np.empty(m, np.float64)
    for k, (_, _, cy, r, inside) in enumerate(shapes):
        z = float(ground_depth(cy + r, size))  # standing on the ground at its lowest point
        for j in range(k):
            if (shapes[j][4] & inside).any():  # drawn over shape j: must be nearer
                z = min(z, _FORWARD * object_depths[j])
        object_depths[k] = z
    rows = ground_depth(np.arange(size) + 0.5, size).astype(np.float32)
    depth = np.repeat(rows[:, None], size, axis=1)
    fg = owner >= 0
    depth[fg] = object_depths[owner[fg]]

    visible = _visible(owner, m)
    n = len(visible)
    masks = np.zeros((n, size, size), bool)
    keypoints = np.zeros((n, NUM_KEYPOINTS, 3), np.float32)
    for i, (k, ys, xs) in enumerate(visible):
        cls, cx, cy, r, inside = shapes[k]
        masks[i, ys, xs] = True
        sy, sx = np.nonzero(inside)
        for slot, (px, py) in enumerate(_points(cls, cx, cy, r)):
            nearest = np.argmin((sx + 0.5 - px) ** 2 + (sy + 0.5 - py) ** 2)
            seen = owner[sy[nearest], sx[nearest]] == k
            keypoints[i, slot] = (px, py, 2.0 if seen else 1.0)
    kept = np.asarray([k for k, _, _ in visible], np.int64)
    object_kept = np.zeros(m, bool)
    object_kept[kept] = True
    return {
        "image": np.clip(image, 0.0, 1.0),
        "mask": mask,
        "boxes": np.asarray([_box(ys, xs) for _, ys, xs in visible], np.float32).reshape(-1, 4),
        "labels": np.asarray([shapes[k][0] for k in kept], np.int64),
        "masks": masks,
        "depth": depth,
        "depths": object_depths[kept].astype(np.float32),
        "keypoints": keypoints,
        "object_labels": np.asarray([s[0] for s in shapes], np.int64),
        "object_geometry": np.asarray([s[1:4] for s in shapes], np.float64).reshape(-1, 3),
        "object_depths": object_depths.astype(np.float32),
        "object_kept": object_kept,
    }


class ScenesDataset(Dataset):
    """``n`` procedural scenes with the targets of one task (:data:`TASKS`).

    ``fit`` picks its task by the dataset's ``task`` name: ``"detection"`` and
    ``"segmentation"`` are tasks of :mod:`kdtutor.tasks`; ``"instance"``, ``"depth"`` and
    ``"pose"`` need a task registered under that name (or ``fit(..., task=...)``).

    Args:
        n: Number of scenes.
        seed: Scenes are deterministic per ``(index, seed)``; use another seed for a test split.
        size: Image side in pixels (at least 8).
        max_objects: At most this many shapes per scene (at least 1).
        task: What the targets are: ``"detection"`` (``{"boxes", "labels"}``),
            ``"segmentation"`` (the class mask), ``"instance"`` (``{"boxes", "labels",
            "masks"}``), ``"depth"`` (``(1, H, W)`` depth) or ``"pose"`` (``{"boxes",
            "labels", "keypoints"}``).

    Raises:
        ValueError: An unknown task, or a size, count or ``n`` out of range.
    """

    num_classes = len(SCENE_CLASSES)
    num_keypoints = NUM_KEYPOINTS

    def __init__(
        self,
        n: int,
        seed: int = 0,
        size: int = 64,
        max_objects: int = 3,
        task: Literal["detection", "segmentation", "instance", "depth", "pose"] = "detection",
    ) -> None:
        if task not in TASKS:
            names = ", ".join(repr(t) for t in TASKS)
            raise ValueError(f"task must be one of {names}; got {task!r}.")
        if n < 0:
            raise ValueError(f"n must be non-negative, got {n}.")
        if size < 8:
            raise ValueError(f"size must be at least 8 pixels, got {size}.")
        if max_objects < 1:
            raise ValueError(f"max_objects must be at least 1, got {max_objects}.")
        self.n, self.seed, self.size, self.max_objects, self.task = n, seed, size, max_objects, task

    def __len__(self) -> int:
        return self.n

    def _check(self, index: int) -> None:
        if not 0 <= index < self.n:
            raise IndexError(f"scene {index} of a dataset of {self.n}")

    def annotations(self, index: int) -> dict[str, np.ndarray]:
        """Every annotation of scene ``index`` (:func:`scene_annotations`)."""
        self._check(index)
        return scene_annotations(index, self.seed, self.size, self.max_objects)

    def __getitem__(self, index: int) -> tuple[Tensor, Any]:
        self._check(index)
        if self.task in ("detection", "segmentation"):
            image, mask, boxes, labels = render_scene(index, self.seed, self.size, self.max_objects)
            x = torch.from_numpy(image)
            if self.task == "segmentation":
                return x, torch.from_numpy(mask)
            return x, {"boxes": torch.from_numpy(boxes), "labels": torch.from_numpy(labels)}
        scene = scene_annotations(index, self.seed, self.size, self.max_objects)
        x = torch.from_numpy(scene["image"])
        if self.task == "depth":
            return x, torch.from_numpy(scene["depth"])[None]
        target = {
            "boxes": torch.from_numpy(scene["boxes"]),
            "labels": torch.from_numpy(scene["labels"]),
        }
        extra = "masks" if self.task == "instance" else "keypoints"
        target[extra] = torch.from_numpy(scene[extra])
        return x, target

    def __repr__(self) -> str:
        return f"ScenesDataset(n={self.n}, seed={self.seed}, size={self.size}, task={self.task!r})"
