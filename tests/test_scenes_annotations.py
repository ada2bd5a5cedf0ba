"""kdtutor.data.scenes' annotations (depth, instance masks, keypoints) and their drawing.

Each property is checked against an independent computation: the shapes are re-rasterised
here from their geometry (convex polygons through their vertices, a disk by its distance),
composed by depth (nearest wins), and compared with what the generator drew in its own order.
The original scene renderer is frozen below, so the detection and segmentation data of a
given ``(index, seed)`` can never change unnoticed.
"""

from __future__ import annotations

import matplotlib
import numpy as np
import pytest
import torch
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle

from kdtutor.analysis.scenes import PANELS, draw_scene, scene_grid
from kdtutor.data._random import mix_seed
from kdtutor.data.scenes import (
    KEYPOINT_NAMES,
    NUM_KEYPOINTS,
    SCENE_CLASSES,
    TASKS,
    ScenesDataset,
    ground_depth,
    render_scene,
    scene_annotations,
)

matplotlib.use("Agg")

CASES = [(0, 64, 3), (1, 64, 3), (7, 32, 4), (3, 48, 6)]  # (seed, size, max_objects)


def legacy_render_scene(index, seed=0, size=64, max_objects=3):
    """The scenes as they were before depth, instances and keypoints (frozen copy)."""
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
        else:
            inside = (yy <= cy + r) & (np.abs(xx - cx) <= (yy - (cy - r)) / 2)
        image[:, inside] = rng.uniform(0.5, 1.0, (3, 1))
        mask[inside] = cls
        owner[inside] = k
        labels.append(cls)
    boxes, kept = [], []
    for k, cls in enumerate(labels):
        ys, xs = np.nonzero(owner == k)
        if len(xs) >= 4:
            boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
            kept.append(cls)
    return (
        np.clip(image, 0.0, 1.0),
        mask,
        np.asarray(boxes, np.float32).reshape(-1, 4),
        np.asarray(kept, np.int64),
    )


# -- an independent model of a scene ------------------------------------------------------------
def vertices(cls, cx, cy, r):
    """The shape's outline points, clockwise on screen (y down) from the top."""
    if cls == 1:
        return [(cx - r, cy - r), (cx + r, cy - r), (cx + r, cy + r), (cx - r, cy + r)]
    if cls == 2:
        return [(cx, cy - r), (cx + r, cy), (cx, cy + r), (cx - r, cy)]
    return [(cx, cy - r), (cx + r, cy + r), (cx - r, cy + r)]


def coverage(cls, cx, cy, r, size):
    """Signed margin of each pixel centre inside the shape (>= 0 inside), in pixels."""
    y, x = np.meshgrid(np.arange(size) + 0.5, np.arange(size) + 0.5, indexing="ij")
    if cls == 2:
        return r - np.hypot(x - cx, y - cy)
    margin = np.full((size, size), np.inf)
    pts = vertices(cls, cx, cy, r)
    for (x0, y0), (x1, y1) in zip(pts, pts[1:] + pts[:1], strict=True):
        ex, ey = x1 - x0, y1 - y0  # clockwise on screen: inside is to the right of each edge
        margin = np.minimum(margin, (ex * (y - y0) - ey * (x - x0)) / np.hypot(ex, ey))
    return margin


def model_of(scene, size):
    """Silhouettes from the geometry, and who owns each pixel when the nearest shape wins.

    Returns ``(silhouettes (m, H, W), owner (H, W), clear (H, W))``; ``clear`` is False at the
    few pixel centres within 1e-4 px of an outline, where rounding may decide either way.
    """
    margins = np.stack(
        [
            coverage(int(c), *g, size)
            for c, g in zip(scene["object_labels"], scene["object_geometry"], strict=True)
        ]
    ).reshape(-1, size, size)
    silhouettes = margins >= 0
    clear = (np.abs(margins) > 1e-4).all(axis=0)
    depths = np.where(silhouettes, scene["object_depths"][:, None, None], np.inf)
    owner = np.where(silhouettes.any(axis=0), depths.argmin(axis=0), -1)
    return silhouettes, owner, clear


def scenes(count=60):
    for seed, size, max_objects in CASES:
        for index in range(count):
            yield size, scene_annotations(index, seed, size, max_objects)


