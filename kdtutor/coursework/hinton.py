r"""Chapter 2 (Hinton's MNIST experiments) coursework: check a learner's bias shift.

A learner writes ``my_shift(model, shifts)`` that returns a *copy* of a classifier whose
final-layer bias is moved by ``shifts[c]`` for each class ``c`` (Hinton et al. 2015 raise the
bias of a class the student never saw). :func:`check_shift_class_bias` runs it on small
MLPs and checks, independently of :func:`kdtutor.analysis.shift_class_bias`, that

* the original model is left unchanged;
* the logit of each shifted class moves by exactly its shift on every input,
  :math:`z'_c(x) = z_c(x) + \delta_c`, and every other logit stays the same.

When it fails, the message names the likely mistake (an in-place change, the wrong sign,
every class shifted, the weights changed instead of the bias).

>>> import copy, torch
>>> def my_shift(model, shifts):
...     new = copy.deepcopy(model)
...     with torch.no_grad():
...         for c, d in shifts.items():
...             new.fc.bias[c] += d
...     return new
>>> check_shift_class_bias(my_shift)  # doctest: +ELLIPSIS
✓ ... your bias shift is right ...
True
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping

import torch
from torch import Tensor, nn

from .messages import wrap_message

__all__ = ["BiasShiftCheckError", "check_shift_class_bias"]

ShiftFn = Callable[[nn.Module, Mapping[int, float]], nn.Module]

_CASES: tuple[dict[int, float], ...] = ({3: 3.5}, {7: -7.6, 8: -7.6}, {0: 0.25, 9: -1.0})


class BiasShiftCheckError(AssertionError):
    """Raised by :func:`check_shift_class_bias` when the learner's function is wrong."""


class _Net(nn.Module):
    """A small MLP on 8x8 images with its output layer called ``fc``, like kdtutor's MLPs."""

    def __init__(self, seed: int) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.flatten = nn.Flatten()
        self.hidden = nn.Sequential(nn.Linear(64, 16), nn.ReLU())
        self.fc = nn.Linear(16, 10)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.hidden(self.flatten(x)))


def _diagnose(delta: Tensor, shifts: Mapping[int, float], original_changed: bool) -> str:
    expected = torch.zeros(10)
    for c, d in shifts.items():
        expected[c] = d
    mean = delta.mean(dim=0)
    if original_changed:
        return (
            "the original model changed: shift a copy (copy.deepcopy(model)) and return it, so "
            "the unshifted model is still there to compare with."
        )
    if torch.allclose(mean, -expected, atol=1e-4):
        return "the logits moved the wrong way: add the shift to the bias, don't subtract it."
    if torch.allclose(delta, torch.zeros_like(delta), atol=1e-6):
        return "no logit changed: did you shift the bias of the copy you return?"
    spread = (delta - mean).abs().max()
    if spread > 1e-4:
        return (
            "the change of the logits depends on the input, so something other than the bias "
            "changed (the weights?). Only fc.bias[c] should move."
        )
    others = [c for c in range(10) if c not in shifts]
    if any(abs(float(mean[c])) > 1e-4 for c in others):
        return (
            f"classes {[c for c in others if abs(float(mean[c])) > 1e-4]} moved too: shift only "
            "the classes named in the dict."
        )
    return f"the logits moved by {mean.tolist()} instead of {expected.tolist()}."


def check_shift_class_bias(fn: ShiftFn, *, verbose: bool = True) -> bool:
    """Check ``fn(model, {class: shift})`` against the definition of a bias shift.

    Args:
        fn: The learner's function; it gets a model with an ``fc`` output layer and a dict.
        verbose: Print a line when every case passes.

    Returns:
        ``True`` when every case passes.

    Raises:
        BiasShiftCheckError: With the case and the likely mistake.
    """
    for i, shifts in enumerate(_CASES):
        model = _Net(seed=100 + i).eval()
        before = copy.deepcopy(model.state_dict())
        x = torch.randn(32, 1, 8, 8, generator=torch.Generator().manual_seed(i))
        with torch.no_grad():
            z = model(x)
        shifted = fn(model, dict(shifts))
        if not isinstance(shifted, nn.Module):
            raise BiasShiftCheckError(
                f"case {shifts}: your function returned {type(shifted).__name__}, not the shifted "
                "model (nn.Module)."
            )
        changed = any(not torch.equal(v, before[k]) for k, v in model.state_dict().items())
        with torch.no_grad():
            delta = shifted.eval()(x) - z
        expected = torch.zeros_like(delta)
        for c, d in shifts.items():
            expected[:, c] = d
        if changed or not torch.allclose(delta, expected, atol=1e-4, rtol=0):
            raise BiasShiftCheckError(f"case {shifts}: {_diagnose(delta, shifts, changed)}")
    if verbose:
        print(
            wrap_message(
                f"✓ {len(_CASES)} cases: your bias shift is right (the original is untouched "
                "and only the shifted logits move, by exactly their shift)."
            )
        )
    return True
