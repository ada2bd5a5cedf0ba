"""What the Hinton chapter (book/02-principles/hinton-mnist.ipynb) relies on, checked through
the package pieces it calls: its transfer sets, a bias shift as a logit shift, the paper's
numbers. Its protocol is written in the notebook, which runs at smoke scale in
tests/test_notebooks.py."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from kdtutor.analysis import errors_by_class, predict_logits, shift_class_bias
from kdtutor.bench.published import HINTON_2015_MNIST
from kdtutor.data import ArrayDataset, load_dataset
from kdtutor.models import build_model


def _toy(n_per_class: int = 6, num_classes: int = 4, seed: int = 0) -> ArrayDataset:
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n_per_class * num_classes, 1, 4, 4), generator=g).to(
        torch.uint8
    )
    targets = torch.arange(num_classes).repeat(n_per_class)  # interleaved: 0 1 2 3 0 1 ...
    return ArrayDataset(images, targets, [str(c) for c in range(num_classes)], "toy")


# -- transfer sets: select_classes ---------------------------------------------------------------
def test_a_transfer_set_keeps_the_images_of_its_classes_in_order():
    data = _toy()
    no_two = data.select_classes([c for c in range(4) if c != 2])
    assert no_two.class_counts() == [6, 6, 0, 6]
    only = data.select_classes([1, 3])
    assert only.class_counts() == [0, 6, 0, 6]
    # the same images, in the original order, with the same classes and normalisation
    expected = [i for i, t in enumerate(data.targets.tolist()) if t in (1, 3)]
    assert torch.equal(only.images, data.images[expected])
    assert (only.mean, only.std, only.classes) == (data.mean, data.std, data.classes)
    with pytest.raises(ValueError, match="not labels"):
        data.select_classes([7])


def test_the_transfer_sets_of_mnist5k():
    train = load_dataset("mnist5k", "train")
    no_threes = train.select_classes([c for c in range(10) if c != 3])
    assert len(no_threes) == 3600 and no_threes.class_counts()[3] == 0
    sevens_eights = train.select_classes([7, 8])
    assert sevens_eights.class_counts() == [0] * 7 + [400, 400, 0]


# -- a bias shift is a logit shift ---------------------------------------------------------------
def test_shifting_the_logits_equals_shifting_the_model():
    # the notebook's bias sweep computes the logits once and adds each shift to them
    torch.manual_seed(2)
    data = load_dataset("mnist5k", "test", size=200)
    model = build_model("mlp", num_classes=10, in_channels=1, hidden=(32,), image_size=28)
    z, y = predict_logits(model, data)
    for shift in (0.0, 0.7, 2.0):
        shifted = shift_class_bias(model, {3: shift, 5: shift})
        z_shifted = z.clone()
        z_shifted[:, [3, 5]] += shift
        torch.testing.assert_close(predict_logits(shifted, data)[0], z_shifted)
        wrong = z_shifted.argmax(dim=1) != y
        by_class = torch.bincount(y[wrong], minlength=10)
        assert by_class.tolist() == errors_by_class(shifted, data).tolist()


def test_raising_a_bias_that_was_pushed_down_fixes_that_class():
    # logits 2.5 x the one-hot label, logit 3 pushed down by 3: raising the bias of 3 by
    # anything in (0.5, 5.5) fixes every 3 without hurting the others
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

    totals = [
        int(errors_by_class(shift_class_bias(Oracle(), {3: s}), data).sum())
        for s in (6.0, 0.0, 0.25, 1.0, 2.0, 5.0)
    ]
    assert totals == [15, 5, 5, 0, 0, 0]


# -- the paper's numbers -------------------------------------------------------------------------
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
