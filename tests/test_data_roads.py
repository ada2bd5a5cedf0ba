"""kdtutor.data.roads: road scenes with four lane slots, their masks, existence and points.

The targets are checked against the scene's geometry projected here independently: ground
points ``(X, Z)`` of each lane, sampled densely, through a pinhole camera; distances to the
projected curve come from a k-d tree of those points. The drawn markings are checked against
the same scene drawn without them.
"""

from __future__ import annotations

import matplotlib
import numpy as np
import pytest
import torch
from scipy.spatial import cKDTree
from torch.utils.data import default_collate

from kdtutor.analysis.applications import LANE_COLOURS, road_grid
from kdtutor.data.roads import (
    LANE_SLOTS,
    ROAD_SIZES,
    RoadConfig,
    RoadsDataset,
    lane_columns,
    render_roads,
    road_annotations,
    roads_dataset,
)
from kdtutor.data.tasks import SPLIT_STARTS

matplotlib.use("Agg")
torch.set_num_threads(1)

H, W = 48, 128
CLEAN = RoadConfig(
    cars_max=0,
    shadows_max=0,
    noise_std_range=(0.0, 0.0),
    brightness_range=(1.0, 1.0),
    dashed_p=0.0,
)
PIXELS = np.stack(np.meshgrid(np.arange(W) + 0.5, np.arange(H) + 0.5), axis=-1).reshape(-1, 2)


def projected_lane(scene, k, step=0.004):
    """Dense image points ``(x, y)`` of lane ``k`` from its ground curve, nearest first, up to
    its far end: a ground point at distance Z and lateral X is seen at row y_h + f h / Z and
    column W / 2 + f X / Z."""
    f, h, y_h = scene["focal"], scene["camera_height"], scene["horizon"]
    far = y_h + f * h / scene["z_max"]
    rows = np.append(np.arange(H + 3.0, far, -step), far)
    z = f * h / (rows - y_h)
    x = scene["offsets"][k] + scene["yaw"] * z + scene["curvature"] * z**2
    return np.stack([W / 2 + f * x / z, rows], axis=1)


def lane_distances(scene):
    """Distance ``(4, H, W)`` of every pixel centre to each lane's projected curve (inf beyond
    2.5 px)."""
    out = np.empty((4, H, W))
    for k in range(4):
        d, _ = cKDTree(projected_lane(scene, k)).query(PIXELS, distance_upper_bound=2.5)
        out[k] = d.reshape(H, W)
    return out


# -- targets ---------------------------------------------------------------------------------
def test_lane_points_are_the_projected_lanes_at_the_sample_rows():
    valid_points = 0
    for index in range(40):
        s = road_annotations(index, seed=1)
        rows = s["rows"] + 0.5
        assert s["points"].dtype == np.float32 and s["points"].shape == (4, len(rows))
        for k in range(4):
            curve = projected_lane(s, k)
            x = np.interp(rows, curve[::-1, 1], curve[::-1, 0], left=np.nan, right=np.nan)
            beyond = rows < curve[-1, 1]  # above the far end
            x[beyond] = np.nan
            visible = np.isfinite(x) & (x >= 0) & (x < W)
            if s["exist"][k]:
                assert visible.sum() >= 2 and s["marked"][k]
                np.testing.assert_allclose(s["points"][k][visible], x[visible], atol=2e-3)
                assert (s["points"][k][~visible] == -1).all()
                valid_points += visible.sum()
            else:
                assert (s["points"][k] == -1).all()
                assert not s["marked"][k] or visible.sum() < 2
    assert valid_points > 1500