# -- unchanged detection and segmentation -------------------------------------------------------
@pytest.mark.parametrize(("seed", "size", "max_objects"), CASES)
def test_detection_and_segmentation_data_are_those_of_the_original_scenes(seed, size, max_objects):
    detection = ScenesDataset(80, seed, size, max_objects, task="detection")
    segmentation = ScenesDataset(80, seed, size, max_objects, task="segmentation")
    for index in range(80):
        image, mask, boxes, labels = legacy_render_scene(index, seed, size, max_objects)
        new = render_scene(index, seed, size, max_objects)
        for old, now in zip((image, mask, boxes, labels), new, strict=True):
            assert now.dtype == old.dtype and np.array_equal(now, old)
        full = scene_annotations(index, seed, size, max_objects)
        keys = ("image", "mask", "boxes", "labels")
        for key, old in zip(keys, (image, mask, boxes, labels), strict=True):
            assert np.array_equal(full[key], old), key
        x, target = detection[index]
        assert torch.equal(x, torch.from_numpy(image)) and sorted(target) == ["boxes", "labels"]
        assert torch.equal(target["boxes"], torch.from_numpy(boxes))
        assert torch.equal(target["labels"], torch.from_numpy(labels))
        assert torch.equal(segmentation[index][1], torch.from_numpy(mask))


# -- determinism --------------------------------------------------------------------------------
def test_annotations_are_a_function_of_index_and_seed_alone():
    first = [scene_annotations(i, seed=3) for i in (5, 0, 9)]
    scene_annotations(123, seed=8)  # anything drawn in between changes nothing
    again = [ScenesDataset(10, seed=3, task="pose").annotations(i) for i in (5, 0, 9)]
    for a, b in zip(first, again, strict=True):
        assert a.keys() == b.keys()
        for key in a:
            assert a[key].dtype == b[key].dtype and np.array_equal(a[key], b[key]), key
    assert not np.array_equal(scene_annotations(5, seed=4)["depth"], first[0]["depth"])
    assert not np.array_equal(first[0]["depth"], first[1]["depth"])


# -- depth and occlusion ------------------------------------------------------------------------
def test_each_pixel_belongs_to_the_nearest_shape_that_covers_it():
    """The painter's order by depth, composed here, gives the mask the generator drew in its
    own order: at a pixel of shape k no nearer shape covers it. The depth map is that shape's
    depth, or the ground's where no shape covers the pixel."""
    overlaps = 0
    for size, s in scenes():
        silhouettes, owner, clear = model_of(s, size)
        assert clear.mean() > 0.99
        expected = np.where(owner >= 0, s["object_labels"][np.maximum(owner, 0)], 0)
        assert np.array_equal(s["mask"][clear], expected[clear])
        rows = 6.0 / ((np.arange(size) + 0.5) / size + 0.5)  # the ground plane, written out
        want = np.where(owner >= 0, s["object_depths"][np.maximum(owner, 0)], rows[:, None])
        np.testing.assert_allclose(s["depth"][clear], want[clear], rtol=1e-6)
        for i, k in enumerate(np.flatnonzero(s["object_kept"])):
            instance = s["masks"][i] & clear
            assert (owner[instance] == k).all()
            nearer = s["object_depths"] < s["object_depths"][k]
            assert not (silhouettes[nearer][:, instance]).any()
        overlaps += int((silhouettes.sum(axis=0) > 1).any())
    assert overlaps > 50, "too few scenes with overlapping shapes to test occlusion"


def test_shapes_stand_on_the_ground_unless_in_front_of_a_shape_they_overlap():
    pushed = 0
    for size, s in scenes():
        silhouettes, _, _ = model_of(s, size)
        labels, geometry, depths = s["object_labels"], s["object_geometry"], s["object_depths"]
        for k in range(len(labels)):
            _, cy, r = geometry[k]
            footing = ground_depth(cy + r, size)
            assert depths[k] <= footing * (1 + 1e-6)
            covers = [j for j in range(k) if (silhouettes[j] & silhouettes[k]).any()]
            for j in covers:
                assert depths[k] < depths[j], "a shape drawn over another is nearer"
            if not covers:
                assert depths[k] == pytest.approx(footing, rel=1e-6)
            pushed += int(depths[k] < footing * (1 - 1e-6))
        # the ground never hides a shape: no shape pixel is farther than the ground there
        rows = np.broadcast_to(ground_depth(np.arange(size) + 0.5, size)[:, None], s["depth"].shape)
        assert (s["depth"][s["mask"] > 0] <= rows[s["mask"] > 0] * (1 + 1e-6)).all()
    assert pushed > 0
    assert ground_depth(0, 64) == pytest.approx(12.0) and ground_depth(64, 64) == pytest.approx(4)


