"""kdtutor.coursework.hinton: the bias-shift checker accepts the package's shift and names mistakes."""

import copy

import pytest
import torch

from kdtutor.analysis import shift_class_bias
from kdtutor.coursework.hinton import BiasShiftCheckError, check_shift_class_bias


def test_check_shift_class_bias_accepts_the_package_and_names_mistakes(capsys):
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
        new = copy.deepcopy(model)
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
