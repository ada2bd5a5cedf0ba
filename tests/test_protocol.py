"""The book-scale protocol (CONTRIBUTING.md): what its documentation promises of its pairs."""

from __future__ import annotations

import pytest

from kdtutor.bench.knowledge import PRESETS
from kdtutor.methods.feature_base import default_paths, probe_shapes
from kdtutor.models import build_model
from kdtutor.models.summary import model_summary
from kdtutor.zoo import RECIPES

BOOK = PRESETS["book"]

# (parameters, FLOPs in millions) as CONTRIBUTING.md and the registry describe them
DOCUMENTED = {
    "cnn_wide_s2": (24_346, 1.40),
    "cnn_tiny_s2": (8_754, 0.70),
    "resnet8_half_s2": (19_954, 1.62),
}


def test_the_protocol_has_more_than_two_pairs_crossing_size_with_family():
    students = [p.student for p in BOOK.pairs]
    assert students == ["cnn_wide_s2", "cnn_tiny_s2", "resnet8_half_s2"]
    assert {p.teacher for p in BOOK.pairs} == {"shapes_cnn_large"}
    assert RECIPES["shapes_cnn_large"].model == "cnn_large"
    # splits: train, then validation images after them, and a large test set
    assert (BOOK.train_size, BOOK.val_size, BOOK.test_size) == (20_000, 5_000, 10_000)
    assert BOOK.epochs == 20 and BOOK.seeds == (0, 1, 2)


@pytest.mark.parametrize("student", DOCUMENTED)
def test_students_have_their_documented_size_and_cost(student):
    cost = model_summary(build_model(student, num_classes=10), (1, 3, 32, 32), latency_runs=0)
    params, mflops = DOCUMENTED[student]
    assert cost.params == params
    assert cost.flops / 1e6 == pytest.approx(mflops, abs=0.005)


@pytest.mark.parametrize("student", DOCUMENTED)
def test_every_student_stage_meets_a_teacher_stage_of_its_size(student):
    # the stride-2 stems put every student stage at 16, 8 and 4 pixels, like the teacher's
    # first three stages, so feature methods pair stages without resizing
    s_net = build_model(student, num_classes=10)
    t_net = build_model("cnn_large", num_classes=10)
    s_paths, t_paths = default_paths(s_net, t_net, "stages", (3, 32, 32))
    s_sizes = [shape[1:] for shape in probe_shapes(s_net, s_paths, (3, 32, 32))]
    t_sizes = [shape[1:] for shape in probe_shapes(t_net, t_paths, (3, 32, 32))]
    assert s_sizes == t_sizes == [(16, 16), (8, 8), (4, 4)]
