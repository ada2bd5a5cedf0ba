"""Procedural action clips: 8 frames of 32 x 32 pixels, ten motions in five similar pairs.

What it models: action recognition, where the class is in how something moves, not in what
it looks like. One object from :mod:`kdtutor.data.shapes` (its class, colour, size and
orientation are nuisances) moves over a textured background, with up to two small drifting
distractors, a jittering camera (+-1 px per frame, everything moves together) and pixel
noise. A single frame says nothing of the label; a network must compare frames, which is
what separates a 3D network that sees all 8 frames from a cheaper 2D network that sees 4 of
them (the MARS / video-distillation setting of the design note).

The ten actions (:data:`ACTIONS`, label ``index % 10``, so every run of ten clips is
balanced) come in five pairs that share a motion and differ in its direction or temporal
pattern (:data:`ACTION_PAIRS`):

* 0 left / 1 right: constant horizontal velocity;
* 2 up / 3 down: constant vertical velocity;
* 4 rotate_cw / 5 rotate_ccw: constant angular velocity (clockwise on screen);
* 6 grow / 7 shrink: constant rate of change of the logarithm of the size;
* 8 bounce / 9 oscillate: along a random direction, out and back once over the clip (a
  triangle wave) or back and forth with a period of 3 frames (a period of 4 would alias to
  no motion at all for a student reading every other frame).

Each clip draws a *strength* ``s`` (:func:`clip_tracks`): the velocity, angular velocity and
growth rate are ``s`` times their maximum in the label's direction, with ``s`` uniform in
``[-overlap, 1]``, so near ``s = 0`` the two classes of a pair overlap and some clips are
genuinely ambiguous (a "left" clip with ``s < 0`` drifts slowly right): dark knowledge for a
teacher to pass on. Bounce and oscillate draw an amplitude ``s`` in ``[0, 1]`` times its
maximum: near 0 both are a still object. The object is always one of the shapes that show
their orientation (ellipse, rectangle, triangle / arrow, offset ring), so a rotation is
visible.

Clips are deterministic per ``(index, seed)`` (counter-based uniforms of ``(seed, index,
stream)``) and drawn for a whole batch of frames at once (numpy, signed distance functions,
anti-aliased edges). :func:`clips_dataset` makes the ``train`` (8,000), ``validation``
(1,000) and ``test`` (2,000) splits from disjoint index ranges.

>>> from kdtutor.data.clips import ACTIONS, clips_dataset
>>> data = clips_dataset("test", 20, cache=False)
>>> clip, label = data[3]
>>> tuple(clip.shape), ACTIONS[label]
((8, 3, 32, 32), 'down')
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from ._random import mix_seed
from ._random import normals as _normals
from ._random import uniforms as _uniforms
from .shapes import CLASSES, _noise_pool, _sdf_pair
from .tasks import TensorSplit, generated_split

__all__ = [
    "ACTIONS",
    "ACTION_PAIRS",
    "CLIP_GENERATOR_VERSION",
    "CLIP_SIZES",
    "OBJECT_CLASSES",
    "ClipConfig",
    "ClipsDataset",
    "clip_benchmark",
    "clip_tracks",
    "clips_dataset",
    "render_clips",
]

#: Bumped whenever the rendering changes, so stale disk caches are never reused.
CLIP_GENERATOR_VERSION = 1

#: Action names, in label order; actions ``2k`` and ``2k + 1`` form a pair.
ACTIONS: tuple[str, ...] = (
    "left",
    "right",
    "up",
    "down",
    "rotate_cw",
    "rotate_ccw",
    "grow",
    "shrink",
    "bounce",
    "oscillate",
)

#: The five pairs and what their two actions share.
ACTION_PAIRS: tuple[tuple[str, str, str], ...] = (
    ("left", "right", "horizontal velocity"),
    ("up", "down", "vertical velocity"),
    ("rotate_cw", "rotate_ccw", "angular velocity"),
    ("grow", "shrink", "rate of change of size"),
    ("bounce", "oscillate", "amplitude of a back-and-forth motion"),
)

#: The shapes classes the moving object is drawn from (all show their orientation).
OBJECT_CLASSES: tuple[str, ...] = ("ellipse", "rectangle", "triangle", "arrow", "offset_ring")

#: Default numbers of clips per split (the book's protocol).
CLIP_SIZES: dict[str, int] = {"train": 8_000, "validation": 1_000, "test": 2_000}

_CHUNK = 128  # clips drawn together (x 8 frames)
# shapes pair of each object class, and the range of its pair attribute
_OBJECTS = (
    (0, 1.5, 2.2),  # ellipse: aspect ratio
    (1, 1.5, 2.2),  # rectangle: aspect ratio
    (2, -1.0, 0.0),  # triangle: no stem
    (2, 0.6, 1.3),  # arrow: stem / head
    (4, 0.3, 0.55),  # offset ring: hole offset / radius
)


@dataclass(frozen=True)
class ClipConfig:
    """Motion ranges and nuisances of the clips. Every field has a documented default.

    Lengths and speeds in pixels are those of a 32 x 32 frame and scale with
    ``image_size``.

    Attributes:
        image_size: Side of the square frames in pixels.
        frames: Frames per clip.
        speed_max: Largest velocity of left/right/up/down, pixels per frame.
        rotation_max: Largest angular velocity of the rotations, degrees per frame.
        growth_max: Largest rate of grow/shrink, change of the log of the size per frame.
        amplitude_max: Largest extent of bounce and oscillate, pixels.
        period: Period of oscillate, frames.
        overlap: Fraction of each pair's strength range on the other side of zero: the
            strength is uniform in ``[-overlap, 1]`` (0: no ambiguous clips but the slowest).
        scale_range: Range of the object's bounding radius at the middle frame, as a
            fraction of ``image_size``.
        distractors: Most distractors per clip (small disks drifting in any direction).
        distractor_speed: Largest distractor speed, pixels per frame.
        jitter: Largest camera shift per frame and axis, pixels.
        texture_strength: Typical amplitude of the background texture.
        contrast_range: Range of the RGB distance between the object and the background.
        noise_std_range: Range of the per-clip standard deviation of the pixel noise.
    """

    image_size: int = 32
    frames: int = 8
    speed_max: float = 1.4
    rotation_max: float = 9.0
    growth_max: float = 0.07
    amplitude_max: float = 5.0
    period: int = 3
    overlap: float = 0.12
    scale_range: tuple[float, float] = (0.13, 0.19)
    distractors: int = 2
    distractor_speed: float = 1.0
    jitter: float = 1.0
    texture_strength: float = 0.12
    contrast_range: tuple[float, float] = (0.3, 0.75)
    noise_std_range: tuple[float, float] = (0.02, 0.06)

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, list):
                object.__setattr__(self, field.name, tuple(value))
        if self.image_size < 16:
            raise ValueError(f"image_size must be at least 16 pixels, got {self.image_size}.")
        if self.frames < 2:
            raise ValueError(f"frames must be at least 2, got {self.frames}.")
        if self.period < 2:
            raise ValueError(f"period must be at least 2 frames, got {self.period}.")
        for name in ("speed_max", "rotation_max", "growth_max", "amplitude_max",
                     "distractor_speed", "jitter", "texture_strength"):  # fmt: skip
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be non-negative, got {getattr(self, name)}.")
        if not 0 <= self.overlap < 1:
            raise ValueError(f"overlap must be in [0, 1), got {self.overlap}.")
        if not 0 <= self.distractors <= 4:
            raise ValueError(f"distractors must be in [0, 4], got {self.distractors}.")
        lo, hi = self.scale_range
        if not 0 < lo <= hi <= 0.3:
            raise ValueError(f"scale_range must satisfy 0 < lo <= hi <= 0.3, got {(lo, hi)}.")
        for name in ("contrast_range", "noise_std_range"):
            lo, hi = getattr(self, name)
            if not 0 <= lo <= hi:
                raise ValueError(f"{name} must satisfy 0 <= lo <= hi, got {(lo, hi)}.")
        half = 0.5 * (self.frames - 1)
        reach = (
            max(self.speed_max * half, 0.5 * self.amplitude_max)
            + self.scale_range[1] * 32.0 * math.exp(self.growth_max * half)
            + self.jitter
            + 1.0
        )
        if reach > 16.0:
            raise ValueError(
                "the fastest motion leaves the frame: speed_max * (frames - 1) / 2 (or "
                "amplitude_max / 2) + the largest radius (grown) + jitter + 1 must stay within "
                f"half the frame (16 px at 32 px), got {reach:.1f} px."
            )

    def key(self) -> str:
        """A stable string identifying these settings (used in cache keys)."""
        return json.dumps(dataclasses.asdict(self), sort_keys=True)


# per-clip uniform streams
(_S_STRENGTH, _S_KIND, _S_RADIUS, _S_ANGLE, _S_X, _S_Y, _S_DIRECTION, _S_PHASE, _S_ATTR,
 _S_AUX1, _S_AUX2, _S_CONTRAST, _S_TEX, _S_PERIOD, _S_STRIPE_ANGLE, _S_STRIPE_PHASE,
 _S_GRAD_ANGLE, _S_GRAD, _S_NOISE, _S_COUNT) = range(20)  # fmt: skip
_S_BG = slice(20, 23)
_S_NORMALS = slice(23, 35)  # 12 uniforms -> 12 normals: fg direction, texture, gradient
_S_DISTRACTORS = 35  # 4 x (x, y, direction, speed, radius, r, g, b)
_BASE_STREAMS = 35 + 4 * 8


def _streams(frames: int) -> int:
    return _BASE_STREAMS + 5 * frames  # per frame: jitter x, y and three noise offsets


def _check_index(index: Any) -> np.ndarray:
    idx = np.asarray(index).reshape(-1)
    if idx.size and (not np.issubdtype(idx.dtype, np.integer) or idx.min() < 0):
        raise ValueError("clip indices must be non-negative integers.")
    return idx.astype(np.int64)


def _tracks(index: np.ndarray, seed: int, cfg: ClipConfig) -> dict[str, np.ndarray]:
    """The geometry of every frame of the clips of ``index`` (and the uniforms drawn)."""
    m, f = index.shape[0], cfg.frames
    unit = cfg.image_size / 32.0
    u = _uniforms(mix_seed(seed, 0xC11B5), index, _streams(f))
    label = index % 10
    pair = label // 2
    sign = np.where(label % 2 == 0, 1.0, -1.0)  # the pair's first action: sign +1
    strength = -cfg.overlap + (1.0 + cfg.overlap) * u[:, _S_STRENGTH]
    strength = np.where(pair == 4, u[:, _S_STRENGTH], strength)
    t = np.arange(f, dtype=np.float64) - 0.5 * (f - 1)  # frame times about the middle

    # motion ---------------------------------------------------------------------------------
    velocity = np.zeros((m, 2))
    velocity[pair == 0, 0] = -1.0  # left (s > 0) moves to -x
    velocity[pair == 1, 1] = -1.0  # up (s > 0) moves to -y
    velocity *= (sign * strength * cfg.speed_max * unit)[:, None]
    omega = np.where(pair == 2, sign * strength * cfg.rotation_max, 0.0)  # cw: +angle
    growth = np.where(pair == 3, sign * strength * cfg.growth_max, 0.0)
    amplitude = np.where(pair == 4, strength * cfg.amplitude_max * unit, 0.0)
    direction = 2.0 * np.pi * u[:, _S_DIRECTION]
    along = np.stack([np.cos(direction), np.sin(direction)], axis=1)
    frame = np.arange(f, dtype=np.float64)
    bounce = 1.0 - np.abs(frame - 0.5 * (f - 1)) / (0.5 * (f - 1)) - 0.5  # centred triangle
    swing = 0.5 * np.sin(
        2.0 * np.pi * frame[None, :] / cfg.period + 2 * np.pi * u[:, _S_PHASE, None]
    )
    wave = np.where((label == 8)[:, None], bounce[None, :], swing)  # (m, f)
    displacement = (
        velocity[:, None, :] * t[None, :, None]
        + (amplitude[:, None] * wave)[..., None] * along[:, None, :]
    )

    lo, hi = cfg.scale_range
    radius_mid = cfg.image_size * (lo + (hi - lo) * u[:, _S_RADIUS])
    radius = radius_mid[:, None] * np.exp(growth[:, None] * t[None, :])
    angle = 360.0 * u[:, _S_ANGLE, None] + omega[:, None] * t[None, :]

    # where: the whole path, grown, stays inside the frame -------------------------------------
    reach = np.abs(displacement).max(axis=1) + radius.max(axis=1)[:, None]
    room = np.maximum(0.5 * cfg.image_size - reach - cfg.jitter * unit - 1.0, 0.0)
    mid = 0.5 * cfg.image_size + (2.0 * u[:, [_S_X, _S_Y]] - 1.0) * room
    jitter = cfg.jitter * unit * (2.0 * u[:, _BASE_STREAMS : _BASE_STREAMS + 2 * f] - 1.0)
    jitter = jitter.reshape(m, f, 2)
    centre = mid[:, None, :] + displacement + jitter

    kind = np.minimum((u[:, _S_KIND] * len(_OBJECTS)).astype(np.int64), len(_OBJECTS) - 1)
    return {
        "label": label,
        "strength": strength,
        "kind": kind,
        "centre": centre,
        "angle": angle,
        "radius": radius,
        "jitter": jitter,
        "direction": along,
        "uniforms": u,
    }


def clip_tracks(
    index: Any, seed: int = 0, config: ClipConfig | None = None
) -> dict[str, np.ndarray]:
    """The moving object's geometry in every frame of the clips of ``index``.

    Coordinates are continuous pixels (pixel ``(i, j)`` covers ``[j, j + 1] x [i, i + 1]``),
    ``y`` downwards, so a clockwise rotation on screen increases the angle.

    Args:
        index: Clip index (or indices), non-negative integers.
        seed: Seed of the clip family.
        config: Motion ranges and nuisances (default ``ClipConfig()``).

    Returns:
        A dict of numpy arrays for ``n`` clips of ``F`` frames, with
        ``label`` ``(n,)`` int64; ``strength`` ``(n,)`` (the signed pair attribute as a fraction of its maximum, in
        ``[-overlap, 1]``; ``[0, 1]`` for bounce/oscillate); ``object_class`` ``(n,)`` int64
        (a :data:`kdtutor.data.shapes.CLASSES` id); ``centre`` ``(n, F, 2)`` (x, y of the
        object's bounding circle, camera jitter included); ``angle`` ``(n, F)`` degrees;
        ``radius`` ``(n, F)`` pixels; ``jitter`` ``(n, F, 2)`` the camera's shift;
        ``direction`` ``(n, 2)`` the unit direction of bounce / oscillate.

    Raises:
        ValueError: Negative or non-integer indices.
    """
    cfg = config if config is not None else ClipConfig()
    tracks = _tracks(_check_index(index), seed, cfg)
    tracks.pop("uniforms")
    kind = tracks.pop("kind")
    tracks["object_class"] = np.asarray([CLASSES.index(OBJECT_CLASSES[k]) for k in kind], np.int64)
    return tracks


def _c(v: np.ndarray) -> np.ndarray:
    return np.asarray(v, np.float32)[:, None, None]


def _render(index: np.ndarray, seed: int, cfg: ClipConfig) -> np.ndarray:
    """uint8 clips ``(m, F, 3, S, S)`` of ``index``."""
    tr = _tracks(index, seed, cfg)
    u = tr["uniforms"]
    m, f, size = index.shape[0], cfg.frames, cfg.image_size
    unit = size / 32.0
    frames = m * f
    grid = np.arange(size, dtype=np.float32) + 0.5
    xs, ys = grid[None, None, :], grid[None, :, None]
    jitter = tr["jitter"].reshape(frames, 2)
    per_frame = np.repeat(np.arange(m), f)  # clip of each frame

    # background: colour, gradient and stripes fixed in the world, seen by a jittering camera --
    n = np.stack(_normals(u[:, _S_NORMALS][:, 0::2], u[:, _S_NORMALS][:, 1::2]), axis=-1)
    n = n.reshape(m, 12)
    bg = 0.1 + 0.8 * u[:, _S_BG]
    tex = cfg.texture_strength * (0.5 + u[:, _S_TEX])
    pat_col = tex[:, None] * n[:, 3:6] / math.sqrt(3.0)
    grad_col = (tex * u[:, _S_GRAD])[:, None] * n[:, 6:9] / math.sqrt(3.0)
    period = unit * (4.0 + 8.0 * u[:, _S_PERIOD])
    sa = 2.0 * np.pi * u[:, _S_STRIPE_ANGLE]
    ga = 2.0 * np.pi * u[:, _S_GRAD_ANGLE]
    wx = xs - _c(jitter[:, 0])  # world coordinates of each pixel, (frames, 1, S)
    wy = ys - _c(jitter[:, 1])
    pf = per_frame
    stripes = np.sin(
        _c((2 * np.pi * np.cos(sa) / period)[pf]) * wx
        + _c((2 * np.pi * np.sin(sa) / period)[pf]) * wy
        + _c(2 * np.pi * u[pf, _S_STRIPE_PHASE])
    )
    gradient = (_c(np.cos(ga)[pf]) * (wx - 0.5 * size) + _c(np.sin(ga)[pf]) * (wy - 0.5 * size)) / (
        0.5 * size
    )
    image = (
        bg[pf].astype(np.float32)[:, :, None, None]
        + pat_col[pf].astype(np.float32)[:, :, None, None] * stripes[:, None]
        + grad_col[pf].astype(np.float32)[:, :, None, None] * gradient[:, None]
    )

    # distractors: small disks drifting at constant velocity ---------------------------------
    count = np.minimum((u[:, _S_COUNT] * (cfg.distractors + 1)).astype(np.int64), cfg.distractors)
    t = np.arange(f, dtype=np.float64) - 0.5 * (f - 1)
    for j in range(cfg.distractors):
        d = u[:, _S_DISTRACTORS + 8 * j : _S_DISTRACTORS + 8 * (j + 1)]
        heading = 2 * np.pi * d[:, 2]
        speed = cfg.distractor_speed * unit * d[:, 3]
        px = size * d[:, 0, None] + (speed * np.cos(heading))[:, None] * t  # (m, f)
        py = size * d[:, 1, None] + (speed * np.sin(heading))[:, None] * t
        r = unit * (1.5 + 1.0 * d[:, 4])
        dist = np.sqrt(
            (xs - _c(px.reshape(-1) + jitter[:, 0])) ** 2
            + (ys - _c(py.reshape(-1) + jitter[:, 1])) ** 2
        ) - _c(r[pf])
        alpha = np.clip(0.5 - dist, 0.0, 1.0) * _c((j < count)[pf])
        colour = (0.1 + 0.8 * d[pf, 5:8]).astype(np.float32)[:, :, None, None]
        image += alpha[:, None] * (colour - image)

    # the object -------------------------------------------------------------------------------
    direction = n[:, 0:3] / np.linalg.norm(n[:, 0:3], axis=1, keepdims=True)
    c_lo, c_hi = cfg.contrast_range
    contrast = (c_lo + (c_hi - c_lo) * u[:, _S_CONTRAST])[:, None]
    fg = bg + contrast * direction
    flip = (fg < 0.0) | (fg > 1.0)
    fg = np.where(flip, bg - contrast * direction, fg).clip(0.0, 1.0)
    kind = tr["kind"][pf]
    centre = tr["centre"].reshape(frames, 2)
    angle = np.deg2rad(tr["angle"].reshape(frames))
    radius = tr["radius"].reshape(frames)
    alpha = np.zeros((frames, size, size), np.float32)
    for k, (pair, a_lo, a_hi) in enumerate(_OBJECTS):
        sel = np.flatnonzero(kind == k)
        if sel.size == 0:
            continue
        clip = pf[sel]
        c, s = _c(np.cos(angle[sel])), _c(np.sin(angle[sel]))
        dx = xs - _c(centre[sel, 0])
        dy = ys - _c(centre[sel, 1])
        px = c * dx + s * dy
        py = c * dy - s * dx
        attr = a_lo + (a_hi - a_lo) * u[clip, _S_ATTR]
        d = _sdf_pair(pair, px, py, radius[sel], attr, u[clip, _S_AUX1], u[clip, _S_AUX2])
        a = np.clip(0.5 - d, 0.0, 1.0)
        alpha[sel] = a * a * (3.0 - 2.0 * a)
    image += alpha[:, None] * (fg[pf].astype(np.float32)[:, :, None, None] - image)

    # noise: a fresh window of the pool per frame ----------------------------------------------
    n_lo, n_hi = cfg.noise_std_range
    sigma = (n_lo + (n_hi - n_lo) * u[:, _S_NOISE])[pf].astype(np.float32)
    pool = _noise_pool()
    pixels = size * size
    offsets = u[:, _BASE_STREAMS + 2 * f : _BASE_STREAMS + 5 * f].reshape(frames, 3)
    offsets = (offsets * (pool.shape[0] - pixels)).astype(np.int64)
    noise = np.lib.stride_tricks.sliding_window_view(pool, pixels)[offsets]
    image += noise.reshape(frames, 3, size, size) * sigma[:, None, None, None]
    image *= 255.0
    image += 0.5
    np.clip(image, 0.0, 255.0, out=image)
    return image.astype(np.uint8).reshape(m, f, 3, size, size)


def render_clips(
    index: Any, seed: int = 0, config: ClipConfig | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Draw the clips of ``index``.

    Clip ``i`` depends on ``(seed, i, config)`` alone, whatever else is drawn in the call.

    Args:
        index: Clip index (or indices), non-negative integers; the label is ``index % 10``.
        seed: Seed of the clip family.
        config: Motion ranges and nuisances (default ``ClipConfig()``).

    Returns:
        ``(clips, labels)``: uint8 ``(n, F, 3, S, S)`` and int64 ``(n,)``.

    Raises:
        ValueError: Negative or non-integer indices.
    """
    cfg = config if config is not None else ClipConfig()
    idx = _check_index(index)
    out = np.empty((idx.shape[0], cfg.frames, 3, cfg.image_size, cfg.image_size), np.uint8)
    for lo in range(0, idx.shape[0], _CHUNK):
        hi = min(idx.shape[0], lo + _CHUNK)
        out[lo:hi] = _render(idx[lo:hi], seed, cfg)
    return out, idx % 10


class ClipsDataset(TensorSplit):
    """Action clips: ``(clip, label)`` with the clip float32 ``(F, 3, S, S)`` in [0, 1].

    The stored tensors are uint8 clips (:attr:`clips`) and int64 labels (:attr:`targets`);
    ``task`` is ``"classification"``.
    """

    task: ClassVar[str] = "classification"
    input_key: ClassVar[str] = "clips"
    classes: ClassVar[list[str]] = list(ACTIONS)
    num_classes: ClassVar[int] = len(ACTIONS)

    @property
    def clips(self) -> Tensor:
        """uint8 ``(N, F, 3, S, S)``."""
        return self.tensor("clips")

    @property
    def targets(self) -> Tensor:
        """int64 ``(N,)``: the action of each clip."""
        return self.tensor("targets")

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        """``(clip, label)``: float32 ``(F, 3, S, S)`` in [0, 1] and an int."""
        i = self._check(index)
        return self.clips[i].to(torch.float32).div_(255.0), int(self.targets[i])

    def class_counts(self) -> list[int]:
        """Number of clips of each action, in label order."""
        return torch.bincount(self.targets, minlength=len(ACTIONS)).tolist()


def clips_dataset(
    split: str = "train",
    size: int | None = None,
    seed: int = 0,
    config: ClipConfig | None = None,
    *,
    cache: bool | None = None,
) -> ClipsDataset:
    """A split of the action clips.

    Clip ``k`` of a split is clip ``SPLIT_STARTS[split] + k``
    (:data:`kdtutor.data.tasks.SPLIT_STARTS`), so the splits never share a clip, a smaller split is a prefix of a larger
    one, and sizes that are multiples of 10 are exactly balanced.

    Args:
        split: ``"train"``, ``"validation"`` or ``"test"``.
        size: Number of clips; defaults to :data:`CLIP_SIZES` (8,000 / 1,000 / 2,000).
        seed: Seed of the clip family.
        config: Motion ranges and nuisances (default ``ClipConfig()``).
        cache: Keep the arrays in an ``.npz`` under ``cache_dir()/clips``: True always,
            False never, None (default) for at least 1,000 clips (24.6 kB each).

    Returns:
        A :class:`ClipsDataset` named ``"clips"``.

    Raises:
        ValueError: An unknown split or a size below 1.
    """
    cfg = config if config is not None else ClipConfig()

    def render(indices: np.ndarray) -> dict[str, np.ndarray]:
        clips, labels = render_clips(indices, seed, cfg)
        return {"clips": clips, "targets": labels}

    arrays = generated_split(
        "clips", split, size, CLIP_SIZES, seed=seed, version=CLIP_GENERATOR_VERSION,
        config_key=cfg.key(), render=render, cache=cache,
    )  # fmt: skip
    meta = {"version": CLIP_GENERATOR_VERSION, "seed": seed, "config": cfg.key()}
    return ClipsDataset(
        {
            "clips": torch.from_numpy(arrays["clips"]),
            "targets": torch.from_numpy(arrays["targets"].astype(np.int64)),
        },
        name="clips",
        split=split,
        meta=meta,
    )


def clip_benchmark(n: int = 512, seed: int = 0, config: ClipConfig | None = None) -> float:
    """Clips per second that :func:`render_clips` draws on ONE core.

    Args:
        n: Number of clips (after a warm-up of one chunk).
        seed: Seed of the clips.
        config: Motion ranges and nuisances.

    Returns:
        Clips per second (multiply by the frames for images per second), torch limited to
        one thread.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        render_clips(np.arange(_CHUNK), seed, config)
        t0 = time.perf_counter()
        render_clips(np.arange(_CHUNK, _CHUNK + n), seed, config)
        return n / (time.perf_counter() - t0)
    finally:
        torch.set_num_threads(threads)
