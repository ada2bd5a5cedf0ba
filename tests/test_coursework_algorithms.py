"""check_lwf_loss and check_bn_statistics_loss: a correct loss passes; each classic mistake
fails with its own hint."""

import pytest
import torch
import torch.nn.functional as F

from kdtutor.coursework.algorithms import (
    BNStatisticsLossCheckError,
    LwFLossCheckError,
    check_bn_statistics_loss,
    check_lwf_loss,
    reference_bn_statistics_loss,
    reference_lwf_loss,
)
from kdtutor.losses.data_free import bn_statistics_loss
from kdtutor.losses.lifelong import lwf_distillation


def flat(message) -> str:
    """The message with its line wrapping undone."""
    return " ".join(str(message).split())


# ----------------------------------------------------------------------------------------------
# LwF
# ----------------------------------------------------------------------------------------------
def lwf(z, zo, T):
    return -(F.softmax(zo / T, dim=1) * F.log_softmax(z / T, dim=1)).sum(1).mean()


def lwf_cross_entropy(z, zo, T):
    """F.cross_entropy with probabilities as targets: the same loss."""
    return F.cross_entropy(z / T, F.softmax(zo / T, dim=1))


def lwf_package(z, zo, T):
    return lwf_distillation(z, zo, list(range(z.shape[1])), T)


def lwf_t2(z, zo, T):
    return lwf(z, zo, T) * T**2


def lwf_kl(z, zo, T):
    return F.kl_div(F.log_softmax(z / T, dim=1), F.softmax(zo / T, dim=1), reduction="batchmean")


def lwf_logit_targets(z, zo, T):
    return -((zo / T) * F.log_softmax(z / T, dim=1)).sum(1).mean()


def lwf_no_temperature(z, zo, T):
    return lwf(z, zo, 1.0)


def lwf_new_only(z, zo, T):
    return -(F.softmax(zo, dim=1) * F.log_softmax(z / T, dim=1)).sum(1).mean()


def lwf_elementwise_mean(z, zo, T):
    return -(F.softmax(zo / T, dim=1) * F.log_softmax(z / T, dim=1)).mean()


def lwf_swapped(z, zo, T):
    return -(F.softmax(z / T, dim=1) * F.log_softmax(zo / T, dim=1)).sum(1).mean()


def lwf_kl_t2(z, zo, T):
    return lwf_kl(z, zo, T) * T**2


def lwf_naive_log(z, zo, T):
    return -(F.softmax(zo / T, dim=1) * F.softmax(z / T, dim=1).log()).sum(1).mean()


def lwf_detached(z, zo, T):
    return lwf(z.detach(), zo, T)


def lwf_per_sample(z, zo, T):
    return -(F.softmax(zo / T, dim=1) * F.log_softmax(z / T, dim=1)).sum(1)


def lwf_in_place(z, zo, T):
    z /= T
    return -(F.softmax(zo / T, dim=1) * F.log_softmax(z, dim=1)).sum(1).mean()


@pytest.mark.parametrize("fn", [lwf, lwf_cross_entropy, lwf_package])
def test_a_correct_lwf_term_passes(fn, capsys):
    assert check_lwf_loss(fn) is True
    assert "✓ check_lwf_loss" in capsys.readouterr().out


def test_the_lwf_reference_agrees_with_the_package():
    gen = torch.Generator().manual_seed(0)
    z, zo = 3 * torch.randn(2, 9, 6, generator=gen, dtype=torch.float64)
    for T in (1.0, 2.0, 5.0):
        torch.testing.assert_close(reference_lwf_loss(z, zo, T), lwf_package(z, zo, T))


@pytest.mark.parametrize(
    ("fn", "expected"),
    [
        (lwf_t2, "belongs to Hinton's KD loss"),
        (lwf_kl, "you compute the KL divergence"),
        (lwf_logit_targets, "used as the targets as they are"),
        (lwf_no_temperature, "without the temperature"),
        (lwf_new_only, "only the current model's logits are divided by T"),
        (lwf_elementwise_mean, "averaged over every element"),
        (lwf_swapped, "the two models are swapped"),
        (lwf_naive_log, "numerically unstable"),
        (lwf_detached, "not differentiable"),
        (lwf_per_sample, "one value per sample"),
        (lwf_in_place, "changed its input tensors in place"),
    ],
)
def test_each_lwf_mistake_is_named(fn, expected):
    with pytest.raises(LwFLossCheckError) as info:
        check_lwf_loss(fn)
    assert expected in flat(info.value), flat(info.value)


def test_two_lwf_mistakes_at_once_are_both_named():
    with pytest.raises(LwFLossCheckError) as info:
        check_lwf_loss(lwf_kl_t2)
    message = flat(info.value)
    assert "2 classic mistakes at once" in message
    assert "Hinton's KD loss" in message and "KL divergence" in message


def test_the_lwf_check_can_print_instead_of_raising(capsys):
    assert check_lwf_loss(lwf_t2, raise_on_failure=False) is False
    assert "✗ check_lwf_loss" in capsys.readouterr().out


# ----------------------------------------------------------------------------------------------
# DeepInversion's statistics loss
# ----------------------------------------------------------------------------------------------
def dims_of(x):
    return [0, *range(2, x.dim())]


