r"""Losses of multi-teacher distillation: one student, the soft targets of several teachers.

The teachers' logits come stacked, ``(B, M, K)`` for ``M`` teachers (what
:class:`~kdtutor.methods._teachers.TeacherEnsemble` caches). Four ways to combine them:

* ``"mean_targets"``: distil from the average of the teachers' softened predictions (You et
  al., 2017, as the survey describes it): :math:`T^2\,\mathrm{KL}(\frac1M\sum_k p_k^T \| p_s^T)`.
* ``"mean_losses"``: the mean over teachers of each teacher's KD loss (CA-MKD's code,
  ``AVERAGE_LOSS``).
* ``"ebkd"``: per-sample weights from the teachers' entropies, a confident teacher weighs more
  (CA-MKD's code, ``EBKD``).
* ``"camkd"``: per-sample weights from the teachers' cross entropies with the labels, a
  correct teacher weighs more (Zhang, Chen, Wang, 2022, "Confidence-Aware Multi-Teacher
  Knowledge Distillation").

The weights are computed from the (frozen) teachers alone and carry no gradient.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import ShapeMismatchError, unknown_name

__all__ = ["TEACHER_COMBINES", "multi_teacher_kd", "per_teacher_kl", "teacher_weights"]

TEACHER_COMBINES: tuple[str, ...] = ("mean_targets", "mean_losses", "ebkd", "camkd")
"""The ways :func:`multi_teacher_kd` combines the teachers."""


def _check_stack(stack: Tensor, what: str, student_logits: Tensor | None = None) -> None:
    if stack.dim() != 3:
        raise ShapeMismatchError(
            f"{what}: the teachers' logits must be stacked as (B, M, K), got "
            f"{tuple(stack.shape)}; use torch.stack(logits, dim=1) or TeacherEnsemble's 'stack'."
        )
    if student_logits is not None and (
        student_logits.dim() != 2
        or student_logits.shape[0] != stack.shape[0]
        or student_logits.shape[1] != stack.shape[2]
    ):
        raise ShapeMismatchError(
            f"{what}: student logits {tuple(student_logits.shape)} do not fit the teachers' "
            f"{tuple(stack.shape)} (B, M, K): they need the same batch and class count."
        )


def _check_combine(combine: str) -> None:
    if combine not in TEACHER_COMBINES:
        raise unknown_name("teacher combine", combine, TEACHER_COMBINES)


def teacher_weights(stack: Tensor, y: Tensor | None = None, combine: str = "camkd") -> Tensor:
    r"""Per-sample teacher weights :math:`w_{ik}`, ``(B, M)``.

    * ``"mean_targets"``, ``"mean_losses"``: :math:`w_{ik} = 1/M`.
    * ``"ebkd"``: :math:`w_{ik} = 1 - H(p_{ik}) / \sum_j H(p_{ij})`, with :math:`H` the entropy
      of teacher :math:`k`'s prediction at :math:`T = 1` (rows sum to :math:`M - 1`).
    * ``"camkd"``: :math:`w_{ik} = \big(1 - \mathrm{softmax}_k(\mathrm{CE}(z_{ik},
      y_i))\big)/(M - 1)`, i.e. one minus the softmax over teachers of their cross entropies
      with the label, over :math:`M - 1` (rows sum to 1; a lower cross entropy weighs more).
      Zhang, Chen, Wang (2022), as their code ``distiller_zoo/CAMKD.py`` computes it.

    Args:
        stack: the teachers' logits, ``(B, M, K)``.
        y: the labels ``(B,)`` (``"camkd"`` only).
        combine: one of :data:`TEACHER_COMBINES`.

    Returns:
        ``(B, M)`` weights, detached.
    """
    _check_stack(stack, "teacher_weights")
    _check_combine(combine)
    stack = stack.detach()
    b, m, _ = stack.shape
    if combine in ("mean_targets", "mean_losses"):
        return stack.new_full((b, m), 1.0 / m)
    if m < 2:
        raise ShapeMismatchError(
            f"teacher_weights: combine={combine!r} weighs teachers against each other and needs "
            f"at least 2, got {m}; use combine='mean_targets' with one teacher."
        )
    if combine == "ebkd":
        log_p = F.log_softmax(stack, dim=2)
        entropy = -(log_p.exp() * log_p).sum(2)  # (B, M)
        return 1.0 - entropy / entropy.sum(1, keepdim=True)
    if y is None or y.shape != (b,):
        raise ShapeMismatchError(
            f"teacher_weights: combine='camkd' needs one label per sample, (B,) = ({b},), got "
            f"{None if y is None else tuple(y.shape)}."
        )
    ce = F.cross_entropy(stack.transpose(1, 2), y.long()[:, None].expand(b, m), reduction="none")
    return (1.0 - F.softmax(ce, dim=1)) / (m - 1)


def per_teacher_kl(student_logits: Tensor, stack: Tensor, T: float = 4.0) -> Tensor:
    r"""Every sample's KD loss to every teacher, ``(B, M)``:
    :math:`T^2\,\mathrm{KL}(p_{ik}^T \| p_{si}^T)`, summed over classes, not averaged
    (CA-MKD's ``DistillKL(is_ca=True)``). The teachers' logits are detached.

    Args:
        student_logits: ``(B, K)``.
        stack: the teachers' logits, ``(B, M, K)``.
        T: the temperature.
    """
    _check_stack(stack, "per_teacher_kl", student_logits)
    log_q = F.log_softmax(student_logits / T, dim=1)[:, None, :]  # (B, 1, K)
    log_p = F.log_softmax(stack.detach() / T, dim=2)
    return (T * T) * (log_p.exp() * (log_p - log_q)).sum(2)


def multi_teacher_kd(
    student_logits: Tensor,
    stack: Tensor,
    T: float = 4.0,
    combine: str = "mean_targets",
    y: Tensor | None = None,
) -> Tensor:
    r"""The KD term from ``M`` teachers.

    * ``"mean_targets"`` (You et al., 2017):
      :math:`T^2\,\frac1B\sum_i \mathrm{KL}\big(\bar p_i^T \,\|\, p_{si}^T\big)`,
      :math:`\bar p_i^T = \frac1M\sum_k \mathrm{softmax}(z_{ik}/T)`; with one teacher, Hinton's
      :func:`~kdtutor.losses.kd_loss`.
    * ``"mean_losses"``, ``"ebkd"``, ``"camkd"``:
      :math:`\frac{1}{BM}\sum_i\sum_k w_{ik}\,T^2\,\mathrm{KL}(p_{ik}^T \| p_{si}^T)` with the
      weights of :func:`teacher_weights` times :math:`M` for ``"mean_losses"`` (so it is the
      mean over teachers of the batch-mean KD loss). The :math:`1/(BM)` is CA-MKD's code's
      reduction (``helper/loops.py``): its CA-MKD and EBKD weights already sum to 1 and
      :math:`M - 1` per sample, and it divides by :math:`M` again.

    Args:
        student_logits: ``(B, K)``.
        stack: the teachers' logits, ``(B, M, K)`` (detached here).
        T: the temperature.
        combine: one of :data:`TEACHER_COMBINES`.
        y: the labels (``"camkd"`` only).

    Returns:
        A scalar.
    """
    _check_stack(stack, "multi_teacher_kd", student_logits)
    _check_combine(combine)
    if combine == "mean_targets":
        p_bar = F.softmax(stack.detach() / T, dim=2).mean(1)  # (B, K)
        log_q = F.log_softmax(student_logits / T, dim=1)
        kl = torch.xlogy(p_bar, p_bar) - p_bar * log_q
        return (T * T) * kl.sum(1).mean()
    b, m, _ = stack.shape
    weights = teacher_weights(stack, y, combine)
    if combine == "mean_losses":
        weights = weights * m
    return (weights * per_teacher_kl(student_logits, stack, T)).sum() / (b * m)
