"""Cross-modal distillation (Gupta, Hoffman, Malik, 2016) and the geometry view of ``shapes``."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from kdtutor.config import ConfigError
from kdtutor.data import make_shapes
from kdtutor.data.modalities import (
    GeometryConfig,
    geometry_dataset,
    geometry_images,
    paired_view,
)
from kdtutor.data.shapes import TEST_START
from kdtutor.errors import KDTutorError, ShapeMismatchError, UnknownNameError
from kdtutor.features import FeatureExtractor
from kdtutor.methods import build_distiller
from kdtutor.train import fit

CLEAN = GeometryConfig(noise_std_range=(0.0, 0.0), missing_fraction=0.0)
FLAT_RGB = {"texture_strength": 0.0, "shading": 0.0, "noise_std_range": (0.0, 0.0)}


def rgb_coverage(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Coverage recovered from flat RGB images (no texture, shading or noise), each
    ``bg + alpha (fg - bg)`` rounded to uint8: the corner pixel is background (every shape
    lies inside its bounding circle, inside the image), the channel with the largest change
    is read, and the pixel farthest from the background is taken as full coverage.
    Returns the coverage (n, S, S) and each image's largest change in uint8 levels."""
    x = images.astype(np.float64)
    diff = x - x[:, :, :1, :1]
    n = x.shape[0]
    flat = np.abs(diff).reshape(n, 3, -1)
    channel = flat.max(axis=2).argmax(axis=1)
    d = diff[np.arange(n), channel]  # (n, S, S)
    peak = d.reshape(n, -1)[np.arange(n), np.abs(d).reshape(n, -1).argmax(axis=1)]
    return d / peak[:, None, None], np.abs(peak)


