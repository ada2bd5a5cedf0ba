"""kdtutor.bench.cost: FLOPs of one real training step, a run's cost, a zoo teacher's cost.

Every expected count is built from forward FLOPs measured apart (``model_summary`` of the
networks, of the first convolution, of a connector) and the rule each test states, never
from ``step_flops`` itself. Online methods (DML, CS-KD) get their own cost tests with them.
"""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch
from torch import nn

from kdtutor.bench.cost import Cost, network_flops, run_cost, step_flops, teacher_cost
from kdtutor.config import ConfigError
from kdtutor.data import Batch, BatchLoader
from kdtutor.errors import KDTutorError, NotAModelError, ShapeMismatchError, UnknownNameError
from kdtutor.methods import Steps, build_distiller
from kdtutor.methods.kd import KD
from kdtutor.models import build_model
from kdtutor.models.summary import model_summary
from kdtutor.train import FitResult
from kdtutor.zoo import read_manifest

B = 32


def forward_flops(model: nn.Module, shape: tuple[int, ...]) -> int:
    """Forward FLOPs of ``model`` on a batch of ``shape``, as model_summary counts them."""
    return model_summary(model, shape, latency_runs=0).flops


def first_conv(model: nn.Module) -> nn.Conv2d:
    return next(m for m in model.modules() if isinstance(m, nn.Conv2d))


def wide_student() -> nn.Module:
    torch.manual_seed(0)
    return build_model("cnn_wide_s2")


@pytest.fixture(scope="module")
def batch(tiny_data) -> Batch:
    return next(iter(BatchLoader(tiny_data.train, B, shuffle=True, seed=0)))


def fake_result(method: str, seconds: list[float], **config) -> FitResult:
    history = [{"epoch": e + 1, "seconds": s} for e, s in enumerate(seconds)]
    return FitResult(method, history, 50.0, 1, 50.0, sum(seconds), config=config)


# -- step_flops ---------------------------------------------------------------------------
def test_a_students_step_costs_three_forwards_less_the_first_convs_input_gradient(batch):
    """Backward = 2 x forward (one product for the input gradient, one for the weights'),
    except that the first convolution computes no input gradient (the images do not train):
    3 F - F_conv1 = 2.84 F for cnn_wide_s2, inside the design's [2.5, 3.0] F."""
    student = wide_student()
    flops = step_flops(build_distiller("scratch", student), batch)
    forward = forward_flops(student, (B, 3, 32, 32))
    conv1 = forward_flops(first_conv(student), (B, 3, 32, 32))
    assert 2.5 * forward <= flops <= 3.0 * forward
    assert flops == 3 * forward - conv1
    assert 0.15 < conv1 / forward < 0.16  # the stride-2 stem: why the ratio is 2.84


def test_a_single_trained_layer_fed_by_the_data_costs_two_forwards(batch):
    """The same rule where it shows most: a linear layer on the images computes only its
    weight gradient, so its step is exactly 2 x its forward."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 10))
    assert step_flops(build_distiller("scratch", model), batch) == 2 * (2 * 3072 * 10 * B)


def test_kd_adds_one_teacher_forward_uncached_and_nothing_cached(batch, tiny_pair):
    scratch = step_flops(build_distiller("scratch", wide_student()), batch)
    kd = build_distiller("kd", wide_student(), tiny_pair.teacher)
    teacher = forward_flops(tiny_pair.teacher, (B, 3, 32, 32))
    assert step_flops(kd, batch, teacher_cached=False) == scratch + teacher
    assert step_flops(kd, batch) == scratch  # the stand-in cache: no teacher in the step
    assert kd.teacher_forward_calls == 0 and kd.teacher_cache is None


def test_fitnet_adds_its_connectors_forward_and_backward(batch, tiny_pair):
    """The hint regressor (conv1x1 + BN) trains and its input (a student feature) needs a
    gradient: 3 x its forward; the student's own backward is unchanged."""
    scratch = step_flops(build_distiller("scratch", wide_student()), batch)
    fitnet = build_distiller("fitnet", wide_student(), tiny_pair.teacher)
    (connector,) = fitnet.connectors
    (shape,) = fitnet.student_shapes
    regressor = forward_flops(connector, (B, *shape))
    assert regressor > 0
    cached = step_flops(fitnet, batch)
    assert cached == scratch + 3 * regressor
    teacher = forward_flops(tiny_pair.teacher, (B, 3, 32, 32))
    assert step_flops(fitnet, batch, teacher_cached=False) == cached + teacher


