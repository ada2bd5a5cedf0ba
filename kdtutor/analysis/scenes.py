"""Drawing the procedural scenes with every annotation: the sample grid of the docs.

* :func:`draw_scene`: one scene (:func:`kdtutor.data.scenes.scene_annotations`, or any dict
  with the same keys, e.g. a model's predictions) on a row of five axes: the image with its
  boxes and class labels, the semantic mask, the instance masks, the keypoints (filled where
  visible, hollow where occluded) and the depth map.
* :func:`scene_grid`: a figure of several scenes, one per row, with the class legend and a
  depth colour bar.

The helpers draw with matplotlib's object-oriented API (any backend, ``Agg`` included) and
never call ``show()``. Images are drawn in continuous pixel coordinates (pixel ``(i, j)``
covers ``[j, j + 1] x [i, i + 1]``), the coordinates of the boxes and keypoints.

Example:
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> from kdtutor.analysis.scenes import scene_grid
    >>> fig = scene_grid([0, 1])
    >>> len(fig.axes) - 1  # five panels per scene, and the depth colour bar
    10
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.colors import ListedColormap, to_rgb
from matplotlib.figure import Figure
from matplotlib.image import AxesImage
from matplotlib.lines import Line2D
from matplotlib.patches import Patch, Rectangle

from ..data.scenes import SCENE_CLASSES, scene_annotations

__all__ = ["CLASS_COLOURS", "PANELS", "draw_scene", "scene_grid"]

#: The panels of a scene's row, in order, and their titles.
PANELS: dict[str, str] = {
    "boxes": "boxes, labels",
    "semantic": "semantic mask",
    "instances": "instance masks",
    "keypoints": "keypoints",
    "depth": "depth",
}

#: The colour of each class id (0: background) in the semantic mask, boxes and legend.
CLASS_COLOURS: tuple[str, ...] = ("#202020", "tab:blue", "tab:orange", "tab:green")

_INSTANCE_COLOURS = ("tab:red", "tab:cyan", "tab:olive", "tab:purple", "tab:pink", "tab:brown")
_SLOT_COLOURS = ("#ffd700", "#ff4500", "#00e5ff", "#ff00ff")  # keypoint slots 0-3


def _np(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor
        value = value.detach().cpu().numpy()
    return np.asarray(value)


def _show(ax: Axes, picture: np.ndarray, **kwargs: Any) -> AxesImage:
    """``imshow`` in continuous pixel coordinates, ``y`` downwards."""
    h, w = picture.shape[:2]
    return ax.imshow(picture, extent=(0, w, h, 0), interpolation="nearest", **kwargs)


def _rgb(scene: Mapping[str, Any]) -> np.ndarray:
    return np.clip(np.transpose(_np(scene["image"]).astype(np.float64), (1, 2, 0)), 0.0, 1.0)


def _instances_picture(masks: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Each instance's pixels in its own colour (cycling), black elsewhere."""
    picture = np.zeros((*shape, 3))
    for i, m in enumerate(masks.astype(bool)):
        picture[m] = to_rgb(_INSTANCE_COLOURS[i % len(_INSTANCE_COLOURS)])
    return picture