def bn(x, mean, var):
    dims = dims_of(x)
    m, v = x.mean(dims), x.var(dims, unbiased=False)
    return (m - mean).norm() + (v - var).norm()


def bn_two_pass(x, mean, var):
    dims = dims_of(x)
    m = x.mean(dims, keepdim=True)
    v = ((x - m) ** 2).mean(dims)
    return torch.linalg.vector_norm(m.flatten() - mean) + torch.linalg.vector_norm(v - var)


def bn_var_mean(x, mean, var):
    v, m = torch.var_mean(x.transpose(0, 1).reshape(x.shape[1], -1), dim=1, correction=0)
    return (m - mean).norm() + (v - var).norm()


def bn_package(x, mean, var):
    return bn_statistics_loss([x], [mean], [var])


def bn_squared(x, mean, var):
    dims = dims_of(x)
    m, v = x.mean(dims), x.var(dims, unbiased=False)
    return (m - mean).pow(2).sum() + (v - var).pow(2).sum()


def bn_mse(x, mean, var):
    dims = dims_of(x)
    m, v = x.mean(dims), x.var(dims, unbiased=False)
    return F.mse_loss(m, mean) + F.mse_loss(v, var)


def bn_joint(x, mean, var):
    dims = dims_of(x)
    m, v = x.mean(dims), x.var(dims, unbiased=False)
    return torch.cat([m - mean, v - var]).norm()


def bn_unbiased(x, mean, var):
    dims = dims_of(x)
    m, v = x.mean(dims), x.var(dims)
    return (m - mean).norm() + (v - var).norm()


def bn_std(x, mean, var):
    dims = dims_of(x)
    m, s = x.mean(dims), x.std(dims, unbiased=False)
    return (m - mean).norm() + (s - var).norm()


def bn_batch_only(x, mean, var):
    shape = (x.shape[1], *([1] * (x.dim() - 2)))
    m, v = x.mean(0), x.var(0, unbiased=False)
    return (m - mean.view(shape)).norm() + (v - var.view(shape)).norm()


def bn_squared_unbiased(x, mean, var):
    dims = dims_of(x)
    m, v = x.mean(dims), x.var(dims)
    return (m - mean).pow(2).sum() + (v - var).pow(2).sum()


def bn_cancellation(x, mean, var):
    dims = dims_of(x)
    m = x.mean(dims)
    v = (x * x).mean(dims) - m * m
    return (m - mean).norm() + (v - var).norm()


def bn_per_channel(x, mean, var):
    dims = dims_of(x)
    return (x.mean(dims) - mean).abs() + (x.var(dims, unbiased=False) - var).abs()


def bn_detached(x, mean, var):
    return bn(x.detach(), mean, var)


def bn_in_place(x, mean, var):
    dims = dims_of(x)
    m = x.mean(dims)
    var.sub_(x.var(dims, unbiased=False))
    return (m - mean).norm() + var.norm()


@pytest.mark.parametrize("fn", [bn, bn_two_pass, bn_var_mean, bn_package])
def test_a_correct_statistics_loss_passes(fn, capsys):
    assert check_bn_statistics_loss(fn) is True
    assert "✓ check_bn_statistics_loss" in capsys.readouterr().out


def test_the_statistics_reference_agrees_with_the_package_and_batchnorm():
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(6, 5, 4, 4, generator=gen, dtype=torch.float64) * 2 + 1
    mean = torch.randn(5, generator=gen, dtype=torch.float64)
    var = torch.rand(5, generator=gen, dtype=torch.float64) + 0.5
    torch.testing.assert_close(reference_bn_statistics_loss(x, mean, var), bn_package(x, mean, var))
    # BatchNorm in training mode normalises with the same (biased) statistics
    layer = torch.nn.BatchNorm2d(5, affine=False, momentum=1.0).double()
    layer(x)
    running_var_biased = layer.running_var * (x.numel() / 5 - 1) / (x.numel() / 5)
    zero = reference_bn_statistics_loss(x, layer.running_mean, running_var_biased)
    assert float(zero) < 1e-10


@pytest.mark.parametrize(
    ("fn", "expected"),
    [
        (bn_squared, "the norms are squared"),
        (bn_mse, "F.mse_loss"),
        (bn_joint, "one norm of both differences"),
        (bn_unbiased, "the unbiased one"),
        (bn_std, "the standard deviation"),
        (bn_batch_only, "over the batch only"),
        (bn_cancellation, "loses its digits"),
        (bn_per_channel, "one value per channel"),
        (bn_detached, "not differentiable"),
        (bn_in_place, "changed its input tensors in place"),
    ],
)
def test_each_statistics_mistake_is_named(fn, expected):
    with pytest.raises(BNStatisticsLossCheckError) as info:
        check_bn_statistics_loss(fn)
    assert expected in flat(info.value), flat(info.value)


def test_two_statistics_mistakes_at_once_are_both_named():
    with pytest.raises(BNStatisticsLossCheckError) as info:
        check_bn_statistics_loss(bn_squared_unbiased)
    message = flat(info.value)
    assert "2 classic mistakes at once" in message
    assert "the norms are squared" in message and "the unbiased one" in message


def test_the_statistics_check_can_print_instead_of_raising(capsys):
    assert check_bn_statistics_loss(bn_unbiased, raise_on_failure=False) is False
    assert "✗ check_bn_statistics_loss" in capsys.readouterr().out
