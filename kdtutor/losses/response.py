"""Response-based losses: they compare the student's and the teacher's outputs (logits)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import ShapeMismatchError


def _check_logits(student_logits: Tensor, teacher_logits: Tensor, temperature: float) -> None:
    if student_logits.shape != teacher_logits.shape:
        raise ShapeMismatchError(
            f"student logits {tuple(student_logits.shape)} and teacher logits "
            f"{tuple(teacher_logits.shape)} differ. Teacher and student must predict the same "
            "classes: build both with the same num_classes."
        )
    if not temperature > 0:
        raise ValueError(
            f"temperature must be > 0, got {temperature}. Hinton et al. use T in 1..20; try T=4."
        )


def kd_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    temperature: float = 4.0,
    *,
    scale_by_t2: bool = True,
) -> Tensor:
    r"""Hinton's distillation loss between softened teacher and student distributions.

    .. math::
        \mathcal{L}_{KD} = T^2 \, \frac{1}{B} \sum_{i=1}^{B}
            \mathrm{KL}\big(p^T_t(x_i) \,\|\, p^T_s(x_i)\big),
        \qquad p^T = \mathrm{softmax}(z / T).

    The KL divergence is summed over classes and averaged over the batch ("batchmean"),
    not over elements (averaging over elements divides by the number of classes too: a
    frequent bug). The :math:`T^2` factor keeps the gradient's scale roughly independent
    of :math:`T`, because the gradient of the softened KL shrinks as :math:`1/T^2`.

    Paper: Hinton, Vinyals, Dean (2015), *Distilling the Knowledge in a Neural Network*.

    Args:
        student_logits: ``(B, K)`` student logits :math:`z_s`.
        teacher_logits: ``(B, K)`` teacher logits :math:`z_t` (no gradient needed).
        temperature: :math:`T > 0`.
        scale_by_t2: multiply by :math:`T^2` (the paper's advice); ``False`` gives the raw KL.

    Returns:
        A scalar tensor.
    """
    _check_logits(student_logits, teacher_logits, temperature)
    log_p_student = F.log_softmax(student_logits / temperature, dim=1)
    log_p_teacher = F.log_softmax(teacher_logits / temperature, dim=1)
    kl = F.kl_div(log_p_student, log_p_teacher, reduction="batchmean", log_target=True)
    return kl * temperature**2 if scale_by_t2 else kl


def soft_cross_entropy(logits: Tensor, target_probs: Tensor) -> Tensor:
    r"""Cross entropy against a probability vector, averaged over the batch.

    .. math:: \mathcal{L} = -\frac{1}{B}\sum_i \sum_k q_{ik} \log \mathrm{softmax}(z_i)_k
    """
    if logits.shape != target_probs.shape:
        raise ShapeMismatchError(
            f"logits {tuple(logits.shape)} and target probabilities {tuple(target_probs.shape)} differ."
        )
    return -(target_probs * torch.log_softmax(logits, dim=1)).sum(dim=1).mean()
