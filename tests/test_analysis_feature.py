"""kdtutor.analysis.feature: attention maps and attention distances."""

import math

import pytest
import torch

from kdtutor.analysis import attention_distance, attention_maps
from kdtutor.errors import KDTutorError
from kdtutor.losses.feature import at_loss
from kdtutor.models import build_model


@pytest.fixture
def models():
    torch.manual_seed(0)
    return build_model("cnn_micro"), build_model("cnn_tiny")


def test_attention_maps_are_unit_maps_of_the_right_shape(models):
    model, _ = models
    model.train()
    x = torch.randn(3, 3, 32, 32)
    maps = attention_maps(model, ["stages.0", "stages.2"], x)
    assert [tuple(m.shape) for m in maps] == [(3, 32, 32), (3, 8, 8)]
    for m in maps:
        torch.testing.assert_close(m.flatten(1).norm(dim=1), torch.ones(3))
        assert (m >= 0).all()
    assert model.training, "the model's mode is restored"
    # a single path as a string, and the definition by hand
    (one,) = attention_maps(model, "stages.1", x, p=1.0)
    model.eval()
    feature = model.stages[1](model.stages[0](x)).detach()
    by_hand = feature.abs().sum(dim=1)
    by_hand = by_hand / by_hand.flatten(1).norm(dim=1).view(-1, 1, 1)
    torch.testing.assert_close(one, by_hand)


def test_attention_distance_is_the_paper_form_of_at_loss(models):
    student, teacher = models
    x = torch.randn(4, 3, 32, 32)
    (d0, d1) = attention_distance(
        student, teacher, ["stages.1", "stages.2"], ["stages.0", "stages.2"], x
    )
    assert d0.shape == (4,) and d1.shape == (4,)
    assert ((d0 >= 0) & (d0 <= math.sqrt(2) + 1e-6)).all()
    student.eval(), teacher.eval()
    fs = student.stages[1](student.stages[0](x)).detach()
    ft = teacher.stages[0](x).detach()  # 32x32, pooled to the student's 16x16
    torch.testing.assert_close(d0.mean(), at_loss(fs, ft, mode="paper"))
    # a model is at distance 0 from itself
    (same,) = attention_distance(teacher, teacher, "stages.1", "stages.1", x)
    torch.testing.assert_close(same, torch.zeros(4), atol=1e-6, rtol=0)


def test_attention_distance_needs_paired_paths(models):
    student, teacher = models
    with pytest.raises(KDTutorError, match="one teacher path per student path"):
        attention_distance(student, teacher, ["stages.0", "stages.1"], ["stages.0"], torch.zeros(1))