def geometry_coverage(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Coverage read from the height channel (``round(255 H alpha)``), normalised by its top."""
    h = images[:, 1].astype(np.float64)
    top = h.reshape(h.shape[0], -1).max(axis=1)
    return h / top[:, None, None], top


def assert_same_scenes(rgb: np.ndarray, geo: np.ndarray) -> None:
    a_rgb, levels_rgb = rgb_coverage(rgb)
    a_geo, levels_geo = geometry_coverage(geo)
    # each recovered coverage is off by at most one uint8 level over its full-coverage level
    # (the pixel's rounding plus the references' roundings)
    bound = 1.0 / (levels_rgb - 1.0) + 1.0 / (levels_geo - 0.5)
    err = np.abs(a_rgb - a_geo).reshape(len(rgb), -1).max(axis=1)
    assert np.all(err <= bound + 1e-9), (err - bound).max()
    assert np.abs(a_rgb - a_geo).mean() < 0.005


def test_geometry_coverage_equals_the_rgb_images_recovered_coverage() -> None:
    rgb, _ = make_shapes(200, **FLAT_RGB)
    geo = geometry_images(np.arange(200), geometry=CLEAN)
    assert_same_scenes(rgb, geo)
    test_rgb, _ = make_shapes(50, start=TEST_START, **FLAT_RGB)
    assert_same_scenes(test_rgb, geometry_images(TEST_START + np.arange(50), geometry=CLEAN))
    # the shapes vary: a wrong pairing is detected (shifted by one index)
    a_rgb, _ = rgb_coverage(rgb[1:])
    a_geo, _ = geometry_coverage(geo[:-1])
    assert np.abs(a_rgb - a_geo).mean() > 0.05


def test_the_same_seed_and_index_give_the_same_scene_in_both_modalities() -> None:
    index = np.array([123, 7, TEST_START + 5, 40])  # any order, any split
    geo = geometry_images(index, seed=3, geometry=CLEAN)
    rgb = np.concatenate([make_shapes(1, seed=3, start=int(i), **FLAT_RGB)[0] for i in index])
    assert_same_scenes(rgb, geo)
    other = geometry_images(index, seed=4, geometry=CLEAN)
    assert np.abs(geometry_coverage(other)[0] - rgb_coverage(rgb)[0]).mean() > 0.05
    # deterministic by (seed, index): a slice equals the rows of a longer range
    full = geometry_images(np.arange(30), seed=3)
    np.testing.assert_array_equal(geometry_images(np.arange(10, 20), seed=3), full[10:20])
    np.testing.assert_array_equal(geometry_images(np.arange(30), seed=3), full)
    assert not np.array_equal(geometry_images(np.arange(30), seed=4), full)


def test_geometry_dataset_rows_labels_and_missing_pixels() -> None:
    train = geometry_dataset("train", 40, seed=1)
    np.testing.assert_array_equal(train.images.numpy(), geometry_images(np.arange(40), seed=1))
    assert train.targets.tolist() == make_shapes(40, seed=1)[1].tolist()
    assert train.name == "shapes_geometry" and train.in_channels == 3
    test = geometry_dataset("test", 20, seed=1)
    np.testing.assert_array_equal(
        test.images.numpy(), geometry_images(TEST_START + np.arange(20), seed=1)
    )
    assert test.mean == train.mean and test.std == train.std  # shared normalisation
    images = geometry_images(np.arange(1000))
    missing = (images == 0).all(axis=1).mean()  # 1,024,000 pixels: standard error 0.0002
    assert abs(missing - 0.05) < 0.002
    clean = geometry_images(np.arange(100), geometry=CLEAN)
    assert (clean == 0).all(axis=1).mean() < 0.001


def test_paired_view_pairs_a_prefix_and_refuses_anything_else(tiny_data) -> None:
    view = paired_view(tiny_data.train)
    assert len(view) == len(tiny_data.train)
    np.testing.assert_array_equal(view.images.numpy(), geometry_images(np.arange(200)))
    test_view = paired_view(tiny_data.test)
    np.testing.assert_array_equal(
        test_view.images[:3].numpy(), geometry_images(TEST_START + np.arange(3))
    )
    with pytest.raises(KDTutorError, match="paired="):
        paired_view(tiny_data.train.subset(torch.arange(5, 25)))
    with pytest.raises(KDTutorError, match="seed"):
        paired_view(tiny_data.train, seed=1)
    with pytest.raises(UnknownNameError, match="modality"):
        paired_view(tiny_data.train, "thermal")
    with pytest.raises(KDTutorError, match="ArrayDataset"):
        paired_view(tiny_data.train.images)


def test_the_student_sees_the_geometry_rows_of_its_batchs_rgb_rows(tiny_data, tiny_pair) -> None:
    train = tiny_data.train.subset(60)
    d = build_distiller("crossmodal", tiny_pair.student, tiny_pair.teacher)
    seen_student: list[torch.Tensor] = []
    seen_teacher: list[torch.Tensor] = []
    d.student.register_forward_pre_hook(
        lambda m, a: seen_student.append(a[0].detach().clone()) if m.training else None
    )
    d.teacher.register_forward_pre_hook(lambda m, a: seen_teacher.append(a[0].detach().clone()))
    fit(d, train, geometry_dataset("test", 20), epochs=1, batch_size=20, cache=False)
    assert len(seen_student) == len(seen_teacher) == 3
    rgb_all, _ = train.batch(torch.arange(len(train)))
    geo_all, _ = d.paired.batch(torch.arange(len(train)))
    rows_seen = []
    for x_s, x_t in zip(seen_student, seen_teacher, strict=True):
        # the teacher's input identifies the rows; the student must see their geometry
        match = (x_t[:, None] == rgb_all[None]).flatten(2).all(dim=2)
        assert torch.all(match.sum(dim=1) == 1)
        rows = match.int().argmax(dim=1)
        torch.testing.assert_close(x_s, geo_all[rows], rtol=0, atol=0)
        rows_seen.append(rows)
    assert sorted(torch.cat(rows_seen).tolist()) == list(range(60))  # one epoch, every row
    assert not torch.equal(seen_student[0], seen_teacher[0])


def test_losses_equal_an_independent_computation_and_the_cache_serves_the_rgb_rows(
    tiny_data, tiny_pair
) -> None:
    train = tiny_data.train.subset(40)
    d = build_distiller("crossmodal", tiny_pair.student, tiny_pair.teacher)
    d.bind_data(train)
    d.eval()  # BatchNorm from running statistics, so the hand computation sees the same
    idx = torch.tensor([3, 17, 0, 39, 8])
    x, y = train.batch(idx)
    x_geo = torch.from_numpy(geometry_images(idx.numpy())).float()
    mean = torch.tensor(d.paired.mean).view(1, 3, 1, 1)
    std = torch.tensor(d.paired.std).view(1, 3, 1, 1)
    x_geo = (x_geo / 255.0 - mean) / std
    with torch.no_grad():
        _, losses = d(x, y, idx)
        with FeatureExtractor(d.student, d.student_paths) as fs:
            d.student(x_geo)
        with FeatureExtractor(d.teacher, d.teacher_paths) as ft:
            d.teacher(x)
        hand = d.connectors[0](fs.tensor(d.student_paths[0]))
        expected = ((hand - ft.tensor(d.teacher_paths[0])) ** 2).mean()
    torch.testing.assert_close(losses["hint"], expected, rtol=1e-5, atol=1e-6)
    assert losses["ce"].item() == 0.0 and "kd" not in losses

    # transfer="logits": T^2 KL(p_t(x_rgb) || p_s(x_geo)), written with NumPy
    k = build_distiller(
        "crossmodal", tiny_pair.student, tiny_pair.teacher, transfer="logits", kd_weight=1.0, T=2.0
    )
    k.bind_data(train)
    k.eval()
    with torch.no_grad():
        _, kl = k(x, y, idx)
        zs = k.student(x_geo).double().numpy() / 2.0
        zt = k.teacher(x).double().numpy() / 2.0
    ls = zs - np.log(np.exp(zs).sum(axis=1, keepdims=True))
    lt = zt - np.log(np.exp(zt).sum(axis=1, keepdims=True))
    expected_kd = 4.0 * (np.exp(lt) * (lt - ls)).sum(axis=1).mean()
    assert "hint" not in kl
    assert kl["kd"].item() == pytest.approx(expected_kd, rel=1e-4, abs=1e-6)

    # with the teacher cache, the teacher is not run and the loss is the same
    d.cache_teacher(train, mode=True, location="memory")
    calls: list[int] = []
    d.teacher.register_forward_pre_hook(lambda m, a: calls.append(1))
    with torch.no_grad():
        _, cached = d(x, y, idx)
    assert not calls
    torch.testing.assert_close(cached["hint"], losses["hint"], rtol=1e-4, atol=1e-5)


def test_a_smoke_fit_transfers_and_fine_tuning_runs(tiny_data, tiny_pair) -> None:
    torch.manual_seed(0)
    d = build_distiller("crossmodal", tiny_pair.student, tiny_pair.teacher)
    test = geometry_dataset("test", 100)
    result = fit(d, tiny_data.train, test, epochs=3, batch_size=50, lr=0.05)
    hints = [h["losses"]["hint"] for h in result.history]
    assert all(np.isfinite(hints)) and hints[-1] < hints[0]
    assert set(result.history[-1]["losses"]) == {"ce", "hint"}
    tuned = fit(d.student, geometry_dataset("train", 100), test, epochs=1, batch_size=50)
    assert 0.0 <= tuned.history[-1]["test_acc"] <= 100.0


def test_bad_input_is_refused(tiny_data, tiny_pair) -> None:
    s, t = tiny_pair.student, tiny_pair.teacher
    with pytest.raises(ConfigError, match="transfer"):
        build_distiller("crossmodal", s, t, transfer="pixels")
    with pytest.raises(ConfigError, match="modality"):
        build_distiller("crossmodal", s, t, modality="thermal")
    with pytest.raises(ConfigError, match="hint_weight > 0"):
        build_distiller("crossmodal", s, t, hint_weight=0.0)
    with pytest.raises(ConfigError, match="kd_weight > 0"):
        build_distiller("crossmodal", s, t, transfer="logits")
    d = build_distiller("crossmodal", s, t)
    x, y = tiny_data.train.batch(torch.arange(4))
    with pytest.raises(KDTutorError, match="bind_data"):
        d(x, y, torch.arange(4))
    with pytest.raises(KDTutorError, match="ArrayDataset"):
        d.bind_data(DataLoader(tiny_data.train, batch_size=4))
    with pytest.raises(ShapeMismatchError, match="row for row"):
        d.bind_data(tiny_data.train, paired=geometry_dataset("train", 100))
    with pytest.raises(KDTutorError, match="ArrayDataset"):
        d.pair_with(torch.zeros(3))
    d.bind_data(tiny_data.train)
    with pytest.raises(KDTutorError, match="indices"):
        d(x, y, None)
    with pytest.raises(KDTutorError, match="integer image indices"):
        geometry_images(np.array([0.5, 1.0]))
    with pytest.raises(KDTutorError, match=">= 0"):
        geometry_images(np.array([-1, 2]))
    with pytest.raises(KDTutorError, match="missing_fraction"):
        GeometryConfig(missing_fraction=1.0)
    with pytest.raises(KDTutorError, match="noise_std_range"):
        GeometryConfig(noise_std_range=(0.1, 0.0))
    with pytest.raises(UnknownNameError, match="split"):
        geometry_dataset("validation", 10)
