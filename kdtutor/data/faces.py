"""Procedural identities: 32 x 32 cartoon faces, for face recognition and metric learning.

What it models: recognising a person seen under new conditions, and telling apart people
never seen in training (the retrieval protocol of face recognition and of metric learning:
embed, then compare). Each identity is a point in a continuous space of facial geometry and
colour; each image of it adds nuisances that do not change who it is. Because the identity
space is continuous, two identities can be arbitrarily alike, and generalising to unseen
identities means something: the test identities are drawn from the same space but never
seen in training.

**Identity** (:func:`identity_parameters`, counter-based uniforms of ``(seed, identity,
stream)``): face oval aspect and chin taper, skin tone, eye spacing, size and height, iris
colour, eyebrow thickness, length, gap and angle, nose length and width, mouth width, lip
thickness and height, lip colour, hair style (:data:`HAIR_STYLES`), colour and hairline,
ear size, and a beard (probability :attr:`FaceConfig.beard_p`).

**Per image** (uniforms of ``(seed, identity, sample, stream)``): in-plane rotation
(+-12 degrees), scale (+-8%), shift (+-2 px), yaw (the features slide round a cylindrical
head, the far side squashed, up to 25 degrees), expression (smile or frown, brow raise,
mouth opening, eye opening, gaze), a lighting gradient, a textured background, the shirt's
colour, glasses (probability 0.15), a hat (probability 0.1), pixel noise and blur. Every
continuous nuisance is scaled by :attr:`FaceConfig.nuisance` (0: every image of an
identity is the same picture), which pilot P4 of the design note tunes.

Faces are drawn with signed distance functions on the pixel grid for a whole batch at once
(numpy, float32, anti-aliased edges), layer over layer, as :mod:`kdtutor.data.shapes` draws
its shapes.

**Splits are by identity** (:data:`FACE_SPLITS`): train identities 0-999 with 20 images each
(20,000), validation identities 1000-1099 with 10 each, test identities 1100-1299 with 10
each (2,000 images of identities never seen in training). :func:`faces_dataset` orders a
split's images round-robin over its identities (image ``k`` is sample ``k // n`` of the
split's identity ``k % n``), so every prefix is balanced and a prefix of ``2 n`` images holds
two images of each identity.

>>> from kdtutor.data.faces import faces_dataset
>>> test = faces_dataset("test", size=400, cache=False)
>>> test.images.shape, test.num_classes, test.classes[0]
(torch.Size([400, 3, 32, 32]), 200, 'id1100')
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ._random import mix_seed
from ._random import normals as _normals
from ._random import uniforms as _uniforms
from .arrays import ArrayDataset, channel_stats
from .shapes import _noise_pool
from .tasks import DISK_CACHE_MIN, cached_arrays, check_count, check_split

__all__ = [
    "FACE_GENERATOR_VERSION",
    "FACE_SPLITS",
    "HAIR_STYLES",
    "FaceConfig",
    "face_benchmark",
    "faces_dataset",
    "identity_parameters",
    "render_faces",
    "split_identities",
]

#: Bumped whenever the rendering changes, so stale disk caches are never reused.
FACE_GENERATOR_VERSION = 1

#: ``split -> (first identity, number of identities, images per identity)``.
FACE_SPLITS: dict[str, tuple[int, int, int]] = {
    "train": (0, 1_000, 20),
    "validation": (1_000, 100, 10),
    "test": (1_100, 200, 10),
}

#: The hair styles, by the value of the identity parameter ``hair_style``.
HAIR_STYLES: tuple[str, ...] = ("short", "fringe", "long", "bald", "volume")

#: Normalisation statistics come from this many train images (shared by every split).
STATS_SAMPLES = 2_000

_MAX_SAMPLE = 1 << 24  # samples per identity are packed into the low 24 bits of the index
_MAX_IDENTITY = 1 << 38
_CHUNK = 512

_HAIR_PALETTE = np.array(
    [
        (0.07, 0.05, 0.04),  # black
        (0.24, 0.14, 0.07),  # dark brown
        (0.45, 0.29, 0.14),  # brown
        (0.60, 0.26, 0.10),  # red
        (0.86, 0.72, 0.42),  # blond
        (0.62, 0.62, 0.62),  # grey
    ]
)
_IRIS_PALETTE = np.array(
    [(0.12, 0.07, 0.04), (0.33, 0.20, 0.09), (0.45, 0.40, 0.15), (0.20, 0.42, 0.30),
     (0.25, 0.40, 0.65), (0.45, 0.50, 0.55)]
)  # fmt: skip
_SKIN_LIGHT = np.array((0.96, 0.81, 0.70))
_SKIN_DARK = np.array((0.34, 0.21, 0.13))


@dataclass(frozen=True)
class FaceConfig:
    """Image size and nuisance strengths of the faces. Every field has a documented default.

    Lengths in pixels are those of a 32 x 32 image and scale with ``image_size``.

    Attributes:
        image_size: Side of the square images in pixels.
        nuisance: Multiplies every continuous per-image nuisance below (rotation, scale,
            shift, yaw, expression, lighting, background texture, noise, blur; below 1 it
            also fades the background and shirt colours towards grey); 0 draws every image
            of an identity alike (glasses and hats aside: set their probabilities to 0 too).
        rotation: Largest in-plane rotation, degrees.
        scale_jitter: Largest relative change of the face's size.
        shift: Largest shift of the face, pixels.
        yaw: Largest head turn, degrees.
        expression: Strength of the expression (smile or frown, brow raise, mouth and eye
            opening, gaze), 1 for the default range.
        lighting: Largest relative brightness change across the image (a linear gradient).
        texture_strength: Typical amplitude of the background texture.
        glasses_p: Probability that an image shows glasses.
        hat_p: Probability that an image shows a hat.
        beard_p: Fraction of identities with a beard.
        noise_std_range: Range of the standard deviation of the pixel noise (in [0, 1]
            units), before ``nuisance``.
        blur_max: Largest standard deviation of the Gaussian blur, pixels (before
            ``nuisance``).
    """

    image_size: int = 32
    nuisance: float = 1.0
    rotation: float = 12.0
    scale_jitter: float = 0.08
    shift: float = 2.0
    yaw: float = 25.0
    expression: float = 1.0
    lighting: float = 0.3
    texture_strength: float = 0.12
    glasses_p: float = 0.15
    hat_p: float = 0.1
    beard_p: float = 0.2
    noise_std_range: tuple[float, float] = (0.01, 0.05)
    blur_max: float = 0.7

    def __post_init__(self) -> None:
        if isinstance(self.noise_std_range, list):
            object.__setattr__(self, "noise_std_range", tuple(self.noise_std_range))
        if self.image_size < 16:
            raise ValueError(f"image_size must be at least 16 pixels, got {self.image_size}.")
        for name in ("nuisance", "rotation", "scale_jitter", "shift", "yaw", "expression",
                     "lighting", "texture_strength", "blur_max"):  # fmt: skip
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be non-negative, got {getattr(self, name)}.")
        for name in ("glasses_p", "hat_p", "beard_p"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(
                    f"{name} must be a probability in [0, 1], got {getattr(self, name)}."
                )
        lo, hi = self.noise_std_range
        if not 0 <= lo <= hi:
            raise ValueError(f"noise_std_range must satisfy 0 <= lo <= hi, got {(lo, hi)}.")
        if self.scale_jitter * self.nuisance >= 0.5:
            raise ValueError("scale_jitter * nuisance must be below 0.5.")
        if self.yaw * self.nuisance >= 60:
            raise ValueError("yaw * nuisance must be below 60 degrees.")

    def key(self) -> str:
        """A stable string identifying these settings (used in cache keys)."""
        return json.dumps(dataclasses.asdict(self), sort_keys=True)


# -- parameters ------------------------------------------------------------------------------
# (name, low, high): identity parameters drawn uniformly; the order is the stream order.
_IDENTITY_RANGES: tuple[tuple[str, float, float], ...] = (
    ("aspect", 0.68, 0.88),  # half-width of the face / half-height
    ("chin", 0.05, 0.40),  # taper of the lower half
    ("skin", 0.0, 1.0),  # light (0) to dark (1)
    ("skin_hue", -1.0, 1.0),
    ("eye_spacing", 0.26, 0.40),
    ("eye_size", 0.10, 0.16),
    ("eye_height", -0.14, 0.06),
    ("iris", 0.0, 1.0),  # position on the iris palette
    ("brow_thickness", 0.03, 0.075),
    ("brow_length", 0.10, 0.18),
    ("brow_gap", 0.16, 0.26),
    ("brow_angle", -0.35, 0.35),  # radians; positive raises the inner end
    ("nose_length", 0.16, 0.32),
    ("nose_width", 0.025, 0.065),
    ("mouth_width", 0.13, 0.27),
    ("lip_thickness", 0.025, 0.065),
    ("mouth_gap", 0.10, 0.22),  # from the nose's end to the mouth
    ("lip_colour", 0.2, 0.8),
    ("hair_style", 0.0, 5.0),  # floor -> HAIR_STYLES
    ("hair_colour", 0.0, 1.0),  # position on the hair palette
    ("hairline", -0.66, -0.40),
    ("ear_size", 0.7, 1.3),
    ("beard", 0.0, 1.0),  # < beard_p: a beard
    ("beard_top", 0.0, 1.0),
)
_ID_STREAMS = len(_IDENTITY_RANGES)

(_S_ROT, _S_SCALE, _S_SX, _S_SY, _S_YAW, _S_SMILE, _S_BROW, _S_OPEN, _S_EYE, _S_GAZE,
 _S_LIGHT_ANGLE, _S_LIGHT, _S_GLASSES, _S_HAT, _S_NOISE, _S_BLUR, _S_TEX, _S_PERIOD,
 _S_STRIPE_ANGLE, _S_PHASE, _S_GRAD_ANGLE, _S_GRAD) = range(22)  # fmt: skip
_S_BG = slice(22, 25)
_S_SHIRT = slice(25, 28)
_S_HAT_COLOUR = slice(28, 31)
_S_GLASSES_COLOUR = 31
_S_OFFSETS = slice(32, 35)
_S_NORMALS = slice(35, 41)  # 6 uniforms -> 6 normals: the texture's two colour directions
_SAMPLE_STREAMS = 41


def _check_ids(identity: Any, sample: Any) -> tuple[np.ndarray, np.ndarray]:
    ident, samp = np.broadcast_arrays(np.asarray(identity), np.asarray(sample))
    ident, samp = ident.reshape(-1), samp.reshape(-1)
    for name, values, limit in (("identity", ident, _MAX_IDENTITY), ("sample", samp, _MAX_SAMPLE)):
        if values.size and not np.issubdtype(values.dtype, np.integer):
            raise ValueError(f"{name} must be integers, got {values.dtype}.")
        if values.size and (values.min() < 0 or values.max() >= limit):
            raise ValueError(
                f"{name} must lie in [0, {limit}), got [{values.min()}, {values.max()}]."
            )
    return ident.astype(np.int64), samp.astype(np.int64)


def identity_parameters(identity: Any, seed: int = 0) -> dict[str, np.ndarray]:
    """The parameters that define each identity (the same in every image of it).

    Args:
        identity: Identity number(s), non-negative integers.
        seed: Seed of the identity family.

    Returns:
        A dict of float64 arrays of ``identity``'s length, one per parameter (the face
        geometry is in units of the head's half-height): ``aspect``, ``chin``, ``skin``,
        ``skin_hue``, ``eye_spacing``, ``eye_size``, ``eye_height``, ``iris``,
        ``brow_thickness``, ``brow_length``, ``brow_gap``, ``brow_angle``, ``nose_length``,
        ``nose_width``, ``mouth_width``, ``lip_thickness``, ``mouth_gap``, ``lip_colour``,
        ``hair_style`` (an index into :data:`HAIR_STYLES`), ``hair_colour``, ``hairline``,
        ``ear_size``, ``beard`` and ``beard_top``; plus ``uniform``, the ``(n, 24)``
        uniforms they come from (a normalised identity space, to measure how close two
        identities are).
    """
    ident, _ = _check_ids(identity, 0)
    u = _uniforms(mix_seed(seed, 0xFACE, 1), ident, _ID_STREAMS)
    out = {name: lo + (hi - lo) * u[:, j] for j, (name, lo, hi) in enumerate(_IDENTITY_RANGES)}
    out["hair_style"] = np.minimum(np.floor(out["hair_style"]), len(HAIR_STYLES) - 1)
    out["uniform"] = u
    return out


def _palette(palette: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Colours ``(n, 3)`` interpolated along a palette at positions ``t`` in [0, 1]."""
    x = np.clip(t, 0.0, 1.0) * (len(palette) - 1)
    i = np.minimum(np.floor(x).astype(np.int64), len(palette) - 2)
    f = (x - i)[:, None]
    return palette[i] * (1.0 - f) + palette[i + 1] * f


