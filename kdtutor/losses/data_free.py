r"""Losses of data-free distillation: DAFL's generator terms (Chen et al., 2019) and
DeepInversion's image priors (Yin et al., 2020).

Pure functions of tensors. The student's side of both methods is Hinton's KD
(:func:`~kdtutor.losses.response.kd_loss`; DAFL's code uses :math:`T = 1`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import ShapeMismatchError, UnknownNameError

__all__ = [
    "ENTROPY_BASES",
    "activation_loss",
    "adi_competition_loss",
    "bn_statistics_loss",
    "information_entropy_loss",
    "one_hot_loss",
    "total_variation_loss",
]

ENTROPY_BASES: tuple[str, ...] = ("e", "10")
"""Logarithm of the entropy term: ``"e"`` (the paper's information entropy) or ``"10"``
(``torch.log10``, as DAFL's official ``DAFL-train.py`` computes it)."""


def _logits(z: Tensor, what: str) -> None:
    if z.dim() != 2:
        raise ShapeMismatchError(
            f"{what} must be logits of shape (B, K), got {tuple(z.shape)}: pass the "
            "classifier's outputs, not images or features."
        )


def one_hot_loss(teacher_logits: Tensor) -> Tensor:
    r"""DAFL's one-hot loss (Chen et al., 2019, eq. 2): the cross entropy of the teacher's
    outputs with its own arg-max as the label,

    .. math:: \mathcal{L}_{oh} = \frac1B\sum_i \mathrm{CE}\big(z^T_i, \arg\max_k z^T_{ik}\big).

    Minimising it makes the generator produce images the teacher classifies confidently.

    Args:
        teacher_logits: ``(B, K)``, with their graph to the generator.

    Returns:
        The batch mean (a scalar).
    """
    _logits(teacher_logits, "one_hot_loss's teacher_logits")
    return F.cross_entropy(teacher_logits, teacher_logits.detach().argmax(1))


def activation_loss(features: Tensor) -> Tensor:
    r"""DAFL's activation loss (Chen et al., 2019, eq. 3): minus the mean absolute value of the
    teacher's penultimate features,

    .. math:: \mathcal{L}_{a} = -\frac{1}{B\,D}\sum_{i,d} |f^T_{id}|,

    the mean over every element (the code's ``-features_T.abs().mean()``; the paper writes
    the L1 norm per image, the same up to the constant :math:`1/D`).
    """
    if features.dim() < 2:
        raise ShapeMismatchError(
            f"activation_loss expects batched features (B, D, ...), got {tuple(features.shape)}."
        )
    return -features.abs().mean()


def information_entropy_loss(teacher_logits: Tensor, base: str = "e") -> Tensor:
    r"""DAFL's information-entropy loss (Chen et al., 2019, eq. 4): minus the entropy of the
    teacher's mean prediction over the batch,

    .. math::
        \bar p = \frac1B\sum_i \mathrm{softmax}(z^T_i), \qquad
        \mathcal{L}_{ie} = -H(\bar p) = \sum_k \bar p_k \log \bar p_k .

    Minimising it balances the classes of the generated batch (its minimum,
    :math:`-\log K`, is reached by the uniform :math:`\bar p`).

    Args:
        teacher_logits: ``(B, K)``.
        base: ``"e"`` (natural log, the paper) or ``"10"`` (``log10``, the authors' code:
            the same term divided by :math:`\ln 10`).
    """
    _logits(teacher_logits, "information_entropy_loss's teacher_logits")
    if base not in ENTROPY_BASES:
        raise UnknownNameError(
            f"information_entropy_loss's base must be one of {ENTROPY_BASES}, got {base!r}."
        )
    p = teacher_logits.softmax(1).mean(0)
    h = (p * p.log()).sum()
    return h / math.log(10.0) if base == "10" else h


def bn_statistics_loss(
    inputs: Sequence[Tensor], running_means: Sequence[Tensor], running_vars: Sequence[Tensor]
) -> Tensor:
    r"""DeepInversion's feature-distribution regulariser (Yin et al., 2020, eq. 4): for every
    BatchNorm layer :math:`l` of the teacher, the L2 distances between the batch statistics
    of its input and the layer's running statistics,

    .. math::
        \mathcal{R}_{feature} = \sum_l \big\|\mu_l(\hat x) - \mathbb{E}[\mu_l]\big\|_2
            + \big\|\sigma^2_l(\hat x) - \mathbb{E}[\sigma^2_l]\big\|_2,

    with :math:`\mu_l, \sigma^2_l` the per-channel mean and *biased* variance over batch and
    positions (norms, not squared, as the official ``deepinversion_cifar10.py``).

    Args:
        inputs: each BatchNorm layer's input, ``(B, C_l, ...)``.
        running_means, running_vars: the layers' ``running_mean`` and ``running_var``, ``(C_l,)``.
    """
    if not (len(inputs) == len(running_means) == len(running_vars)) or not inputs:
        raise ShapeMismatchError(
            f"bn_statistics_loss needs one running mean and variance per input, got "
            f"{len(inputs)} inputs, {len(running_means)} means, {len(running_vars)} variances."
        )
    total = inputs[0].new_zeros(())
    for x, mean, var in zip(inputs, running_means, running_vars, strict=True):
        if x.dim() < 2 or x.shape[1] != mean.numel() or x.shape[1] != var.numel():
            raise ShapeMismatchError(
                f"a BatchNorm input of shape {tuple(x.shape)} does not match running statistics "
                f"of {mean.numel()} channels."
            )
        flat = x.transpose(0, 1).reshape(x.shape[1], -1)
        mu = flat.mean(1)
        sigma2 = flat.var(1, unbiased=False)
        total = total + torch.linalg.vector_norm(sigma2 - var.to(x.dtype))
        total = total + torch.linalg.vector_norm(mu - mean.to(x.dtype))
    return total


def total_variation_loss(images: Tensor) -> Tensor:
    r"""DeepInversion's image prior :math:`\mathcal{R}_{TV}` as the official code computes
    it: the L2 norms (not squared) of the differences between neighbouring pixels in four
    directions (horizontal, vertical and the two diagonals), summed,

    .. math::
        \mathcal{R}_{TV}(x) = \sum_{d \in \{(0,1), (1,0), (1,-1), (1,1)\}}
            \big\| x_{:, :, i, j} - x_{:, :, i + d_0, j + d_1} \big\|_2 .

    Args:
        images: ``(B, C, H, W)``.
    """
    if images.dim() != 4:
        raise ShapeMismatchError(
            f"total_variation_loss expects images (B, C, H, W), got {tuple(images.shape)}."
        )
    x = images
    diffs = (
        x[:, :, :, :-1] - x[:, :, :, 1:],
        x[:, :, :-1, :] - x[:, :, 1:, :],
        x[:, :, 1:, :-1] - x[:, :, :-1, 1:],
        x[:, :, :-1, :-1] - x[:, :, 1:, 1:],
    )
    return sum((torch.linalg.vector_norm(d) for d in diffs), x.new_zeros(()))


def adi_competition_loss(
    student_logits: Tensor, teacher_logits: Tensor, T: float = 3.0, clamp: float = 0.01
) -> Tensor:
    r"""Adaptive DeepInversion's competition term (Yin et al., 2020, eq. 8, as the official
    code computes it): one minus the (clamped) Jensen-Shannon divergence between the
    student's and the teacher's predictions at temperature ``T``,

    .. math::
        \mathcal{R}_{comp} = 1 - \min\!\big(1, \max(0,\ \tfrac12 \mathrm{KL}(M\|P)
            + \tfrac12 \mathrm{KL}(M\|Q))\big), \quad M = \tfrac12 (P + Q),

    with :math:`P, Q, M` clamped to ``[clamp, 1 - clamp]`` before the logarithms and the KL
    divergences averaged over the batch. Minimising it pushes the images towards inputs the
    student and the teacher disagree on.
    """
    _logits(student_logits, "adi_competition_loss's student_logits")
    _logits(teacher_logits, "adi_competition_loss's teacher_logits")
    if student_logits.shape != teacher_logits.shape:
        raise ShapeMismatchError(
            f"student logits {tuple(student_logits.shape)} and teacher logits "
            f"{tuple(teacher_logits.shape)} differ."
        )
    p = F.softmax(student_logits / T, dim=1)
    q = F.softmax(teacher_logits / T, dim=1)
    m = (0.5 * (p + q)).clamp(clamp, 1.0 - clamp)
    p, q = p.clamp(clamp, 1.0 - clamp), q.clamp(clamp, 1.0 - clamp)
    js = 0.5 * F.kl_div(p.log(), m, reduction="batchmean") + 0.5 * F.kl_div(
        q.log(), m, reduction="batchmean"
    )
    return 1.0 - js.clamp(0.0, 1.0)