def test_the_distiller_comes_back_bit_identical(batch, tiny_pair):
    """Weights, batch-norm running statistics and counts, gradients, modes, the RNG."""
    kd = build_distiller("kd", wide_student(), tiny_pair.teacher)
    kd.student.eval()  # mixed modes: the distiller in train mode, its student in eval
    before = {k: v.clone() for k, v in kd.state_dict().items()}
    modes = [m.training for m in kd.modules()]
    rng = torch.get_rng_state()

    # a real lr-0 step changes the running statistics: restoring them is not a no-op
    control = copy.deepcopy(kd)
    control.train()
    sgd = torch.optim.SGD(control.student.parameters(), lr=0.0)
    control.train_step(batch, Steps(control, {"student": sgd}))
    moved = [k for k, v in control.state_dict().items() if not torch.equal(v, before[k])]
    assert "student.stages.0.blocks.0.bn.running_mean" in moved
    assert "student.stages.0.blocks.0.bn.num_batches_tracked" in moved

    for cached in (True, False):
        step_flops(kd, batch, teacher_cached=cached)
        after = kd.state_dict()
        assert after.keys() == before.keys()
        for key, value in before.items():
            assert torch.equal(after[key], value), key
        assert all(p.grad is None for p in kd.parameters())
        assert [m.training for m in kd.modules()] == modes
        assert torch.equal(torch.get_rng_state(), rng)


def test_the_rng_is_forked_around_a_step_that_draws(batch):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Dropout(0.5), nn.Linear(3072, 10))
    distiller = build_distiller("scratch", model)
    rng = torch.get_rng_state()
    model.train()
    model(batch.x)  # control: dropout in train mode draws from the global RNG
    assert not torch.equal(torch.get_rng_state(), rng)
    rng = torch.get_rng_state()
    step_flops(distiller, batch)
    assert torch.equal(torch.get_rng_state(), rng)


def test_step_flops_takes_an_x_y_pair_and_refuses_what_it_cannot_count(batch, tiny_pair):
    scratch = build_distiller("scratch", wide_student())
    assert step_flops(scratch, (batch.x, batch.y)) == step_flops(scratch, batch)
    with pytest.raises(NotAModelError, match="build_distiller\\('scratch', model\\)"):
        step_flops(wide_student(), batch)
    kd = build_distiller("kd", wide_student(), tiny_pair.teacher)
    with pytest.raises(KDTutorError, match="rows=None"):
        step_flops(kd, batch._replace(rows=None))
    with pytest.raises(KDTutorError, match="not in the batch"):
        step_flops(AsksForOtherRows(wide_student(), tiny_pair.teacher), batch)


class AsksForOtherRows(KD):
    """Reads the teacher for rows the measured batch does not hold (not registered)."""

    def forward(self, x, y, index=None):
        return super().forward(x, y, None if index is None else index + 10_000)


# -- run_cost -----------------------------------------------------------------------------
def test_run_cost_counts_every_image_of_every_epoch(tiny_data):
    """N = 200 images in batches of 64: 64 + 64 + 64 + 8 per epoch, 3 epochs, summed batch
    by batch (so the last partial batch is counted as itself, not as a full one)."""
    train = tiny_data.train
    assert len(train) == 200
    batches = list(BatchLoader(train, 64))
    assert [len(b.y) for b in batches] == [64, 64, 64, 8]
    scratch = build_distiller("scratch", wide_student())
    epoch = sum(step_flops(scratch, b) for b in batches)
    cost = run_cost(scratch, train, fake_result("scratch", [1.0, 2.5, 0.5]), batch_size=64)
    assert cost.flops == 3 * epoch
    assert cost.seconds == 4.0
    # a full last batch would have been 4 x 64 = 256 images per epoch
    assert cost.flops < 3 * 4 * step_flops(scratch, batches[0])


def test_run_cost_of_kd_charges_the_cache_fill_or_the_teachers_steps(tiny_data, tiny_pair):
    train = tiny_data.train
    batches = list(BatchLoader(train, 64))
    kd = build_distiller("kd", wide_student(), tiny_pair.teacher)
    scratch_epoch = sum(step_flops(build_distiller("scratch", wide_student()), b) for b in batches)
    teacher_image = forward_flops(tiny_pair.teacher, (1, 3, 32, 32))
    result = fake_result("kd", [1.0, 1.0])
    cached = run_cost(kd, train, result, batch_size=64)
    assert cached.flops == 2 * scratch_epoch + 200 * teacher_image  # one pass fills the cache
    views = run_cost(kd, train, fake_result("kd", [1.0, 1.0], cache_views=2), batch_size=64)
    assert views.flops == 2 * scratch_epoch + 2 * 200 * teacher_image  # two fixed views each
    uncached = run_cost(kd, train, result, batch_size=64, teacher_cached=False)
    assert uncached.flops == 2 * (scratch_epoch + 200 * teacher_image)  # every epoch


