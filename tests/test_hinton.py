"""Tests of kdtutor.experiments.hinton: transfer sets, bias shifts, error counts, the protocol."""

from __future__ import annotations

import time

import pytest
import torch
from torch import nn

from kdtutor.data import ArrayDataset, load_dataset
from kdtutor.errors import KDTutorError
from kdtutor.experiments import (
    HINTON_2015_MNIST,
    HintonConfig,
    bias_sweep,
    errors_by_class,
    final_linear,
    run_hinton_protocol,
    shift_class_bias,
    split_validation,
    transfer_subset,
    tune_bias_shift,
    tune_learning_rate,
)
from kdtutor.methods import build_distiller
from kdtutor.models import build_model


def _toy(n_per_class: int = 6, num_classes: int = 4, seed: int = 0) -> ArrayDataset:
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n_per_class * num_classes, 1, 4, 4), generator=g).to(
        torch.uint8
    )
    targets = torch.arange(num_classes).repeat(n_per_class)  # interleaved: 0 1 2 3 0 1 ...
    return ArrayDataset(images, targets, [str(c) for c in range(num_classes)], "toy")


# -- transfer sets ------------------------------------------------------------------------------
def test_transfer_subset_drop_and_keep_by_class():
    data = _toy()
    no_two = transfer_subset(data, drop_classes=[2])
    assert no_two.class_counts() == [6, 6, 0, 6]
    assert 2 not in no_two.targets.tolist()
    only = transfer_subset(data, keep_classes=[1, 3])
    assert only.class_counts() == [0, 6, 0, 6]
    # the same images, in the original order, with the same normalisation
    expected = [i for i, t in enumerate(data.targets.tolist()) if t in (1, 3)]
    assert torch.equal(only.images, data.images[expected])
    assert (only.mean, only.std, only.classes) == (data.mean, data.std, data.classes)


def test_transfer_subset_errors():
    data = _toy()
    with pytest.raises(ValueError, match="exactly one"):
        transfer_subset(data)
    with pytest.raises(ValueError, match="exactly one"):
        transfer_subset(data, keep_classes=[1], drop_classes=[2])
    with pytest.raises(ValueError, match="class indices"):
        transfer_subset(data, keep_classes=[7])
    with pytest.raises(ValueError, match="empty"):
        transfer_subset(data, drop_classes=[0, 1, 2, 3])


def test_transfer_subset_on_mnist5k():
    train = load_dataset("mnist5k", "train")
    no_threes = transfer_subset(train, drop_classes=[3])
    assert len(no_threes) == 3600 and no_threes.class_counts()[3] == 0
    sevens_eights = transfer_subset(train, keep_classes=[7, 8])
    assert sevens_eights.class_counts() == [0] * 7 + [400, 400, 0]


def test_split_validation_holds_out_per_class_and_is_disjoint():
    data = _toy()
    rest, val = split_validation(data, 2)
    assert val.class_counts() == [2, 2, 2, 2]
    assert rest.class_counts() == [4, 4, 4, 4]
    rows = {tuple(x.flatten().tolist()) for x in data.images}
    seen = [tuple(x.flatten().tolist()) for x in torch.cat([rest.images, val.images])]
    assert len(seen) == len(data) and set(seen) == rows
    # the last images of each class are held out
    assert torch.equal(val.images[val.targets == 0], data.images[data.targets == 0][-2:])
    with pytest.raises(ValueError, match="per_class"):
        split_validation(data, 6)
    with pytest.raises(ValueError, match="per_class"):
        split_validation(data, 0)


# -- bias shifts --------------------------------------------------------------------------------
def test_shift_class_bias_changes_only_that_bias_and_shifts_the_logit_exactly():
    torch.manual_seed(0)
    model = build_model("mlp", num_classes=10, in_channels=1, hidden=(16,), image_size=8).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    shifted = shift_class_bias(model, {3: 3.5})
    # the original is untouched
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])
    # only fc.bias[3] differs, by exactly 3.5
    after = shifted.state_dict()
    for k, v in before.items():
        if k == "fc.bias":
            diff = after[k] - v
            assert diff[3].item() == pytest.approx(3.5)
            assert torch.count_nonzero(torch.cat([diff[:3], diff[4:]])) == 0
        else:
            assert torch.equal(after[k], v), k
    x = torch.randn(5, 1, 8, 8)
    with torch.no_grad():
        delta = shifted(x) - model(x)
    expected = torch.zeros(5, 10)
    expected[:, 3] = 3.5
    torch.testing.assert_close(delta, expected, atol=1e-5, rtol=0)


