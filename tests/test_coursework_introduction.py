"""Chapter 1's coursework checks accept a correct answer and reject wrong ones with a hint."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from kdtutor.coursework.introduction import check_flops, check_magnitude_prune


def count_flops(model: nn.Module, input_shape, multiply_add: int = 2, use_groups: bool = True):
    total = 0

    def hook(module, inputs, output):
        nonlocal total
        if isinstance(module, nn.Conv2d):
            groups = module.groups if use_groups else 1
            kh, kw = module.kernel_size
            total += multiply_add * output.numel() * (module.in_channels // groups) * kh * kw
        elif isinstance(module, nn.Linear):
            total += multiply_add * output.numel() * module.in_features

    layers = [m for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    handles = [m.register_forward_hook(hook) for m in layers]
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(input_shape))
    finally:
        for handle in handles:
            handle.remove()
    return total


def test_check_flops_accepts_a_correct_count(capsys):
    check_flops(count_flops)
    assert "Correct" in capsys.readouterr().out


def test_check_flops_hints_at_the_factor_two():
    with pytest.raises(AssertionError, match="multiply-add as 2 FLOPs"):
        check_flops(lambda m, s: count_flops(m, s, multiply_add=1))


def test_check_flops_hints_at_groups():
    with pytest.raises(AssertionError, match="groups"):
        check_flops(lambda m, s: count_flops(m, s, use_groups=False))


def test_check_flops_hints_at_the_batch():
    with pytest.raises(AssertionError, match="whole batch"):
        check_flops(lambda m, s: count_flops(m, (1, *s[1:])))


def prune_tensor(weight: torch.Tensor, amount: float) -> torch.Tensor:
    k = round(amount * weight.numel())
    out = weight.clone().flatten()
    out[weight.abs().flatten().argsort()[:k]] = 0
    return out.reshape(weight.shape)


def test_check_magnitude_prune_accepts_a_correct_pruning(capsys):
    check_magnitude_prune(prune_tensor)
    assert "Correct" in capsys.readouterr().out


def test_check_magnitude_prune_rejects_signed_values():
    def by_value(weight, amount):
        k = round(amount * weight.numel())
        out = weight.clone().flatten()
        out[weight.flatten().argsort()[:k]] = 0
        return out.reshape(weight.shape)

    with pytest.raises(AssertionError, match=r"magnitude, \|w\|"):
        check_magnitude_prune(by_value)


def test_check_magnitude_prune_rejects_in_place_changes():
    def in_place(weight, amount):
        k = round(amount * weight.numel())
        flat = weight.view(-1)
        flat[weight.abs().flatten().argsort()[:k]] = 0
        return weight

    with pytest.raises(AssertionError, match="copy"):
        check_magnitude_prune(in_place)


def test_check_magnitude_prune_rejects_a_wrong_count():
    with pytest.raises(AssertionError, match="exactly"):
        check_magnitude_prune(lambda w, a: prune_tensor(w, min(1.0, a + 0.1)))
