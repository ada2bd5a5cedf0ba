"""kdtutor.data.clips: ten actions in five similar pairs, 8 frames of 32 x 32 pixels.

The actions are checked from the pixels: on clips drawn without texture, noise, distractors
or camera jitter, the object is segmented from the flat background in every frame, and its
measured centroid, area and orientation classify every clip whose motion is outside the
pairs' ambiguous band by a hand-written rule, with no knowledge of the generator.
"""

from __future__ import annotations

import matplotlib
import numpy as np
import pytest
import torch
from torch.utils.data import default_collate

from kdtutor.analysis.applications import clip_grid
from kdtutor.data.clips import (
    ACTION_PAIRS,
    ACTIONS,
    CLIP_SIZES,
    OBJECT_CLASSES,
    ClipConfig,
    ClipsDataset,
    clip_tracks,
    clips_dataset,
    render_clips,
)
from kdtutor.data.shapes import CLASSES
from kdtutor.data.tasks import SPLIT_STARTS

matplotlib.use("Agg")
torch.set_num_threads(1)

CLEAN = ClipConfig(
    texture_strength=0.0,
    noise_std_range=(0.0, 0.0),
    distractors=0,
    jitter=0.0,
    contrast_range=(0.6, 0.75),
)


# -- measuring the object from the pixels ----------------------------------------------------
def object_alpha(clip):
    """Coverage of the object in each frame ``(F, S, S)`` in [0, 1], from the colour distance
    to the flat background (the median of the border pixels)."""
    frames = clip.astype(np.float64)  # (F, 3, S, S)
    border = np.concatenate(
        [frames[:, :, 0], frames[:, :, -1], frames[:, :, :, 0], frames[:, :, :, -1]], axis=2
    )
    bg = np.median(border, axis=2)[:, :, None, None]
    distance = np.sqrt(((frames - bg) ** 2).sum(axis=1))
    return np.clip(distance / distance.max(), 0.0, 1.0)


def centroids(alpha):
    size = alpha.shape[-1]
    grid = np.arange(size) + 0.5
    mass = alpha.sum(axis=(1, 2))
    x = (alpha.sum(axis=1) * grid).sum(axis=1) / mass
    y = (alpha.sum(axis=2) * grid).sum(axis=1) / mass
    return np.stack([x, y], axis=1), mass


def bilinear(picture, x, y):
    """``picture`` sampled at continuous pixel coordinates (0 outside)."""
    size = picture.shape[-1]
    padded = np.pad(picture, 1)
    fx, fy = x - 0.5 + 1, y - 0.5 + 1  # pixel centres are at i + 0.5; one pixel of padding
    x0 = np.clip(np.floor(fx).astype(int), 0, size)
    y0 = np.clip(np.floor(fy).astype(int), 0, size)
    wx, wy = np.clip(fx - x0, 0, 1), np.clip(fy - y0, 0, 1)
    return (
        padded[y0, x0] * (1 - wx) * (1 - wy)
        + padded[y0, x0 + 1] * wx * (1 - wy)
        + padded[y0 + 1, x0] * (1 - wx) * wy
        + padded[y0 + 1, x0 + 1] * wx * wy
    )


def rotation(alpha, centre):
    """The object's rotation over the clip (degrees, clockwise on screen positive): frame 0's
    object, rotated about its centroid, is matched to each later frame's, searching within
    12 degrees of the previous frame's angle (so no shape's symmetry can alias the motion)."""
    ys, xs = np.nonzero(alpha[0] > 0.05)
    weight = alpha[0][ys, xs]
    px, py = xs + 0.5 - centre[0, 0], ys + 0.5 - centre[0, 1]
    angle = 0.0
    for t in range(1, len(alpha)):
        candidates = angle + np.arange(-12.0, 12.01, 0.5)
        a = np.deg2rad(candidates)[:, None]
        qx = np.cos(a) * px - np.sin(a) * py + centre[t, 0]
        qy = np.sin(a) * px + np.cos(a) * py + centre[t, 1]
        scores = (weight * bilinear(alpha[t], qx, qy)).sum(axis=1)
        angle = float(candidates[np.argmax(scores)])
    return angle


