"""kdtutor.data.faces: cartoon identities, split by identity, for recognition and retrieval.

Properties are checked against what the images themselves show: with the nuisances off every
image of an identity is the same picture, the skin of a face is as dark as its identity
parameter says, images of one identity are closer to each other than to other identities',
and a split's images are exactly the faces of its own identities.
"""

from __future__ import annotations

import matplotlib
import numpy as np
import pytest
import torch

from kdtutor.analysis.applications import face_grid
from kdtutor.data import ArrayDataset
from kdtutor.data.faces import (
    FACE_SPLITS,
    HAIR_STYLES,
    FaceConfig,
    faces_dataset,
    identity_parameters,
    render_faces,
    split_identities,
)

matplotlib.use("Agg")
torch.set_num_threads(1)

STILL = FaceConfig(nuisance=0.0, glasses_p=0.0, hat_p=0.0)


def test_a_face_depends_on_its_identity_sample_and_seed_alone():
    batch = render_faces([5, 7, 5, 123_456], [0, 3, 0, 2], seed=4)
    assert batch.dtype == np.uint8 and batch.shape == (4, 3, 32, 32)
    assert np.array_equal(batch[0], batch[2])
    assert np.array_equal(render_faces(7, 3, seed=4)[0], batch[1])
    assert np.array_equal(render_faces([123_456], [2], seed=4)[0], batch[3])
    assert not np.array_equal(render_faces(5, 0, seed=5)[0], batch[0])
    assert not np.array_equal(render_faces(5, 1, seed=4)[0], batch[0])
    big = render_faces(3, 1, config=FaceConfig(image_size=64))
    assert big.shape == (1, 3, 64, 64)


def test_without_nuisances_every_image_of_an_identity_is_the_same_picture():
    ids = np.repeat(np.arange(12), 3)
    still = render_faces(ids, np.tile([0, 7, 99], 12), config=STILL).reshape(12, 3, -1)
    assert (still == still[:, :1]).all()
    flat = still[:, 0].astype(np.int64)
    distances = np.abs(flat[:, None] - flat[None]).sum(-1)
    assert (distances[~np.eye(12, dtype=bool)] > 0).all(), "identities differ"
    moving = render_faces(ids, np.tile([0, 7, 99], 12)).reshape(12, 3, -1)
    assert not (moving == moving[:, :1]).all(axis=(1, 2)).any(), "nuisances vary per image"


def test_the_skin_is_as_dark_as_the_identity_parameter_says():
    """At the cheeks (clear of eyes, nose, mouth and hair for every identity) the face's
    brightness falls with the ``skin`` parameter."""
    ids = np.arange(300)
    config = FaceConfig(nuisance=0.0, glasses_p=0.0, hat_p=0.0, beard_p=0.0)
    images = render_faces(ids, 0, config=config).astype(np.float64)
    cheeks = images[:, :, 16, [11, 20]].mean(axis=(1, 2))
    skin = identity_parameters(ids)["skin"]
    rank = lambda v: np.argsort(np.argsort(v))  # noqa: E731
    spearman = np.corrcoef(rank(cheeks), rank(skin))[0, 1]
    assert spearman < -0.95


def test_images_of_an_identity_are_closer_to_each_other_than_to_other_identities():
    ids = np.repeat(np.arange(60), 4)
    faces = render_faces(ids, np.tile(np.arange(4), 60))[:, :, 8:24, 8:24]
    flat = faces.reshape(len(ids), -1).astype(np.float64)
    d = np.sqrt(((flat[:, None] - flat[None]) ** 2).sum(-1))
    same = (ids[:, None] == ids[None]) & ~np.eye(len(ids), dtype=bool)
    assert d[same].mean() < 0.8 * d[ids[:, None] != ids[None]].mean()
    np.fill_diagonal(d, np.inf)
    nearest = ids[d.argmin(axis=1)]
    assert 0.1 < (nearest == ids).mean() < 0.9, "recognisable, but not trivially (chance 1/60)"


def test_identity_parameters_are_per_identity_and_in_range():
    p = identity_parameters([0, 1, 0, 999])
    for name, values in p.items():
        assert values.shape[0] == 4, name
        assert np.array_equal(values[0], values[2]), name
    assert p["uniform"].shape == (4, 24) and ((p["uniform"] >= 0) & (p["uniform"] < 1)).all()
    many = identity_parameters(np.arange(2000))
    styles = np.bincount(many["hair_style"].astype(int), minlength=len(HAIR_STYLES))
    assert styles.min() > 300
    assert 0.15 < (many["beard"] < FaceConfig().beard_p).mean() < 0.25
    assert not np.array_equal(identity_parameters([0], seed=1)["uniform"], p["uniform"][:1])


