"""Procedural scenes: several shapes per image, with boxes, labels and a semantic mask.

The smallest scene data that exercises detection and segmentation through the same ``fit``:
each image of ``size`` x ``size`` pixels holds 1 to ``max_objects`` shapes (square, disk,
triangle; class ids 1-3, 0 is the background) of random colour, size and position over a
noisy background; later shapes occlude earlier ones, and the mask says which class owns
each pixel. Images are deterministic per ``(index, seed)``, drawn with numpy when read.

``ScenesDataset(task="detection")`` yields ``(image, {"boxes", "labels"})`` as torchvision's
detection models take them; ``task="segmentation"`` yields ``(image, mask)``.

>>> from kdtutor.data.scenes import ScenesDataset
>>> image, target = ScenesDataset(4, task="detection")[0]
>>> tuple(image.shape), sorted(target)
((3, 64, 64), ['boxes', 'labels'])
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from ._random import mix_seed

SCENE_CLASSES = ("background", "square", "disk", "triangle")


def render_scene(
    index: int, seed: int = 0, size: int = 64, max_objects: int = 3
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One scene: float32 image ``(3, size, size)`` in [0, 1], int64 mask ``(size, size)``,
    float32 boxes ``(n, 4)`` (``xyxy`` pixels, of the visible part) and int64 labels ``(n,)``."""
    rng = np.random.default_rng(mix_seed(seed, index, 7))
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    image = np.empty((3, size, size), np.float32)
    image[:] = rng.uniform(0.0, 0.4, (3, 1, 1)) + rng.normal(0, 0.05, (3, size, size))
    mask = np.zeros((size, size), np.int64)
    owner = np.full((size, size), -1, np.int64)
    labels = []
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
        labels.append(cls)
    boxes, kept = [], []
    for k, cls in enumerate(labels):
        ys, xs = np.nonzero(owner == k)
        if len(xs) >= 4:  # fully occluded shapes have no box
            boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
            kept.append(cls)
    return (
        np.clip(image, 0.0, 1.0),
        mask,
        np.asarray(boxes, np.float32).reshape(-1, 4),
        np.asarray(kept, np.int64),
    )


class ScenesDataset(Dataset):
    """``n`` procedural scenes for ``task`` ``"detection"`` or ``"segmentation"``.

    Args:
        n: number of scenes.
        seed: scenes are deterministic per ``(index, seed)``; use another seed for a test split.
        size: image side in pixels.
        max_objects: at most this many shapes per scene.
        task: what the targets are.
    """

    num_classes = len(SCENE_CLASSES)

    def __init__(
        self,
        n: int,
        seed: int = 0,
        size: int = 64,
        max_objects: int = 3,
        task: Literal["detection", "segmentation"] = "detection",
    ) -> None:
        if task not in ("detection", "segmentation"):
            raise ValueError(f"task must be 'detection' or 'segmentation', got {task!r}.")
        self.n, self.seed, self.size, self.max_objects, self.task = n, seed, size, max_objects, task

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> tuple[Tensor, Any]:
        if not 0 <= index < self.n:
            raise IndexError(f"scene {index} of a dataset of {self.n}")
        image, mask, boxes, labels = render_scene(index, self.seed, self.size, self.max_objects)
        x = torch.from_numpy(image)
        if self.task == "segmentation":
            return x, torch.from_numpy(mask)
        return x, {"boxes": torch.from_numpy(boxes), "labels": torch.from_numpy(labels)}

    def __repr__(self) -> str:
        return f"ScenesDataset(n={self.n}, seed={self.seed}, size={self.size}, task={self.task!r})"
