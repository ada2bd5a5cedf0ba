"""Sample grids of chapter 8's procedural data: faces, action clips, road scenes, SR pairs.

* :func:`face_grid`: identities by rows, images of each by columns (what stays, what varies);
* :func:`clip_grid`: clips by rows, frames by columns, the action on each row and the moving
  object's track drawn over the last frame;
* :func:`road_grid`: road scenes by rows: the image with the lane points of each slot, and
  the slot mask, with the existence vector in the title;
* :func:`sr_grid`: super-resolution pairs by rows: the LR input, its bicubic x4 upsampling
  with its PSNR, and the HR target.

Every function draws with matplotlib's object-oriented API (any backend, ``Agg`` included),
never calls ``show()``, draws images in continuous pixel coordinates (pixel ``(i, j)`` covers
``[j, j + 1] x [i, i + 1]``, the coordinates of the lane points and tracks) and labels its
axes in pixels.

Example:
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> from kdtutor.analysis.applications import road_grid
    >>> fig = road_grid([0, 1])
    >>> len(fig.axes)
    4
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.axes import Axes
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.image import AxesImage
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from ..data.clips import ACTIONS, ClipConfig, clip_tracks, render_clips
from ..data.faces import FaceConfig, render_faces
from ..data.roads import LANE_SLOTS, RoadConfig, render_roads
from ..data.tasks import SRPairs, sr_pairs

__all__ = ["LANE_COLOURS", "clip_grid", "face_grid", "road_grid", "sr_grid"]

#: The colour of each lane slot (left-left, left, right, right-right) in points and masks.
LANE_COLOURS: tuple[str, ...] = ("tab:orange", "tab:green", "tab:cyan", "tab:pink")


def _show(
    ax: Axes, picture: np.ndarray, extent: tuple[float, float] | None = None, **kw: Any
) -> AxesImage:
    """``imshow`` in continuous pixel coordinates, ``y`` downwards; ``extent`` ``(W, H)``
    stretches the picture over another grid (an LR image over its HR frame)."""
    h, w = picture.shape[:2]
    if extent is not None:
        w, h = extent
    return ax.imshow(picture, extent=(0, w, h, 0), interpolation="nearest", **kw)


def _rgb(chw: np.ndarray) -> np.ndarray:
    """uint8 ``(3, H, W)`` -> float ``(H, W, 3)`` in [0, 1]."""
    return np.transpose(np.asarray(chw), (1, 2, 0)).astype(np.float64) / 255.0


def _pixel_axes(ax: Axes, w: int, h: int, *, xlabel: bool, ylabel: str | None) -> None:
    ax.set_xlim(0, w)
    ax.set_ylim(h, 0)
    ax.set_xticks([0, w // 2, w])
    ax.set_yticks([0, h // 2, h])
    ax.tick_params(labelsize=7)
    if xlabel:
        ax.set_xlabel("x (px)", fontsize=8)
    if ylabel is not None:
        ax.set_ylabel(ylabel, fontsize=8)


def _need(items: Sequence[Any], what: str) -> list[Any]:
    items = list(items)
    if not items:
        raise ValueError(f"{what} must not be empty.")
    return items


def face_grid(
    identities: Sequence[int] = (0, 1, 2, 3),
    samples: int = 6,
    *,
    seed: int = 0,
    config: FaceConfig | None = None,
    panel_inches: float = 1.1,
) -> Figure:
    """Faces of several identities (rows), several images of each (columns).

    Args:
        identities: Identity numbers to draw (:func:`~kdtutor.data.faces.render_faces`).
        samples: Images per identity (samples ``0 .. samples - 1``).
        seed: Seed of the identity family.
        config: Image size and nuisances (default ``FaceConfig()``).
        panel_inches: Side of one panel in inches.

    Returns:
        A figure with one row per identity (``id#### / y (px)`` on the first column), one
        column per sample (``sample k`` on the first row), ``x (px)`` on the last row.

    Raises:
        ValueError: No identities, or ``samples`` below 1.
    """
    from ..plots import subplots

    ids = _need(identities, "identities")
    if samples < 1:
        raise ValueError(f"samples must be at least 1, got {samples}.")
    images = render_faces(
        np.repeat(ids, samples), np.tile(np.arange(samples), len(ids)), seed, config
    )
    size = images.shape[-1]
    fig, axes = subplots(
        len(ids), samples, size=(samples * panel_inches + 0.6, len(ids) * panel_inches + 0.6),
        squeeze=False,
    )  # fmt: skip
    for r, identity in enumerate(ids):
        for c in range(samples):
            ax = axes[r, c]
            _show(ax, _rgb(images[r * samples + c]))
            _pixel_axes(ax, size, size, xlabel=r == len(ids) - 1,
                        ylabel=f"id{int(identity):04d}\ny (px)" if c == 0 else None)  # fmt: skip
            if r == 0:
                ax.set_title(f"sample {c}", fontsize=9)
    fig.suptitle("faces: each row one identity, each column one image of it", fontsize=10)
    return fig


def clip_grid(
    indices: Sequence[int] = (0, 1, 2, 3, 4, 5, 6, 7, 8, 9),
    *,
    seed: int = 0,
    config: ClipConfig | None = None,
    panel_inches: float = 0.95,
    track: bool = True,
) -> Figure:
    """Action clips (rows) frame by frame (columns).

    Args:
        indices: Clip indices (:func:`~kdtutor.data.clips.render_clips`); the action is
            ``index % 10``.
        seed: Seed of the clip family.
        config: Motion ranges and nuisances (default ``ClipConfig()``).
        panel_inches: Side of one panel in inches.
        track: Draw the moving object's centre in every frame over the last frame (a line
            from a hollow start marker to a filled end marker).

    Returns:
        A figure with one row per clip (the action and ``y (px)`` on the first column), one
        column per frame (``frame t`` on the first row), ``x (px)`` on the last row.

    Raises:
        ValueError: No indices.
    """
    from ..plots import subplots

    idx = _need(indices, "indices")
    cfg = config if config is not None else ClipConfig()
    clips, labels = render_clips(np.asarray(idx, np.int64), seed, cfg)
    centres = clip_tracks(np.asarray(idx, np.int64), seed, cfg)["centre"]
    frames, size = clips.shape[1], clips.shape[-1]
    fig, axes = subplots(
        len(idx), frames, size=(frames * panel_inches + 0.8, len(idx) * panel_inches + 0.6),
        squeeze=False,
    )  # fmt: skip
    for r in range(len(idx)):
        for t in range(frames):
            ax = axes[r, t]
            _show(ax, _rgb(clips[r, t]))
            name = ACTIONS[int(labels[r])]
            _pixel_axes(ax, size, size, xlabel=r == len(idx) - 1,
                        ylabel=f"{name}\ny (px)" if t == 0 else None)  # fmt: skip
            if r == 0:
                ax.set_title(f"frame {t}", fontsize=9)
        if track:
            ax = axes[r, -1]
            ax.plot(centres[r, :, 0], centres[r, :, 1], "-", color="white", lw=1.0)
            ax.plot(*centres[r, 0], "o", ms=4, mfc="none", mec="white")
            ax.plot(*centres[r, -1], "o", ms=4, mfc="white", mec="black")
    fig.suptitle("action clips: one clip per row (its action on the left), one frame per column",
                 fontsize=10)  # fmt: skip
    return fig


def road_grid(
    indices: Sequence[int] = (0, 1, 2, 3),
    *,
    seed: int = 0,
    config: RoadConfig | None = None,
    panel_inches: float = 2.6,
) -> Figure:
    """Road scenes (rows): the image with each slot's lane points, and the slot mask.

    Args:
        indices: Scene indices (:func:`~kdtutor.data.roads.render_roads`).
        seed: Seed of the scene family.
        config: Geometry and nuisances (default ``RoadConfig()``).
        panel_inches: Width of one panel in inches.

    Returns:
        A figure with two axes per scene, ``image, lane points`` (points coloured by slot)
        and ``lane mask`` (the existence vector in its title), ``y (px)`` on the first
        column, ``x (px)`` on the last row, and a legend of the slots.

    Raises:
        ValueError: No indices.
    """
    from ..plots import subplots

    idx = _need(indices, "indices")
    cfg = config if config is not None else RoadConfig()
    scenes = render_roads(np.asarray(idx, np.int64), seed, cfg)
    rows = cfg.sample_rows() + 0.5
    h, w = cfg.height, cfg.width
    aspect = h / w
    fig, axes = subplots(
        len(idx), 2, size=(2 * panel_inches + 0.6, len(idx) * panel_inches * aspect + 1.0),
        squeeze=False,
    )  # fmt: skip
    cmap = ListedColormap(["#202020", *LANE_COLOURS])
    for r in range(len(idx)):
        ax_image, ax_mask = axes[r]
        _show(ax_image, _rgb(scenes["images"][r]))
        for k in range(len(LANE_SLOTS)):
            points = scenes["points"][r, k]
            valid = points >= 0
            if valid.any():
                ax_image.plot(points[valid], rows[valid], "o", ms=2.5, color=LANE_COLOURS[k])
        _show(ax_mask, scenes["mask"][r], cmap=cmap, vmin=-0.5, vmax=len(LANE_SLOTS) + 0.5)
        exist = "".join(str(int(e)) for e in scenes["exist"][r])
        ax_image.set_title(f"scene {int(idx[r])}: image, lane points", fontsize=9)
        ax_mask.set_title(f"lane mask, existence {exist}", fontsize=9)
        for c, ax in enumerate((ax_image, ax_mask)):
            _pixel_axes(ax, w, h, xlabel=r == len(idx) - 1, ylabel="y (px)" if c == 0 else None)
    handles = [Patch(facecolor=LANE_COLOURS[k], label=name) for k, name in enumerate(LANE_SLOTS)]
    handles.append(Line2D([], [], ls="", marker="o", color="grey", label="lane point"))
    fig.legend(handles=handles, loc="outside lower center", ncol=len(handles), fontsize=8)
    return fig


def sr_grid(
    indices: Sequence[int] = (0, 1, 2, 3),
    *,
    split: str = "test",
    seed: int = 0,
    pairs: SRPairs | None = None,
    panel_inches: float = 1.8,
) -> Figure:
    """Super-resolution pairs (rows): LR input, bicubic x4 upsampling, HR target.

    Args:
        indices: Pair indices within the split.
        split: ``"train"``, ``"validation"`` or ``"test"``
            (:func:`~kdtutor.data.tasks.sr_pairs`); ignored when ``pairs`` is given.
        seed: Seed of the image family; ignored when ``pairs`` is given.
        pairs: Pairs to draw from instead.
        panel_inches: Side of one panel in inches.

    Returns:
        A figure with three axes per pair, all on the HR pixel grid, ``LR s x s`` (drawn
        with its pixels stretched), ``bicubic x4`` with its PSNR against the HR image in
        dB, and ``HR S x S``; ``y (px)`` on the first column and ``x (px)`` on the last row.

    Raises:
        ValueError: No indices.
    """
    from ..plots import subplots

    idx = _need(indices, "indices")
    if pairs is None:
        pairs = sr_pairs(split, max(int(i) for i in idx) + 1, seed=seed, cache=False)
    fig, axes = subplots(
        len(idx), 3, size=(3 * panel_inches + 0.6, len(idx) * panel_inches + 0.5), squeeze=False
    )
    for r, i in enumerate(idx):
        lr, hr = pairs[int(i)]
        up = F.interpolate(lr[None], scale_factor=pairs.scale, mode="bicubic").clamp(0, 1)[0]
        mse = float(torch.mean((up - hr) ** 2))
        psnr = 10.0 * np.log10(1.0 / max(mse, 1e-12))
        size, small = hr.shape[-1], lr.shape[-1]
        pictures = (lr, up, hr)
        titles = (f"LR {small}x{small}", f"bicubic x{pairs.scale}: {psnr:.1f} dB",
                  f"HR {size}x{size}")  # fmt: skip
        for c, (picture, title) in enumerate(zip(pictures, titles, strict=True)):
            ax = axes[r, c]
            _show(ax, picture.permute(1, 2, 0).numpy(), extent=(size, size))
            ax.set_title(title, fontsize=9)
            _pixel_axes(ax, size, size, xlabel=r == len(idx) - 1,
                        ylabel=f"pair {int(i)}\ny (px)" if c == 0 else None)  # fmt: skip
    fig.suptitle("super-resolution pairs (PSNR of bicubic upsampling, RGB)", fontsize=10)
    return fig
