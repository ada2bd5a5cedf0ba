r"""Losses of adversarial distillation: a discriminator tells teacher outputs from student ones.

The discriminator :math:`D` outputs one logit per sample (``(B, 1)`` or ``(B,)``): a large
value means "this came from the teacher". It is trained to tell them apart, and the student
is trained to fool it (Xu, Hsu, Huang, 2018: "conditional adversarial networks learn the
loss function"; MEAL, Shen et al., 2019). Both losses are the binary cross entropy of
Goodfellow et al. (2014) written on logits, averaged over the batch; the student's is the
non-saturating form.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import ShapeMismatchError

__all__ = ["conditioned_input", "gan_d_loss", "gan_g_loss"]


def _check_scores(d: Tensor, what: str) -> None:
    if d.dim() == 2 and d.shape[1] == 1:
        return
    if d.dim() != 1:
        raise ShapeMismatchError(
            f"{what}: the discriminator must give one logit per sample, (B,) or (B, 1), got "
            f"{tuple(d.shape)}; end it with nn.Linear(hidden, 1)."
        )


def gan_d_loss(d_real: Tensor, d_fake: Tensor) -> Tensor:
    r"""The discriminator's loss: teacher outputs are real (1), student outputs fake (0).

    .. math::
        \mathcal{L}_D = -\frac1B \sum_i \log \sigma\big(D(z_t^{(i)})\big)
            - \frac1B \sum_i \log\big(1 - \sigma(D(z_s^{(i)}))\big)

    Goodfellow et al. (2014), as adversarial KD uses it (Xu, Hsu, Huang, 2018). Pass the
    student's outputs detached, so that this loss trains the discriminator only.

    Args:
        d_real: the discriminator's logits on the teacher's outputs, ``(B,)`` or ``(B, 1)``.
        d_fake: its logits on the student's (detached) outputs, same shape.

    Returns:
        The sum of the two batch-mean binary cross entropies, a scalar.
    """
    _check_scores(d_real, "gan_d_loss")
    _check_scores(d_fake, "gan_d_loss")
    real = F.binary_cross_entropy_with_logits(d_real, d_real.new_ones(d_real.shape))
    fake = F.binary_cross_entropy_with_logits(d_fake, d_fake.new_zeros(d_fake.shape))
    return real + fake


def gan_g_loss(d_fake: Tensor) -> Tensor:
    r"""The student's adversarial loss (non-saturating): make the discriminator say "teacher".

    .. math::
        \mathcal{L}_{adv} = -\frac1B \sum_i \log \sigma\big(D(z_s^{(i)})\big)

    Goodfellow et al. (2014)'s non-saturating generator loss; the student plays the
    generator (Xu, Hsu, Huang, 2018). The discriminator's parameters should not be stepped on
    it (they have their own optimizer and :func:`gan_d_loss`).

    Args:
        d_fake: the discriminator's logits on the student's outputs (not detached).

    Returns:
        The batch-mean binary cross entropy against the label 1, a scalar.
    """
    _check_scores(d_fake, "gan_g_loss")
    return F.binary_cross_entropy_with_logits(d_fake, d_fake.new_ones(d_fake.shape))


def conditioned_input(
    logits: Tensor, y: Tensor | None = None, num_classes: int | None = None
) -> Tensor:
    r"""What the discriminator reads: the logits, or :math:`[z ; \mathrm{onehot}(y)]` when
    labels are given (the conditional form of Xu, Hsu, Huang, 2018).

    Args:
        logits: ``(B, K)``, or any ``(B, D)`` vector the discriminator reads (an embedding).
        y: the labels ``(B,)`` (int64, in ``[0, K)``), or ``None`` for the unconditional form.
        num_classes: the length ``K`` of the one-hot label; default: the width of ``logits``
            (right for logits; give it when ``logits`` is an embedding).

    Returns:
        ``(B, K)``, or ``(B, 2K)`` with the labels (``(B, D + K)`` for a ``(B, D)`` input).
    """
    if logits.dim() != 2:
        raise ShapeMismatchError(
            f"conditioned_input: logits must be (B, K), got {tuple(logits.shape)}."
        )
    if y is None:
        return logits
    if y.shape != logits.shape[:1]:
        raise ShapeMismatchError(
            f"conditioned_input: {tuple(y.shape)} labels for {logits.shape[0]} rows of logits; "
            "pass one class index per row."
        )
    classes = logits.shape[1] if num_classes is None else int(num_classes)
    onehot = F.one_hot(y.long(), classes).to(logits.dtype)
    return torch.cat([logits, onehot], dim=1)
