"""The procedural ``shapes`` dataset: ten classes of 32x32 RGB images, in similar pairs.

Every image is a deterministic function of ``(seed, index)`` alone. Each random quantity of
image ``index`` comes from a counter-based hash (SplitMix64) of ``(seed, index, stream)``, so
``make_shapes(10, start=5)`` equals rows 5..14 of ``make_shapes(20)``, any slice can be made
without the rows before it, and train and test use disjoint index ranges
(:data:`TEST_START`). Images are drawn with signed distance functions evaluated on the pixel
grid for a whole batch at once (numpy broadcasting, float32), with anti-aliased edges.

The ten classes come in five pairs. The two classes of a pair share a continuous attribute
whose ranges overlap slightly (:class:`ShapesConfig`), so near the boundary some images are
genuinely ambiguous and a good teacher's soft targets carry "dark knowledge" about how close
an image is to the other class of its pair:

* 0 circle / 1 ellipse: aspect ratio of an ellipse (major / minor axis).
* 2 square / 3 rectangle: aspect ratio of a box.
* 4 triangle / 5 arrow: length of the arrow's stem relative to its head (0: no stem).
* 6 plus / 7 x_cross: rotation angle; a plus turned by 45 degrees is an x (boundary 22.5).
* 8 ring / 9 offset_ring: offset of the hole's centre from the disk's centre (the shape
  becomes a crescent when the hole breaks through the rim).

The label of image ``index`` is ``index % 10``, so every run of ten consecutive indices holds
one image of each class and any dataset of ``10 * k`` images is exactly balanced.

Nuisance factors (never class-defining): size, position, rotation (except for plus/x_cross),
the shape's fine geometry (head width, bar thickness, hole size), background colour,
foreground colour at a random and sometimes low contrast, a textured background (linear
gradient plus stripes and blobs in random colours), shading on the shape, and additive
Gaussian pixel noise. All of these are :class:`ShapesConfig` knobs.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..errors import unknown_name
from ._random import normals as _normals
from ._random import uniforms as _uniforms
from .arrays import ArrayDataset, channel_stats
from .diskcache import cache_dir, load_npz, save_npz

__all__ = [
    "CLASSES",
    "GENERATOR_VERSION",
    "PAIRS",
    "TEST_START",
    "ShapesConfig",
    "benchmark",
    "make_shapes",
    "shapes_dataset",
]

#: Bumped whenever the rendering changes, so stale disk caches are never reused.
GENERATOR_VERSION = 1

#: Class names, in label order. Classes ``2k`` and ``2k + 1`` form a similar pair.
CLASSES: list[str] = [
    "circle",
    "ellipse",
    "square",
    "rectangle",
    "triangle",
    "arrow",
    "plus",
    "x_cross",
    "ring",
    "offset_ring",
]

#: The five similar pairs and the continuous attribute each pair shares.
PAIRS: list[tuple[str, str, str]] = [
    ("circle", "ellipse", "aspect ratio"),
    ("square", "rectangle", "aspect ratio"),
    ("triangle", "arrow", "stem length / head length"),
    ("plus", "x_cross", "rotation (degrees)"),
    ("ring", "offset_ring", "hole offset / radius"),
]

#: Default numbers of images of the two splits (book scale).
DEFAULT_SIZES: dict[str, int] = {"train": 20_000, "test": 4_000}

#: The test split uses indices ``TEST_START, TEST_START + 1, ...``; train uses ``0, 1, ...``.
TEST_START = 10_000_000

#: Normalisation statistics are computed on the first ``STATS_SAMPLES`` train images, so
#: train, test and every subset of the same ``(seed, config)`` share the same mean and std.
STATS_SAMPLES = 2_000

#: ``shapes_dataset`` writes a disk cache (by default) only for at least this many images.
DISK_CACHE_MIN = 1_000

_CHUNK = 512  # images rendered together; keeps the float32 temporaries in cache


@dataclass(frozen=True)
class ShapesConfig:
    """Difficulty knobs of the shapes generator. Every field has a documented default.

    Lengths are in pixels of a 32x32 image and scale with ``image_size``.

    Attributes:
        image_size: Side of the square images in pixels.
        scale_range: Range of the shape's bounding radius, as a fraction of ``image_size``
            (every shape fits in a circle of that radius around its centre).
        position_jitter: Fraction of the free room (image minus bounding circle) over which
            the centre moves; 0 centres every shape.
        overlap: Multiplies every pair's overlap half-width below; 0 makes the two attribute
            ranges of each pair touch without overlapping (no label ambiguity beyond what
            the pixels blur), 2 doubles the ambiguous band.
        aspect_split: Boundary of the aspect ratio between circle/ellipse and between
            square/rectangle (circle and square take ``[1, split + w]``, ellipse and
            rectangle ``[split - w, aspect_max]``).
        aspect_overlap: Half-width ``w`` of the ambiguous aspect-ratio band.
        aspect_max: Largest aspect ratio of ellipses and rectangles.
        stem_split: Boundary of the stem length (relative to the head length) between
            triangle and arrow.
        stem_overlap: Half-width of the ambiguous stem-length band.
        stem_max: Longest arrow stem, relative to the head length.
        triangle_pure: Fraction of triangles drawn with no stem at all; the others get a
            stub of up to ``stem_split + stem_overlap``.
        rotation_overlap: Half-width in degrees of the ambiguous band around 22.5 degrees
            between plus (rotated within +-(22.5 + w)) and x_cross (45 +- (22.5 + w)).
        offset_split: Boundary of the hole offset (relative to the outer radius) between
            ring and offset_ring.
        offset_overlap: Half-width of the ambiguous hole-offset band.
        offset_max: Largest hole offset of offset rings (above about 0.45 the hole breaks
            through the rim and the shape becomes a crescent).
        contrast_range: Range of the RGB distance between foreground and background colours
            (before clipping to [0, 1]); low values give faint shapes.
        noise_std_range: Range of the per-image standard deviation of the additive Gaussian
            pixel noise (intensities in [0, 1]).
        texture_strength: Typical amplitude of the background texture (gradient, stripes,
            blobs); each image draws its own strength in ``[0.5, 1.5]`` times this.
        stripe_period_range: Range of the period of the background stripes, in pixels.
        shading: Largest amplitude of a linear shading gradient across the shape.
        edge_width: Width in pixels of the anti-aliased edge ramp (1 is a sharp, properly
            anti-aliased edge; larger values blur the outline).
    """

    image_size: int = 32
    scale_range: tuple[float, float] = (0.22, 0.42)
    position_jitter: float = 1.0
    overlap: float = 1.0
    aspect_split: float = 1.3
    aspect_overlap: float = 0.025
    aspect_max: float = 2.2
    stem_split: float = 0.3
    stem_overlap: float = 0.03
    stem_max: float = 1.4
    triangle_pure: float = 0.5
    rotation_overlap: float = 0.75
    offset_split: float = 0.15
    offset_overlap: float = 0.015
    offset_max: float = 0.65
    contrast_range: tuple[float, float] = (0.2, 0.75)
    noise_std_range: tuple[float, float] = (0.02, 0.09)
    texture_strength: float = 0.12
    stripe_period_range: tuple[float, float] = (4.0, 12.0)
    shading: float = 0.15
    edge_width: float = 1.0

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):  # lists (e.g. from JSON) become hashable tuples
            value = getattr(self, field.name)
            if isinstance(value, list):
                object.__setattr__(self, field.name, tuple(value))
        if self.image_size < 8:
            raise ValueError(f"image_size must be at least 8 pixels, got {self.image_size}.")
        lo, hi = self.scale_range
        if not 0 < lo <= hi <= 0.5:
            raise ValueError(
                f"scale_range must satisfy 0 < lo <= hi <= 0.5, got {self.scale_range}."
            )
        for name in ("contrast_range", "noise_std_range", "stripe_period_range"):
            lo, hi = getattr(self, name)
            if not 0 <= lo <= hi:
                raise ValueError(f"{name} must satisfy 0 <= lo <= hi, got {(lo, hi)}.")
        if self.edge_width <= 0:
            raise ValueError(f"edge_width must be positive, got {self.edge_width}.")
        if not 0 <= self.triangle_pure < 1:
            raise ValueError(f"triangle_pure must be in [0, 1), got {self.triangle_pure}.")
        for low, high, what in (
            (1.0, self.aspect_max, "aspect"),
            (0.0, self.stem_max, "stem"),
            (0.0, self.offset_max, "offset"),
        ):
            split = getattr(self, f"{what}_split")
            half = getattr(self, f"{what}_overlap") * self.overlap
            if not low <= split - half <= split + half <= high or half < 0:
                raise ValueError(
                    f"{what}_split +- {what}_overlap * overlap = {split} +- {half} must lie "
                    f"inside [{low}, {high}] (and overlap >= 0)."
                )
        if not 0 <= self.rotation_overlap * self.overlap < 22.5:
            raise ValueError("rotation_overlap * overlap must be in [0, 22.5) degrees.")

    def attribute_ranges(self) -> dict[str, tuple[float, float]]:
        """The range of the pair attribute each class draws from (uniformly).

        For ``triangle`` the lower end is negative: values below 0 mean "no stem", which is
        how ``triangle_pure`` of the triangles end up without one.
        """
        w = self.overlap
        a = self.aspect_split, self.aspect_overlap * w
        s = self.stem_split, self.stem_overlap * w
        r = 22.5, self.rotation_overlap * w
        o = self.offset_split, self.offset_overlap * w
        stem_hi = s[0] + s[1]
        stem_lo = -self.triangle_pure * stem_hi / (1.0 - self.triangle_pure)
        return {
            "circle": (1.0, a[0] + a[1]),
            "ellipse": (a[0] - a[1], self.aspect_max),
            "square": (1.0, a[0] + a[1]),
            "rectangle": (a[0] - a[1], self.aspect_max),
            "triangle": (stem_lo, stem_hi),
            "arrow": (s[0] - s[1], self.stem_max),
            "plus": (-(r[0] + r[1]), r[0] + r[1]),
            "x_cross": (45.0 - r[0] - r[1], 45.0 + r[0] + r[1]),
            "ring": (0.0, o[0] + o[1]),
            "offset_ring": (o[0] - o[1], self.offset_max),
        }

    def label_noise(self) -> dict[str, float]:
        """Bayes error caused by the overlapping attribute ranges, per pair.

        The fraction of a pair's images that even a perfect reader of the attribute would
        misclassify (both classes of a pair are equally frequent and uniform on their
        ranges). It ignores what noise, low contrast and pixelation add on top.

        Returns:
            ``{"circle/ellipse": 0.016, ...}`` and ``"mean"``: the error over all ten classes.
        """
        ranges = self.attribute_ranges()
        out: dict[str, float] = {}
        for first, second, _ in PAIRS:
            (a_lo, a_hi), (b_lo, b_hi) = ranges[first], ranges[second]
            if first == "plus":  # the plus range is symmetric about 0; compare |angle|
                a_lo, a_hi = 0.0, a_hi
                b_lo, b_hi = b_lo, 45.0
            width = max(0.0, min(a_hi, b_hi) - max(a_lo, b_lo))
            density = min(1.0 / (a_hi - a_lo), 1.0 / (b_hi - b_lo))
            out[f"{first}/{second}"] = 0.5 * width * density
        out["mean"] = sum(out.values()) / len(PAIRS)
        return out

    def key(self) -> str:
        """A stable string identifying these settings (used in cache keys)."""
        return json.dumps(dataclasses.asdict(self), sort_keys=True)


def _resolve_config(config: ShapesConfig | None, difficulty: dict[str, Any]) -> ShapesConfig:
    config = config if config is not None else ShapesConfig()
    if not difficulty:
        return config
    known = {f.name for f in dataclasses.fields(ShapesConfig)}
    for name in difficulty:
        if name not in known:
            raise unknown_name(
                "shapes difficulty knob", name, known, "See kdtutor.data.ShapesConfig."
            )
    return dataclasses.replace(config, **difficulty)


_POOL_SIZE = 1 << 20
_POOL_SEED = 0x5EED_0F_5A7E


@functools.cache
def _noise_pool() -> np.ndarray:
    """A fixed pool of 2^20 standard normals (float32) from the same counter-based hash.

    Each image reads one window of ``image_size**2`` consecutive values per channel at
    offsets hashed from ``(seed, index)``: exact Gaussian noise at the cost of a copy, instead
    of hashing and transforming 3,072 numbers per image.
    """
    u = _uniforms(_POOL_SEED, np.arange(_POOL_SIZE // 2), 2)
    a, b = _normals(u[:, 0], u[:, 1])
    return np.concatenate([a, b]).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# Rendering.
# ---------------------------------------------------------------------------------------------

# Uniform streams of each image (column of ``_uniforms``); fixed so that every quantity of
# image i depends on (seed, i, stream) only.
_S_SCALE, _S_ATTR, _S_ROT, _S_CX, _S_CY, _S_AUX1, _S_AUX2 = range(7)
_S_BG = slice(7, 10)
_S_CONTRAST, _S_TEX, _S_GRAD_ANGLE, _S_GRAD_AMP = 10, 11, 12, 13
_S_STRIPE_PERIOD, _S_STRIPE_ANGLE, _S_STRIPE_PHASE, _S_MIX = 14, 15, 16, 17
_S_BLOBS = slice(18, 24)  # x, y, sigma of two blobs
_S_BLOB_SIGN = 24
_S_SHADE_ANGLE, _S_SHADE_AMP, _S_NOISE = 25, 26, 27
_S_OFFSETS = slice(28, 31)
_S_NORMALS = slice(31, 43)  # 12 uniforms -> 12 normals: fg direction, 3 colour vectors
_STREAMS = 43


def _box(px: np.ndarray, py: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Signed distance to an axis-aligned box of half-extents ``(a, b)`` (both non-negative)."""
    qx = np.abs(px) - a
    qy = np.abs(py) - b
    inside = np.minimum(np.maximum(qx, qy), 0.0)
    np.maximum(qx, 0.0, out=qx)
    np.maximum(qy, 0.0, out=qy)
    return np.sqrt(qx * qx + qy * qy) + inside