# -- drawing ---------------------------------------------------------------------------------
def _c(v: np.ndarray) -> np.ndarray:
    """Per-image scalars shaped to broadcast against ``(m, H, W)``."""
    return np.asarray(v, np.float32)[:, None, None]


def _ellipse(x: np.ndarray, y: np.ndarray, a: Any, b: Any) -> np.ndarray:
    """Approximate signed distance to an ellipse of semi-axes ``(a, b)`` (``a, b`` may vary
    per pixel), in the units of ``x`` and ``y``."""
    px = x / a
    py = y / b
    k0 = np.sqrt(px * px + py * py)
    px /= a
    py /= b
    k1 = np.sqrt(px * px + py * py)
    np.maximum(k1, 1e-6, out=k1)
    return k0 * (k0 - 1.0) / k1


def _segment(x: np.ndarray, y: np.ndarray, x0: Any, y0: Any, x1: Any, y1: Any) -> np.ndarray:
    """Distance to the segment from ``(x0, y0)`` to ``(x1, y1)``."""
    ex, ey = x1 - x0, y1 - y0
    t = np.clip(((x - x0) * ex + (y - y0) * ey) / (ex * ex + ey * ey + 1e-12), 0.0, 1.0)
    dx = x - x0 - t * ex
    dy = y - y0 - t * ey
    return np.sqrt(dx * dx + dy * dy)


