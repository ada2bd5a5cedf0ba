"""Connectors built from feature shapes, the FeatureDistiller base and FitNets."""

import numpy as np
import pytest
import torch
from torch import nn

from kdtutor.connectors import build_connector, match_spatial
from kdtutor.data import load_dataset
from kdtutor.errors import KDTutorError, ShapeMismatchError
from kdtutor.losses.feature import hint_loss
from kdtutor.methods import build_distiller
from kdtutor.methods.feature_base import (
    default_paths,
    guess_input_shape,
    pair_by_resolution,
    probe_shapes,
)
from kdtutor.models import build_model
from kdtutor.train import fit


@pytest.mark.parametrize(
    ("student", "teacher", "kind", "expected"),
    [
        ((16, 32, 32), (64, 8, 8), "auto", "resize 32x32->8x8, conv1x1+bn 16->64"),
        ((16, 4, 4), (64, 8, 8), "auto", "conv1x1+bn 16->64, resize 4x4->8x8"),
        ((64, 8, 8), (64, 8, 8), "auto", "identity"),
        ((64, 8, 8), (64, 8, 8), "conv", "conv1x1+bn 64->64"),
        ((64, 16, 16), (64, 8, 8), "interpolate", "resize 16x16->8x8"),
        ((32,), (128,), "auto", "linear 32->128"),
        ((32,), (32,), "linear", "linear 32->32"),
    ],
)
def test_connector_maps_student_shape_to_teacher_shape(student, teacher, kind, expected):
    connector = build_connector(student, teacher, kind)
    assert connector.description == expected
    out = connector(torch.randn(3, *student))
    assert tuple(out.shape) == (3, *teacher)


@pytest.mark.parametrize(
    ("student", "teacher", "kind", "needle"),
    [
        ((16, 8, 8), (64,), "auto", "both must be feature maps"),
        ((16, 8, 8), (64, 8, 8), "interpolate", "cannot change channels"),
        ((16, 8, 8), (16, 4, 4), "identity", "differ"),
        ((16,), (32,), "interpolate", "Use connector='linear'"),
        ((16, 8, 8), (32, 8, 8), "linear", "maps vectors"),
    ],
)
def test_connector_errors_name_both_shapes_and_the_fix(student, teacher, kind, needle):
    with pytest.raises(ShapeMismatchError, match=needle) as info:
        build_connector(student, teacher, kind, where="'a' -> 'b'")
    assert str(student[0]) in str(info.value)


def test_match_spatial_pools_down_and_interpolates_up():
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    pooled = match_spatial(x, (2, 2))
    by_hand = np.arange(16.0).reshape(2, 2, 2, 2).transpose(0, 2, 1, 3).reshape(4, 4).mean(1)
    np.testing.assert_allclose(pooled.flatten().numpy(), by_hand)
    assert match_spatial(x, (8, 8)).shape == (1, 1, 8, 8)
    assert match_spatial(x, (4, 4)) is x


def test_default_paths_pair_stages_by_resolution_or_depth():
    student, teacher = build_model("cnn_small"), build_model("cnn_large")
    # without an input shape: deepest with deepest
    s, t = default_paths(student, teacher, "stages")
    assert s == ("stages.0", "stages.1", "stages.2") and t == ("stages.1", "stages.2", "stages.3")
    # with one: by spatial size (student 32,16,8 px; teacher 16,8,4,2 px)
    s, t = default_paths(student, teacher, "stages", (3, 32, 32))
    assert s == ("stages.1", "stages.2") and t == ("stages.0", "stages.1")
    assert default_paths(student, teacher, "hint", (3, 32, 32)) == (("stages.2",), ("stages.1",))
    assert default_paths(student, teacher, "last") == (("stages.2",), ("stages.3",))
    assert default_paths(student, teacher, "embedding") == (("flatten",), ("flatten",))
    s, t = default_paths(student, teacher, "preact", (3, 32, 32))
    assert all(p.endswith("relu:input") for p in s + t) and len(s) == 2


@pytest.mark.parametrize(
    ("student", "teacher", "expected"),
    [
        (
            [(32, 32), (16, 16), (8, 8)],
            [(32, 32), (16, 16), (8, 8), (4, 4)],
            [(0, 0), (1, 1), (2, 2)],
        ),
        ([(32, 32), (16, 16), (8, 8)], [(16, 16), (8, 8), (4, 4), (2, 2)], [(1, 0), (2, 1)]),
        ([(8, 8)], [(16, 16), (8, 8), (8, 8)], [(0, 2)]),  # ties: the deeper teacher stage
        ([(16, 16), (4, 4)], [(32, 32), (8, 8)], [(1, 1)]),  # one student stage per teacher stage
    ],
)
def test_pair_by_resolution(student, teacher, expected):
    assert pair_by_resolution(student, teacher) == expected