def test_splits_are_disjoint_by_identity_and_hold_exactly_their_identities_faces():
    assert FACE_SPLITS == {"train": (0, 1000, 20), "validation": (1000, 100, 10),
                           "test": (1100, 200, 10)}  # fmt: skip
    names = {s: set(np.asarray(split_identities(s)).tolist()) for s in FACE_SPLITS}
    assert names["train"] == set(range(1000)) and names["test"] == set(range(1100, 1300))
    assert not names["train"] & names["test"] and not names["train"] & names["validation"]
    assert not names["validation"] & names["test"]

    test = faces_dataset("test", cache=False)
    assert isinstance(test, ArrayDataset) and len(test) == 2000 and test.num_classes == 200
    assert test.classes == [f"id{i}" for i in range(1100, 1300)]
    assert test.class_counts() == [10] * 200, "unseen identities, 10 images each"
    picked = np.array([0, 1, 199, 200, 1999])
    ids, samples = 1100 + picked % 200, picked // 200
    assert np.array_equal(test.images[picked].numpy(), render_faces(ids, samples))
    assert (test.targets[picked].numpy() == picked % 200).all()

    train = faces_dataset("train", 2500, cache=False)
    assert train.num_classes == 1000 and train.classes[:2] == ["id0000", "id0001"]
    assert np.array_equal(train.images[[0, 1000, 2499]].numpy(),
                          render_faces([0, 0, 499], [0, 1, 2]))  # fmt: skip
    assert train.class_counts()[:3] == [3, 3, 3] and train.class_counts()[-1] == 2
    assert not set(train.classes) & set(test.classes)
    assert (test.mean, test.std) == (train.mean, train.std), "one normalisation for all splits"
    validation = faces_dataset("validation", 200, cache=False)
    assert validation.classes[0] == "id1000" and validation.class_counts() == [2] * 100
    x, y = test[3]
    assert x.dtype == torch.float32 and x.shape == (3, 32, 32) and y == 3


def test_the_disk_cache_round_trips(tmp_path, monkeypatch):
    monkeypatch.setenv("KDTUTOR_CACHE", str(tmp_path))
    first = faces_dataset("validation", 30, cache=True)
    again = faces_dataset("validation", 30, cache=True)
    assert torch.equal(first.images, again.images) and first.fingerprint() == again.fingerprint()
    assert len(list((tmp_path / "faces").glob("*.npz"))) == 2  # the split and the statistics'


def test_bad_arguments_are_refused_with_a_clear_message():
    with pytest.raises(ValueError, match="'train', 'validation', 'test'"):
        faces_dataset("val")
    with pytest.raises(ValueError, match="size must be an integer of at least 1"):
        faces_dataset("test", 0)
    with pytest.raises(ValueError, match="identity must lie in"):
        render_faces(-1, 0)
    with pytest.raises(ValueError, match="sample must lie in"):
        render_faces(0, 1 << 24)
    with pytest.raises(ValueError, match="identity must be integers"):
        render_faces(0.5, 0)
    with pytest.raises(ValueError, match="image_size"):
        FaceConfig(image_size=8)
    with pytest.raises(ValueError, match="glasses_p must be a probability"):
        FaceConfig(glasses_p=1.5)
    with pytest.raises(ValueError, match="rotation must be non-negative"):
        FaceConfig(rotation=-1)
    with pytest.raises(ValueError, match="yaw"):
        FaceConfig(yaw=70)


def test_the_sample_grid_has_one_row_per_identity(tmp_path):
    fig = face_grid([3, 1100], samples=4)
    axes = np.asarray(fig.axes).reshape(2, 4)
    assert [ax.get_title() for ax in axes[0]] == [f"sample {k}" for k in range(4)]
    assert axes[1, 0].get_ylabel() == "id1100\ny (px)" and axes[0, 1].get_ylabel() == ""
    assert all(ax.get_xlabel() == "x (px)" for ax in axes[-1])
    shown = np.asarray(axes[1, 2].images[0].get_array())
    assert np.allclose(shown, render_faces(1100, 2)[0].transpose(1, 2, 0) / 255.0)
    path = tmp_path / "faces.png"
    fig.savefig(path, dpi=50)
    assert path.stat().st_size > 5_000
    with pytest.raises(ValueError, match="samples must be at least 1"):
        face_grid([0], samples=0)