def _coverage(d: np.ndarray, pixels: np.ndarray) -> np.ndarray:
    """Anti-aliased coverage of a shape whose signed distance (units) is ``d``; ``pixels``:
    pixels per unit, per image."""
    a = np.clip(0.5 - d * pixels, 0.0, 1.0)
    return a * a * (3.0 - 2.0 * a)


def _paint(image: np.ndarray, alpha: np.ndarray, colour: np.ndarray) -> None:
    """Composite ``colour`` ``(m, 3)`` or ``(m, 3, H, W)`` over ``image`` with ``alpha``."""
    if colour.ndim == 2:
        colour = colour.astype(np.float32)[:, :, None, None]
    image += alpha[:, None] * (colour - image)


def _render(identity: np.ndarray, sample: np.ndarray, seed: int, cfg: FaceConfig) -> np.ndarray:
    """Faces of ``(identity, sample)`` (int64 arrays) as uint8 ``(m, 3, S, S)``."""
    m = identity.shape[0]
    size = cfg.image_size
    unit = size / 32.0
    p = identity_parameters(identity, seed)
    u = _uniforms(mix_seed(seed, 0xFACE, 2), (identity << 24) | sample, _SAMPLE_STREAMS)
    k = cfg.nuisance
    grid = np.arange(size, dtype=np.float32) + 0.5  # pixel centres

    # pose: pixel -> head frame (units of the head's half-height, y down) --------------------
    rot = np.deg2rad(cfg.rotation * k) * (2.0 * u[:, _S_ROT] - 1.0)
    scale = 1.0 + cfg.scale_jitter * k * (2.0 * u[:, _S_SCALE] - 1.0)
    pixels = _c(0.33 * size * scale)  # pixels per unit
    cx = 0.5 * size + cfg.shift * unit * k * (2.0 * u[:, _S_SX] - 1.0)
    cy = 0.44 * size + cfg.shift * unit * k * (2.0 * u[:, _S_SY] - 1.0)
    dx = grid[None, None, :] - _c(cx)
    dy = grid[None, :, None] - _c(cy)
    cos, sin = _c(np.cos(rot)), _c(np.sin(rot))
    x = (cos * dx + sin * dy) / pixels
    y = (cos * dy - sin * dx) / pixels

    a = _c(p["aspect"])
    yaw = np.deg2rad(cfg.yaw * k) * (2.0 * u[:, _S_YAW] - 1.0)
    cy_, sy_ = _c(np.cos(yaw)), _c(np.sin(yaw))
    # features lie on a cylinder of radius a: x = a sin(theta + yaw) on screen
    fx = x * cy_ - np.sqrt(np.maximum(a * a - x * x, 0.0)) * sy_
    ax = np.abs(fx)

    # colours ----------------------------------------------------------------------------------
    t = p["skin"][:, None]
    skin = _SKIN_LIGHT * (1.0 - t) + _SKIN_DARK * t
    skin = np.clip(skin + 0.03 * p["skin_hue"][:, None] * np.array([1.0, -0.3, -1.0]), 0, 1)
    hair = _palette(_HAIR_PALETTE, p["hair_colour"])
    iris = _palette(_IRIS_PALETTE, p["iris"])
    lip_t = p["lip_colour"][:, None]
    lips = skin * (1.0 - lip_t) + np.array([0.62, 0.22, 0.24]) * lip_t

    # background: colour, a gradient and stripes ---------------------------------------------
    n = np.stack(_normals(u[:, _S_NORMALS][:, 0::2], u[:, _S_NORMALS][:, 1::2]), axis=-1)
    n = n.reshape(m, 6) / math.sqrt(3.0)
    mix = min(k, 1.0)  # colours of the scene fade to grey as the nuisances go to 0
    bg = 0.5 + mix * (0.7 * u[:, _S_BG] - 0.35)
    tex = cfg.texture_strength * k * (0.5 + u[:, _S_TEX])
    period = unit * (4.0 + 8.0 * u[:, _S_PERIOD])
    sa = 2.0 * np.pi * u[:, _S_STRIPE_ANGLE]
    xs, ys = grid[None, None, :], grid[None, :, None]
    stripes = np.sin(
        _c(2 * np.pi * np.cos(sa) / period) * xs
        + _c(2 * np.pi * np.sin(sa) / period) * ys
        + _c(2 * np.pi * u[:, _S_PHASE])
    )
    ga = 2.0 * np.pi * u[:, _S_GRAD_ANGLE]
    gradient = (_c(np.cos(ga)) * (xs - 0.5 * size) + _c(np.sin(ga)) * (ys - 0.5 * size)) / (
        0.5 * size
    )
    image = (
        bg.astype(np.float32)[:, :, None, None]
        + (tex[:, None] * n[:, 0:3]).astype(np.float32)[:, :, None, None] * stripes[:, None]
        + (tex[:, None] * u[:, _S_GRAD, None] * n[:, 3:6]).astype(np.float32)[:, :, None, None]
        * gradient[:, None]
    )

    # hair behind the head (long, volume) ------------------------------------------------------
    style = p["hair_style"].astype(np.int64)
    long_back = np.maximum(_ellipse(x, y - 0.18, a + 0.22, 1.15), y - 1.25)
    volume_back = _ellipse(x, y + 0.12, a + 0.34, 1.22)
    back = np.where(_c(style == 2), long_back, np.where(_c(style == 4), volume_back, 9.0))
    _paint(image, _coverage(back, pixels), hair * 0.85)

    # shoulders, neck, ears, head --------------------------------------------------------------
    shirt = 0.5 + mix * (0.8 * u[:, _S_SHIRT] - 0.4)
    _paint(image, _coverage(_ellipse(x, y - 2.0, 1.55, 0.78), pixels), shirt)
    neck = np.maximum(np.abs(x) - 0.34 * a, np.maximum(0.6 - y, y - 1.8))
    _paint(image, _coverage(neck, pixels), skin * 0.82)
    ear_scale = _c(p["ear_size"])
    ear_x = a * (1.0 - 0.1 * ear_scale)  # both ears slide against the turn, behind the head
    turn = 0.45 * a * sy_
    ears = np.minimum(
        _ellipse(x - ear_x + turn, y - 0.02, 0.11 * ear_scale, 0.2 * ear_scale),
        _ellipse(x + ear_x + turn, y - 0.02, 0.11 * ear_scale, 0.2 * ear_scale),
    )
    _paint(image, _coverage(ears, pixels), skin * 0.92)
    taper = a * (1.0 - _c(p["chin"]) * np.clip(y, 0.0, 1.0) ** 2)
    head = _ellipse(x, y, taper, 1.0)
    shade = 1.0 - 0.14 * np.clip((x / a) ** 2 + 0.5 * np.maximum(y, 0.0) ** 2, 0.0, 1.0)
    _paint(
        image, _coverage(head, pixels), skin.astype(np.float32)[:, :, None, None] * shade[:, None]
    )

    # beard ------------------------------------------------------------------------------------
    nose_top = p["eye_height"] + 0.06
    nose_end = nose_top + p["nose_length"]
    mouth_y = nose_end + p["mouth_gap"]
    has_beard = p["beard"] < cfg.beard_p
    top = np.maximum(mouth_y - 0.1 + 0.06 * p["beard_top"], p["eye_height"] + 0.2)
    beard_top = _c(np.where(has_beard, top, 9.0))
    beard = np.maximum(_ellipse(x, y, taper + 0.03, 1.05), beard_top - y)
    _paint(image, _coverage(beard, pixels), hair * 0.9)

    # hair in front (a cap with a hairline) ----------------------------------------------------
    hairline = _c(p["hairline"]) + 0.35 * (x / a) ** 2
    fringe = _c(p["hairline"]) + 0.22
    line = np.where(_c(style == 1), fringe, hairline)
    cap = np.maximum(_ellipse(x, y, a + 0.07, 1.07), y - line)
    bald = np.maximum(cap, np.maximum(0.6 * a - np.abs(x), -0.72 - y))
    cap = np.where(_c(style == 3), bald, cap)
    _paint(image, _coverage(cap, pixels), hair)

    # hat --------------------------------------------------------------------------------------
    has_hat = u[:, _S_HAT] < cfg.hat_p
    crown = np.maximum(_ellipse(x, y, a + 0.1, 1.1), y + 0.48)
    brim = np.maximum(np.abs(x) - (a + 0.28), np.abs(y + 0.48) - 0.06)
    hat = np.where(_c(has_hat), np.minimum(crown, brim), 9.0)
    _paint(image, _coverage(hat, pixels), 0.1 + 0.8 * u[:, _S_HAT_COLOUR])

    # eyebrows, eyes ---------------------------------------------------------------------------
    ex, ey = _c(p["eye_spacing"]), _c(p["eye_height"])
    size_e = _c(p["eye_size"])
    expression = cfg.expression * k
    raise_ = _c(0.06 * expression * u[:, _S_BROW])
    by = ey - _c(p["brow_gap"]) - raise_
    bl, tilt = _c(p["brow_length"]), _c(p["brow_angle"])
    brow = _segment(ax, y, ex - bl, by - tilt * bl, ex + bl, by + tilt * bl)
    _paint(image, _coverage(brow - _c(p["brow_thickness"]), pixels), hair * 0.75)
    openness = _c(1.0 - 0.35 * expression * u[:, _S_EYE]) * 0.62
    sclera = _ellipse(ax - ex, y - ey, size_e, size_e * openness)
    sclera_alpha = _coverage(sclera, pixels)
    _paint(image, sclera_alpha, np.full((m, 3), 0.95))
    gaze = _c(0.35 * expression * (2.0 * u[:, _S_GAZE] - 1.0)) * size_e
    iris_d = np.sqrt((np.abs(fx - gaze) - ex) ** 2 + (y - ey) ** 2) - 0.6 * size_e
    _paint(image, _coverage(iris_d, pixels) * sclera_alpha, iris)

    # nose, mouth ------------------------------------------------------------------------------
    nose = _segment(fx, y, 0.0, _c(nose_top), 0.0, _c(nose_end)) - _c(p["nose_width"])
    _paint(image, 0.7 * _coverage(nose, pixels), skin * 0.72)
    smile = _c(0.08 * expression * (2.0 * u[:, _S_SMILE] - 1.0))
    width = _c(p["mouth_width"])
    centre = _c(mouth_y) + smile * (1.0 - (fx / width) ** 2)
    opening = _c(0.035 * expression * u[:, _S_OPEN])
    mouth = np.maximum(np.abs(y - centre) - _c(p["lip_thickness"]) - opening, ax - width)
    _paint(image, _coverage(mouth, pixels), lips)
    inside = np.maximum(np.abs(y - centre) - opening, ax - 0.8 * width)
    _paint(image, _coverage(inside, pixels), np.tile([0.18, 0.05, 0.05], (m, 1)))

    # glasses ----------------------------------------------------------------------------------
    has_glasses = _c(u[:, _S_GLASSES] < cfg.glasses_p)
    radius = np.maximum(1.8 * size_e, 0.16)
    ring = np.abs(np.sqrt((ax - ex) ** 2 + ((y - ey) / 0.85) ** 2) - radius) - 0.03
    bridge = np.maximum(ax - (ex - radius) - 0.02, np.abs(y - ey + 0.03) - 0.025)
    frames = np.where(has_glasses, np.minimum(ring, bridge), 9.0)
    dark = np.repeat(0.05 + 0.25 * u[:, _S_GLASSES_COLOUR, None], 3, axis=1)
    _paint(image, _coverage(frames, pixels), dark)

    # lighting, blur, noise --------------------------------------------------------------------
    la = 2.0 * np.pi * u[:, _S_LIGHT_ANGLE]
    light = 1.0 + _c(cfg.lighting * k * u[:, _S_LIGHT]) * (
        _c(np.cos(la)) * (xs - 0.5 * size) + _c(np.sin(la)) * (ys - 0.5 * size)
    ) / (0.5 * size)
    image *= light[:, None]
    sigma = cfg.blur_max * k * u[:, _S_BLUR]
    side = np.where(sigma > 1e-3, np.exp(-0.5 / np.maximum(sigma, 1e-3) ** 2), 0.0)
    w1 = (side / (1.0 + 2.0 * side)).astype(np.float32)[:, None, None, None]
    for axis in (2, 3):  # separable 3-tap Gaussian, edges replicated
        lo = np.concatenate([image.take([0], axis), image.take(range(size - 1), axis)], axis)
        hi = np.concatenate([image.take(range(1, size), axis), image.take([size - 1], axis)], axis)
        image = image * (1.0 - 2.0 * w1) + (lo + hi) * w1
    n_lo, n_hi = cfg.noise_std_range
    noise_sigma = (k * (n_lo + (n_hi - n_lo) * u[:, _S_NOISE])).astype(np.float32)
    pool = _noise_pool()
    count = size * size
    offsets = (u[:, _S_OFFSETS] * (pool.shape[0] - count)).astype(np.int64)
    noise = np.lib.stride_tricks.sliding_window_view(pool, count)[offsets]
    image += noise.reshape(m, 3, size, size) * noise_sigma[:, None, None, None]
    image *= 255.0
    image += 0.5
    np.clip(image, 0.0, 255.0, out=image)
    return image.astype(np.uint8)


