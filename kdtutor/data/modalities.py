r"""A second modality of the ``shapes`` scenes: a depth-like *geometry* rendering.

Cross-modal distillation (Gupta, Hoffman, Malik, 2016) needs *paired* data: the same scene
seen by two sensors, a labelled one (RGB) and another one (depth). :func:`geometry_images`
renders the scene of ``shapes`` image ``(seed, index)`` (same shape, size, position, rotation
and fine geometry: the same counter-based uniforms of ``(seed, index, stream)`` and the same
signed distance functions as :func:`~kdtutor.data.make_shapes`) as a depth map, encoded in three
channels in the spirit of Gupta et al.'s HHA encoding (horizontal disparity, height above
ground, angle), so that an RGB network applies unchanged:

* channel 0, *depth*: a tilted background plane :math:`P(x, y)` minus a raised plateau over the
  shape, :math:`D = P - H\,\alpha + \sigma\,n`;
* channel 1, *height* above the plane: :math:`P - D = H\,\alpha - \sigma\,n`;
* channel 2, *angle*: the slope of the height field, :math:`\tfrac{2}{\pi}\arctan(g\,
  \lVert\nabla h\rVert)`, high on the shape's edges.

Here :math:`\alpha` is the shape's anti-aliased coverage, exactly the field the RGB image mixes
its colours with, :math:`H` a per-image plateau height, :math:`n` Gaussian sensor noise of a
per-image :math:`\sigma`; a fraction of the pixels is *missing* (all three channels 0, as a
depth sensor's holes), and every channel is quantised to 8 bits. None of the RGB nuisances
(colours, texture, shading) appear. The geometry draws its own quantities from uniform streams
43-49, after the 43 streams the RGB image uses, so the two modalities share the scene and
nothing else.

The module imports ``shapes``' private helpers and does not change ``shapes``: RGB images
are the same with or without it.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..errors import KDTutorError, unknown_name
from . import shapes as _shapes
from ._random import uniforms as _uniforms
from .arrays import ArrayDataset, channel_stats

__all__ = [
    "MODALITIES",
    "GeometryConfig",
    "geometry_dataset",
    "geometry_images",
    "paired_view",
    "register_geometry_dataset",
]

#: The modalities a shapes scene can be rendered in besides RGB.
MODALITIES: tuple[str, ...] = ("geometry",)

#: The registry name of :func:`geometry_dataset` (see :func:`register_geometry_dataset`).
DATASET_NAME = "shapes_geometry"

# uniform streams of the geometry, after the RGB image's 43 (shapes._STREAMS)
_G_PLANE, _G_TILT_ANGLE, _G_TILT, _G_HEIGHT, _G_NOISE, _G_NOISE_AT, _G_MISSING_AT = range(
    _shapes._STREAMS, _shapes._STREAMS + 7
)
_G_STREAMS = _shapes._STREAMS + 7


@dataclass(frozen=True)
class GeometryConfig:
    """Knobs of the geometry rendering (depth values are fractions of the 8-bit range).

    Attributes:
        plane_range: Range of the background plane's depth at the image centre.
        tilt: Largest change of the plane's depth from the centre to the image's edge.
        height_range: Range of the plateau's height :math:`H` above the plane.
        noise_std_range: Range of the per-image standard deviation :math:`\\sigma` of the
            Gaussian depth noise.
        missing_fraction: Expected fraction of missing pixels (all channels 0).
        slope_gain: :math:`g` of the angle channel (height units per pixel).

    The defaults are our choice (not from Gupta et al.); the difficulty is meant to be set by
    the chapter's pilot (noise and missing pixels are the knobs).
    """

    plane_range: tuple[float, float] = (0.45, 0.7)
    tilt: float = 0.15
    height_range: tuple[float, float] = (0.5, 1.0)
    noise_std_range: tuple[float, float] = (0.02, 0.08)
    missing_fraction: float = 0.05
    slope_gain: float = 2.0

    def __post_init__(self) -> None:
        for name in ("plane_range", "height_range", "noise_std_range"):
            value = getattr(self, name)
            if isinstance(value, list):
                object.__setattr__(self, name, tuple(value))
                value = tuple(value)
            if len(value) != 2 or not 0 <= value[0] <= value[1] <= 1:
                raise KDTutorError(
                    f"GeometryConfig.{name} must be (lo, hi) with 0 <= lo <= hi <= 1, got "
                    f"{value!r}."
                )
        if not 0 <= self.missing_fraction < 1:
            raise KDTutorError(
                f"GeometryConfig.missing_fraction must be in [0, 1), got {self.missing_fraction}."
            )
        if self.tilt < 0 or self.slope_gain <= 0:
            raise KDTutorError(
                f"GeometryConfig needs tilt >= 0 and slope_gain > 0, got tilt={self.tilt}, "
                f"slope_gain={self.slope_gain}."
            )


def _coverage(u: np.ndarray, index: np.ndarray, cfg: _shapes.ShapesConfig) -> np.ndarray:
    """The shapes' anti-aliased coverage :math:`\\alpha` (m, S, S), computed as ``_render``
    computes it (same streams, same operations, so the same float32 values)."""
    m = index.shape[0]
    size = cfg.image_size
    label = index % 10
    grid = np.arange(size, dtype=np.float32) - (size - 1) / 2.0
    lo, hi = cfg.scale_range
    s = size * (lo + (hi - lo) * u[:, _shapes._S_SCALE])
    room = np.maximum(0.5 * size - s - 0.5, 0.0) * cfg.position_jitter
    cx = (2.0 * u[:, _shapes._S_CX] - 1.0) * room
    cy = (2.0 * u[:, _shapes._S_CY] - 1.0) * room
    ranges = cfg.attribute_ranges()
    table = np.array([ranges[name] for name in _shapes.CLASSES])
    attr = table[label, 0] + (table[label, 1] - table[label, 0]) * u[:, _shapes._S_ATTR]
    angle = 2.0 * np.pi * u[:, _shapes._S_ROT]
    plus = label // 2 == 3
    angle[plus] = np.deg2rad(attr[plus]) + 0.5 * np.pi * np.floor(4.0 * u[plus, _shapes._S_ROT])
    col = _shapes._col
    alpha = np.empty((m, size, size), dtype=np.float32)
    pair_of = label // 2
    for pair in range(5):
        sel = np.flatnonzero(pair_of == pair)
        if sel.size == 0:
            continue
        c = col(np.cos(angle[sel]))
        sn = col(np.sin(angle[sel]))
        dx = grid[None, None, :] - col(cx[sel])
        dy = grid[None, :, None] - col(cy[sel])
        px = c * dx + sn * dy
        py = c * dy - sn * dx
        d = _shapes._sdf_pair(
            pair, px, py, s[sel], attr[sel], u[sel, _shapes._S_AUX1], u[sel, _shapes._S_AUX2]
        )
        a = np.clip(0.5 - d * np.float32(1.0 / cfg.edge_width), 0.0, 1.0)
        alpha[sel] = a * a * (3.0 - 2.0 * a)
    return alpha


def _pool_windows(fraction: np.ndarray, pixels: int) -> np.ndarray:
    """Windows of ``pixels`` standard normals from shapes' fixed pool, at offsets ``fraction``
    (uniforms in [0, 1)) of the pool: (m, pixels) float32 copies."""
    pool = _shapes._noise_pool()
    offsets = (fraction * (pool.shape[0] - pixels)).astype(np.int64)
    return np.lib.stride_tricks.sliding_window_view(pool, pixels)[offsets]


def _render_geometry(
    index: np.ndarray, seed: int, cfg: _shapes.ShapesConfig, geo: GeometryConfig
) -> np.ndarray:
    m = index.shape[0]
    size = cfg.image_size
    pixels = size * size
    u = _uniforms(seed, index, _G_STREAMS)  # streams < 43 equal the RGB image's
    alpha = _coverage(u, index, cfg)
    col = _shapes._col
    half = 0.5 * size
    grid = np.arange(size, dtype=np.float32) - (size - 1) / 2.0
    p_lo, p_hi = geo.plane_range
    tilt_angle = 2.0 * np.pi * u[:, _G_TILT_ANGLE]
    tilt = geo.tilt * u[:, _G_TILT]
    plane = (
        col(p_lo + (p_hi - p_lo) * u[:, _G_PLANE])
        + col(tilt * np.cos(tilt_angle) / half) * grid[None, None, :]
        + col(tilt * np.sin(tilt_angle) / half) * grid[None, :, None]
    )
    h_lo, h_hi = geo.height_range
    height = col(h_lo + (h_hi - h_lo) * u[:, _G_HEIGHT]) * alpha
    n_lo, n_hi = geo.noise_std_range
    sigma = n_lo + (n_hi - n_lo) * u[:, _G_NOISE]
    if n_hi > 0:
        noise = _pool_windows(u[:, _G_NOISE_AT], pixels).reshape(m, size, size)
        height = height - col(sigma) * noise
    depth = plane - height
    gy, gx = np.gradient(height, axis=(1, 2))
    angle = np.arctan(geo.slope_gain * np.sqrt(gx * gx + gy * gy)) * np.float32(2.0 / np.pi)
    out = np.stack([depth, height, angle], axis=1)
    np.clip(out, 0.0, 1.0, out=out)
    out = np.floor(out * np.float32(255.0) + np.float32(0.5))
    if geo.missing_fraction > 0:
        cut = statistics.NormalDist().inv_cdf(geo.missing_fraction)
        missing = _pool_windows(u[:, _G_MISSING_AT], pixels).reshape(m, size, size) < cut
        out *= ~missing[:, None]
    return out.astype(np.uint8)


def _index_array(index: Any) -> np.ndarray:
    try:
        arr = np.asarray(index)
    except (TypeError, ValueError):
        arr = np.asarray([None])
    if arr.ndim != 1 or arr.dtype.kind not in "iu":
        raise KDTutorError(
            f"geometry_images needs a 1-D array of integer image indices, got "
            f"{getattr(arr, 'dtype', type(index))} of shape {arr.shape}: pass e.g. "
            "np.arange(start, start + n)."
        )
    if arr.size and int(arr.min()) < 0:
        raise KDTutorError("geometry_images needs image indices >= 0 (as make_shapes).")
    return arr.astype(np.int64)


def _configs(
    config: _shapes.ShapesConfig | None, geometry: GeometryConfig | None
) -> tuple[_shapes.ShapesConfig, GeometryConfig]:
    cfg = config if config is not None else _shapes.ShapesConfig()
    geo = geometry if geometry is not None else GeometryConfig()
    if not isinstance(cfg, _shapes.ShapesConfig):
        raise KDTutorError(f"config must be a ShapesConfig, got {type(cfg).__name__}.")
    if not isinstance(geo, GeometryConfig):
        raise KDTutorError(f"geometry must be a GeometryConfig, got {type(geo).__name__}.")
    return cfg, geo


def geometry_images(
    index: Any,
    seed: int = 0,
    config: _shapes.ShapesConfig | None = None,
    geometry: GeometryConfig | None = None,
) -> np.ndarray:
    """The geometry (depth-like) images of the shapes scenes ``(seed, index)``.

    Image ``k`` shows the scene of ``make_shapes(1, seed, start=index[k], config)``: same
    shape, attribute, size, position and rotation (see the module docstring for the encoding).
    Like ``make_shapes``, it depends only on ``(seed, index[k])``.

    Args:
        index: 1-D integer array of image indices (train ``0..``, test
            :data:`~kdtutor.data.shapes.TEST_START` ``..``).
        seed: Seed of the image family (the RGB images' seed).
        config: The scenes' :class:`~kdtutor.data.ShapesConfig` (its colour, texture and noise
            knobs do not matter here).
        geometry: The rendering's :class:`GeometryConfig`.

    Returns:
        uint8 array ``(n, 3, S, S)``: depth, height above the plane, slope angle.

    Example:
        >>> geometry_images(np.arange(4)).shape
        (4, 3, 32, 32)
    """
    idx = _index_array(index)
    cfg, geo = _configs(config, geometry)
    size = cfg.image_size
    out = np.empty((idx.size, 3, size, size), dtype=np.uint8)
    chunk = _shapes._CHUNK
    for lo in range(0, idx.size, chunk):
        out[lo : lo + chunk] = _render_geometry(idx[lo : lo + chunk], int(seed), cfg, geo)
    return out


_MEMORY: dict[tuple[Any, ...], np.ndarray] = {}
_STATS: dict[tuple[Any, ...], tuple[tuple[float, ...], tuple[float, ...]]] = {}


def _images(n: int, seed: int, start: int, cfg: Any, geo: GeometryConfig) -> np.ndarray:
    key = (n, seed, start, cfg, geo)
    if key not in _MEMORY:
        _MEMORY[key] = geometry_images(np.arange(start, start + n), seed, cfg, geo)
    return _MEMORY[key]


def geometry_dataset(
    split: str = "train",
    size: int | None = None,
    seed: int = 0,
    config: _shapes.ShapesConfig | None = None,
    geometry: GeometryConfig | None = None,
) -> ArrayDataset:
    """The geometry view of the shapes dataset, an :class:`ArrayDataset` named
    ``"shapes_geometry"``: row ``i`` is the scene of row ``i`` of
    ``shapes_dataset(split, size, seed, config)``, with the same label.

    It is normalised with its own per-channel statistics (the first
    ``shapes.STATS_SAMPLES`` geometry training images), shared by both splits. Arrays are
    kept in memory (rendering is fast; there is no disk cache).

    Args:
        split: ``"train"`` or ``"test"``.
        size: Number of images (default: shapes' 20,000 / 4,000).
        seed: Seed of the scenes.
        config: The scenes' :class:`~kdtutor.data.ShapesConfig`.
        geometry: The rendering's :class:`GeometryConfig`.
    """
    if split not in _shapes.DEFAULT_SIZES:
        raise unknown_name("split", str(split), _shapes.DEFAULT_SIZES)
    cfg, geo = _configs(config, geometry)
    n = _shapes.DEFAULT_SIZES[split] if size is None else int(size)
    if n < 1:
        raise KDTutorError(f"size must be at least 1, got {size}.")
    start = 0 if split == "train" else _shapes.TEST_START
    images = _images(n, int(seed), start, cfg, geo)
    stats_key = (int(seed), cfg, geo)
    if stats_key not in _STATS:
        first = _images(_shapes.STATS_SAMPLES, int(seed), 0, cfg, geo)
        _STATS[stats_key] = channel_stats(torch.from_numpy(first))
    mean, std = _STATS[stats_key]
    labels = np.arange(start, start + n, dtype=np.int64) % 10
    return ArrayDataset(
        torch.from_numpy(images),
        torch.from_numpy(labels),
        classes=list(_shapes.CLASSES),
        name=DATASET_NAME,
        split=split,
        mean=mean,
        std=std,
    )


def register_geometry_dataset(*, replace: bool = True) -> None:
    """Make ``load_dataset("shapes_geometry", split, size=...)`` (and ``kdtutor distill
    --dataset shapes_geometry`` in this process) serve :func:`geometry_dataset` (seed 0,
    default configs), through :func:`~kdtutor.data.register_dataset`."""
    from .registry import register_dataset

    register_dataset(
        DATASET_NAME,
        lambda split, size: geometry_dataset(split, size),
        num_classes=len(_shapes.CLASSES),
        in_channels=3,
        image_size=_shapes.ShapesConfig().image_size,
        description="depth-like geometry view of the shapes scenes (cross-modal distillation)",
        sizes=(_shapes.DEFAULT_SIZES["train"], _shapes.DEFAULT_SIZES["test"]),
        replace=replace,
    )


def paired_view(
    data: ArrayDataset,
    modality: str = "geometry",
    *,
    seed: int = 0,
    config: _shapes.ShapesConfig | None = None,
    geometry: GeometryConfig | None = None,
) -> ArrayDataset:
    """The ``modality`` view of an RGB shapes dataset, row for row.

    ``data`` must be a prefix of a shapes split made with ``(seed, config)`` (what
    ``load_dataset("shapes", split, size=n)`` returns): its first and last images are checked
    byte for byte against :func:`~kdtutor.data.make_shapes`. Anything else (another seed or
    difficulty, a subset, augmented or foreign images) is refused: build the paired view
    yourself and hand it over (``CrossModal.bind_data(train, paired=view)``).

    Args:
        data: The RGB dataset (an :class:`ArrayDataset` of shapes images).
        modality: One of :data:`MODALITIES`.
        seed: The seed ``data`` was generated with.
        config: The :class:`~kdtutor.data.ShapesConfig` ``data`` was generated with.
        geometry: The rendering's :class:`GeometryConfig`.

    Returns:
        ``geometry_dataset(data.split, len(data), seed, config, geometry)``.
    """
    if modality not in MODALITIES:
        raise unknown_name("modality", str(modality), MODALITIES)
    if not isinstance(data, ArrayDataset):
        raise KDTutorError(
            f"paired_view needs the RGB shapes data as an ArrayDataset, got "
            f"{type(data).__name__}: load it with kdtutor.data.load_dataset('shapes', ...)."
        )
    cfg, geo = _configs(config, geometry)
    split = data.split if data.split in _shapes.DEFAULT_SIZES else "train"
    start = 0 if split == "train" else _shapes.TEST_START
    n = len(data)
    size = cfg.image_size
    problem = ""
    if tuple(data.images.shape[1:]) != (3, size, size) or data.images.dtype != torch.uint8:
        problem = f"its images are {data.images.dtype} {tuple(data.images.shape[1:])}"
    else:
        for i in sorted({0, n - 1}):
            expected, _ = _shapes.make_shapes(1, seed=int(seed), start=start + i, config=cfg)
            if not np.array_equal(data.images[i].numpy(), expected[0]):
                problem = f"its image {i} is not shapes image {start + i} of seed {seed}"
                break
    if problem:
        raise KDTutorError(
            f"paired_view can only pair a prefix of a shapes {split} split of the given seed "
            f"and config, and {problem}. Pass the seed/config the data was made with, or build "
            "the paired view yourself (geometry_dataset, or your own rows) and give it as "
            "paired=: distiller.bind_data(train, paired=view)."
        )
    return geometry_dataset(split, n, int(seed), cfg, geo)
