"""Checks for the coding exercises of chapter 1 (Introduction: why distil).

* :func:`check_flops`: a learner's ``count_flops(model, input_shape)``, compared with the count
  of :func:`kdtutor.models.model_summary` on a few models (a plain CNN, an MLP, a ResNet, a
  MobileNet-style depthwise-separable block and convolutions with stride, dilation and groups).
* :func:`check_magnitude_prune`: a learner's ``prune_tensor(weight, amount)``, compared with
  :func:`kdtutor.compression.magnitude_prune` on random tensors.

Each check prints a short verdict when the function is right and raises ``AssertionError``
with a hint when it is not.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from ..compression import magnitude_prune
from ..models import build_model, model_summary

__all__ = ["check_flops", "check_magnitude_prune"]


def _flop_cases() -> list[tuple[str, nn.Module, tuple[int, ...]]]:
    torch.manual_seed(0)
    odd_convs = nn.Sequential(
        nn.Conv2d(4, 8, 3, stride=2, padding=1, groups=2),
        nn.ReLU(),
        nn.Conv2d(8, 8, (3, 5), padding=(2, 1), dilation=2, groups=8, bias=False),
    )
    separable = nn.Sequential(  # MobileNet's block: a depthwise 3x3, then a pointwise 1x1
        nn.Conv2d(16, 16, 3, padding=1, groups=16, bias=False),
        nn.BatchNorm2d(16),
        nn.ReLU6(),
        nn.Conv2d(16, 32, 1, bias=False),
    )
    return [
        ("cnn_tiny (plain CNN)", build_model("cnn_tiny", num_classes=10), (1, 3, 32, 32)),
        ("cnn_tiny, batch of 3", build_model("cnn_tiny", num_classes=10), (3, 3, 32, 32)),
        ("mlp_30 (MLP)", build_model("mlp_30", in_channels=1, image_size=28), (1, 1, 28, 28)),
        ("resnet8 (residual)", build_model("resnet8", num_classes=10), (1, 3, 32, 32)),
        ("depthwise-separable block (depthwise)", separable, (1, 16, 16, 16)),
        ("strided, dilated, grouped convs", odd_convs, (3, 4, 15, 17)),
    ]


def _flops_hint(name: str, got: float, want: int, shape: Sequence[int]) -> str:
    ratio = got / want if want else float("inf")
    if abs(ratio - 0.5) < 1e-9:
        return "you count one FLOP per multiply-add; count a multiply-add as 2 FLOPs."
    if abs(ratio - 1 / shape[0]) < 1e-9 and shape[0] > 1:
        return "you return the FLOPs of one sample; return those of the whole batch."
    if "grouped" in name or "depthwise" in name:
        return (
            "a grouped convolution connects each output channel to in_channels / groups input "
            "channels only: use conv.in_channels // conv.groups. Output height and width "
            "depend on stride, padding and dilation: read them from the layer's output."
        )
    if ratio > 1:
        return (
            "your count is too high: count only the multiplications of nn.Conv2d and "
            "nn.Linear (2 FLOPs per multiply-add); biases, batch norm, ReLU and pooling are "
            "not counted."
        )
    return (
        "your count is too low: did you visit every nn.Conv2d and nn.Linear, including those "
        "inside nested modules (model.modules())?"
    )


def check_flops(fn: Callable[[nn.Module, tuple[int, ...]], int]) -> None:
    """Check ``fn(model, input_shape) -> int``: forward FLOPs of ``model`` on a batch of that shape.

    The convention is that of :func:`kdtutor.models.model_summary` (PyTorch's
    ``FlopCounterMode``): a multiply-add counts 2 FLOPs; only convolutions and linear layers
    are counted, for the whole batch; biases, normalisation, activations and pooling are not.

    Raises:
        AssertionError: With the model where ``fn`` is wrong, both numbers and a hint.
    """
    cases = _flop_cases()
    for name, model, shape in cases:
        want = model_summary(model, shape, latency_runs=0).flops
        got = fn(model, shape)
        if isinstance(got, Tensor):
            got = got.item()
        assert isinstance(got, int | float), (
            f"count_flops should return a number, got {type(got).__name__}."
        )
        assert got == want, (
            f"{name}, input {shape}: you count {got:,} FLOPs, kdtutor counts {want:,}. Hint: "
            + _flops_hint(name, float(got), want, shape)
        )
    print(f"Correct: your FLOP counts match kdtutor's on {len(cases)} models.")


def _reference_prune(weight: Tensor, amount: float) -> Tensor:
    holder = nn.Linear(1, 1, bias=False)
    holder.weight = nn.Parameter(weight.detach().clone())
    return magnitude_prune(holder, amount, scope="layer", layer_types=(nn.Linear,)).weight.data


def check_magnitude_prune(fn: Callable[[Tensor, float], Tensor]) -> None:
    """Check ``fn(weight, amount) -> Tensor``: a copy of ``weight`` with its smallest weights zeroed.

    ``round(amount * weight.numel())`` entries of smallest absolute value must become zero,
    the others keep their values, and ``weight`` itself must not change. Compared with
    :func:`kdtutor.compression.magnitude_prune` on random tensors of several shapes.

    Raises:
        AssertionError: With the case where ``fn`` is wrong and a hint.
    """
    generator = torch.Generator().manual_seed(0)
    cases = 0
    for shape in ((10,), (20, 30), (8, 4, 3, 3)):
        for amount in (0.0, 0.3, 0.5, 0.9, 1.0):
            weight = torch.randn(shape, generator=generator)
            original = weight.clone()
            got = fn(weight, amount)
            want = _reference_prune(original, amount)
            where = f"weight of shape {tuple(shape)}, amount={amount}"
            assert isinstance(got, Tensor), f"{where}: return a tensor, got {type(got).__name__}."
            assert torch.equal(weight, original), (
                f"{where}: your function changed its input; work on a copy (weight.clone())."
            )
            assert got.shape == weight.shape, (
                f"{where}: the result has shape {tuple(got.shape)}; keep the weight's shape."
            )
            n_zero, n_want = int((got == 0).sum()), int((want == 0).sum())
            assert n_zero == n_want, (
                f"{where}: {n_zero} zeros, expected {n_want}. Hint: remove exactly "
                f"round(amount * weight.numel()) = {n_want} weights."
            )
            if not torch.equal(got, want):
                by_value = original.flatten().clone()
                by_value[original.flatten().argsort()[:n_want]] = 0
                by_value = by_value.reshape(original.shape)
                hint = (
                    "you seem to compare signed values; prune by magnitude, |w| (weight.abs())."
                    if n_want and torch.equal(got, by_value)
                    else "zero the weights of smallest |w| and keep the other values unchanged."
                )
                raise AssertionError(f"{where}: wrong weights pruned. Hint: {hint}")
            cases += 1
    print(f"Correct: your pruning matches kdtutor's magnitude_prune on {cases} cases.")
