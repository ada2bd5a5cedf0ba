"""Procedural road scenes: 48 x 128 images with up to four lane markings, for lane detection.

What it models: lane detection as CULane poses it. A camera at height 1.5 m looks along a
flat road (the horizon about a third of the way down, its row jittered by the pitch); the
lane boundaries are curves ``X = x0 + yaw Z + c Z^2`` in ground coordinates (lateral ``X``,
forward ``Z``, metres), all sharing the road's curvature ``c`` and the car's heading
``yaw``, projected through a pinhole. The boundaries fill CULane's four slots (left-left,
left, right, right-right: :data:`LANE_SLOTS`) around a lane of random width, with the car
off-centre in its lane; each slot's marking may be absent (existence 0), solid or dashed
(random phase), white or yellow. Nuisances that make it hard, as on real roads: cars
(shaded trapezoids with windows and tail lights) that hide markings, shadow bands across
the road, a tree line, overall brightness and pixel noise. 48 x 128 keeps CULane's 288 x 800
aspect at a size a CPU can train on.

The targets, as SCNN / ENet-SAD train and score them (:func:`road_annotations`):

* ``mask`` ``(H, W)``: 0 background, ``k + 1`` on the pixels within 1.5 px (so a line 3 px
  wide) of slot ``k``'s lane, drawn through occluding cars (CULane annotates occluded lanes)
  and for dashed lanes as one continuous line, up to the lane's far end (``Z = z_max``);
  where two lanes' lines meet, the nearer lane owns the pixel;
* ``exist`` ``(4,)``: 1 for a slot whose lane is marked and visible (at least two sample
  rows inside the image);
* ``points`` ``(4, R)``: the lane's column ``x`` (continuous pixels) at each of the fixed
  sample rows :attr:`RoadConfig.rows` (pixel centres), or -1 where the lane is absent,
  outside the image or beyond its far end: what the metric draws and matches.

Scenes are deterministic per ``(index, seed)`` (counter-based uniforms of ``(seed, index,
stream)``) and drawn for a batch at once (numpy; anti-aliased edges; dashes and markings
box-filtered across each pixel row, so distant dashes do not flicker). :func:`roads_dataset`
makes the ``train`` (4,000), ``validation`` (1,000) and ``test`` (2,000) splits from
disjoint index ranges.

>>> from kdtutor.data.roads import roads_dataset
>>> image, target = roads_dataset("test", 4, cache=False)[0]
>>> tuple(image.shape), sorted(target), tuple(target["points"].shape)
((3, 48, 128), ['exist', 'mask', 'points'], (4, 15))
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from ._random import mix_seed
from ._random import uniforms as _uniforms
from .shapes import _noise_pool
from .tasks import TensorSplit, generated_split

__all__ = [
    "LANE_SLOTS",
    "ROAD_GENERATOR_VERSION",
    "ROAD_SIZES",
    "RoadConfig",
    "RoadsDataset",
    "lane_columns",
    "render_roads",
    "road_annotations",
    "road_benchmark",
    "roads_dataset",
]

#: Bumped whenever the rendering changes, so stale disk caches are never reused.
ROAD_GENERATOR_VERSION = 1

#: CULane's four lane slots, left to right; mask value ``k + 1`` is slot ``k``.
LANE_SLOTS: tuple[str, ...] = ("left-left", "left", "right", "right-right")

#: Default numbers of road scenes per split (the book's protocol).
ROAD_SIZES: dict[str, int] = {"train": 4_000, "validation": 1_000, "test": 2_000}

CAMERA_HEIGHT = 1.5  # metres above the road
_CHUNK = 128
_MAX_CARS = 4
_MAX_SHADOWS = 3


@dataclass(frozen=True)
class RoadConfig:
    """Geometry, targets and nuisances of the road scenes. Every field has a default.

    Attributes:
        height: Image height in pixels.
        width: Image width in pixels.
        line_width: Width in pixels of the lanes drawn in the mask (CULane's 30 px at
            1,640 px wide scales to 2.3; 3 is used).
        z_max: Far end of every lane, metres ahead.
        lane_width_range: Range of the lane width, metres.
        offset_max: Largest offset of the camera from its lane's centre, metres.
        curvature_max: Largest road curvature ``c`` of ``X = x0 + yaw Z + c Z^2``, 1/m.
        yaw_max: Largest heading of the car relative to the road, radians.
        horizon_jitter: Largest shift of the horizon row (the camera's pitch), pixels.
        exist_p: Probability that each slot's lane is marked (left-left, left, right,
            right-right).
        dashed_p: Probability that a marked lane is dashed.
        cars_max: Most cars per scene.
        shadows_max: Most shadow bands per scene.
        brightness_range: Range of the overall brightness factor.
        noise_std_range: Range of the standard deviation of the pixel noise.
        rows: The sample rows of the lane points (pixel rows; ``x`` is given at their
            centres); None: every ``height // 24`` rows from ``0.375 height`` to the bottom
            (rows 18, 20, ..., 46 at 48 px).
    """

    height: int = 48
    width: int = 128
    line_width: float = 3.0
    z_max: float = 50.0
    lane_width_range: tuple[float, float] = (3.0, 3.9)
    offset_max: float = 0.6
    curvature_max: float = 0.003
    yaw_max: float = 0.03
    horizon_jitter: float = 1.5
    exist_p: tuple[float, float, float, float] = (0.6, 0.95, 0.95, 0.6)
    dashed_p: float = 0.6
    cars_max: int = 3
    shadows_max: int = 2
    brightness_range: tuple[float, float] = (0.7, 1.3)
    noise_std_range: tuple[float, float] = (0.01, 0.04)
    rows: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, list):
                object.__setattr__(self, field.name, tuple(value))
        if self.height < 24 or self.width < 32:
            raise ValueError(
                f"images must be at least 24 x 32 pixels, got {self.height} x {self.width}."
            )
        if self.line_width <= 0 or self.z_max <= 5:
            raise ValueError("line_width must be positive and z_max above 5 metres.")
        lo, hi = self.lane_width_range
        if not 2.0 <= lo <= hi <= 5.0:
            raise ValueError(f"lane_width_range must lie in [2, 5] metres, got {(lo, hi)}.")
        for name in ("offset_max", "curvature_max", "yaw_max", "horizon_jitter"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be non-negative, got {getattr(self, name)}.")
        if self.horizon_jitter > 0.15 * self.height:
            raise ValueError("horizon_jitter must be at most 15% of the height.")
        if len(self.exist_p) != 4 or not all(0 <= p <= 1 for p in self.exist_p):
            raise ValueError(f"exist_p needs 4 probabilities in [0, 1], got {self.exist_p}.")
        if not 0 <= self.dashed_p <= 1:
            raise ValueError(f"dashed_p must be a probability, got {self.dashed_p}.")
        if not 0 <= self.cars_max <= _MAX_CARS or not 0 <= self.shadows_max <= _MAX_SHADOWS:
            raise ValueError(
                f"cars_max must be in [0, {_MAX_CARS}] and shadows_max in [0, {_MAX_SHADOWS}], "
                f"got {self.cars_max} and {self.shadows_max}."
            )
        for name in ("brightness_range", "noise_std_range"):
            lo, hi = getattr(self, name)
            if not 0 <= lo <= hi:
                raise ValueError(f"{name} must satisfy 0 <= lo <= hi, got {(lo, hi)}.")
        rows = self.sample_rows()
        if len(rows) < 2 or rows.min() < 0 or rows.max() >= self.height:
            raise ValueError(f"rows must hold at least two rows in [0, {self.height}).")
        if rows.min() <= self.horizon() + self.horizon_jitter:
            raise ValueError(
                f"every sample row must lie below the horizon (row {self.horizon():.1f} "
                f"+- {self.horizon_jitter}), got {rows.min()}."
            )

    def horizon(self) -> float:
        """The horizon's row (continuous pixels) before the pitch jitter."""
        return 0.3 * self.height

    def focal(self) -> float:
        """The focal length in pixels (a horizontal field of view of about 64 degrees)."""
        return 0.8 * self.width

    def sample_rows(self) -> np.ndarray:
        """The sample rows of the lane points, int64 (see ``rows``)."""
        if self.rows is not None:
            return np.asarray(self.rows, np.int64)
        step = max(1, self.height // 24)
        return np.arange(int(np.ceil(0.375 * self.height)), self.height, step, dtype=np.int64)

    def key(self) -> str:
        """A stable string identifying these settings (used in cache keys)."""
        return json.dumps(dataclasses.asdict(self), sort_keys=True)


# per-scene uniform streams
(_S_HORIZON, _S_LANE_WIDTH, _S_OFFSET, _S_CURVE, _S_YAW, _S_MARGIN_L, _S_MARGIN_R,
 _S_ASPHALT, _S_TERRAIN_HUE, _S_TERRAIN, _S_SKY, _S_TREES, _S_TREE_PHASE, _S_TREE_FREQ,
 _S_CARS, _S_SHADOWS, _S_BRIGHTNESS, _S_NOISE, _S_TEXTURE) = range(19)  # fmt: skip
_S_EXIST = 19  # 4: existence
_S_DASHED = 23  # 4: dashed or solid
_S_PHASE = 27  # 4: dash phase
_S_DASH_LEN = 31  # 4: dash period and duty
_S_YELLOW = 35  # 4: yellow or white
_S_MARK_WIDTH = 39  # 4: marking width
_S_CAR = 43  # _MAX_CARS x 8: lane, offset, distance, width, height, r, g, b
_S_SHADOW = _S_CAR + 8 * _MAX_CARS  # _MAX_SHADOWS x 4: start, length, slant, strength
_S_OFFSETS = _S_SHADOW + 4 * _MAX_SHADOWS  # 3: noise windows
_STREAMS = _S_OFFSETS + 3


def _check_index(index: Any) -> np.ndarray:
    idx = np.asarray(index).reshape(-1)
    if idx.size and (not np.issubdtype(idx.dtype, np.integer) or idx.min() < 0):
        raise ValueError("road scene indices must be non-negative integers.")
    return idx.astype(np.int64)


def _geometry(index: np.ndarray, seed: int, cfg: RoadConfig) -> dict[str, np.ndarray]:
    """Camera and lane parameters of each scene, and every uniform drawn."""
    u = _uniforms(mix_seed(seed, 0x80AD5), index, _STREAMS)
    lo, hi = cfg.lane_width_range
    lane_width = lo + (hi - lo) * u[:, _S_LANE_WIDTH]
    offset = cfg.offset_max * (2.0 * u[:, _S_OFFSET] - 1.0)
    x0 = np.array([-1.5, -0.5, 0.5, 1.5])[None, :] * lane_width[:, None] - offset[:, None]
    marked = u[:, _S_EXIST : _S_EXIST + 4] < np.asarray(cfg.exist_p)[None, :]
    return {
        "horizon": cfg.horizon() + cfg.horizon_jitter * (2.0 * u[:, _S_HORIZON] - 1.0),
        "lane_width": lane_width,
        "offsets": x0,
        "curvature": cfg.curvature_max * (2.0 * u[:, _S_CURVE] - 1.0),
        "yaw": cfg.yaw_max * (2.0 * u[:, _S_YAW] - 1.0),
        "marked": marked,
        "uniforms": u,
    }


def lane_columns(
    y: Any,
    offsets: Any,
    horizon: Any,
    curvature: Any,
    yaw: Any,
    config: RoadConfig | None = None,
) -> np.ndarray:
    """Image column of each lane at image row(s) ``y`` (continuous pixels), NaN above its
    far end.

    The lane ``X = x0 + yaw Z + c Z^2`` seen by a pinhole camera at height ``h = 1.5`` with
    focal length ``f`` and the horizon at row ``y_h``: a ground point at distance ``Z``
    appears at row ``y_h + f h / Z`` and column ``W / 2 + f X / Z``, so
    ``x = W / 2 + f yaw + x0 (y - y_h) / h + c f^2 h / (y - y_h)``.

    Args:
        y: Rows, any shape broadcasting against the scene axis (e.g. ``(n, 1, R)``).
        offsets: Lateral offsets ``x0`` of the lanes, metres, broadcasting against ``y``.
        horizon: Horizon row of each scene.
        curvature: Road curvature ``c`` of each scene, 1/m.
        yaw: Heading of each scene, radians.
        config: Image size and ``z_max`` (default ``RoadConfig()``).

    Returns:
        The columns, float64, NaN where the row is at or above the horizon or beyond
        ``z_max``.
    """
    cfg = config if config is not None else RoadConfig()
    f = cfg.focal()
    below = np.asarray(y, np.float64) - np.asarray(horizon, np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        x = (
            0.5 * cfg.width
            + f * np.asarray(yaw)
            + np.asarray(offsets) * below / CAMERA_HEIGHT
            + np.asarray(curvature) * f * f * CAMERA_HEIGHT / below
        )
    return np.where(below >= f * CAMERA_HEIGHT / cfg.z_max, x, np.nan)


def _column(
    y: np.ndarray, x0: Any, horizon: Any, curve: Any, yaw: Any, cfg: RoadConfig
) -> np.ndarray:
    """A lane's column at rows ``y`` strictly below the horizon (no far-end cut)."""
    f = cfg.focal()
    below = y - horizon
    return (
        0.5 * cfg.width
        + f * yaw
        + x0 * below / CAMERA_HEIGHT
        + curve * f * f * CAMERA_HEIGHT / below
    )


def _slope(y: np.ndarray, x0: Any, horizon: Any, curve: Any, f: float) -> np.ndarray:
    """``dx / dy`` of a lane at rows ``y`` strictly below the horizon."""
    below = y - horizon
    return x0 / CAMERA_HEIGHT - curve * f * f * CAMERA_HEIGHT / (below * below)


def _targets(geo: dict[str, np.ndarray], cfg: RoadConfig) -> dict[str, np.ndarray]:
    """mask ``(m, H, W)`` uint8, exist ``(m, 4)`` uint8, points ``(m, 4, R)`` float32."""
    m = geo["horizon"].shape[0]
    h, w, f = cfg.height, cfg.width, cfg.focal()
    scene = (slice(None), None, None)
    rows = cfg.sample_rows() + 0.5
    points = lane_columns(
        rows[None, None, :],
        geo["offsets"][:, :, None],
        geo["horizon"][scene],
        geo["curvature"][scene],
        geo["yaw"][scene],
        cfg,
    )
    inside = np.isfinite(points) & (points >= 0) & (points < w)
    exist = geo["marked"] & (inside.sum(axis=2) >= 2)
    points = np.where(inside & exist[:, :, None], points, -1.0).astype(np.float32)

    # mask: distance from each pixel centre to each lane, the least distance to three points
    # of the curve (at the pixel's row, clamped to the far end, then two Newton steps
    # towards the foot of the perpendicular): every candidate is on the lane, so a pixel is
    # never marked farther than line_width / 2 from it
    yc = np.arange(h, dtype=np.float64)[None, :, None] + 0.5  # (1, H, 1)
    xc = np.arange(w, dtype=np.float64)[None, None, :] + 0.5
    horizon, curve, yaw = geo["horizon"][scene], geo["curvature"][scene], geo["yaw"][scene]
    y_end = horizon + f * CAMERA_HEIGHT / cfg.z_max  # the row of the lanes' far end
    best = np.full((m, h, w), np.inf)
    mask = np.zeros((m, h, w), np.uint8)
    for k in range(4):
        x0 = geo["offsets"][:, k][scene]
        y = np.maximum(yc, y_end)
        x = _column(y, x0, horizon, curve, yaw, cfg)
        dist = np.hypot(xc - x, yc - y)
        for _ in range(2):
            s = _slope(y, x0, horizon, curve, f)
            y = np.maximum(y + ((xc - x) * s + (yc - y)) / (1.0 + s * s), y_end)
            x = _column(y, x0, horizon, curve, yaw, cfg)
            dist = np.minimum(dist, np.hypot(xc - x, yc - y))
        dist = np.where(exist[:, k][scene], dist, np.inf)
        take = (dist <= 0.5 * cfg.line_width) & (dist < best)
        mask[take] = k + 1
        best = np.where(take, dist, best)
    return {"mask": mask, "exist": exist.astype(np.uint8), "points": points}


def _overlap(lo: np.ndarray, hi: np.ndarray, a: Any, b: Any) -> np.ndarray:
    """Length of the overlap of the intervals ``[lo, hi]`` and ``[a, b]``."""
    return np.clip(np.minimum(hi, b) - np.maximum(lo, a), 0.0, None)


def _dash_integral(z: np.ndarray, period: np.ndarray, duty: np.ndarray) -> np.ndarray:
    """Painted length of a dash pattern (on for ``duty * period`` of each period) in
    ``[0, z]``."""
    cycles = np.floor(z / period)
    return cycles * duty * period + np.minimum(z - cycles * period, duty * period)


def _paint(image: np.ndarray, alpha: np.ndarray, colour: np.ndarray) -> None:
    if colour.ndim == 2:
        colour = colour.astype(np.float32)[:, :, None, None]
    image += alpha[:, None].astype(np.float32) * (colour - image)


def _render(index: np.ndarray, seed: int, cfg: RoadConfig) -> dict[str, np.ndarray]:
    """Images and targets of the scenes of ``index``."""
    geo = _geometry(index, seed, cfg)
    targets = _targets(geo, cfg)
    u = geo["uniforms"]
    m, h, w, f = index.shape[0], cfg.height, cfg.width, cfg.focal()
    scene = (slice(None), None, None)
    horizon, curve, yaw = geo["horizon"][scene], geo["curvature"][scene], geo["yaw"][scene]
    y0 = np.arange(h, dtype=np.float64)[None, :, None]  # top of each pixel row
    xc = np.arange(w, dtype=np.float64)[None, None, :] + 0.5
    below = y0 + 0.5 - horizon  # (m, H, 1)
    ground = below > 0
    with np.errstate(divide="ignore"):
        z = np.where(ground, f * CAMERA_HEIGHT / np.maximum(below, 1e-3), np.inf)
    z_draw = np.minimum(z, 400.0)
    # distance range of each pixel row (near: its bottom edge, far: its top edge)
    z_near = f * CAMERA_HEIGHT / np.maximum(y0 + 1.0 - horizon, 1e-3)
    z_far = np.where(y0 - horizon > 1e-3, f * CAMERA_HEIGHT / np.maximum(y0 - horizon, 1e-3), 1e4)
    # lateral ground coordinate relative to the road's centre line, per pixel
    lateral = (xc - 0.5 * w) * z_draw / f - yaw * z_draw - curve * z_draw**2  # (m, H, W)

    # sky, tree line, terrain, road ------------------------------------------------------------
    sky_top = np.stack(
        [0.35 + 0.3 * u[:, _S_SKY], 0.5 + 0.3 * u[:, _S_SKY], 0.85 + 0.1 * u[:, _S_SKY]], 1
    )
    sky_low = np.full((m, 3), 0.85)
    t = np.clip((horizon - y0 - 0.5) / np.maximum(horizon, 1.0), 0.0, 1.0)[:, None]  # (m,1,H,1)
    image = (sky_low[:, :, None, None] * (1.0 - t) + sky_top[:, :, None, None] * t).astype(
        np.float32
    )
    image = np.broadcast_to(image, (m, 3, h, w)).copy()
    trees = 1.0 + 3.0 * u[:, _S_TREES, None, None] * (
        0.6
        + 0.4
        * np.sin(
            xc * (0.1 + 0.3 * u[:, _S_TREE_FREQ, None, None])
            + 6.3 * u[:, _S_TREE_PHASE, None, None]
        )
    )
    tree_alpha = np.clip(y0 + 0.5 - (horizon - trees), 0.0, 1.0) * ~ground
    hue, tone = u[:, _S_TERRAIN_HUE], u[:, _S_TERRAIN]
    tree_colour = np.stack([0.15 + 0.1 * hue, 0.25 + 0.1 * tone, np.full(m, 0.15)], 1)
    _paint(image, np.broadcast_to(tree_alpha, (m, h, w)), tree_colour)
    terrain = np.stack([0.30 + 0.25 * hue, 0.35 + 0.2 * tone, 0.15 + 0.1 * hue], 1)
    texture = 0.04 * np.sin(lateral * 1.7 + z_draw * (0.9 + u[:, _S_TEXTURE, None, None]))
    _paint(image, np.broadcast_to(ground, (m, h, w)).astype(np.float32), terrain)
    image += (texture * ground)[:, None].astype(np.float32)
    # the road between its edges, anti-aliased in pixels
    left = geo["offsets"][:, 0][scene] - 0.5 - 2.5 * u[:, _S_MARGIN_L][scene]
    right = geo["offsets"][:, 3][scene] + 0.5 + 2.5 * u[:, _S_MARGIN_R][scene]
    px_per_m = f / z_draw
    road = np.clip(np.minimum(lateral - left, right - lateral) * px_per_m + 0.5, 0.0, 1.0) * ground
    asphalt = np.repeat(0.25 + 0.2 * u[:, _S_ASPHALT, None], 3, axis=1)
    _paint(image, road, asphalt)

    # markings: box-filtered across the pixel (x) and along the row's distance range (z) ------
    for k in range(4):
        on = geo["marked"][:, k]
        if not on.any():
            continue
        x0 = geo["offsets"][:, k][scene]
        half = 0.5 * (0.10 + 0.08 * u[:, _S_MARK_WIDTH + k])[scene]  # metres
        col = 0.5 * w + f * yaw + f * (x0 + curve * z_draw**2) / z_draw
        hw = half * px_per_m
        across = _overlap(xc - 0.5, xc + 0.5, col - hw, col + hw)
        period = (9.0 + 4.0 * u[:, _S_DASH_LEN + k])[scene]
        duty = (0.35 + 0.2 * u[:, _S_DASH_LEN + k])[scene]
        phase = period * u[:, _S_PHASE + k][scene]
        z_lo = np.minimum(z_near, cfg.z_max)
        z_hi = np.minimum(z_far, cfg.z_max)
        span = np.maximum(z_hi - z_lo, 1e-9)
        painted = _dash_integral(z_hi + phase, period, duty) - _dash_integral(
            z_lo + phase, period, duty
        )
        dashed = u[:, _S_DASHED + k][scene] < cfg.dashed_p
        along = np.where(dashed, painted / span, 1.0) * ((z_hi - z_lo) > 0)
        yellow = u[:, _S_YELLOW + k] < 0.2
        colour = np.where(yellow[:, None], [[0.85, 0.7, 0.2]], [[0.92, 0.92, 0.9]])
        alpha = across * along * ground * on[scene] * (z_lo < cfg.z_max)
        _paint(image, alpha, colour)

    # shadow bands in the ground plane --------------------------------------------------------
    shade = np.ones((m, h, w), np.float32)
    n_shadows = np.minimum(
        (u[:, _S_SHADOWS] * (cfg.shadows_max + 1)).astype(np.int64), cfg.shadows_max
    )
    for j in range(cfg.shadows_max):
        s = u[:, _S_SHADOW + 4 * j : _S_SHADOW + 4 * j + 4]
        start = (5.0 + 30.0 * s[:, 0])[scene]
        length = (1.5 + 5.0 * s[:, 1])[scene]
        slant = (2.0 * s[:, 2] - 1.0)[scene]
        along_road = z_draw + slant * lateral
        inside = np.clip(
            np.minimum(along_road - start, start + length - along_road) * px_per_m + 0.5, 0, 1
        )
        depth = (0.3 + 0.35 * s[:, 3])[scene] * (j < n_shadows)[scene]
        shade *= (1.0 - depth * inside * ground).astype(np.float32)
    image *= shade[:, None]

    # cars, far to near: shaded trapezoids with a window band and tail lights -----------------
    n_cars = np.minimum((u[:, _S_CARS] * (cfg.cars_max + 1)).astype(np.int64), cfg.cars_max)
    cars = u[:, _S_CAR : _S_CAR + 8 * _MAX_CARS].reshape(m, _MAX_CARS, 8)
    distance = 7.0 + 38.0 * cars[:, :, 2]
    order = np.argsort(-distance, axis=1, kind="stable")
    for j in range(_MAX_CARS):
        pick = order[:, j]
        c = cars[np.arange(m), pick]
        present = pick < n_cars
        zc = distance[np.arange(m), pick]
        lane = np.minimum((c[:, 0] * 3).astype(np.int64), 2)  # between boundaries 0-1, 1-2, 2-3
        centre_x = 0.5 * (
            geo["offsets"][np.arange(m), lane] + geo["offsets"][np.arange(m), lane + 1]
        )
        xw = centre_x + 0.5 * (2 * c[:, 1] - 1) + geo["yaw"] * zc + geo["curvature"] * zc**2
        width_m = 1.7 + 0.3 * c[:, 3]
        height_m = 1.3 + 0.5 * c[:, 4]
        yb = geo["horizon"] + f * CAMERA_HEIGHT / zc
        yt = yb - f * height_m / zc
        xm = 0.5 * w + f * xw / zc
        hw_b = 0.5 * f * width_m / zc
        frac = np.clip((yb[scene] - (y0 + 0.5)) / np.maximum(yb - yt, 1e-3)[scene], 0.0, 1.0)
        hw = hw_b[scene] * (1.0 - 0.22 * frac)  # narrower towards the roof
        rows_in = _overlap(y0, y0 + 1.0, yt[scene], yb[scene])
        cols_in = np.clip(hw + 0.5 - np.abs(xc - xm[scene]), 0.0, 1.0)
        alpha = rows_in * cols_in * present[scene]
        body = 0.1 + 0.8 * c[:, 5:8]
        tone = np.where(frac < 0.18, 0.55, np.where((frac > 0.55) & (frac < 0.85), 0.35, 1.0))
        colour = body[:, :, None, None] * tone[:, None]
        lights = (frac > 0.3) & (frac < 0.45) & (np.abs(xc - xm[scene]) > 0.6 * hw)
        colour = np.where(lights[:, None], np.array([0.8, 0.1, 0.1])[None, :, None, None], colour)
        _paint(image, alpha, colour)

    # brightness and noise ---------------------------------------------------------------------
    b_lo, b_hi = cfg.brightness_range
    image *= (b_lo + (b_hi - b_lo) * u[:, _S_BRIGHTNESS]).astype(np.float32)[:, None, None, None]
    n_lo, n_hi = cfg.noise_std_range
    sigma = (n_lo + (n_hi - n_lo) * u[:, _S_NOISE]).astype(np.float32)
    pool = _noise_pool()
    pixels = h * w
    offsets = (u[:, _S_OFFSETS : _S_OFFSETS + 3] * (pool.shape[0] - pixels)).astype(np.int64)
    noise = np.lib.stride_tricks.sliding_window_view(pool, pixels)[offsets]
    image += noise.reshape(m, 3, h, w) * sigma[:, None, None, None]
    image *= 255.0
    image += 0.5
    np.clip(image, 0.0, 255.0, out=image)
    return {"images": image.astype(np.uint8), **targets}


def render_roads(
    index: Any, seed: int = 0, config: RoadConfig | None = None
) -> dict[str, np.ndarray]:
    """Draw the road scenes of ``index`` with their targets.

    Scene ``i`` depends on ``(seed, i, config)`` alone, whatever else is drawn in the call.

    Args:
        index: Scene index (or indices), non-negative integers.
        seed: Seed of the scene family.
        config: Geometry and nuisances (default ``RoadConfig()``).

    Returns:
        A dict of numpy arrays for ``n`` scenes, with ``images`` uint8 ``(n, 3, H, W)``,
        ``mask`` uint8 ``(n, H, W)`` (0 background, ``k + 1`` lane slot ``k``), ``exist`` uint8
        ``(n, 4)``, ``points`` float32 ``(n, 4, R)`` (``x`` at the sample rows, -1 where
        there is none).

    Raises:
        ValueError: Negative or non-integer indices.
    """
    cfg = config if config is not None else RoadConfig()
    idx = _check_index(index)
    parts = [_render(idx[lo : lo + _CHUNK], seed, cfg) for lo in range(0, len(idx), _CHUNK)]
    if not parts:
        parts = [_render(idx, seed, cfg)]
    return {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}


def road_annotations(index: int, seed: int = 0, config: RoadConfig | None = None) -> dict[str, Any]:
    """Everything about one road scene: the image, the targets and the geometry behind them.

    Args:
        index: Scene index.
        seed: Seed of the scene family.
        config: Geometry and nuisances (default ``RoadConfig()``).

    Returns:
        A dict with ``image`` uint8 ``(3, H, W)``; ``mask`` uint8 ``(H, W)``; ``exist`` uint8
        ``(4,)``; ``points`` float32 ``(4, R)``; ``rows`` int64 ``(R,)`` the sample rows;
        ``marked`` bool ``(4,)`` (a marking is drawn; ``exist`` also needs it in view);
        ``offsets`` ``(4,)`` the lanes' lateral offsets ``x0`` (m); ``curvature`` (1/m),
        ``yaw`` (rad), ``horizon`` (row) and ``focal`` (px) floats; ``camera_height`` and
        ``z_max`` (m).
    """
    cfg = config if config is not None else RoadConfig()
    idx = _check_index(index)[:1]
    out = _render(idx, seed, cfg)
    geo = _geometry(idx, seed, cfg)
    return {
        "image": out["images"][0],
        "mask": out["mask"][0],
        "exist": out["exist"][0],
        "points": out["points"][0],
        "rows": cfg.sample_rows(),
        "marked": geo["marked"][0],
        "offsets": geo["offsets"][0],
        "curvature": float(geo["curvature"][0]),
        "yaw": float(geo["yaw"][0]),
        "horizon": float(geo["horizon"][0]),
        "focal": cfg.focal(),
        "camera_height": CAMERA_HEIGHT,
        "z_max": cfg.z_max,
    }


class RoadsDataset(TensorSplit):
    """Road scenes: ``(image, {"mask", "exist", "points"})``.

    Samples are the image float32 ``(3, H, W)`` in [0, 1] and a dict: ``mask`` int64
    ``(H, W)`` (0 background, ``k + 1`` lane slot ``k``), ``exist`` float32 ``(4,)`` (a BCE
    target) and ``points`` float32 ``(4, R)`` (``x`` at :attr:`rows`, -1 where none). The
    stored tensors are uint8 (images, masks, existence) and float32 (points); ``task`` is
    ``"lanes"``.

    Attributes:
        rows: int64 ``(R,)``, the sample rows of ``points``.
    """

    task: ClassVar[str] = "lanes"
    input_key: ClassVar[str] = "images"
    num_lanes: ClassVar[int] = len(LANE_SLOTS)

    def __init__(
        self,
        tensors: dict[str, Tensor],
        *,
        split: str,
        rows: np.ndarray,
        meta: dict[str, Any],
    ) -> None:
        """Hold the scenes.

        Args:
            tensors: ``images`` uint8 ``(N, 3, H, W)``, ``mask`` uint8 ``(N, H, W)``,
                ``exist`` uint8 ``(N, 4)`` and ``points`` float32 ``(N, 4, R)``.
            split: Split name.
            rows: The sample rows of ``points``.
            meta: JSON-serialisable settings the scenes were made with.
        """
        super().__init__(tensors, name="roads", split=split, meta=meta)
        self.rows = torch.as_tensor(rows, dtype=torch.int64)

    @property
    def images(self) -> Tensor:
        """uint8 ``(N, 3, H, W)``."""
        return self.tensor("images")

    def __getitem__(self, index: int) -> tuple[Tensor, dict[str, Tensor]]:
        """``(image, target)`` as the class docstring says."""
        i = self._check(index)
        target = {
            "mask": self.tensor("mask")[i].to(torch.int64),
            "exist": self.tensor("exist")[i].to(torch.float32),
            "points": self.tensor("points")[i],
        }
        return self.images[i].to(torch.float32).div_(255.0), target


def roads_dataset(
    split: str = "train",
    size: int | None = None,
    seed: int = 0,
    config: RoadConfig | None = None,
    *,
    cache: bool | None = None,
) -> RoadsDataset:
    """A split of the road scenes.

    Scene ``k`` of a split is scene ``SPLIT_STARTS[split] + k``
    (:data:`kdtutor.data.tasks.SPLIT_STARTS`): the splits never share a scene and a smaller split is a prefix of a
    larger one.

    Args:
        split: ``"train"``, ``"validation"`` or ``"test"``.
        size: Number of scenes; defaults to :data:`ROAD_SIZES` (4,000 / 1,000 / 2,000).
        seed: Seed of the scene family.
        config: Geometry and nuisances (default ``RoadConfig()``).
        cache: Keep the arrays in an ``.npz`` under ``cache_dir()/roads``: True always,
            False never, None (default) for at least 1,000 scenes.

    Returns:
        A :class:`RoadsDataset` named ``"roads"``.

    Raises:
        ValueError: An unknown split or a size below 1.
    """
    cfg = config if config is not None else RoadConfig()
    arrays = generated_split(
        "roads", split, size, ROAD_SIZES, seed=seed, version=ROAD_GENERATOR_VERSION,
        config_key=cfg.key(), render=lambda idx: render_roads(idx, seed, cfg), cache=cache,
    )  # fmt: skip
    meta = {"version": ROAD_GENERATOR_VERSION, "seed": seed, "config": cfg.key()}
    return RoadsDataset(
        {
            key: torch.from_numpy(np.ascontiguousarray(arrays[key]))
            for key in ("images", "mask", "exist", "points")
        },
        split=split,
        rows=cfg.sample_rows(),
        meta=meta,
    )


def road_benchmark(n: int = 512, seed: int = 0, config: RoadConfig | None = None) -> float:
    """Road scenes per second that :func:`render_roads` draws (with targets) on ONE core.

    Args:
        n: Number of scenes (after a warm-up of one chunk).
        seed: Seed of the scenes.
        config: Geometry and nuisances.

    Returns:
        Scenes per second, torch limited to one thread.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        render_roads(np.arange(_CHUNK), seed, config)
        t0 = time.perf_counter()
        render_roads(np.arange(_CHUNK, _CHUNK + n), seed, config)
        return n / (time.perf_counter() - t0)
    finally:
        torch.set_num_threads(threads)