def classify(clip):
    """The action a clip shows, from its pixels alone."""
    alpha = object_alpha(clip)
    centre, area = centroids(alpha)
    if abs(np.log(area[-1] / area[0])) > 0.2:
        return "grow" if area[-1] > area[0] else "shrink"
    angle = rotation(alpha, centre)
    if abs(angle) > 15:
        return "rotate_cw" if angle > 0 else "rotate_ccw"
    spread = np.abs(centre - centre.mean(axis=0)).max()
    period3 = np.abs(centre[3:] - centre[:-3]).max()
    if spread > 0.4 and period3 < 0.25 * spread:
        return "oscillate"
    reach = np.linalg.norm(centre - centre[0], axis=1).max()
    net = np.linalg.norm(centre[-1] - centre[0])
    if reach > 1.0 and net < 0.3 * reach:
        return "bounce"
    dx, dy = centre[-1] - centre[0]
    if abs(dx) > abs(dy):
        return "right" if dx > 0 else "left"
    return "down" if dy > 0 else "up"


# -- tests -----------------------------------------------------------------------------------
def test_every_action_is_recognisable_from_the_pixels_outside_the_ambiguous_band():
    index = np.arange(400)
    clips, labels = render_clips(index, seed=2, config=CLEAN)
    strength = clip_tracks(index, seed=2, config=CLEAN)["strength"]
    clear = np.abs(strength) > 0.3
    predicted = np.array([classify(c) for c in clips[clear]])
    truth = np.array(ACTIONS)[labels[clear]]
    confusions = {(t, p) for t, p in zip(truth, predicted, strict=True) if t != p}
    assert (predicted == truth).mean() >= 0.99, sorted(confusions)
    assert set(truth) == set(ACTIONS) and clear.sum() > 250


def test_the_measured_motion_is_the_tracks_motion():
    """The centroid moves exactly as the track's centre for the translations, bounce and
    oscillate; the area follows the radius squared for grow and shrink."""
    index = np.array([0, 1, 2, 3, 8, 9, 10, 11, 18, 19, 6, 7, 16, 17])
    clips, labels = render_clips(index, seed=5, config=CLEAN)
    tracks = clip_tracks(index, seed=5, config=CLEAN)
    for clip, label, centre, radius in zip(
        clips, labels, tracks["centre"], tracks["radius"], strict=True
    ):
        measured, area = centroids(object_alpha(clip))
        if ACTIONS[label] in ("grow", "shrink"):
            ratio = np.log(area / area[0])
            expected = 2 * np.log(radius / radius[0])
            np.testing.assert_allclose(ratio, expected, atol=0.08)
        else:
            np.testing.assert_allclose(measured - measured[0], centre - centre[0], atol=0.12)


def test_tracks_follow_the_label_with_an_ambiguous_band_inside_each_pair():
    cfg = ClipConfig()
    index = np.arange(3000)
    t = clip_tracks(index, seed=1)
    label, s, centre = t["label"], t["strength"], t["centre"] - t["jitter"]
    assert np.array_equal(label, index % 10)
    moves = centre[:, -1] - centre[:, 0]
    half = (cfg.frames - 1) / 2
    sign = np.where(label % 2 == 0, 1.0, -1.0)
    horizontal, vertical = label // 2 == 0, label // 2 == 1
    np.testing.assert_allclose(
        moves[horizontal, 0], -sign[horizontal] * s[horizontal] * cfg.speed_max * 2 * half
    )
    np.testing.assert_allclose(
        moves[vertical, 1], -sign[vertical] * s[vertical] * cfg.speed_max * 2 * half
    )
    turning = label // 2 == 2
    turned = t["angle"][turning, -1] - t["angle"][turning, 0]
    np.testing.assert_allclose(turned, sign[turning] * s[turning] * cfg.rotation_max * 2 * half)
    growing = label // 2 == 3
    grown = np.log(t["radius"][growing, -1] / t["radius"][growing, 0])
    np.testing.assert_allclose(grown, sign[growing] * s[growing] * cfg.growth_max * 2 * half)
    static = ~(turning | growing)
    assert (np.ptp(t["angle"][static], axis=1) == 0).all()
    assert (np.ptp(t["radius"][~growing], axis=1) == 0).all()
    # inside a pair the strengths overlap near zero: a few clips move the other way
    paired = label // 2 < 4
    assert s[paired].min() >= -cfg.overlap and s.max() <= 1
    wrong_way = (s[paired] < 0).mean()
    assert abs(wrong_way - cfg.overlap / (1 + cfg.overlap)) < 0.03
    waves = label // 2 == 4
    assert (s[waves] >= 0).all()
    bounce = waves & (label == 8)
    assert np.allclose(centre[bounce, 0], centre[bounce, -1])
    oscillate = waves & (label == 9)
    assert np.allclose(centre[oscillate, 3:], centre[oscillate, :-3])
    # the object stays inside the frame and the camera jitters by at most 1 px
    extent = np.abs(t["centre"] - 16).max(axis=2) + t["radius"]
    assert extent.max() <= 16 and np.abs(t["jitter"]).max() <= 1
    assert set(t["object_class"].tolist()) == {CLASSES.index(c) for c in OBJECT_CLASSES}


