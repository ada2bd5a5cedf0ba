"""kdtutor.analysis.relation: relation gaps; the features and bank costs the relation notebook uses."""

import copy

import pytest
import torch
from torch import nn

from kdtutor.analysis import relation_gaps
from kdtutor.data import load_dataset
from kdtutor.errors import KDTutorError
from kdtutor.features import probe_features
from kdtutor.losses.relation import rkd_angle_loss, rkd_distance_loss, sp_loss
from kdtutor.methods import build_distiller
from kdtutor.models import build_model


def _model(width=6, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, width, 3, padding=1),
        nn.BatchNorm2d(width),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(width, 5),
    )


def features(model, path, x, batch_size=512):
    """The relation notebook's features: probe_features batch by batch, flattened."""
    chunks = [probe_features(model, c, [path])[1][path] for c in x.split(batch_size)]
    return torch.cat(chunks).flatten(1)


def test_features_batch_by_batch_are_those_of_one_eval_forward():
    # the relation notebook compares features computed 512 inputs at a time: in eval mode
    # they are those of one forward pass on all inputs, and the model's mode is restored
    model = _model().train()
    x = torch.randn(7, 1, 8, 8)
    out = features(model, "4", x, batch_size=3)
    assert out.shape == (7, 6) and not out.requires_grad
    assert model.training
    model.eval()
    with torch.no_grad():
        expected = model[:5](x)
    torch.testing.assert_close(out, expected)
    assert features(model, "0", x).shape == (7, 6 * 8 * 8)  # feature maps are flattened


def test_relation_gaps_average_the_losses_over_fixed_batches():
    gen = torch.Generator().manual_seed(0)
    fs, ft = torch.randn(50, 4, 2, 2, generator=gen), torch.randn(50, 6, generator=gen)
    gaps = relation_gaps(fs, ft, batch_size=16, seed=3)
    assert set(gaps) == {"rkd_distance", "rkd_angle", "sp"}
    order = torch.randperm(50, generator=torch.Generator().manual_seed(3))
    s, t = fs[order].flatten(1), ft[order]
    batches = [slice(i * 16, (i + 1) * 16) for i in range(3)]  # 50 // 16 = 3; the rest dropped
    for name, loss in (
        ("sp", sp_loss),
        ("rkd_distance", rkd_distance_loss),
        ("rkd_angle", rkd_angle_loss),
    ):
        want = sum(float(loss(s[b], t[b])) for b in batches) / 3
        assert gaps[name] == pytest.approx(want, rel=1e-6)


def test_a_copy_of_the_teacher_has_no_gap_and_only_asked_gaps_are_computed():
    teacher = _model(6, seed=2)
    x = torch.randn(50, 1, 8, 8)
    ft = features(teacher, "4", x)
    fs = features(copy.deepcopy(teacher), "4", x)
    gaps = relation_gaps(fs, ft, batch_size=25, gaps=("sp", "rkd_distance"))
    assert set(gaps) == {"sp", "rkd_distance"}
    assert gaps["sp"] == pytest.approx(0.0, abs=1e-10)
    assert gaps["rkd_distance"] == pytest.approx(0.0, abs=1e-8)
    rotated = relation_gaps(ft * 3.0, ft, batch_size=25, gaps=("rkd_distance", "rkd_angle"))
    assert rotated["rkd_distance"] == pytest.approx(0.0, abs=1e-8)  # blind to the scale


def test_relation_gaps_errors():
    f = torch.randn(10, 3)
    with pytest.raises(KDTutorError, match="unknown relation gaps"):
        relation_gaps(f, f, batch_size=5, gaps=("cc",))
    with pytest.raises(KDTutorError, match="at least one batch"):
        relation_gaps(f, f, batch_size=64)
    with pytest.raises(KDTutorError, match="the same samples"):
        relation_gaps(f, f[:9], batch_size=5)


def test_crd_memory_banks_cost_what_the_relation_notebook_says():
    # the notebook prices CRD's banks as 2 x N x 128 float32 values: check against the method
    train = load_dataset("mnist5k", "train", size=300)
    student = build_model("cnn_tiny", num_classes=10, in_channels=1)
    teacher = build_model("cnn_tiny", num_classes=10, in_channels=1)
    crd = build_distiller("crd", student, teacher, input_shape=(1, 28, 28), num_negatives=16)
    crd.bind_data(train)
    banks = (crd.memory_student, crd.memory_teacher)
    assert sum(b.numel() * b.element_size() for b in banks) == 2 * len(train) * 128 * 4