def render_faces(
    identity: Any, sample: Any = 0, seed: int = 0, config: FaceConfig | None = None
) -> np.ndarray:
    """Draw the faces of ``(identity, sample)`` pairs.

    The image of ``(identity, sample, seed, config)`` is the same whatever else is drawn in
    the same call: identity parameters come from ``(seed, identity)`` alone, nuisances from
    ``(seed, identity, sample)``.

    Args:
        identity: Identity number(s), integers in ``[0, 2^38)``.
        sample: Image number(s) of each identity, integers in ``[0, 2^24)``; broadcast
            against ``identity``.
        seed: Seed of the identity family.
        config: Image size and nuisances (default ``FaceConfig()``).

    Returns:
        uint8 array ``(n, 3, S, S)``, ``n`` the broadcast size of ``identity`` and
        ``sample``.

    Raises:
        ValueError: Identities or samples that are not integers or are out of range.
    """
    cfg = config if config is not None else FaceConfig()
    ident, samp = _check_ids(identity, sample)
    size = cfg.image_size
    out = np.empty((ident.shape[0], 3, size, size), np.uint8)
    for lo in range(0, ident.shape[0], _CHUNK):
        hi = min(ident.shape[0], lo + _CHUNK)
        out[lo:hi] = _render(ident[lo:hi], samp[lo:hi], seed, cfg)
    return out