def test_shift_several_classes_and_distillers():
    student = build_model("mlp", num_classes=10, in_channels=1, hidden=(8,), image_size=8)
    teacher = build_model("mlp", num_classes=10, in_channels=1, hidden=(8,), image_size=8)
    distiller = build_distiller("kd", student, teacher, T=20)
    shifted = shift_class_bias(distiller, {7: -7.6, 8: -7.6})
    diff = shifted.fc.bias - student.fc.bias
    assert diff[7].item() == pytest.approx(-7.6) and diff[8].item() == pytest.approx(-7.6)
    assert torch.count_nonzero(diff[:7]) == 0 and diff[9].item() == 0


def test_final_linear_finds_the_head_or_says_why_not():
    seq = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 3))
    assert final_linear(seq) is seq[3]
    assert final_linear(seq, layer="1") is seq[1]
    with pytest.raises(KDTutorError, match=r"no nn\.Linear"):
        final_linear(nn.Sequential(nn.Flatten(), nn.ReLU()))
    with pytest.raises(KDTutorError, match="no bias"):
        final_linear(nn.Sequential(nn.Linear(4, 3, bias=False)))
    with pytest.raises(KDTutorError, match=r"not an nn\.Linear"):
        final_linear(seq, layer="2")
    with pytest.raises(KDTutorError, match="has no module"):
        final_linear(seq, layer="head")
    with pytest.raises(ValueError, match="class indices"):
        shift_class_bias(seq, {5: 1.0})


# -- error counts -------------------------------------------------------------------------------
def test_errors_by_class_matches_a_hand_loop():
    torch.manual_seed(1)
    data = load_dataset("mnist5k", "test", size=300)
    model = build_model("mlp", num_classes=10, in_channels=1, hidden=(32,), image_size=28)
    counts = errors_by_class(model, data, batch_size=64)
    hand = [0] * 10
    model.eval()
    with torch.no_grad():
        for i in range(len(data)):
            x, y = data[i]
            if int(model(x.unsqueeze(0)).argmax()) != y:
                hand[y] += 1
    assert counts.tolist() == hand
    assert counts.dtype == torch.int64


def test_bias_sweep_equals_shifting_the_model():
    torch.manual_seed(2)
    data = load_dataset("mnist5k", "test", size=200)
    model = build_model("mlp", num_classes=10, in_channels=1, hidden=(32,), image_size=28)
    shifts = [0.0, 0.7, 2.0]
    rows = bias_sweep(model, data, [3, 5], shifts)
    for row, s in zip(rows, shifts, strict=True):
        direct = errors_by_class(shift_class_bias(model, {3: s, 5: s}), data)
        assert row.tolist() == direct.tolist()