def test_masks_are_the_lanes_drawn_three_pixels_wide_where_they_exist():
    wanted = missed = 0
    for index in range(30):
        s = road_annotations(index, seed=2)
        mask = s["mask"]
        assert mask.dtype == np.uint8 and mask.shape == (H, W) and mask.max() <= 4
        d = lane_distances(s)
        d[~s["exist"].astype(bool)] = np.inf
        nearest = d.min(axis=0)
        for k in range(4):
            mine = mask == k + 1
            if not s["exist"][k]:
                assert not mine.any(), "an absent lane has no pixel"
                continue
            assert (d[k][mine] <= 1.5 + 1e-3).all(), "no pixel beyond 1.5 px of its lane"
            assert (d[k][mine] <= nearest[mine] + 1e-3).all(), "the nearest lane owns a pixel"
            others = np.delete(d, k, axis=0).min(axis=0)
            should = (d[k] <= 1.45) & (d[k] < others - 1e-3)
            wanted += should.sum()
            missed += (should & ~mine).sum()
            # every lane point falls on its own lane's pixels
            rows = s["rows"][s["points"][k] >= 0]
            cols = np.floor(s["points"][k][s["points"][k] >= 0]).astype(int)
            assert (mask[rows, cols] == k + 1).all()
        assert not ((mask > 0) & ~np.isfinite(nearest)).any()
    assert wanted > 5000 and missed <= 0.002 * wanted


def test_the_targets_depend_on_the_geometry_alone():
    """Cars, shadows, brightness and noise change the image but never the lanes' targets:
    occluded lanes are annotated (CULane's convention)."""
    index = np.arange(24)
    full = render_roads(index, seed=3)
    clean = render_roads(index, seed=3, config=CLEAN)
    for key in ("mask", "exist", "points"):
        assert np.array_equal(full[key], clean[key]), key
    assert not np.array_equal(full["images"], clean["images"])


def test_markings_are_drawn_exactly_where_marked_lanes_run():
    """The scene minus the same scene without markings is non-zero only within the markings'
    reach of a marked lane, and bright at the lane points of solid lanes."""
    unmarked = RoadConfig(**{**CLEAN.__dict__, "exist_p": (0.0, 0.0, 0.0, 0.0)})
    bright = 0
    for index in range(30):
        s = road_annotations(index, seed=4, config=CLEAN)
        bare = road_annotations(index, seed=4, config=unmarked)
        assert not bare["exist"].any() and not bare["mask"].any()
        diff = s["image"].astype(np.int64) - bare["image"].astype(np.int64)
        changed = np.abs(diff).max(axis=0) > 0
        d = lane_distances(s)
        near_marked = (d[s["marked"]] <= 2.5).any(axis=0)
        assert not (changed & ~near_marked).any()
        for k in np.flatnonzero(s["exist"]):
            ok = (s["points"][k] >= 0) & (s["rows"] >= 26)
            rows = s["rows"][ok]
            cols = np.floor(s["points"][k][ok]).astype(int)
            gain = diff[:, rows, cols].max(axis=0)  # white or yellow over grey asphalt
            assert (gain > 30).all(), (index, k, gain)
            bright += len(gain)
    assert bright > 200


def test_existence_follows_its_probabilities_and_the_lane_being_in_view():
    cfg = RoadConfig()
    out = render_roads(np.arange(400), seed=5, config=CLEAN)
    exist = out["exist"].astype(bool)
    assert out["exist"].dtype == np.uint8 and out["exist"].shape == (400, 4)
    rate = exist.mean(axis=0)
    for k in range(4):
        assert abs(rate[k] - cfg.exist_p[k]) < 0.08, (LANE_SLOTS[k], rate[k])
    has_pixels = np.stack([(out["mask"] == k + 1).any(axis=(1, 2)) for k in range(4)], axis=1)
    assert np.array_equal(has_pixels, exist)
    has_points = (out["points"] >= 0).sum(axis=2) >= 2
    assert np.array_equal(has_points, exist)
    valid = out["points"] >= 0
    assert ((out["points"][valid] >= 0) & (out["points"][valid] < W)).all()
    assert (out["points"][~valid] == -1).all()


def test_lane_columns_is_the_pinhole_projection():
    f, h = RoadConfig().focal(), 1.5
    z = np.array([5.0, 12.0, 30.0, 49.0])
    x0, c, yaw, y_h = 1.7, 0.002, -0.01, 14.0
    rows = y_h + f * h / z
    expected = W / 2 + f * (x0 + yaw * z + c * z**2) / z
    np.testing.assert_allclose(lane_columns(rows, x0, y_h, c, yaw), expected)
    assert np.isnan(lane_columns(y_h + f * h / 60.0, x0, y_h, c, yaw)), "beyond z_max"
    assert np.isnan(lane_columns(y_h - 1.0, x0, y_h, c, yaw)), "above the horizon"