def test_default_paths_need_annotated_models():
    plain = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.LazyLinear(10))
    with pytest.raises(KDTutorError, match="student_paths"):
        default_paths(plain, build_model("cnn_small"), "stages")


def test_probe_shapes_and_input_guess():
    model = build_model("cnn_large")
    assert guess_input_shape(model) == (3, 32, 32)
    shapes = probe_shapes(model, ["stages.0", "flatten"], (3, 32, 32))
    assert shapes == [(32, 16, 16), (256,)]
    assert model.training  # mode restored
    with pytest.raises(ShapeMismatchError, match="input_shape"):
        probe_shapes(model, ["stages.0"], (1, 28, 28))


def test_student_and_teacher_with_different_inputs_is_a_clear_error():
    student = build_model("cnn_tiny", in_channels=1)
    with pytest.raises(ShapeMismatchError, match="teacher"):
        build_distiller("fitnet", student, build_model("cnn_medium"), input_shape=(1, 28, 28))


def test_distiller_built_for_other_inputs_refuses_data(tiny_pair):
    distiller = build_distiller("fitnet", tiny_pair.student, tiny_pair.teacher)
    smaller = load_dataset("shapes", "train", size=64, image_size=24, cache=False)
    with pytest.raises(ShapeMismatchError, match=r"input_shape=\(3, 24, 24\)"):
        fit(distiller, smaller, epochs=1)
    # data with other channels is refused earlier, naming the network that does not fit
    digits = load_dataset("mnist5k", "train", size=64)
    with pytest.raises(ShapeMismatchError, match="student takes 3-channel images"):
        fit(distiller, digits, epochs=1)


def test_explicit_paths_must_pair_and_exist(tiny_pair):
    teacher, student = tiny_pair
    with pytest.raises(KDTutorError, match="pair up"):
        build_distiller("fitnet", student, teacher, student_paths=("stages.0",))
    with pytest.raises(KDTutorError, match=r"stages\.9"):
        build_distiller(
            "fitnet", student, teacher, student_paths=("stages.9",), teacher_paths=("stages.1",)
        )


def test_hint_loss_is_mean_squared_error_by_hand():
    rng = np.random.default_rng(0)
    s, t = rng.normal(size=(2, 3, 4, 4)), rng.normal(size=(2, 3, 4, 4))
    by_hand = sum((a - b) ** 2 for a, b in zip(s.ravel(), t.ravel(), strict=True)) / s.size
    assert hint_loss(torch.tensor(s), torch.tensor(t)).item() == pytest.approx(by_hand)
    with pytest.raises(ShapeMismatchError, match="connector"):
        hint_loss(torch.zeros(2, 3, 4, 4), torch.zeros(2, 4, 4, 4))


def test_fitnet_gradients_reach_student_and_regressor_not_teacher():
    torch.manual_seed(0)
    teacher = build_model("cnn_medium")
    distiller = build_distiller("fitnet", build_model("cnn_tiny"), teacher)
    x, y = torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,))
    _, losses = distiller(x, y)
    assert set(losses) == {"ce", "hint"}
    sum(losses.values()).backward()
    conv = next(m for m in distiller.connectors[0] if isinstance(m, nn.Conv2d))
    assert conv.weight.grad.abs().sum() > 0
    assert distiller.student.stages[0].blocks[0].conv.weight.grad.abs().sum() > 0
    assert all(p.grad is None and not p.requires_grad for p in teacher.parameters())
    trainable = {id(p) for p in distiller.trainable_parameters()}
    assert id(conv.weight) in trainable
    assert not trainable & {id(p) for p in teacher.parameters()}


def test_fitnet_is_zero_when_regressed_student_equals_teacher():
    teacher = build_model("cnn_tiny")
    distiller = build_distiller(
        "fitnet", build_model("cnn_tiny"), teacher, connector="identity", ce_weight=0.0
    )
    distiller.student.load_state_dict(teacher.state_dict())
    distiller.eval()
    _, losses = distiller(torch.randn(4, 3, 32, 32), torch.zeros(4, dtype=torch.long))
    assert losses["hint"].item() == pytest.approx(0.0, abs=1e-10)


def test_fitnet_two_stages_run_through_the_trainer(tiny_data, tiny_pair):
    distiller = build_distiller(
        "fitnet", tiny_pair.student, tiny_pair.teacher, init_epochs=1, ce_weight=0.1, kd_weight=0.9
    )
    result = fit(distiller, tiny_data.train, epochs=2, batch_size=64)
    assert set(result.history[0]["losses"]) == {"hint"}
    assert set(result.history[1]["losses"]) == {"ce", "kd"}