# -- instance masks and boxes -------------------------------------------------------------------
def test_instance_masks_partition_the_foreground_of_the_semantic_mask():
    for size, s in scenes():
        masks, labels = s["masks"], s["labels"]
        assert masks.shape == (len(labels), size, size) and masks.dtype == bool
        assert (masks.sum(axis=0) <= 1).all(), "instances do not overlap"
        union = masks.any(axis=0)
        foreground = s["mask"] > 0
        assert not (union & ~foreground).any()
        dropped = len(s["object_labels"]) - len(labels)  # shapes with under 4 visible pixels
        assert (foreground & ~union).sum() <= 3 * dropped
        for m, label in zip(masks, labels, strict=True):
            assert m.sum() >= 4 and (s["mask"][m] == label).all()
        assert np.array_equal(s["object_labels"][s["object_kept"]], labels)


def test_boxes_are_the_extents_of_the_instance_masks():
    for _, s in scenes():
        assert s["boxes"].dtype == np.float32 and s["boxes"].shape == (len(s["labels"]), 4)
        for box, m in zip(s["boxes"], s["masks"], strict=True):
            cols = np.flatnonzero(m.any(axis=0))
            rows = np.flatnonzero(m.any(axis=1))
            assert box.tolist() == [cols[0], rows[0], cols[-1] + 1, rows[-1] + 1]


# -- keypoints ----------------------------------------------------------------------------------
def test_keypoints_are_the_shapes_vertices_with_occlusion_aware_visibility():
    counts = {0: 0, 1: 0, 2: 0}
    for size, s in scenes():
        keypoints = s["keypoints"]
        assert keypoints.shape == (len(s["labels"]), NUM_KEYPOINTS, 3)
        assert keypoints.dtype == np.float32
        silhouettes, owner, _ = model_of(s, size)
        y, x = np.meshgrid(np.arange(size) + 0.5, np.arange(size) + 0.5, indexing="ij")
        for i, k in enumerate(np.flatnonzero(s["object_kept"])):
            cls = int(s["labels"][i])
            points = vertices(cls, *s["object_geometry"][k])
            assert len(points) == len(KEYPOINT_NAMES[SCENE_CLASSES[cls]])
            np.testing.assert_allclose(keypoints[i, : len(points), :2], points, atol=1e-4)
            assert (keypoints[i, len(points) :] == 0).all(), "unused slots are (0, 0, 0)"
            for (px, py), v in zip(points, keypoints[i, : len(points), 2], strict=True):
                counts[int(v)] += 1
                distance = np.hypot(x - px, y - py)
                nearest = np.unravel_index(
                    np.where(silhouettes[k], distance, np.inf).argmin(), distance.shape
                )
                assert v == (2 if owner[nearest] == k else 1)
                near = distance <= 2.1  # the outline's nearest pixel is at most this far
                if v == 2:
                    assert s["masks"][i][near].any()
                else:  # a nearer shape covers the outline there
                    closer = s["object_depths"] < s["object_depths"][k]
                    assert (silhouettes[closer][:, near]).any()
        counts[0] += int((keypoints[..., 2] == 0).sum())
    assert counts[1] > 20 and counts[2] > counts[1] and counts[0] > 0


# -- the dataset --------------------------------------------------------------------------------
def test_the_dataset_yields_each_tasks_targets():
    size = 48
    for task in TASKS:
        data = ScenesDataset(6, seed=2, size=size, max_objects=4, task=task)
        assert len(data) == 6 and task in repr(data)
        for i in range(len(data)):
            x, y = data[i]
            scene = data.annotations(i)
            assert x.shape == (3, size, size) and x.dtype == torch.float32
            if task == "segmentation":
                assert y.shape == (size, size) and y.dtype == torch.int64
                continue
            if task == "depth":
                assert y.shape == (1, size, size) and y.dtype == torch.float32
                assert torch.equal(y[0], torch.from_numpy(scene["depth"]))
                continue
            n = len(scene["labels"])
            assert y["boxes"].shape == (n, 4) and y["boxes"].dtype == torch.float32
            assert y["labels"].shape == (n,) and y["labels"].dtype == torch.int64
            extra = {"detection": set(), "instance": {"masks"}, "pose": {"keypoints"}}[task]
            assert set(y) == {"boxes", "labels"} | extra
            if task == "instance":
                assert y["masks"].shape == (n, size, size) and y["masks"].dtype == torch.bool
            if task == "pose":
                assert y["keypoints"].shape == (n, NUM_KEYPOINTS, 3)
                assert y["keypoints"].dtype == torch.float32
            for key in y:
                assert np.array_equal(y[key].numpy(), scene[key])
    assert ScenesDataset.num_classes == 4 and ScenesDataset.num_keypoints == NUM_KEYPOINTS