# -- determinism, dataset, errors, figure ----------------------------------------------------
def test_a_scene_depends_on_its_index_and_seed_alone():
    a = render_roads([7, 2, 7], seed=6)
    assert a["images"].dtype == np.uint8 and a["images"].shape == (3, 3, H, W)
    for key in a:
        assert np.array_equal(a[key][0], a[key][2]), key
    b = render_roads([2], seed=6)
    for key in a:
        assert np.array_equal(a[key][1], b[key][0]), key
    assert not np.array_equal(render_roads([7], seed=7)["images"][0], a["images"][0])


def test_the_dataset_yields_images_and_lane_targets():
    data = roads_dataset("test", 6, cache=False)
    assert isinstance(data, RoadsDataset) and len(data) == 6 and data.task == "lanes"
    ref = render_roads(np.arange(6) + SPLIT_STARTS["test"])
    assert np.array_equal(data.images.numpy(), ref["images"])
    image, target = data[2]
    assert image.dtype == torch.float32 and image.shape == (3, H, W) and image.max() <= 1
    assert target["mask"].dtype == torch.int64 and target["mask"].shape == (H, W)
    assert target["exist"].dtype == torch.float32 and target["exist"].shape == (4,)
    assert target["points"].dtype == torch.float32 and target["points"].shape == (4, 15)
    assert torch.equal(target["mask"], torch.from_numpy(ref["mask"][2]).long())
    assert data.rows.tolist() == list(range(18, 48, 2))
    x, y = default_collate([data[i] for i in range(4)])
    assert x.shape == (4, 3, H, W) and y["mask"].shape == (4, H, W) and y["exist"].shape == (4, 4)
    train = roads_dataset("train", 6, cache=False)
    assert not torch.equal(train.images, data.images)
    assert train.subset(3).fingerprint() == roads_dataset("train", 3, cache=False).fingerprint()
    assert ROAD_SIZES == {"train": 4_000, "validation": 1_000, "test": 2_000}
    assert len(data.channel_stats()[0]) == 3


def test_bad_arguments_are_refused_with_a_clear_message():
    with pytest.raises(ValueError, match="'train', 'validation', 'test'"):
        roads_dataset("dev")
    with pytest.raises(ValueError, match="size must be an integer of at least 1"):
        roads_dataset("test", 0)
    with pytest.raises(ValueError, match="non-negative integers"):
        render_roads([1, -2])
    with pytest.raises(ValueError, match="exist_p needs 4 probabilities"):
        RoadConfig(exist_p=(0.5, 0.5))
    with pytest.raises(ValueError, match="cars_max"):
        RoadConfig(cars_max=9)
    with pytest.raises(ValueError, match="below the horizon"):
        RoadConfig(rows=(10, 30))
    with pytest.raises(ValueError, match="at least 24 x 32"):
        RoadConfig(height=16)


def test_the_sample_grid_shows_points_masks_and_existence(tmp_path):
    fig = road_grid([0, 3])
    axes = np.asarray(fig.axes).reshape(2, 2)
    scenes = render_roads([0, 3])
    for r, index in enumerate([0, 3]):
        exist = "".join(str(int(e)) for e in scenes["exist"][r])
        assert axes[r, 0].get_title() == f"scene {index}: image, lane points"
        assert axes[r, 1].get_title() == f"lane mask, existence {exist}"
        assert np.array_equal(np.asarray(axes[r, 1].images[0].get_array()), scenes["mask"][r])
        drawn = sum(len(line.get_xdata()) for line in axes[r, 0].lines)
        assert drawn == int((scenes["points"][r] >= 0).sum())
        colours = {line.get_color() for line in axes[r, 0].lines}
        assert colours <= set(LANE_COLOURS)
    assert axes[0, 0].get_ylabel() == "y (px)" and axes[1, 1].get_xlabel() == "x (px)"
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert labels == [*LANE_SLOTS, "lane point"]
    path = tmp_path / "roads.png"
    fig.savefig(path, dpi=50)
    assert path.stat().st_size > 5_000
