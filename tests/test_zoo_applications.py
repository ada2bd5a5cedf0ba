"""Chapter 8's materialised splits (``kdtutor.data.task_splits.task_split``, ``PoseCrops``) and its
zoo teachers (``kdtutor.zoo_recipes.applications``), at tiny sizes.

The splits are checked against the generators themselves (``render_scene``,
``scene_annotations`` at the split's indices), the pose crops against hand-made scenes whose
crops and keypoints are worked out by hand (a 1:1 crop is the image's window, a 2:1 crop its
2x2 average), and every teacher recipe is trained for one epoch through
``kdtutor.zoo.train_teacher`` into a temporary zoo, then loaded back as a bare network whose
``trained_on`` passes ``fit``'s check.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from kdtutor import zoo
from kdtutor.data import task_splits as T
from kdtutor.data.scenes import render_scene, scene_annotations
from kdtutor.data.tasks import SPLIT_STARTS
from kdtutor.errors import UnknownNameError
from kdtutor.models.trained_on import IncompatibleTeacherError, TrainedOn
from kdtutor.seeding import seed_everything
from kdtutor.tasks import Classification
from kdtutor.train.checks import check_networks_fit_data
from kdtutor.zoo_recipes import applications as A

torch.set_num_threads(1)

TINY = {"train": 6, "validation": 2, "test": 4}


@pytest.fixture()
def tiny(tmp_path, monkeypatch):
    """Tiny default splits (faces: 2 test images of each of the 200 unseen identities), a
    temporary disk cache and zoo."""
    monkeypatch.setenv("KDTUTOR_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("KDTUTOR_ZOO", str(tmp_path / "zoo"))
    for name in T.TASK_SIZES:
        monkeypatch.setitem(T.TASK_SIZES, name, dict(TINY))
    monkeypatch.setitem(T.TASK_SIZES, "faces", {"train": 64, "validation": 2, "test": 400})
    return tmp_path


# -- scene splits ------------------------------------------------------------------------------
def test_scene_splits_hold_the_generators_targets_exactly(tmp_path, monkeypatch):
    monkeypatch.setenv("KDTUTOR_CACHE", str(tmp_path))
    start = SPLIT_STARTS["test"]
    det = T.task_split("scenes", "detection", "test", 5, seed=3, cache=True)
    seg = T.task_split("scenes", "segmentation", "test", 5, seed=3, cache=True)
    depth = T.task_split("scenes", "depth", "test", 5, seed=3, cache=True)
    assert [d.task.name for d in (det, seg, depth)] == ["detection", "segmentation", "depth"]
    assert (det.num_classes, seg.num_classes, depth.num_classes) == (4, 4, 1)
    for i in range(5):
        image, mask, boxes, labels = render_scene(start + i, 3)
        x, target = det[i]
        assert (
            x.dtype == torch.float32
            and (x - torch.from_numpy(image)).abs().max() <= 0.5 / 255 + 1e-6
        )
        assert torch.equal(target["boxes"], torch.from_numpy(boxes))  # variable length, exact
        assert torch.equal(target["labels"], torch.from_numpy(labels))
        assert torch.equal(seg[i][1], torch.from_numpy(mask)) and seg[i][1].dtype == torch.int64
        truth = scene_annotations(start + i, 3)["depth"]
        assert torch.equal(depth[i][1], torch.from_numpy(truth)[None])
        assert torch.equal(seg[i][0], x) and torch.equal(depth[i][0], x)  # one image per scene
    assert len(list((tmp_path / "scenes").glob("*.npz"))) == 3


def test_a_cached_split_reads_back_the_same_tensors(tmp_path, monkeypatch):
    monkeypatch.setenv("KDTUTOR_CACHE", str(tmp_path))
    first = T.task_split("scenes", "detection", "train", 6, cache=True)
    (path,) = (tmp_path / "scenes").glob("*.npz")
    stamp = path.stat().st_mtime_ns
    again = T.task_split("scenes", "detection", "train", 6, cache=True)
    assert path.stat().st_mtime_ns == stamp  # read, not rewritten
    for key in ("images", "count", "boxes", "labels"):
        assert torch.equal(first.tensor(key), again.tensor(key))
    assert first.fingerprint() == again.fingerprint()
    rendered = T.task_split("scenes", "detection", "train", 6, cache=False)
    assert rendered.fingerprint() == first.fingerprint()
    other = T.task_split("scenes", "detection", "test", 6, cache=False)
    assert other.fingerprint() != first.fingerprint()


def test_subset_is_the_prefix_split_and_keeps_the_task():
    six = T.task_split("scenes", "segmentation", "train", 6, cache=False)
    three = T.task_split("scenes", "segmentation", "train", 3, cache=False)
    sub = six.subset(3)
    assert type(sub) is type(six) and len(sub) == 3 and sub.task is six.task
    assert sub.num_classes == 4 and sub.classes == six.classes
    assert sub.fingerprint() == three.fingerprint() != six.fingerprint()
    for i in range(3):
        assert torch.equal(sub[i][0], three[i][0]) and torch.equal(sub[i][1], three[i][1])


def test_one_entry_point_for_every_dataset(tiny):
    expected = {
        ("faces", "retrieval"): (3, 32, 32),
        ("sr", "superres"): (3, 16, 16),
        ("clips", "classification"): (8, 3, 32, 32),
        ("roads", "lanes"): (3, 48, 128),
    }
    for (dataset, task), shape in expected.items():
        data = T.task_split(dataset, task, "test", 4, cache=False)
        assert data.task.name == task and tuple(data[0][0].shape) == shape
        assert len(data) == 4 and isinstance(data.fingerprint(), str)
    assert T.task_split("scenes", "pose", "test", 2, cache=False).task.name == "keypoints"
    with pytest.raises(UnknownNameError, match="Did you mean 'scenes'"):
        T.task_split("scene", "detection")
    with pytest.raises(UnknownNameError, match="segmentation"):
        T.task_split("scenes", "segmentaton")
    with pytest.raises(ValueError, match="split must be one of"):
        T.task_split("scenes", "depth", "val")


def test_the_protocol_table_matches_the_generators_defaults():
    from kdtutor.data.clips import CLIP_SIZES
    from kdtutor.data.faces import FACE_SPLITS
    from kdtutor.data.roads import ROAD_SIZES

    assert T.TASK_SIZES["clips"] == CLIP_SIZES and T.TASK_SIZES["roads"] == ROAD_SIZES
    assert T.TASK_SIZES["sr"] == T.SR_SIZES
    assert T.TASK_SIZES["faces"] == {s: c * p for s, (_, c, p) in FACE_SPLITS.items()}
    assert T.TASK_SIZES["scenes"] == {"train": 4_000, "validation": 1_000, "test": 2_000}


def test_split_stats_are_the_train_inputs_statistics(tiny):
    mean, std = T.split_stats("scenes", "depth")
    images = np.stack([render_scene(i)[0] for i in range(TINY["train"])])
    images = np.rint(images * 255) / 255  # as stored
    assert np.allclose(mean, images.mean(axis=(0, 2, 3)), atol=1e-6)
    assert np.allclose(std, images.std(axis=(0, 2, 3)), atol=1e-6)
    assert T.split_stats("scenes", "segmentation") == (mean, std)
    assert T.split_stats("faces") == ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))  # served standardised
    crops = T.task_split("scenes", "keypoints", "train").crops.double() / 255
    c_mean, _ = T.split_stats("scenes", "keypoints")
    assert np.allclose(c_mean, crops.mean(dim=(0, 2, 3)).numpy(), atol=1e-6)


# -- pose crops --------------------------------------------------------------------------------
def _one_scene(image: torch.Tensor, box: list[float], keypoints: list[list[float]]) -> T.SceneSplit:
    tensors = {
        "images": image[None],
        "count": torch.tensor([1]),
        "boxes": torch.tensor([[box, [0.0] * 4, [0.0] * 4]]),
        "labels": torch.tensor([[1, 0, 0]]),
        "keypoints": torch.zeros(1, 3, 4, 3),
    }
    tensors["keypoints"][0, 0] = torch.tensor(keypoints)
    return T.SceneSplit(tensors, kind="pose", split="test", meta={"by": "hand"})


def test_a_one_to_one_crop_is_the_image_window_and_its_keypoints_map_by_hand():
    image = torch.zeros(3, 64, 64, dtype=torch.uint8)
    image[:, 20, 40] = 255  # continuous pixel centre (40.5, 20.5)
    image[1, 30:34, 18:22] = 100
    # a box of side 25.6 centred on (32, 32): crop side 1.25 * 25.6 = 32, window [16, 48)^2
    kps = [[40.5, 20.5, 2.0], [5.0, 5.0, 2.0], [0.0, 0.0, 0.0], [30.0, 40.0, 1.0]]
    crops = T.PoseCrops(_one_scene(image, [19.2, 19.2, 44.8, 44.8], kps))
    assert len(crops) == 1 and crops.task.name == "keypoints"
    crop, target = crops[0]
    assert torch.equal(crops.crops[0], image[:, 16:48, 16:48])
    assert torch.allclose(crops.tensor("box")[0], torch.tensor([16.0, 16.0, 48.0, 48.0]))
    # heatmap pixels: (x - 16) * 16 / 32 - 1/2, integers at pixel centres
    assert torch.allclose(target["keypoints"][0], torch.tensor([11.75, 1.75, 2.0]))
    assert torch.allclose(target["keypoints"][3], torch.tensor([6.5, 11.5, 1.0]))
    assert target["weight"].tolist() == [1.0, 0.0, 0.0, 1.0]  # outside the crop; empty slot
    assert target["heatmaps"][1].abs().max() == 0 and target["heatmaps"][2].abs().max() == 0
    assert float(target["scale"]) == pytest.approx(12.8)
    peak = target["heatmaps"][0]
    assert divmod(int(peak.argmax()), 16) == (2, 12)  # (row, column) nearest (1.75, 11.75)
    v, u = 2, 12  # the Gaussian, sigma 1, at the unrounded keypoint
    assert float(peak[v, u]) == pytest.approx(np.exp(-((u - 11.75) ** 2 + (v - 1.75) ** 2) / 2))
    assert crop.dtype == torch.float32 and float(crop.max()) == 1.0


def test_a_two_to_one_crop_is_the_image_averaged_in_two_by_two_blocks():
    g = torch.Generator().manual_seed(0)
    image = torch.randint(0, 256, (3, 64, 64), generator=g, dtype=torch.uint8)
    # side 1.25 * 51.2 = 64, centred: the whole image, two samples per bin
    crops = T.PoseCrops(_one_scene(image, [6.4, 6.4, 57.6, 57.6], [[1.0, 63.0, 2.0]] * 4))
    pooled = F.avg_pool2d(image[None].double(), 2)[0]
    assert (crops.crops[0].double() - pooled).abs().max() <= 0.5 + 1e-9
    assert torch.allclose(
        crops[0][1]["keypoints"][0, :2], torch.tensor([1 / 4 - 0.5, 63 / 4 - 0.5])
    )
    assert crops[0][1]["weight"].tolist() == [1.0] * 4  # inside: 0.5 px from the edge or less


def test_generated_crops_peak_at_their_keypoints_and_skip_empty_slots():
    scenes = T.scene_split("test", 12, "pose", cache=False)
    crops = T.PoseCrops(scenes)
    assert len(crops) == int(scenes.tensor("count").sum()) > 12
    weight = crops.tensor("weight")
    kp = crops.tensor("keypoints")
    maps = crops.tensor("heatmaps")
    labels = scenes.tensor("labels")[crops.tensor("scene"), crops.tensor("object")]
    assert (weight[labels == 3, 3] == 0).all()  # the triangles' empty fourth slot
    assert (weight[kp[..., 2] == 0] == 0).all()
    assert (maps[weight == 0].abs().amax(dim=(1, 2)) == 0).all()
    on = weight > 0
    assert on.sum() > 3 * len(crops)
    flat = maps[on].flatten(1).argmax(1)
    rows, cols = flat // 16, flat % 16
    assert ((cols - kp[on][:, 0]).abs() <= 0.5 + 1e-5).all()
    assert ((rows - kp[on][:, 1]).abs() <= 0.5 + 1e-5).all()
    x, target = crops[0]
    assert tuple(x.shape) == (3, 32, 32) and tuple(target["heatmaps"].shape) == (4, 16, 16)
    assert sorted(target) == ["heatmaps", "keypoints", "scale", "weight"]


def test_pose_crops_refuse_other_scene_splits():
    with pytest.raises(ValueError, match="kind 'pose'"):
        T.PoseCrops(T.scene_split("test", 2, "detection", cache=False))


# -- the zoo's teachers ------------------------------------------------------------------------
NETWORKS = {  # name: (network class, parameters as kdtutor.models.dense measures them)
    "scenes_fcos": ("SceneFCOS", 819_881),
    "scenes_lraspp": ("SceneLRASPP", 470_696),
    "scenes_depth": ("DepthNet", 473_345),
    "scenes_pose": ("PoseNet", 473_444),
    "faces_cnn": ("FaceNet", 1_334_368),
    "shapes_edsr": ("EDSR", 271_536),
    "clips_c3d": ("C3D", 431_802),
    "roads_lane": ("LaneNet", 298_505),
}


def _shapes(out):
    if isinstance(out, dict):
        return {k: tuple(v.shape) for k, v in out.items()}
    if isinstance(out, list):
        return sorted(out[0])
    return tuple(out.shape)


OUTPUTS = {
    "scenes_fcos": ["boxes", "labels", "scores"],
    "scenes_lraspp": {"out": (2, 4, 64, 64)},
    "scenes_depth": (2, 1, 64, 64),
    "scenes_pose": (2, 4, 16, 16),
    "faces_cnn": (2, 128),
    "shapes_edsr": (2, 3, 64, 64),
    "clips_c3d": (2, 10),
    "roads_lane": {"out": (2, 5, 48, 128), "exist": (2, 4)},
}


def test_every_teacher_is_found_and_builds_through_its_provider(tiny):
    assert set(A.RECIPES) == set(NETWORKS)
    for name, (cls, params) in NETWORKS.items():
        recipe = zoo.get_recipe(f"zoo:{name}")
        assert recipe.folder == "applications" and recipe.provider == A.__name__
        assert zoo.recipe_dir(recipe) == tiny / "zoo" / "applications"
        trainer = zoo._build(recipe)
        network = trainer.student
        assert type(network).__name__ == cls
        assert sum(p.numel() for p in network.parameters()) == params
        assert sum(p.numel() for p in trainer.parameters()) == params  # nothing added
        assert list(trainer.state_dict()) == list(network.state_dict())
        mean, _ = T.split_stats(recipe.dataset, recipe.task)
        norm = network.backbone.normalize if name == "scenes_fcos" else network.normalize
        assert torch.allclose(norm.mean.flatten(), torch.tensor(mean))
        x = torch.stack([T.task_split(recipe.dataset, recipe.task, "test")[i][0] for i in (0, 1)])
        assert tuple(x.shape[1:]) == A.input_shape(recipe)
        assert trainer.eval() is network and not network.training
        with torch.no_grad():
            assert _shapes(network(x)) == OUTPUTS[name], name
    assert zoo.get_recipe("scenes_fcos").train["max_grad_norm"] == 35.0
    assert zoo.get_recipe("shapes_edsr").train["optimizer"] == "adam"


def test_the_face_teacher_trains_its_own_head(tiny):
    trainer = zoo._build(zoo.get_recipe("faces_cnn"))
    assert trainer.method.name == "face_scratch" and trainer.method.head is trainer.student.head
    ids = [p for p in trainer.trainable_parameters() if p is trainer.student.head.weight]
    assert len(ids) == 1  # trained once, saved with the network


@pytest.mark.parametrize("name", list(NETWORKS))
def test_train_teacher_end_to_end_on_a_tiny_split(tiny, name):
    entry = zoo.train_teacher(name, epochs=1, log=None)
    folder = tiny / "zoo" / "applications"
    manifest = json.loads((folder / "manifest.json").read_text())
    recipe = zoo.get_recipe(name)
    assert manifest[name]["task"] == recipe.task == entry["task"]
    assert manifest[name]["metric"] == entry["metric"] != ""
    assert manifest[name]["params"] == NETWORKS[name][1]
    assert not (tiny / "zoo" / "manifest.json").exists()
    teacher = zoo.load_teacher(name)
    assert type(teacher).__name__ == NETWORKS[name][0] and not teacher.training
    assert teacher.trained_on == TrainedOn(
        recipe.dataset, A.output_count(recipe), A.input_shape(recipe)
    )
    train, test = A.datasets(recipe)
    # fit's check, with the class counts compared even where the task would skip them
    check_networks_fit_data({"teacher": teacher}, train, test, classification=True)
    if name == "faces_cnn":  # the trained head ships with the network
        seed_everything(recipe.seed)
        initial = zoo._build(recipe).student.head.weight
        assert not torch.allclose(teacher.head.weight, initial)


def test_a_teacher_on_other_data_is_refused(tiny):
    zoo.train_teacher("clips_c3d", epochs=1, log=None)
    teacher = zoo.load_teacher("clips_c3d")
    train, test = A.datasets(zoo.get_recipe("clips_c3d"))
    check_networks_fit_data(
        {"teacher": teacher}, train, test, classification=isinstance(train.task, Classification)
    )
    scenes = T.task_split("scenes", "detection", "test")
    with pytest.raises(IncompatibleTeacherError, match="10 classes, the data 4"):
        check_networks_fit_data({"teacher": teacher}, scenes, None, classification=True)