def test_a_clip_depends_on_its_index_and_seed_alone():
    clips, labels = render_clips([3, 17, 3], seed=4)
    assert clips.dtype == np.uint8 and clips.shape == (3, 8, 3, 32, 32)
    assert labels.tolist() == [3, 7, 3] and labels.dtype == np.int64
    assert np.array_equal(clips[0], clips[2])
    assert np.array_equal(render_clips([17], seed=4)[0][0], clips[1])
    assert not np.array_equal(render_clips([3], seed=5)[0][0], clips[0])
    assert not np.array_equal(clips[0, 0], clips[0, 1]), "frames differ (noise, motion)"


def test_the_dataset_splits_are_disjoint_balanced_prefixes():
    data = clips_dataset("test", 30, cache=False)
    assert isinstance(data, ClipsDataset) and len(data) == 30
    expected, labels = render_clips(np.arange(30) + SPLIT_STARTS["test"])
    assert np.array_equal(data.clips.numpy(), expected)
    assert data.targets.tolist() == labels.tolist() and data.class_counts() == [3] * 10
    clip, label = data[4]
    assert clip.dtype == torch.float32 and clip.shape == (8, 3, 32, 32)
    assert 0 <= clip.min() and clip.max() <= 1 and label == 4
    x, y = default_collate([data[i] for i in range(5)])
    assert x.shape == (5, 8, 3, 32, 32) and y.tolist() == [0, 1, 2, 3, 4]
    train = clips_dataset("train", 20, cache=False)
    assert not torch.equal(train.clips[:20], data.clips[:20])
    assert torch.equal(train.subset(10).clips, clips_dataset("train", 10, cache=False).clips)
    assert train.subset(10).fingerprint() == clips_dataset("train", 10, cache=False).fingerprint()
    assert (
        data.task == "classification" and data.num_classes == 10 and data.classes == list(ACTIONS)
    )
    assert CLIP_SIZES == {"train": 8_000, "validation": 1_000, "test": 2_000}
    assert [a for pair in ACTION_PAIRS for a in pair[:2]] == list(ACTIONS)
    mean, std = data.channel_stats()
    assert len(mean) == 3 and min(std) > 0


def test_bad_arguments_are_refused_with_a_clear_message():
    with pytest.raises(ValueError, match="'train', 'validation', 'test'"):
        clips_dataset("val")
    with pytest.raises(ValueError, match="size must be an integer of at least 1"):
        clips_dataset("test", -3)
    with pytest.raises(ValueError, match="non-negative integers"):
        render_clips([-1])
    with pytest.raises(ValueError, match="leaves the frame"):
        ClipConfig(speed_max=4.0)
    with pytest.raises(ValueError, match="overlap"):
        ClipConfig(overlap=1.0)
    with pytest.raises(ValueError, match="frames must be at least 2"):
        ClipConfig(frames=1)


def test_the_sample_grid_shows_every_frame_and_the_track(tmp_path):
    fig = clip_grid([0, 9])
    axes = np.asarray(fig.axes).reshape(2, 8)
    assert [ax.get_title() for ax in axes[0]] == [f"frame {t}" for t in range(8)]
    assert (
        axes[0, 0].get_ylabel() == "left\ny (px)" and axes[1, 0].get_ylabel() == "oscillate\ny (px)"
    )
    assert all(ax.get_xlabel() == "x (px)" for ax in axes[-1])
    clips, _ = render_clips([9])
    assert np.allclose(np.asarray(axes[1, 3].images[0].get_array()),
                       clips[0, 3].transpose(1, 2, 0) / 255.0)  # fmt: skip
    track = axes[1, -1].lines[0]
    np.testing.assert_allclose(track.get_xdata(), clip_tracks([9])["centre"][0, :, 0])
    path = tmp_path / "clips.png"
    fig.savefig(path, dpi=40)
    assert path.stat().st_size > 5_000