def test_run_cost_takes_out_evaluation_seconds_once_fit_records_them(tiny_data):
    scratch = build_distiller("scratch", wide_student())
    result = fake_result("scratch", [2.0, 2.0])
    for record in result.history:
        record["eval_seconds"] = 0.25
    assert run_cost(scratch, tiny_data.train, result, batch_size=64).seconds == 3.5


def test_run_cost_refuses_a_mismatched_result_or_bad_arguments(tiny_data):
    scratch = build_distiller("scratch", wide_student())
    with pytest.raises(KDTutorError, match="result of a 'kd' run"):
        run_cost(scratch, tiny_data.train, fake_result("kd", [1.0]), batch_size=64)
    with pytest.raises(ConfigError, match="batch_size"):
        run_cost(scratch, tiny_data.train, fake_result("scratch", [1.0]), batch_size=0)
    with pytest.raises(KDTutorError, match="ArrayDataset"):
        run_cost(scratch, list(tiny_data.train), fake_result("scratch", [1.0]), batch_size=64)


# -- teacher_cost, network_flops, Cost ------------------------------------------------------
def test_teacher_cost_of_the_book_teacher_follows_its_manifest():
    entry = read_manifest()["shapes_cnn_large"]
    epochs = entry["train_config"]["epochs"]
    assert (epochs, entry["dataset"]) == (30, "shapes")
    model = build_model("cnn_large")
    per_image = 3 * forward_flops(model, (1, 3, 32, 32)) - forward_flops(
        first_conv(model), (1, 3, 32, 32)
    )
    cost = teacher_cost("shapes_cnn_large")
    assert cost.flops == per_image * 20_000 * epochs
    assert 47e12 < cost.flops < 47.5e12  # the design note's hand count: 47.5 TFLOPs
    assert cost.seconds == entry["train_seconds"]
    assert teacher_cost("zoo:shapes_cnn_large") == cost
    with pytest.raises(UnknownNameError, match="shapes_cnn_large"):
        teacher_cost("shapes_cnn_larg")


def test_network_flops_is_model_summarys_forward_per_sample():
    student = wide_student()
    student.train()
    before = {k: v.clone() for k, v in student.state_dict().items()}
    expected = model_summary(student, (1, 3, 32, 32), latency_runs=0).flops_per_sample
    assert network_flops(student, (3, 32, 32)) == expected == 1_402_112
    assert student.training  # its mode back, and no running statistic moved
    assert all(torch.equal(v, before[k]) for k, v in student.state_dict().items())
    distiller = build_distiller("scratch", student)
    assert network_flops(distiller.predict, (3, 32, 32)) == expected
    student.eval()
    other = build_model("cnn_tiny_s2").eval()

    def ensemble(x):
        return (student(x).softmax(1) + other(x).softmax(1)) / 2

    assert network_flops(ensemble, (3, 32, 32)) == expected + 701_056


def test_network_flops_refuses_a_batch_first_shape_and_non_networks():
    with pytest.raises(ShapeMismatchError, match="without the batch"):
        network_flops(wide_student(), (1, 3, 32, 32))
    with pytest.raises(ShapeMismatchError, match="positive shape"):
        network_flops(wide_student(), (3, 0, 32))
    with pytest.raises(NotAModelError):
        network_flops("cnn_wide_s2", (3, 32, 32))  # type: ignore[arg-type]


def test_costs_add_and_scale():
    run, teacher = Cost(2e12, 80), Cost(4.5e13, 200.0)
    assert run + teacher == Cost(4.7e13, 280.0)
    assert teacher.scaled(1 / 2) == Cost(2.25e13, 100.0)
    assert teacher.scaled(0) == Cost()
    assert sum([run, teacher, run]) == Cost(4.9e13, 360.0)
    assert isinstance(run.seconds, float)
    assert str(run) == "2 TFLOPs, 80.0 s"
    with pytest.raises(dataclasses.FrozenInstanceError):
        run.flops = 0.0  # type: ignore[misc]
    with pytest.raises(TypeError):
        run + 1  # type: ignore[operator]
    with pytest.raises(ConfigError, match="finite and >= 0"):
        Cost(-1.0)
    with pytest.raises(ConfigError, match="finite and >= 0"):
        Cost(0.0, float("nan"))
    with pytest.raises(ConfigError, match="finite factor >= 0"):
        run.scaled(-1)