def split_identities(split: str) -> np.ndarray:
    """The identity numbers of a split (:data:`FACE_SPLITS`), in label order.

    Raises:
        ValueError: An unknown split.
    """
    first, count, _ = FACE_SPLITS[check_split(split, tuple(FACE_SPLITS))]
    return np.arange(first, first + count, dtype=np.int64)


def _split_arrays(split: str, n: int, seed: int, cfg: FaceConfig) -> dict[str, np.ndarray]:
    ids = split_identities(split)
    k = np.arange(n, dtype=np.int64)
    labels = k % len(ids)
    images = render_faces(ids[labels], k // len(ids), seed, cfg)
    return {"images": images, "labels": labels, "samples": k // len(ids)}


def faces_dataset(
    split: str = "train",
    size: int | None = None,
    seed: int = 0,
    config: FaceConfig | None = None,
    *,
    cache: bool | None = None,
) -> ArrayDataset:
    """A split of the faces as an :class:`~kdtutor.data.ArrayDataset` of identity labels.

    Labels index the split's own identities: ``classes[label]`` is the identity's name
    (``"id0042"``), and :func:`split_identities` gives their numbers. The three splits have
    disjoint identities (:data:`FACE_SPLITS`), so a network trained on ``"train"`` meets the
    ``"validation"`` and ``"test"`` people for the first time: score those by retrieval
    (same label = same person), not by classification. Image ``k`` is sample ``k // n`` of
    identity ``k % n`` (``n`` identities in the split), so any prefix is balanced. Every
    split is normalised with the mean and std of the first 2,000 train images.

    Args:
        split: ``"train"``, ``"validation"`` or ``"test"``.
        size: Number of images; defaults to identities x images per identity
            (20,000 / 1,000 / 2,000). Larger sizes draw more images per identity.
        seed: Seed of the identity family.
        config: Image size and nuisances (default ``FaceConfig()``).
        cache: Keep the arrays in an ``.npz`` under ``cache_dir()/faces``: True always,
            False never, None (default) for at least 1,000 images (the 2,000 train images
            the normalisation comes from included).

    Returns:
        The dataset, named ``"faces"``, of uint8 images ``(N, 3, S, S)`` and int64 labels
        ``(N,)`` in ``[0, number of the split's identities)``.

    Raises:
        ValueError: An unknown split or a size below 1.
    """
    check_split(split, tuple(FACE_SPLITS))
    cfg = config if config is not None else FaceConfig()
    _, count, per = FACE_SPLITS[split]
    n = count * per if size is None else check_count(size, "size")

    def load(which: str, m: int) -> dict[str, np.ndarray]:
        params = {"version": FACE_GENERATOR_VERSION, "split": which, "n": m, "seed": seed,
                  "config": cfg.key()}  # fmt: skip
        disk = m >= DISK_CACHE_MIN if cache is None else bool(cache)
        return cached_arrays("faces", params, lambda: _split_arrays(which, m, seed, cfg), disk)

    arrays = load(split, n)
    if split == "train" and n >= STATS_SAMPLES:
        stats_images = arrays["images"][:STATS_SAMPLES]
    else:  # the first 2,000 train images (kept on disk by default, as the shapes' are)
        stats_images = load("train", STATS_SAMPLES)["images"]
    mean, std = channel_stats(torch.from_numpy(stats_images))
    ids = split_identities(split)
    return ArrayDataset(
        torch.from_numpy(arrays["images"]),
        torch.from_numpy(arrays["labels"].astype(np.int64)),
        classes=[f"id{i:04d}" for i in ids],
        name="faces",
        split=split,
        mean=mean,
        std=std,
    )


def face_benchmark(n: int = 2_048, seed: int = 0, config: FaceConfig | None = None) -> float:
    """Faces per second that :func:`render_faces` draws on ONE core.

    Args:
        n: Number of faces (after a warm-up of one chunk).
        seed: Seed of the identities.
        config: Image size and nuisances.

    Returns:
        Images per second, torch limited to one thread.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        render_faces(np.arange(64), 0, seed, config)
        k = np.arange(n)
        t0 = time.perf_counter()
        render_faces(k % 1000, k // 1000, seed, config)
        return n / (time.perf_counter() - t0)
    finally:
        torch.set_num_threads(threads)