def test_bad_arguments_are_refused_with_a_clear_message():
    with pytest.raises(ValueError, match="'detection', 'segmentation', 'instance', 'depth'"):
        ScenesDataset(4, task="keypoints")
    with pytest.raises(ValueError, match="size"):
        ScenesDataset(4, size=4)
    with pytest.raises(ValueError, match="max_objects"):
        ScenesDataset(4, max_objects=0)
    with pytest.raises(IndexError):
        ScenesDataset(4, task="depth")[4]
    with pytest.raises(IndexError):
        ScenesDataset(4).annotations(-1)


def test_torchvision_mask_and_keypoint_rcnn_train_on_the_targets():
    """The instance and pose targets are in torchvision's conventions: one training step of a
    tiny Mask R-CNN and Keypoint R-CNN returns finite mask and keypoint losses."""
    from torch import nn
    from torchvision.models.detection import KeypointRCNN, MaskRCNN
    from torchvision.models.detection.anchor_utils import AnchorGenerator

    torch.manual_seed(0)
    kwargs = {
        "min_size": 64,
        "max_size": 64,
        "image_mean": [0.0] * 3,
        "image_std": [1.0] * 3,
        "rpn_anchor_generator": AnchorGenerator(sizes=((16,),), aspect_ratios=((1.0,),)),
    }
    for cls, task, loss in (
        (MaskRCNN, "instance", "loss_mask"),
        (KeypointRCNN, "pose", "loss_keypoint"),
    ):
        backbone = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU())
        backbone.out_channels = 8
        if cls is KeypointRCNN:
            model = cls(backbone, num_classes=4, num_keypoints=NUM_KEYPOINTS, **kwargs)
        else:
            model = cls(backbone, num_classes=4, **kwargs)
        data = ScenesDataset(2, task=task)
        images, targets = zip(*(data[i] for i in range(2)), strict=True)
        losses = model.train()(list(images), list(targets))
        assert loss in losses and all(torch.isfinite(v) for v in losses.values())


# -- drawing ------------------------------------------------------------------------------------
def test_the_sample_grid_draws_every_annotation(tmp_path):
    chosen = [0, 1, 2]
    fig = scene_grid(chosen, seed=0)
    assert len(fig.axes) == len(chosen) * len(PANELS) + 1  # and the depth colour bar
    grid = np.asarray(fig.axes[:-1]).reshape(len(chosen), len(PANELS))
    assert [ax.get_title() for ax in grid[0]] == list(PANELS.values())
    assert all(ax.get_title() == "" for ax in grid[1:].ravel())
    assert all(ax.get_xlabel() == "x (px)" for ax in grid[-1])
    assert all(ax.get_ylabel() == "y (px)" for ax in grid[:, 0])
    assert fig.axes[-1].get_ylabel() == "depth (m)"
    columns = list(PANELS)
    for row, index in zip(grid, chosen, strict=True):
        s = scene_annotations(index)
        boxes = [p for p in row[columns.index("boxes")].patches if isinstance(p, Rectangle)]
        assert len(boxes) == len(s["labels"])
        texts = [t.get_text() for t in row[columns.index("boxes")].texts]
        assert texts == [SCENE_CLASSES[c] for c in s["labels"]]
        shown = row[columns.index("semantic")].images[0].get_array()
        assert np.array_equal(np.asarray(shown), s["mask"])
        instances = np.asarray(row[columns.index("instances")].images[0].get_array())
        assert np.array_equal(instances.any(axis=-1), s["masks"].any(axis=0))
        depth = np.asarray(row[columns.index("depth")].images[0].get_array())
        np.testing.assert_allclose(depth, s["depth"], rtol=1e-6)
        markers = [
            line
            for line in row[columns.index("keypoints")].lines
            if isinstance(line, Line2D) and line.get_marker() == "o"
        ]
        assert len(markers) == int((s["keypoints"][..., 2] > 0).sum())
        hollow = sum(1 for line in markers if line.get_markerfacecolor() == "none")
        assert hollow == int((s["keypoints"][..., 2] == 1).sum())
    path = tmp_path / "grid.png"
    fig.savefig(path, dpi=60)
    assert path.stat().st_size > 10_000
    with pytest.raises(ValueError, match="needs 5 axes"):
        draw_scene(grid[0][:3], scene_annotations(0))