def test_tune_bias_shift_finds_the_bias_that_was_removed():
    # a "model" whose logits are 2.5 x the one-hot label with logit 3 pushed down by 3: raising
    # the bias of 3 by anything in (0.5, 5.5) fixes every 3 without hurting the others
    data = _toy(n_per_class=5, num_classes=4)

    class Oracle(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(1, 4)
            with torch.no_grad():
                self.fc.weight.zero_()
                self.fc.bias.zero_()
            self.labels = data.targets

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            n = x.shape[0]
            z = torch.nn.functional.one_hot(self.labels[:n], 4).float() * 2.5
            z[:, 3] -= 3.0
            return z + self.fc(torch.zeros(n, 1))

    shifts = [6.0, 0.0, 0.25, 1.0, 2.0, 5.0]
    best, totals = tune_bias_shift(Oracle(), data, [3], shifts)
    assert totals.tolist() == [15, 5, 5, 0, 0, 0]
    assert best == 2.0  # the middle of the tied minimum {1, 2, 5}
    with pytest.raises(ValueError, match="empty"):
        tune_bias_shift(Oracle(), data, [3], [])


# -- the protocol -------------------------------------------------------------------------------
def test_published_numbers_are_those_of_the_paper():
    h = HINTON_2015_MNIST
    assert (h["teacher_errors"], h["alone_errors"], h["kd_errors"]) == (67, 146, 74)
    assert (h["omit_errors"], h["omit_errors_shifted"], h["omit_shift"]) == (206, 109, 3.5)
    assert (h["omit_class_errors"], h["omit_class_errors_shifted"]) == (133, 14)
    assert (h["only_error_rate"], h["only_error_rate_shifted"], h["only_shift"]) == (
        47.3,
        13.2,
        -7.6,
    )


def _tiny_config(**kw) -> HintonConfig:
    return HintonConfig(
        student="mlp",
        student_kwargs={"hidden": (32,)},
        epochs=1,
        val_per_class=5,
        lr_alone=(0.01,),
        omit_grid=(0.0, 1.0, 2.0),
        only_grid=(0.0, -1.0, -2.0),
        **kw,
    )


def test_protocol_smoke_run_is_fast_and_complete():
    start = time.perf_counter()
    torch.manual_seed(0)
    train = load_dataset("mnist5k", "train", size=300)
    test = load_dataset("mnist5k", "test", size=200)
    teacher = build_model("mlp", num_classes=10, in_channels=1, hidden=(32,), image_size=28)
    lines: list[str] = []
    out = run_hinton_protocol(0, teacher, train, test, _tiny_config(), log=lines.append)
    assert time.perf_counter() - start < 10
    assert len(lines) == 4
    assert out["sizes"] == {"pool": 250, "validation": 50, "omit": 225, "only": 50}
    assert out["n_test"] == 200 and sum(out["test_class_counts"]) == 200
    assert out["alone"]["lr"] == [0.01] and 0 <= out["alone"]["errors"][0] <= 200
    assert sum(out["kd"]["errors_by_class"]) == out["kd"]["errors"]
    for key, shift in (("omit", 3.5), ("only", -7.6)):
        rep = out[key]
        assert rep["hinton_shift"] == shift
        assert rep["tuned_shift"] in rep["grid"]
        assert len(rep["val_errors"]) == len(rep["test_errors"]) == 3
        assert rep["test_errors"][0] == rep["errors"]  # the grid starts at 0: no shift
        assert sum(rep["errors_by_class_tuned"]) == rep["errors_tuned"]


def test_protocol_is_deterministic_and_respects_experiments():
    train = load_dataset("mnist5k", "train", size=200)
    test = load_dataset("mnist5k", "test", size=100)
    torch.manual_seed(0)
    teacher = build_model("mlp", num_classes=10, in_channels=1, hidden=(16,), image_size=28)
    cfg = _tiny_config(experiments=("kd", "omit"))
    a = run_hinton_protocol(1, teacher, train, test, cfg)
    b = run_hinton_protocol(1, teacher, train, test, cfg)
    assert "alone" not in a and "only" not in a
    assert a["kd"] == b["kd"] and a["omit"]["test_errors"] == b["omit"]["test_errors"]
    with pytest.raises(ValueError, match="unknown experiments"):
        run_hinton_protocol(0, teacher, train, test, _tiny_config(experiments=("nope",)))


def test_tune_learning_rate_reports_divergence_as_none():
    train = load_dataset("mnist5k", "train", size=200)
    out = tune_learning_rate(0, train, [0.01, 1e10], _tiny_config())
    assert list(out) == [0.01, 1e10]
    assert isinstance(out[0.01], int) and out[1e10] is None


# -- coursework -----------------------------------------------------------------------------------
def test_check_shift_class_bias_accepts_the_package_and_names_mistakes(capsys):
    import copy as _copy

    from kdtutor.coursework.hinton import BiasShiftCheckError, check_shift_class_bias

    assert check_shift_class_bias(shift_class_bias)
    assert "✓" in capsys.readouterr().out

    def in_place(model, shifts):
        with torch.no_grad():
            for c, d in shifts.items():
                model.fc.bias[c] += d
        return model

    def wrong_sign(model, shifts):
        return shift_class_bias(model, {c: -d for c, d in shifts.items()})

    def every_class(model, shifts):
        d = next(iter(shifts.values()))
        return shift_class_bias(model, dict.fromkeys(range(10), d))

    def weights(model, shifts):
        new = _copy.deepcopy(model)
        with torch.no_grad():
            for c, d in shifts.items():
                new.fc.weight[c] += d
        return new

    for fn, words in [
        (in_place, "original model changed"),
        (wrong_sign, "wrong way"),
        (every_class, "moved too"),
        (weights, "depends on the input"),
        (lambda m, s: None, "returned NoneType"),
    ]:
        with pytest.raises(BiasShiftCheckError, match=words):
            check_shift_class_bias(fn, verbose=False)