def draw_scene(
    axes: Sequence[Axes],
    scene: Mapping[str, Any],
    *,
    class_names: Sequence[str] = SCENE_CLASSES,
    depth_range: tuple[float, float] | None = None,
    titles: bool = True,
) -> AxesImage:
    """Draw one scene and its annotations on five axes, one per :data:`PANELS` entry.

    Args:
        axes: Five axes, in the order of :data:`PANELS`.
        scene: ``image`` ``(3, H, W)`` in [0, 1], ``boxes`` ``(n, 4)`` xyxy, ``labels``
            ``(n,)``, ``mask`` ``(H, W)`` class ids, ``masks`` ``(n, H, W)``, ``depth``
            ``(H, W)`` and ``keypoints`` ``(n, K, 3)`` ``(x, y, visibility)``, as numpy
            arrays or tensors (:func:`~kdtutor.data.scenes.scene_annotations`).
        class_names: Name of each class id, written beside its box.
        depth_range: Colour scale of the depth map; defaults to its own minimum and maximum.
        titles: Give each axes its panel's short title.

    Returns:
        The depth map's image, for a colour bar.
    """
    if len(axes) != len(PANELS):
        raise ValueError(f"draw_scene needs {len(PANELS)} axes ({list(PANELS)}), got {len(axes)}.")
    ax_boxes, ax_semantic, ax_instances, ax_keypoints, ax_depth = axes
    rgb = _rgb(scene)
    boxes = _np(scene["boxes"]).reshape(-1, 4)
    labels = _np(scene["labels"]).astype(int)

    _show(ax_boxes, rgb)
    for (x0, y0, x1, y1), label in zip(boxes, labels, strict=True):
        colour = CLASS_COLOURS[label % len(CLASS_COLOURS)]
        ax_boxes.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, ec=colour, lw=1.5))
        ax_boxes.text(
            x0,
            y0,
            class_names[label],
            fontsize=7,
            color="white",
            va="top",
            bbox={"facecolor": colour, "edgecolor": "none", "pad": 0.5},
            clip_on=True,
        )

    cmap = ListedColormap(list(CLASS_COLOURS))
    _show(ax_semantic, _np(scene["mask"]), cmap=cmap, vmin=-0.5, vmax=len(CLASS_COLOURS) - 0.5)

    _show(ax_instances, _instances_picture(_np(scene["masks"]), rgb.shape[:2]))

    depth = _np(scene["depth"]).astype(np.float64)
    lo, hi = depth_range if depth_range is not None else (depth.min(), depth.max())
    depth_image = _show(ax_depth, depth, cmap="magma_r", vmin=lo, vmax=hi)

    _show(ax_keypoints, 0.35 + 0.5 * rgb)  # faded, so the points stand out
    for i, points in enumerate(_np(scene["keypoints"]).reshape(len(boxes), -1, 3)):
        labelled = points[points[:, 2] > 0]
        ring = np.concatenate([labelled, labelled[:1]])[:, :2]
        colour = _INSTANCE_COLOURS[i % len(_INSTANCE_COLOURS)]
        ax_keypoints.plot(ring[:, 0], ring[:, 1], color=colour, lw=1.0)
        for slot, (x, y, v) in enumerate(points):
            if v > 0:
                face = _SLOT_COLOURS[slot % len(_SLOT_COLOURS)] if v > 1 else "none"
                ax_keypoints.plot(
                    x, y, "o", ms=4.5, mfc=face, mec=_SLOT_COLOURS[slot % len(_SLOT_COLOURS)]
                )

    h, w = rgb.shape[:2]
    for ax, title in zip(axes, PANELS.values(), strict=True):
        ax.set_xlim(0, w)
        ax.set_ylim(h, 0)
        ax.set_xticks([0, w // 2, w])
        ax.set_yticks([0, h // 2, h])
        ax.tick_params(labelsize=7)
        if titles:
            ax.set_title(title, fontsize=9)
    return depth_image


def scene_grid(
    indices: Sequence[int] = (0, 1, 2, 3),
    *,
    seed: int = 0,
    size: int = 64,
    max_objects: int = 3,
    scenes: Sequence[Mapping[str, Any]] | None = None,
    panel_inches: float = 1.7,
) -> Figure:
    """A figure of scenes, one per row, with every annotation (:func:`draw_scene`).

    Args:
        indices: The scenes to draw (:func:`~kdtutor.data.scenes.scene_annotations` of
            ``(index, seed, size, max_objects)``); ignored when ``scenes`` is given.
        seed: Seed of the scene family.
        size: Image side in pixels.
        max_objects: At most this many shapes per scene.
        scenes: Annotation dicts to draw instead (e.g. a model's predictions).
        panel_inches: Side of one panel in inches.

    Returns:
        A figure with rows of five axes (titles on the first row, ``x (px)`` on the last,
        ``y (px)`` on the first column), a legend of the classes and of the keypoints'
        visibility, and one depth colour bar on a common scale.
    """
    from ..plots import subplots

    if scenes is None:
        scenes = [scene_annotations(int(i), seed, size, max_objects) for i in indices]
    if len(scenes) == 0:
        raise ValueError("scene_grid needs at least one scene.")
    lo = min(float(_np(s["depth"]).min()) for s in scenes)
    hi = max(float(_np(s["depth"]).max()) for s in scenes)
    rows = len(scenes)
    fig, axes = subplots(
        rows,
        len(PANELS),
        size=(len(PANELS) * panel_inches + 0.8, rows * panel_inches + 0.6),
        squeeze=False,
    )
    depth_image = None
    for r, scene in enumerate(scenes):
        depth_image = draw_scene(axes[r], scene, depth_range=(lo, hi), titles=r == 0)
        axes[r, 0].set_ylabel("y (px)", fontsize=8)
    for ax in axes[-1]:
        ax.set_xlabel("x (px)", fontsize=8)
    fig.colorbar(depth_image, ax=axes[:, -1], label="depth (m)", shrink=0.8)
    handles = [
        Patch(facecolor=CLASS_COLOURS[c], label=name) for c, name in enumerate(SCENE_CLASSES)
    ]
    handles += [
        Line2D([], [], ls="", marker="o", mfc="grey", mec="grey", label="visible keypoint"),
        Line2D([], [], ls="", marker="o", mfc="none", mec="grey", label="occluded keypoint"),
    ]
    fig.legend(handles=handles, loc="outside lower center", ncol=len(handles), fontsize=8)
    return fig