def _folded_box(u: np.ndarray, v: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Like :func:`_box` for points already folded to ``u, v >= 0``."""
    qx = u - a
    qy = v - b
    inside = np.minimum(np.maximum(qx, qy), 0.0)
    np.maximum(qx, 0.0, out=qx)
    np.maximum(qy, 0.0, out=qy)
    return np.sqrt(qx * qx + qy * qy) + inside


def _col(v: np.ndarray) -> np.ndarray:
    """Per-image scalars shaped to broadcast against (m, H, W)."""
    return v.astype(np.float32)[:, None, None]


def _sdf_pair(
    pair: int,
    px: np.ndarray,
    py: np.ndarray,
    s: np.ndarray,
    attr: np.ndarray,
    aux1: np.ndarray,
    aux2: np.ndarray,
) -> np.ndarray:
    """Signed distance (pixels, negative inside) of the shapes of one pair.

    ``px, py`` are (m, H, W) coordinates in each shape's own rotated frame; the per-image
    parameters are (m,) arrays: bounding radius ``s``, pair attribute ``attr`` and two
    uniforms ``aux1, aux2`` for the fine geometry that does not define the class.
    """
    if pair == 0:  # ellipse with major semi-axis s and aspect ratio attr (circle near 1)
        a = _col(s)
        b = _col(s / attr)
        x = px / a
        y = py / b
        k0 = np.sqrt(x * x + y * y)
        x /= a
        y /= b
        k1 = np.sqrt(x * x + y * y)
        np.maximum(k1, 1e-12, out=k1)
        return k0 * (k0 - 1.0) / k1
    if pair == 1:  # box whose half-diagonal is s, aspect ratio attr
        diag = np.sqrt(1.0 + attr * attr)
        return _box(px, py, _col(s * attr / diag), _col(s / diag))
    if pair == 2:  # triangle head pointing to +x, plus a stem of length attr * head length
        t = np.maximum(attr, 0.0)
        k = 0.5 + 0.25 * aux1  # head half-width / head length
        h = s / np.sqrt((0.5 * (1.0 + t)) ** 2 + k * k)
        total = h * (1.0 + t)
        apex = 0.5 * total
        base = apex - h
        w = k * h
        norm = np.sqrt(w * w + h * h)
        edge = ((px - _col(apex)) * _col(w / norm)) + np.abs(py) * _col(h / norm)
        d = np.maximum(edge, _col(base) - px)
        # stem from the tail to half a pixel inside the head; none at all when t == 0
        half_len = np.where(t > 0, 0.5 * (base + 0.5 + 0.5 * total), -1.0)
        centre = base + 0.5 - half_len
        thick = h * (0.14 + 0.1 * aux2)
        stem = _box(px - _col(centre), py, _col(half_len), _col(thick))
        return np.minimum(d, stem)
    if pair == 3:  # plus of arm half-length a and half-thickness a * ratio (rotation = attr)
        ratio = 0.18 + 0.12 * aux1
        a = s / np.sqrt(1.0 + ratio * ratio)
        ax = np.abs(px)
        ay = np.abs(py)
        return _folded_box(np.maximum(ax, ay), np.minimum(ax, ay), _col(a), _col(a * ratio))
    # pair 4: disk of radius s minus a hole of radius s * (0.4..0.6) offset by attr * s
    hole = s * (0.4 + 0.2 * aux1)
    outer = np.sqrt(px * px + py * py) - _col(s)
    hx = px - _col(attr * s)
    inner = _col(hole) - np.sqrt(hx * hx + py * py)
    return np.maximum(outer, inner)


def _render(index: np.ndarray, seed: int, cfg: ShapesConfig) -> np.ndarray:
    """Render the images of ``index`` (int64 array) as uint8 (m, 3, S, S)."""
    m = index.shape[0]
    size = cfg.image_size
    unit = size / 32.0
    u = _uniforms(seed, index, _STREAMS)
    label = index % 10
    grid = np.arange(size, dtype=np.float32) - (size - 1) / 2.0  # pixel centres

    # geometry -----------------------------------------------------------------------------
    lo, hi = cfg.scale_range
    s = size * (lo + (hi - lo) * u[:, _S_SCALE])
    room = np.maximum(0.5 * size - s - 0.5, 0.0) * cfg.position_jitter
    cx = (2.0 * u[:, _S_CX] - 1.0) * room
    cy = (2.0 * u[:, _S_CY] - 1.0) * room
    ranges = cfg.attribute_ranges()
    table = np.array([ranges[name] for name in CLASSES])
    attr = table[label, 0] + (table[label, 1] - table[label, 0]) * u[:, _S_ATTR]
    angle = 2.0 * np.pi * u[:, _S_ROT]
    plus = label // 2 == 3
    angle[plus] = np.deg2rad(attr[plus]) + 0.5 * np.pi * np.floor(4.0 * u[plus, _S_ROT])

    alpha = np.empty((m, size, size), dtype=np.float32)
    pair_of = label // 2
    for pair in range(5):
        sel = np.flatnonzero(pair_of == pair)
        if sel.size == 0:
            continue
        c = _col(np.cos(angle[sel]))
        sn = _col(np.sin(angle[sel]))
        dx = grid[None, None, :] - _col(cx[sel])  # (k, 1, S)
        dy = grid[None, :, None] - _col(cy[sel])  # (k, S, 1)
        px = c * dx + sn * dy
        py = c * dy - sn * dx
        d = _sdf_pair(pair, px, py, s[sel], attr[sel], u[sel, _S_AUX1], u[sel, _S_AUX2])
        # coverage of a pixel by a straight edge at distance d: a linear ramp, then a
        # smoothstep to round off its ends
        a = np.clip(0.5 - d * np.float32(1.0 / cfg.edge_width), 0.0, 1.0)
        alpha[sel] = a * a * (3.0 - 2.0 * a)

    # colours --------------------------------------------------------------------------------
    n = np.stack(_normals(u[:, _S_NORMALS][:, 0::2], u[:, _S_NORMALS][:, 1::2]), axis=-1)
    n = n.reshape(m, 12)
    bg = 0.1 + 0.8 * u[:, _S_BG]
    direction = n[:, 0:3] / np.linalg.norm(n[:, 0:3], axis=1, keepdims=True)
    c_lo, c_hi = cfg.contrast_range
    contrast = (c_lo + (c_hi - c_lo) * u[:, _S_CONTRAST])[:, None]
    fg = bg + contrast * direction
    flip = (fg < 0.0) | (fg > 1.0)
    fg = np.where(flip, bg - contrast * direction, fg).clip(0.0, 1.0)

    tex = cfg.texture_strength * (0.5 + u[:, _S_TEX])
    grad_col = (tex * u[:, _S_GRAD_AMP])[:, None] * n[:, 3:6] / math.sqrt(3.0)
    pat_col = tex[:, None] * n[:, 6:9] / math.sqrt(3.0)
    shade_col = (cfg.shading * u[:, _S_SHADE_AMP])[:, None] * n[:, 9:12] / math.sqrt(3.0)

    # scalar fields (m, S*S): gradient G, pattern P, shading gradient G2 ----------------------
    half = 0.5 * size
    ga = 2.0 * np.pi * u[:, _S_GRAD_ANGLE]
    gx = _col(np.cos(ga) / half)
    gy = _col(np.sin(ga) / half)
    sa = 2.0 * np.pi * u[:, _S_SHADE_ANGLE]
    sx = _col(np.cos(sa) / half)
    sy = _col(np.sin(sa) / half)
    xs = grid[None, None, :]
    ys = grid[None, :, None]

    p_lo, p_hi = cfg.stripe_period_range
    period = unit * (p_lo + (p_hi - p_lo) * u[:, _S_STRIPE_PERIOD])
    st = 2.0 * np.pi * u[:, _S_STRIPE_ANGLE]
    fx = _col(2.0 * np.pi * np.cos(st) / period)
    fy = _col(2.0 * np.pi * np.sin(st) / period)
    phase = _col(2.0 * np.pi * u[:, _S_STRIPE_PHASE])
    # sin(fx x + fy y + phase) from rank-one factors: sin(A + B) = sin A cos B + cos A sin B
    ax_ = fx * xs + phase
    by_ = fy * ys
    mix = _col(u[:, _S_MIX])
    stripes = np.sin(ax_) * (np.cos(by_) * mix) + np.cos(ax_) * (np.sin(by_) * mix)
    blobs = u[:, _S_BLOBS]
    sign = np.where(u[:, _S_BLOB_SIGN] < 0.5, -1.0, 1.0)
    for j, amp in ((0, 1.0 - u[:, _S_MIX]), (1, (1.0 - u[:, _S_MIX]) * sign)):
        bx = _col((blobs[:, 3 * j] - 0.5) * size)
        by = _col((blobs[:, 3 * j + 1] - 0.5) * size)
        inv = _col(-1.0 / (unit * (3.0 + 6.0 * blobs[:, 3 * j + 2])) ** 2)
        ex = np.exp((xs - bx) ** 2 * inv) * _col(2.0 * amp)
        ey = np.exp((ys - by) ** 2 * inv)
        stripes += ex * ey
    pattern = stripes

    fields = np.empty((m, 7, size * size), dtype=np.float32)
    fields[:, 0] = 1.0
    g = fields[:, 1].reshape(m, size, size)
    np.add(gx * xs, gy * ys, out=g)
    fields[:, 2] = pattern.reshape(m, -1)
    fields[:, 3] = alpha.reshape(m, -1)
    np.multiply(fields[:, 3], fields[:, 1], out=fields[:, 4])
    np.multiply(fields[:, 3], fields[:, 2], out=fields[:, 5])
    g2 = fields[:, 6].reshape(m, size, size)
    np.add(sx * xs, sy * ys, out=g2)
    g2 *= alpha

    # image = bg + G gc + P pc + alpha (fg - bg - G gc - P pc + G2 sc), as one batched matmul
    mat = np.stack(
        [bg + 0.5 / 255.0, grad_col, pat_col, fg - bg, -grad_col, -pat_col, shade_col], axis=-1
    )
    mat = (255.0 * mat).astype(np.float32)  # (m, 3, 7); + 0.5 above rounds on truncation
    out = np.matmul(mat, fields)  # (m, 3, S*S)

    n_lo, n_hi = cfg.noise_std_range
    sigma = _col(255.0 * (n_lo + (n_hi - n_lo) * u[:, _S_NOISE]))
    pool = _noise_pool()
    pixels = size * size
    offsets = (u[:, _S_OFFSETS] * (pool.shape[0] - pixels)).astype(np.int64)
    windows = np.lib.stride_tricks.sliding_window_view(pool, pixels)
    noise = windows[offsets]  # (m, 3, S*S) copy
    noise *= sigma
    out += noise
    np.clip(out, 0.0, 255.0, out=out)
    return out.astype(np.uint8).reshape(m, 3, size, size)


def make_shapes(
    n: int,
    seed: int = 0,
    start: int = 0,
    config: ShapesConfig | None = None,
    **difficulty: Any,
) -> tuple[np.ndarray, np.ndarray]:
    """Generate ``n`` shapes images with indices ``start, ..., start + n - 1``.

    Args:
        n: Number of images.
        seed: Seed of the whole family; any integer (different seeds give different images).
        start: Index of the first image. Image ``i`` depends only on ``(seed, start + i)``.
        config: Difficulty settings; defaults to ``ShapesConfig()``.
        **difficulty: Overrides of single :class:`ShapesConfig` fields, e.g.
            ``noise_std_range=(0, 0)``.

    Returns:
        ``(images, labels)``: uint8 array (n, 3, S, S) and int64 array (n,) with
        ``labels[i] == (start + i) % 10``.

    Raises:
        ValueError: ``n`` or ``start`` is negative, or a knob has an invalid value.
        kdtutor.errors.UnknownNameError: A keyword is not a :class:`ShapesConfig` field.
    """
    if n < 0 or start < 0:
        raise ValueError(f"n and start must be non-negative, got n={n}, start={start}.")
    cfg = _resolve_config(config, difficulty)
    size = cfg.image_size
    index = np.arange(start, start + n, dtype=np.int64)
    images = np.empty((n, 3, size, size), dtype=np.uint8)
    for lo in range(0, n, _CHUNK):
        hi = min(n, lo + _CHUNK)
        images[lo:hi] = _render(index[lo:hi], seed, cfg)
    return images, index % 10


def benchmark(n: int = 20_000, seed: int = 0, config: ShapesConfig | None = None) -> float:
    """Images per second that :func:`make_shapes` generates on ONE core.

    Limits torch, BLAS and OpenMP thread pools to one thread while it runs (numpy's
    element-wise operations are single-threaded anyway).

    Args:
        n: Number of images to generate.
        seed: Seed of the generated images.
        config: Difficulty settings (default ``ShapesConfig()``).

    Returns:
        Generation speed in images per second (one warm-up batch excluded).
    """
    from threadpoolctl import threadpool_limits

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(limits=1):
            make_shapes(_CHUNK, seed=seed, config=config)  # warm-up: noise pool, caches
            t0 = time.perf_counter()
            make_shapes(n, seed=seed, start=_CHUNK, config=config)
            elapsed = time.perf_counter() - t0
    finally:
        torch.set_num_threads(threads)
    return n / elapsed


# ---------------------------------------------------------------------------------------------
# Dataset with in-memory and disk caches.
# ---------------------------------------------------------------------------------------------


_MEMORY: dict[tuple[Any, ...], tuple[np.ndarray, np.ndarray]] = {}
_STATS: dict[tuple[Any, ...], tuple[tuple[float, ...], tuple[float, ...]]] = {}


def _cache_key(kind: str, n: int, seed: int, start: int, cfg: ShapesConfig) -> str:
    text = json.dumps([kind, GENERATOR_VERSION, n, seed, start, cfg.key()])
    return hashlib.sha256(text.encode()).hexdigest()


def _generate_cached(
    n: int, seed: int, start: int, cfg: ShapesConfig, disk: bool
) -> tuple[np.ndarray, np.ndarray]:
    """``make_shapes`` behind an in-memory cache and (if ``disk``) an .npz file cache."""
    mem_key = (n, seed, start, cfg)
    if mem_key in _MEMORY:
        return _MEMORY[mem_key]
    key = _cache_key("images", n, seed, start, cfg)
    path = cache_dir() / "shapes" / f"shapes-v{GENERATOR_VERSION}-{key[:20]}.npz"
    arrays = load_npz(path, key) if disk else None
    if arrays is not None and arrays["images"].shape == (n, 3, cfg.image_size, cfg.image_size):
        result = arrays["images"], arrays["labels"].astype(np.int64)
    else:
        result = make_shapes(n, seed=seed, start=start, config=cfg)
        if disk:
            save_npz(path, key, images=result[0], labels=result[1])
    _MEMORY[mem_key] = result
    return result


def _stats(
    seed: int, cfg: ShapesConfig, train: tuple[np.ndarray, np.ndarray] | None
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean/std of the first ``STATS_SAMPLES`` train images of ``(seed, cfg)``."""
    key = (seed, cfg)
    if key not in _STATS:
        if train is not None and train[0].shape[0] >= STATS_SAMPLES:
            images = train[0][:STATS_SAMPLES]
        else:
            images = _generate_cached(STATS_SAMPLES, seed, 0, cfg, disk=True)[0]
        _STATS[key] = channel_stats(torch.from_numpy(images))
    return _STATS[key]


def shapes_dataset(
    split: str = "train",
    size: int | None = None,
    seed: int = 0,
    config: ShapesConfig | None = None,
    *,
    cache: bool | None = None,
    **difficulty: Any,
) -> ArrayDataset:
    """The shapes dataset as an :class:`ArrayDataset` (uint8 images, int64 labels).

    Train images have indices ``0 .. size - 1``, test images ``TEST_START ..``, so the splits
    never share an image and a smaller ``size`` is a prefix of a larger one. Both splits are
    normalised with the per-channel mean and std of the first ``STATS_SAMPLES`` train images.

    Args:
        split: ``"train"`` or ``"test"``.
        size: Number of images; defaults to 20,000 (train) / 4,000 (test). Multiples of 10
            are exactly balanced.
        seed: Seed of the image family.
        config: Difficulty settings (default ``ShapesConfig()``).
        cache: Keep the generated arrays in an .npz file under ``cache_dir()/shapes``:
            True always, False never, None (default) when ``size >= DISK_CACHE_MIN``. Arrays
            are cached in memory in any case; an unreadable cache file is regenerated.
        **difficulty: Overrides of single :class:`ShapesConfig` fields.

    Returns:
        The dataset, named ``"shapes"``.
    """
    if split not in DEFAULT_SIZES:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}.")
    cfg = _resolve_config(config, difficulty)
    n = DEFAULT_SIZES[split] if size is None else int(size)
    if n < 1:
        raise ValueError(f"size must be at least 1, got {size}.")
    disk = n >= DISK_CACHE_MIN if cache is None else bool(cache)
    start = 0 if split == "train" else TEST_START
    images, labels = _generate_cached(n, seed, start, cfg, disk)
    mean, std = _stats(seed, cfg, (images, labels) if split == "train" else None)
    return ArrayDataset(
        torch.from_numpy(images),
        torch.from_numpy(labels),
        classes=list(CLASSES),
        name="shapes",
        split=split,
        mean=mean,
        std=std,
    )
